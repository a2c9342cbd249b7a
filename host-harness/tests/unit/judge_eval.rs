//! Unit tests of `judge::eval` (`src/judge/eval.rs`).

use dualform_harness::judge::baselines::Predictor;
use dualform_harness::judge::eval::*;
use dualform_harness::tasks::{streams, TaskSampler};

/// Many metrics in one pass give each metric's figures bit for bit as a pass of its own, in the columns each
/// metric owns (a misplaced column or a task drawn twice would change them).
#[test]
fn one_pass_over_many_metrics_equals_a_pass_per_metric() {
    let sampler = TaskSampler::new(3, 5, 1.0);
    let (seed, count) = (7, 300);
    let a = gd_net(3, 0.9, 5).unwrap().repeated(2, dualform::Update::residual()).unwrap();
    let b = gd_net(3, 1.3, 5).unwrap();
    let agreement = Agreement { a: Predictor::Net(&a), refs: vec![Predictor::Net(&b), Predictor::Net(&a)] };
    let (readout, loss_b, ols) = (Readout(&a), Loss(&b), OlsLoss(3));
    let metrics: [&dyn Metric; 5] = [&readout, &agreement, &ZeroLoss, &loss_b, &ols];
    let stats = evaluate(&metrics, &sampler, seed, streams::EVAL, count);
    assert_eq!(stats.iter().map(Vec::len).collect::<Vec<_>>(), [2, 13, 1, 1, 1]);
    assert_eq!(stats[0], readout_losses(&a, &sampler, seed, streams::EVAL, count));
    let together = Agreement::comparisons(&stats[1]);
    assert_eq!(together, compare_many(&a, &[&b, &a], &sampler, seed, streams::EVAL, count));
    assert_eq!(together[0], compare(&a, &b, &sampler, seed, streams::EVAL, count));
    assert_eq!(together[1].preds_diff.mean, 0.0, "a model against itself");
    assert_eq!(stats[2][0], zero_loss(&sampler, seed, streams::EVAL, count));
    assert_eq!(stats[3][0], loss(&b, &sampler, seed, streams::EVAL, count));
    assert_eq!(stats[4][0], ols_loss(&sampler, seed, streams::EVAL, count));
    assert_eq!(stats[3][0].n, count);
    assert_ne!(stats[3][0], stats[1][0], "a's loss and b's differ");
    // The size of a reference's predictions: a one-step prediction from zero is linear in the rate, so doubling
    // the rate doubles it.
    let (g1, g2) = (gd_net(3, 0.9, 5).unwrap(), gd_net(3, 1.8, 5).unwrap());
    let c = compare_many(&b, &[&g1, &g2], &sampler, seed, streams::EVAL, count);
    assert!(c[0].scale_b.mean > 0.0, "{:?}", c[0].scale_b);
    assert!((c[1].scale_b.mean / c[0].scale_b.mean - 2.0).abs() < 1e-5, "{:?}", c);
}
