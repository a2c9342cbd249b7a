//! Unit tests of `experiments::ood` (`src/experiments/ood.rs`).

use dualform_harness::experiments::ood::*;
use dualform_harness::judge::eval::{gd_net, tune_gd_rate};
use dualform_harness::tasks::{streams, TaskSampler};

/// GD against itself tracks everywhere; against GD at twice the rate the in-distribution check fails.
#[test]
fn a_reference_at_twice_the_rate_is_detected() {
    let sampler = TaskSampler::new(10, 10, 1.0);
    let eta = tune_gd_rate(&sampler, 8, streams::TUNE, 2000).unwrap() as f32;
    let gd = gd_net(10, eta, 10).unwrap();
    let (a, b) = curves(&gd, &gd, &sampler, 8, 300);
    let right = Results { gd_eta: eta as f64, input_range: a, weight_scale: b };
    assert!(checks(&right).iter().all(|c| c.passed));
    let wrong_gd = gd_net(10, 2.0 * eta, 10).unwrap();
    let (a, b) = curves(&gd, &wrong_gd, &sampler, 8, 300);
    let wrong = Results { gd_eta: 2.0 * eta as f64, input_range: a, weight_scale: b };
    let c = checks(&wrong);
    assert!(!c[0].passed && !c[1].passed, "{c:?}");
}
