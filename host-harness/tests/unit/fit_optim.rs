//! Unit tests of `fit::optim` (`src/fit/optim.rs`).

use dualform_harness::fit::optim::*;
use dualform_harness::model::Model;
use dualform_harness::model::{GdFamily, GdKind};
use dualform_harness::net::Forward;
use dualform_harness::tasks::streams;
use dualform_harness::tasks::TaskSampler;

#[test]
fn adam_and_clipping_follow_their_definitions() {
    let mut p = vec![1.0f32, -2.0];
    let mut s = AdamState::new(2);
    s.step(&mut p, &[0.5, -0.25], &AdamW::reference(0.1));
    // First step: m / c1 = g, v / c2 = g^2, so each parameter moves by lr * g / (|g| + eps) = lr * sign(g).
    assert!((p[0] - 0.9).abs() < 1e-6 && (p[1] + 1.9).abs() < 1e-6, "{p:?}");
    let mut g = vec![3.0f32, 4.0];
    assert_eq!(clip_global_norm(&mut g, 1.0), 5.0);
    assert!((g[0] - 0.6).abs() < 1e-7 && (g[1] - 0.8).abs() < 1e-7);
    let mut small = vec![0.3f32, 0.4];
    clip_global_norm(&mut small, 1.0);
    assert_eq!(small, vec![0.3, 0.4]);
}

#[test]
fn the_solver_solves_and_refuses_singular_systems() {
    let x = solve(&[4.0, 1.0, 1.0, 3.0], &[1.0, 2.0], 2).unwrap();
    assert!((4.0 * x[0] + x[1] - 1.0).abs() < 1e-12 && (x[0] + 3.0 * x[1] - 2.0).abs() < 1e-12);
    assert!(solve(&[1.0, 2.0, 2.0, 4.0], &[1.0, 1.0], 2).is_none());
}

#[test]
fn fitting_one_gd_step_finds_the_exact_optimum() {
    // One step from W0 = 0 is linear in eta: the optimum is sum(a y) / sum(a^2) with a the prediction at rate 1.
    let sampler = TaskSampler::new(10, 10, 1.0);
    let mut m = GdFamily::new(10, GdKind::SharedRate, 1, 10, 1.0).unwrap();
    let report = fit_least_squares(&mut m, &sampler, 5, streams::TUNE, 4000, 20, None);
    let unit = GdFamily::new(10, GdKind::SharedRate, 1, 10, 1.0).unwrap();
    let sums = sampler.par_chunks::<(f64, f64)>(
        5,
        streams::TUNE,
        4000,
        || (0.0, 0.0),
        |acc, c, q, y| {
            let a = unit.net().predict(c, q, &mut unit.net().workspace(10), None) as f64;
            acc.0 += a * y as f64;
            acc.1 += a * a;
        },
    );
    let (ay, aa) = sums.iter().fold((0.0, 0.0), |s, c| (s.0 + c.0, s.1 + c.1));
    assert!(((m.params()[0] as f64) / (ay / aa) - 1.0).abs() < 1e-4, "{} vs {}", m.params()[0], ay / aa);
    assert!(report.final_loss < report.initial_loss && report.converged, "{report:?}");
}
