//! Unit tests of `experiments::recurrent` (`src/experiments/recurrent/mod.rs`).

use dualform::Update;
use dualform_harness::experiments::recurrent::*;
use dualform_harness::judge::eval::{gd_net, readout_losses, tune_gd_rate, Comparison};
use dualform_harness::judge::stats::Stat;
use dualform_harness::tasks::streams;
use dualform_harness::tasks::TaskSampler;

/// GD iterated at the damped rate tracks itself; the same check against GD at twice that rate fails.
#[test]
fn an_iterated_reference_at_twice_the_rate_is_detected() {
    let sampler = TaskSampler::new(10, 10, 1.0);
    let eta = tune_gd_rate(&sampler, 2, streams::TUNE, 2000).unwrap() as f32;
    let y_only = Update { scale: 1.0, first: 10, clip: None };
    let curve = |rate: f32| {
        readout_losses(&gd_net(10, rate, 10).unwrap().repeated(20, y_only).unwrap(), &sampler, 2, streams::EVAL, 1000)
    };
    let model = curve(0.75 * eta);
    let gap = |gd: Vec<Stat>| {
        Iterated { eta: eta as f64, damping: 0.75, trained: model.clone(), gd, final_vs_gd: dummy() }.worst_gap()
    };
    assert!(gap(curve(0.75 * eta)) < 1e-12);
    assert!(gap(curve(1.5 * eta)) > 0.05, "{}", gap(curve(1.5 * eta)));
}

fn dummy() -> Comparison {
    let s = Stat { mean: 0.0, ci95: 0.0, n: 1 };
    Comparison { loss_a: s, loss_b: s, preds_diff: s, model_cos: s, model_diff: s, model_diff_rel: s, scale_b: s }
}
