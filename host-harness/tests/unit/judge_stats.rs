//! Unit tests of `judge::stats` (`src/judge/stats.rs`).

use dualform_harness::judge::stats::*;

#[test]
fn mean_and_interval_of_a_known_sample() {
    let s = Stat::of([1.0, 2.0, 3.0, 4.0].into_iter());
    assert_eq!(s.mean, 2.5);
    // sd = sqrt(5/3); half-width = 1.96 sd / 2.
    assert!((s.ci95 - 1.96 * (5.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
    assert_eq!((s.lo() + s.hi()) / 2.0, 2.5);
    assert!(Stat::of(std::iter::empty()).mean.is_nan());
    assert_eq!(Stat::of([7.0].into_iter()).ci95, 0.0);
}
