//! Unit tests of `judge::baselines` (`src/judge/baselines.rs`).

use dualform_harness::experiments::settings::TaskArgs;
use dualform_harness::judge::baselines::*;
use dualform_harness::judge::eval::{gd_net, loss, tune_gd_rate};
use dualform_harness::net::Net;
use dualform_harness::tasks::TaskSampler;
use dualform_harness::tasks::{streams, ClosedForm};
use nalgebra::DMatrix;

fn anisotropic(ratio: f64) -> TaskSampler {
    TaskArgs::anisotropic(10, 10, ratio).sampler()
}

/// The closed-form preconditioner is checked against the fitted one (its derivation in `tasks::ClosedForm`),
/// and the fitted class optimum comes out diagonal and equal to it, as the derivation says; the closed-form
/// losses agree with held-out losses of the heads.
#[test]
fn closed_form_preconditioner_is_the_fitted_class_optimum() {
    let s = anisotropic(10.0);
    let cf = ClosedForm::of(&s).unwrap();
    let full = fit_m(&s, Class::Full, 5, streams::TUNE, 40_000);
    let diag = fit_m(&s, Class::Diagonal, 5, streams::TUNE, 40_000);
    // The fit is sharp where the variance is large and noisy where it is small (a reference fit with 400 000
    // tasks agreed within 1% everywhere): 5% on the five widest coordinates, 20% on all.
    for i in 0..10 {
        let rel = |v: f64| (v - cf.preconditioner[i]).abs() / cf.preconditioner[i];
        let bound = if i < 5 { 0.05 } else { 0.2 };
        assert!(rel(diag[(i, i)]) < bound, "gamma_{i}: fitted {} closed {}", diag[(i, i)], cf.preconditioner[i]);
        assert!(rel(full[(i, i)]) < bound, "M_{i}{i}: fitted {} closed {}", full[(i, i)], cf.preconditioner[i]);
    }
    let off = (0..10).flat_map(|i| (0..10).filter(move |&j| j != i).map(move |j| (i, j)));
    let max_off = off.map(|(i, j)| full[(i, j)].abs()).fold(0.0, f64::max);
    assert!(max_off < 0.1 * cf.preconditioner.iter().cloned().fold(0.0, f64::max), "off-diagonal {max_off}");
    // Losses on held-out tasks against the closed forms.
    let held = |net: &Net| loss(net, &s, 5, streams::EVAL, 40_000).mean;
    let pgd = held(&m_net(10, &diagonal(&cf.preconditioner), 10));
    let gd = held(&gd_net(10, cf.eta as f32, 10).unwrap());
    assert!((pgd - cf.preconditioned_loss).abs() / cf.preconditioned_loss < 0.03, "{pgd} vs {cf:?}");
    assert!((gd - cf.loss).abs() / cf.loss < 0.03, "{gd} vs {cf:?}");
    assert!(pgd < 0.97 * gd, "preconditioning must help at variance ratio 10: {pgd} vs {gd}");
    let fitted = held(&m_net(10, &full, 10));
    assert!((fitted - pgd).abs() / pgd < 0.01, "fitted optimum {fitted} vs closed form {pgd}");
    // The tuned GD rate agrees with the closed form.
    let eta = tune_gd_rate(&s, 5, streams::TUNE, 40_000).unwrap();
    assert!((eta - cf.eta).abs() / cf.eta < 0.03, "{eta} vs {}", cf.eta);
}

#[test]
fn isotropic_closed_form_preconditioner_is_plain_gd() {
    let cf = ClosedForm::of(&anisotropic(1.0)).unwrap();
    for g in &cf.preconditioner {
        assert!((g - cf.eta).abs() < 1e-12 * cf.eta);
    }
    assert!((cf.preconditioned_loss - cf.loss).abs() < 1e-12);
    let r = ClosedForm::new(10, 10, 1.0);
    assert!((r.eta - cf.eta).abs() < 1e-9 && (r.loss - cf.loss).abs() < 1e-12);
}

/// The head of `M = eta I` is the GD construction (up to rounding: the rate sits in `A` instead of `B`).
#[test]
fn m_head_of_a_scaled_identity_is_the_gd_construction() {
    let eta = 6.0;
    let m = DMatrix::<f64>::identity(10, 10) * eta;
    let a = m_net(10, &m, 10);
    let b = gd_net(10, eta as f32, 10).unwrap();
    let s = TaskSampler::new(10, 10, 1.0);
    let (la, lb) = (loss(&a, &s, 1, 0, 256).mean, loss(&b, &s, 1, 0, 256).mean);
    assert!((la - lb).abs() < 1e-6 * lb, "{la} vs {lb}");
    assert_ne!(la, loss(&m_net(10, &(m * 1.01), 10), &s, 1, 0, 256).mean);
}

/// Ridge at penalty 0 on a noiseless task with N >= d recovers the task exactly; a large penalty shrinks.
#[test]
fn ridge_recovers_noiseless_tasks_and_shrinks() {
    let s = TaskSampler::new(4, 12, 1.0);
    let mut rng = dualform_harness::tasks::stream_rng(3, 0);
    let mut ctx = [[0.0f32; 5]; 12];
    let (q, y) = s.sample(&mut rng, &mut ctx);
    let ctx = ctx.as_flattened();
    let (pred, _) = Predictor::Ridge { lambda: 0.0, d: 4 }.predict_with_sensitivity(ctx, &q, &mut None);
    assert!((pred - y as f64).abs() < 1e-5, "{pred} vs {y}");
    let w0 = ridge_weights(ctx, 4, 0.0).norm();
    let w1 = ridge_weights(ctx, 4, 10.0).norm();
    assert!(w1 < 0.5 * w0, "{w1} vs {w0}");
    // Label noise makes a positive penalty the better one.
    let noisy = TaskSampler { noise: 0.5, ..TaskSampler::new(10, 10, 1.0) };
    assert!(tune_ridge(&noisy, 1, 0, 2000) > 0.0);
    assert_eq!(tune_ridge(&s, 1, 0, 500), 0.0);
}
