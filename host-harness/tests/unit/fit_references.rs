//! Unit tests of `fit::references` (`src/fit/references.rs`).

use dualform_harness::fit::references::*;
use dualform_harness::tasks::TaskSampler;

#[test]
fn richer_references_are_never_worse_on_the_tuning_tasks() {
    let sampler = TaskSampler::new(4, 6, 1.0);
    let spec = FitSpec { sampler: &sampler, eval_seed: 3, tasks: 1500, iters: 15 };
    let refs = fit_all(3, spec).unwrap();
    let losses: Vec<f64> = refs.iter().map(|r| score(&r.fit)).collect();
    assert!(losses[1] <= losses[0] && losses[2] <= losses[1], "{losses:?}");
    assert!(refs.iter().all(|r| r.fit.validation_loss.is_some() && r.fit.kept_step <= r.fit.accepted_steps));
    // The fits moved: per-step rates differ from one another, GD++ found a non-zero gamma.
    let etas = refs[1].model.etas();
    assert!(etas.iter().any(|e| (e - etas[0]).abs() > 1e-3), "{etas:?}");
    assert!(refs[2].model.gammas().iter().any(|g| g.abs() > 1e-4), "{:?}", refs[2].model.gammas());
    assert!(losses[2] < losses[0] * 0.99, "GD++ gains over plain GD: {losses:?}");
}
