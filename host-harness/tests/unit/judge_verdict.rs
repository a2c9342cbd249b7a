//! Unit tests of `judge::verdict` (`src/judge/verdict.rs`).

use dualform_harness::judge::stats::Stat;
use dualform_harness::judge::verdict::*;

fn s(mean: f64, ci95: f64) -> Stat {
    Stat { mean, ci95, n: 3 }
}

#[test]
fn seed_intervals_use_student_t_and_never_undercut_the_task_interval() {
    let c = over_seeds(&[s(1.0, 0.01), s(2.0, 0.01), s(3.0, 0.01)]);
    assert_eq!(c.mean, 2.0);
    assert!((c.ci95 - 4.303 * (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
    let c = over_seeds(&[s(1.0, 0.5), s(1.0, 0.3)]);
    assert_eq!(c.ci95, 0.4);
}
