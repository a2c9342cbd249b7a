//! Unit tests of `experiments::gd_plus_plus` (`src/experiments/gd_plus_plus.rs`).

use dualform_harness::experiments::gd_plus_plus::*;
use dualform_harness::fit::references::fit_all;
use dualform_harness::fit::references::{FitSpec, FittedParams};
use dualform_harness::judge::eval::compare_many;
use dualform_harness::model::Model;
use dualform_harness::tasks::streams;
use dualform_harness::tasks::TaskSampler;

/// A model that is GD++ is explained fully and found closer to GD++; with the GD++ reference's rates doubled the
/// closeness check fails.
#[test]
fn a_gdpp_reference_with_its_rates_off_by_two_is_detected() {
    let sampler = TaskSampler::new(10, 10, 1.0);
    let spec = FitSpec { sampler: &sampler, eval_seed: 5, tasks: 1500, iters: 15 };
    let refs = fit_all(2, spec).unwrap();
    let model = refs[2].model.clone();
    let depth = |pp_net: &dualform_harness::net::Net| {
        let nets = [refs[0].model.net(), refs[1].model.net(), pp_net];
        Results {
            depths: vec![FittedDepth {
                layers: 2,
                references: refs.iter().map(FittedParams::from).collect(),
                vs_trained: compare_many(model.net(), &nets, &sampler, 5, streams::EVAL, 1500),
            }],
        }
    };
    let right = depth(refs[2].model.net());
    assert!(checks(&right)[0].passed, "{:?}", checks(&right));
    let explained = right.depths[0].explained();
    assert!(explained.is_some_and(|e| (e - 1.0).abs() < 1e-9), "{explained:?}: {:?}", right.depths[0].losses());
    // A trained model whose advantage over plain GD is within the intervals: no share, but both gains.
    let mut unresolved = right.clone();
    let c = &mut unresolved.depths[0].vs_trained;
    let gd = c[1].loss_b;
    for x in c.iter_mut() {
        x.loss_a = dualform_harness::judge::stats::Stat { mean: gd.mean - 0.5 * gd.ci95, ..gd };
    }
    assert_eq!(unresolved.depths[0].explained(), None);
    let text = unresolved.depths[0].explained_text();
    assert!(text.starts_with("not resolved") && text.contains("GD++ gains"), "{text}");
    let mut wrong = refs[2].model.clone();
    let p: Vec<f32> = wrong.params().iter().enumerate().map(|(i, v)| if i < 2 { 2.0 * v } else { *v }).collect();
    wrong.set_params(&p);
    let bad = depth(wrong.net());
    assert!(!checks(&bad)[0].passed, "{:?}", checks(&bad));
}
