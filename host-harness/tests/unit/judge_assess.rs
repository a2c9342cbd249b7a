//! Unit tests of `judge::assess` (`src/judge/assess.rs`).

use dualform_harness::experiments::settings::TaskArgs;
use dualform_harness::judge::assess::*;
use dualform_harness::judge::baselines::{diagonal, m_net, Predictor};
use dualform_harness::judge::verdict::Outcome;
use dualform_harness::net::Net;
use dualform_harness::tasks::{streams, TaskSampler};
use nalgebra::DMatrix;

fn sampler(ratio: f64) -> TaskSampler {
    TaskArgs::anisotropic(6, 6, ratio).sampler()
}

/// The rules give the known answer on constructed models: the GD construction implements GD, the
/// preconditioned construction implements preconditioned GD, a least-squares-like model (one Newton step with
/// the population covariance) is not identified, random weights do not match; and on isotropic tasks the GD
/// construction implements GD with the optimum set aside as indistinguishable.
#[test]
fn constructed_models_get_the_verdict_their_construction_implies() {
    let s = sampler(10.0);
    let refs = References::build(&s, 11, 20_000).unwrap();
    let held = Held { sampler: &s, seed: 11, count: 4000 };
    let outcome = |net: &Net| assess(&[net], &refs, held).unwrap().ruling;
    let gd = outcome(refs.gd());
    eprintln!("GD construction: {}", gd.sentence);
    assert_eq!(gd.outcome, Outcome::ImplementsGd, "{gd:?}");
    let pgd = outcome(refs.preconditioned());
    assert_eq!(pgd.outcome, Outcome::ImplementsPreconditionedGd, "{pgd:?}");
    // One Newton step with the population covariance, at the rate that minimises its loss.
    let inv: Vec<f64> = (0..6).map(|i| 1.0 / s.variance(i)).collect();
    let newton = tuned_scale(&s, &inv);
    let ls = outcome(&m_net(6, &diagonal(&newton), 6));
    eprintln!("preconditioned construction: {}\nNewton step: {}", pgd.sentence, ls.sentence);
    assert!(
        matches!(ls.outcome, Outcome::MatchesLossOnly | Outcome::DoesNotMatch),
        "a least-squares-like model must not be identified as GD or preconditioned GD: {ls:?}"
    );
    // Half-way between GD and the preconditioned step: as close to one as to the other, loss between theirs.
    let mid: Vec<f64> = refs.summary.preconditioner.iter().map(|g| 0.5 * (g + refs.summary.gd_eta)).collect();
    let m = outcome(&m_net(6, &diagonal(&mid), 6));
    eprintln!("midpoint: {}", m.sentence);
    assert_eq!(m.outcome, Outcome::MatchesLossOnly, "{m:?}");
    let mut rng = dualform_harness::tasks::stream_rng(5, 0);
    let random = DMatrix::from_fn(6, 6, |_, _| {
        use rand_distr::Distribution;
        rand_distr::StandardNormal.sample(&mut rng)
    });
    let r = outcome(&m_net(6, &random, 6));
    eprintln!("random: {}", r.sentence);
    assert_eq!(r.outcome, Outcome::DoesNotMatch, "{r:?}");

    // At variance ratio 2 the preconditioned step gains about 1% over GD, so the loss alone cannot tell them apart
    // and the separation rule must.
    let mild = sampler(2.0);
    let refs = References::build(&mild, 11, 20_000).unwrap();
    let held = Held { sampler: &mild, seed: 11, count: 4000 };
    let a = assess(&[refs.preconditioned()], &refs, held).unwrap();
    let gd_loss = a.agreements[0].loss.mean;
    assert!((a.loss.mean - gd_loss).abs() / gd_loss < 0.03, "the loss gap must be within the tolerance here");
    assert_eq!(a.ruling.outcome, Outcome::ImplementsPreconditionedGd, "{:?}", a.ruling);
    let b = assess(&[refs.gd()], &refs, held).unwrap();
    assert_eq!(b.ruling.outcome, Outcome::ImplementsGd, "{:?}", b.ruling);

    let iso = sampler(1.0);
    let refs = References::build(&iso, 11, 20_000).unwrap();
    let held = Held { sampler: &iso, seed: 11, count: 4000 };
    let a = assess(&[refs.gd()], &refs, held).unwrap();
    assert_eq!(a.ruling.outcome, Outcome::ImplementsGd, "{:?}", a.ruling);
    assert!(a.ruling.sentence.contains("optimum of its class"), "{}", a.ruling.sentence);
}

/// A model without LSA weights (`weights: None`) is judged by behaviour alone: the GD construction, passed as a
/// plain predictor, is still identified as GD, without a residual check, and the sentence says so.
#[test]
fn without_weights_the_rules_judge_by_behaviour_alone() {
    let s = sampler(1.0);
    let refs = References::build(&s, 11, 20_000).unwrap();
    let held = Held { sampler: &s, seed: 11, count: 4000 };
    let a = assess_predictors(
        &[dualform_harness::judge::attribution::Subject::any(Predictor::Net(refs.gd()))],
        None,
        &refs,
        held,
    );
    assert_eq!(a.ruling.outcome, Outcome::ImplementsGd, "{:?}", a.ruling);
    assert!(a.ruling.sentence.contains("by behaviour alone"), "{}", a.ruling.sentence);
    assert!(a.residual.is_none() && a.residual_per_seed.is_empty());
    assert!(a.ruling.checks.iter().all(|c| c.name != "functional_residual"));
    let with = assess(&[refs.gd()], &refs, held).unwrap();
    assert!(!with.ruling.sentence.contains("by behaviour alone"));
    assert!(with.ruling.checks.iter().any(|c| c.name == "functional_residual"));
}

/// `gamma` scaled by the factor that minimises the loss on tuning tasks (exact: the loss is quadratic in it).
fn tuned_scale(s: &TaskSampler, gamma: &[f64]) -> Vec<f64> {
    let c = dualform_harness::judge::eval::best_scale(&m_net(6, &diagonal(gamma), s.n), s, 11, streams::TUNE, 20_000);
    gamma.iter().map(|g| g * c).collect()
}
