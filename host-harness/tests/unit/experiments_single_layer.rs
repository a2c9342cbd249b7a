//! Unit tests of `experiments::single_layer` (`src/experiments/single_layer.rs`).

use dualform_harness::judge::assess::{assess, Held, References};
use dualform_harness::judge::eval::gd_net;
use dualform_harness::judge::verdict::Outcome as Verdict;
use dualform_harness::tasks::TaskSampler;

/// The comparison must catch a wrong reference: the GD construction assessed against references whose GD rate
/// is off by 2x is not identified as GD (its loss is far from the wrong reference's, its predictions too), while
/// against the right references it is.
#[test]
fn a_reference_with_the_rate_off_by_two_is_detected() {
    let sampler = TaskSampler::new(10, 10, 1.0);
    let refs = References::build(&sampler, 3, 4000).unwrap();
    let model = gd_net(10, refs.summary.gd_eta as f32, 10).unwrap();
    let held = Held { sampler: &sampler, seed: 3, count: 2000 };
    let right = assess(&[&model], &refs, held).unwrap();
    assert_eq!(right.ruling.outcome, Verdict::ImplementsGd, "{:?}", right.ruling);
    let doubled = 2.0 * refs.summary.gd_eta;
    let wrong_refs = refs.with_gd_eta(doubled).unwrap();
    let wrong = assess(&[&model], &wrong_refs, held).unwrap();
    assert_ne!(wrong.ruling.outcome, Verdict::ImplementsGd, "{:?}", wrong.ruling);
    // The rules find the model closer to the preconditioned step (on isotropic tasks, the right GD step).
    assert_eq!(wrong.ruling.outcome, Verdict::ImplementsPreconditionedGd, "{:?}", wrong.ruling);
    let gap = (wrong.loss.mean - wrong.agreements[0].loss.mean).abs() / wrong.agreements[0].loss.mean;
    assert!(gap > 0.03, "the loss criterion must fail: {gap}");
    assert!(wrong.agreements[0].preds_diff.mean > 0.3, "preds diff sees it: {:?}", wrong.agreements[0]);
    assert!(wrong.agreements[0].model_cos.mean > 0.999, "model cos is blind to the rate");
}
