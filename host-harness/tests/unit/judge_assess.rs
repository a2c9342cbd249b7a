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

/// Predictors built from GD and least squares on the context, for the closeness rule: each is far from GD in a
/// way that an alternative-relative rule alone can miss.
enum Far {
    /// `2 y_LS - y_GD`: GD reflected through least squares (at N = d without noise, exactly GD's loss).
    Reflected,
    /// GD's prediction times a factor.
    Scaled(f64),
    /// GD on the tasks whose query has a positive first input, least squares on the others.
    Half,
}

struct FarFromGd<'a> {
    gd: &'a Net,
    d: usize,
    kind: Far,
}

impl dualform_harness::judge::baselines::Sensitive for FarFromGd<'_> {
    fn new_workspace(&self, n: usize) -> Box<dyn std::any::Any + Send> {
        self.gd.new_workspace(n)
    }

    fn sensitivity(&self, ctx: &[f32], query: &[f32], ws: &mut Box<dyn std::any::Any + Send>) -> (f64, Vec<f64>) {
        let (y_gd, g_gd) = self.gd.sensitivity(ctx, query, ws);
        let w = dualform_harness::judge::baselines::ridge_weights(ctx, self.d, 0.0);
        let y_ls: f64 = (0..self.d).map(|j| w[j] * query[j] as f64).sum();
        match self.kind {
            Far::Reflected => (2.0 * y_ls - y_gd, (0..self.d).map(|j| 2.0 * w[j] - g_gd[j]).collect()),
            Far::Scaled(c) => (c * y_gd, g_gd.iter().map(|g| c * g).collect()),
            Far::Half if query[0] > 0.0 => (y_gd, g_gd),
            Far::Half => (y_ls, w.as_slice().to_vec()),
        }
    }

    fn prediction(&self, ctx: &[f32], query: &[f32], ws: &mut Box<dyn std::any::Any + Send>) -> f64 {
        self.sensitivity(ctx, query, ws).0
    }
}

/// Rule 2's absolute closeness: models far from GD are never said to implement it, even judged on behaviour alone
/// (no weights to read), where a rule that only asks to be closer to GD than to each alternative, with the
/// alternatives closer to GD than the model set aside, says "implements GD" for the reflection `2 y_LS - y_GD`. GD
/// scaled by 1.5 is GD at 1.5 times the rate (the rate-aware verdict says so); scaled by -1 it is nothing.
#[test]
fn models_far_from_gd_are_never_said_to_implement_it() {
    use dualform_harness::judge::attribution::Subject;
    let s = sampler(1.0);
    let refs = References::build(&s, 11, 20_000).unwrap();
    let held = Held { sampler: &s, seed: 11, count: 4000 };
    let judge = |kind: Far| {
        let model = FarFromGd { gd: refs.gd(), d: 6, kind };
        let subjects = [Subject::any(Predictor::Net(&model))];
        let a = assess_predictors(&subjects, None, &refs, held);
        let other = at_own_rate(&subjects, None, &refs, held, &a).unwrap();
        (a, other.map(|o| (o.role, o.scale)))
    };
    let failed =
        |a: &Assessment| a.ruling.checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect::<Vec<_>>();

    let (reflected, other) = judge(Far::Reflected);
    let gd_loss = reflected.agreements[0].loss.mean;
    eprintln!("reflected: loss {} (GD {gd_loss}): {}", reflected.loss.mean, reflected.ruling.sentence);
    assert!((reflected.loss.mean - gd_loss).abs() / gd_loss < 0.03, "the reflection has GD's loss at N = d");
    assert!(!reflected.ruling.identified(), "{:?}", reflected.ruling);
    let f = failed(&reflected);
    assert!(
        f.contains(&"model_cos_to_gd".to_string()) && f.contains(&"preds_diff_to_gd_relative".to_string()),
        "{f:?}"
    );
    assert!(other.is_none(), "{other:?}");

    let (scaled, other) = judge(Far::Scaled(1.5));
    eprintln!("GD x 1.5: {}", scaled.ruling.sentence);
    assert!(!scaled.ruling.identified(), "{:?}", scaled.ruling);
    assert!(failed(&scaled).contains(&"preds_diff_to_gd_relative".to_string()), "{:?}", failed(&scaled));
    let (role, scale) = other.expect("GD at 1.5 times the tuned rate is GD at its own rate");
    assert_eq!(role, dualform_harness::judge::verdict::Role::Gd);
    assert!((scale - 1.5).abs() < 1e-3, "{scale}");

    let (negated, other) = judge(Far::Scaled(-1.0));
    eprintln!("GD x -1: {}", negated.ruling.sentence);
    assert!(!negated.ruling.identified() && other.is_none(), "{:?} {other:?}", negated.ruling);
    assert!(failed(&negated).contains(&"model_cos_to_gd".to_string()));

    let (half, other) = judge(Far::Half);
    eprintln!("half GD, half least squares: {}", half.ruling.sentence);
    assert!(!half.ruling.identified() && other.is_none(), "{:?} {other:?}", half.ruling);

    // GD itself, on behaviour alone, still implements GD.
    let (gd, _) = judge(Far::Scaled(1.0));
    assert_eq!(gd.ruling.outcome, Outcome::ImplementsGd, "{:?}", gd.ruling);
}
