//! Unit tests of `experiments::interpolate` (`src/experiments/interpolate.rs`).

use dualform_harness::experiments::interpolate::*;
use dualform_harness::judge::eval::{gd_net, tune_gd_rate};
use dualform_harness::tasks::streams;
use dualform_harness::tasks::TaskSampler;

/// The path from GD itself (scaled) to GD is flat and its midpoint matches; a GD end at twice the tuned rate fails
/// the midpoint checks.
#[test]
fn an_end_at_twice_the_rate_is_detected() {
    let sampler = TaskSampler::new(10, 10, 1.0);
    let eta = tune_gd_rate(&sampler, 6, streams::TUNE, 2000).unwrap();
    let gd = gd_net(10, eta as f32, 10).unwrap();
    // A "trained" head that is GD with the scale moved between A and B: the normalisation must undo it.
    let mut head = gd.heads()[0].clone();
    head.a.iter_mut().for_each(|v| *v *= 3.0);
    head.b.iter_mut().for_each(|v| *v /= 3.0);
    let right = evaluate(&head, &gd, eta, 11, &sampler, 6, 2000);
    assert!((right.scale - 3.0).abs() < 1e-6);
    assert!(checks(&right).iter().all(|c| c.passed), "{:?}", checks(&right));
    let wrong_end = gd_net(10, 2.0 * eta as f32, 10).unwrap();
    let wrong = evaluate(&head, &wrong_end, 2.0 * eta, 11, &sampler, 6, 2000);
    let c = checks(&wrong);
    assert!(c.iter().any(|c| c.name == "midpoint_loss_vs_gd" && !c.passed), "{c:?}");
}
