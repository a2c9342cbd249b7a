//! Unit tests of `judge::verdict` (`src/judge/verdict.rs`).

use dualform_harness::judge::stats::Stat;
use dualform_harness::judge::verdict::*;

fn s(mean: f64, ci95: f64) -> Stat {
    Stat { mean, ci95, n: 3 }
}

#[test]
fn seed_and_task_intervals_add_in_quadrature() {
    let c = over_seeds(&[s(1.0, 0.01), s(2.0, 0.01), s(3.0, 0.01)]);
    assert_eq!(c.mean, 2.0);
    let seeds = 4.303 * (1.0f64 / 3.0).sqrt();
    assert!((c.ci95 - (seeds * seeds + 0.01 * 0.01).sqrt()).abs() < 1e-12);
    // Equal seeds: the task interval alone (their mean half-width).
    let c = over_seeds(&[s(1.0, 0.5), s(1.0, 0.3)]);
    assert_eq!(c.ci95, 0.4);
    // Seeds 0.3 apart (half-width 12.706 * 0.15) with task half-widths 3 and 4: 5 and that, in quadrature.
    let c = over_seeds(&[s(1.0, 3.0), s(1.3, 5.0)]);
    let seeds = 12.706 * 0.15;
    assert!((c.ci95 - (seeds * seeds + 16.0f64).sqrt()).abs() < 1e-9, "{c:?}");
    assert!(c.ci95 > seeds.max(4.0) && c.ci95 < seeds + 4.0);
    // One seed: its task interval.
    assert_eq!(over_seeds(&[s(2.0, 0.7)]).ci95, 0.7);
}
