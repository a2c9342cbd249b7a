//! Unit tests of `judge::attribution` (`src/judge/attribution.rs`).

use dualform_harness::experiments::settings::TaskArgs;
use dualform_harness::judge::attribution::*;
use dualform_harness::judge::baselines::Predictor;
use dualform_harness::judge::eval::gd_net;
use dualform_harness::model::{GdFamily, GdKind, Model};
use dualform_harness::tasks::{streams, TaskSampler};

fn sampler() -> TaskSampler {
    TaskArgs::anisotropic(6, 8, 1.0).sampler()
}

/// Every task's attributions by two methods, and the largest difference relative to the largest term.
fn worst_gap(a: Attributor<'_>, b: Attributor<'_>, s: &TaskSampler, tasks: usize) -> f64 {
    let mut worst = 0.0f64;
    let (mut ta, mut tb, mut wa, mut wb) = (Vec::new(), Vec::new(), None, None);
    let mut rng = dualform_harness::tasks::stream_rng(5, streams::EVAL);
    for _ in 0..tasks {
        let (mut ctx, mut query, mut w) = (vec![0.0f32; 8 * 7], vec![0.0f32; 7], vec![0.0f32; 7]);
        s.sample_into(&mut rng, &mut ctx, &mut query, &mut w);
        a.attribute(&ctx, &query, &mut ta, &mut wa);
        b.attribute(&ctx, &query, &mut tb, &mut wb);
        let scale = tb.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-9);
        for (x, y) in ta.iter().zip(&tb) {
            worst = worst.max((x - y).abs() / scale);
        }
        assert_eq!(ta.len(), 8);
    }
    worst
}

/// One GD step: the construction's exact terms (the core's), the dual form and leaving one out are the same numbers
/// (up to f32 rounding), and the cosine metric is 1 against GD at any other rate; least squares draws on the
/// demonstrations differently.
#[test]
fn one_gd_step_has_one_attribution_whichever_way_it_is_computed() {
    let s = sampler();
    let net = gd_net(6, 2.5, 8).unwrap();
    let exact = Attributor::of_net(&net);
    assert!(matches!(exact, Attributor::Layer(_)));
    let dual = Attributor::Gd { eta: 2.5, steps: 1 };
    let loo = Attributor::LeaveOneOut(Predictor::Net(&net));
    assert!(worst_gap(exact, dual, &s, 200) < 1e-5);
    assert!(worst_gap(loo, dual, &s, 200) < 1e-4);
    let cos = attribution_agreement(
        exact,
        vec![Attributor::Gd { eta: 7.0, steps: 1 }, Attributor::LeaveOneOut(Predictor::Ridge { lambda: 0.0, d: 6 })],
        &s,
        3,
        streams::EVAL,
        2000,
    );
    assert!((cos[0].mean - 1.0).abs() < 1e-6, "{:?}", cos[0]);
    assert!(cos[1].hi() < 0.9, "least squares: {:?}", cos[1]);
}

/// K steps of GD: the K-layer construction's dual form against its own leave-one-out attribution. They differ
/// (removing a demonstration changes the other demonstrations' error signals from the second step on), which is
/// why deep models are compared with GD by leaving one out on both sides.
#[test]
fn k_gd_steps_dual_form_and_leave_one_out_differ_from_the_second_step() {
    let s = sampler();
    let two = GdFamily::new(6, GdKind::SharedRate, 2, 8, 2.5).unwrap();
    let dual = Attributor::Gd { eta: 2.5, steps: 2 };
    let loo = Attributor::LeaveOneOut(Predictor::Net(two.net()));
    let cos = attribution_agreement(loo, vec![dual], &s, 3, streams::EVAL, 2000);
    eprintln!("two GD steps: leave-one-out against the dual form, cosine {:?}", cos[0]);
    assert!(cos[0].mean < 0.999 && cos[0].mean > 0.5, "{:?}", cos[0]);
    let gap = worst_gap(loo, dual, &s, 50);
    assert!(gap > 1e-3, "{gap}");
    // At the main setting (d = N = 10) and a tuned two-step rate.
    let main = TaskArgs::anisotropic(10, 10, 1.0).sampler();
    for (eta, k) in [(6.0f32, 2usize), (6.0, 5)] {
        let net = GdFamily::new(10, GdKind::SharedRate, k, 10, eta).unwrap();
        let cos = attribution_agreement(
            Attributor::LeaveOneOut(Predictor::Net(net.net())),
            vec![Attributor::Gd { eta: eta.into(), steps: k }],
            &main,
            3,
            streams::EVAL,
            2000,
        );
        eprintln!("d = N = 10, {k} steps at {eta}: leave-one-out against the dual form, cosine {:?}", cos[0]);
    }
}

/// One demonstration: leaving it out leaves no pairs at all, and least squares on no pairs predicts 0 (it panicked
/// in the linear algebra before), so its one term is its whole prediction, as GD's is.
#[test]
fn one_demonstration_leaves_nothing_to_regress_on() {
    let s = TaskArgs::anisotropic(2, 1, 1.0).sampler();
    let ls = Predictor::Ridge { lambda: 0.0, d: 2 };
    assert_eq!(dualform_harness::judge::baselines::ridge_weights(&[], 2, 0.0).as_slice(), [0.0, 0.0]);
    assert_eq!(dualform_harness::judge::baselines::ridge_weights(&[], 2, 0.5).as_slice(), [0.0, 0.0]);
    let (mut ctx, mut query, mut w) = (vec![0.0f32; 3], vec![0.0f32; 3], vec![0.0f32; 3]);
    s.sample_into(&mut dualform_harness::tasks::stream_rng(1, streams::EVAL), &mut ctx, &mut query, &mut w);
    let (mut terms, mut ws) = (Vec::new(), None);
    Attributor::LeaveOneOut(ls).attribute(&ctx, &query, &mut terms, &mut ws);
    assert_eq!(terms.len(), 1);
    assert_eq!(terms[0], ls.predict(&ctx, &query, &mut None));
    let cos =
        attribution_agreement(Attributor::LeaveOneOut(ls), vec![Attributor::Gd { eta: 1.0, steps: 1 }], &s, 3, 0, 200);
    assert!(cos[0].mean.is_finite(), "{:?}", cos[0]);
}
