//! Gradient descent in activation space: every side of the identity "one LSA layer = one GD step", exactly.

use crate::common::*;
use dualform::gd::{dual_step, dual_steps, gd_step, gd_steps, gdpp_step, gradient, loss, predict};
use dualform::*;
use nalgebra::SMatrix;
use proptest::prelude::*;

pub(crate) const F64_REL: f64 = 1e-12;
/// f32 LSA step against the f64 primal step, relative to the largest output: measured worst 4.4e-7 over 100 cases
/// at D = 10, N = 10 (`one_layer_f32_error_is_within_bound` prints it); the bound leaves a margin of ~20x.
const F32_REL: f64 = 1e-5;

/// A random regression problem: W0, inputs in (-1, 1), targets from a random teacher.
struct Task<const D: usize, const DY: usize, const N: usize> {
    w0: SMatrix<f64, DY, D>,
    xs: [[f64; D]; N],
    ys: [[f64; DY]; N],
    xq: [f64; D],
    eta: f64,
}

fn task<const D: usize, const DY: usize, const N: usize>(g: &mut Gen) -> Task<D, DY, N> {
    let teacher = g.matrix::<DY, D>(1.0);
    let xs: [[f64; D]; N] = core::array::from_fn(|_| g.array(-1.0, 1.0));
    let ys = xs.map(|x| predict(&teacher, &x));
    Task { w0: g.matrix(1.0), xs, ys, xq: g.array(-1.0, 1.0), eta: g.uniform(0.1, 3.0) }
}

/// Context tokens `(x_j, y_j)` and the query token `(x_q, -W0 x_q)`.
fn tokens<T: Real, const D: usize, const DY: usize, const E: usize, const N: usize>(
    t: &Task<D, DY, N>,
) -> ([[T; E]; N], [T; E]) {
    let ctx = core::array::from_fn(|j| cast(&token_from::<f64, D, DY, E>(&t.xs[j], &t.ys[j])));
    let q = cast(&token_from::<f64, D, DY, E>(&t.xq, &predict(&t.w0, &t.xq).map(|v| -v)));
    (ctx, q)
}

/// The shared routine: one constructed LSA layer against one primal GD step, for every token, f64 and f32.
fn check_one_step<const D: usize, const DY: usize, const E: usize, const N: usize>(seed: u64) -> f64 {
    let mut g = Gen::new(seed);
    let t = task::<D, DY, N>(&mut g);
    let w1 = gd_step(&t.w0, &t.xs, &t.ys, t.eta).unwrap();
    // What GD says every token becomes: x unchanged, y_j - (W1 - W0) x_j; the query's prediction W1 x_q.
    let dw = w1 - t.w0;
    let mut want = Vec::new();
    for (x, y) in t.xs.iter().zip(&t.ys) {
        let shift = predict(&dw, x);
        let y1: [f64; DY] = core::array::from_fn(|i| y[i] - shift[i]);
        want.extend(token_from::<f64, D, DY, E>(x, &y1));
    }
    want.extend(token_from::<f64, D, DY, E>(&t.xq, &predict(&w1, &t.xq).map(|v| -v)));

    let layer = gd_layer::<f64, D, DY, E>(&t.w0, t.eta, N).unwrap();
    let (mut c, mut q) = tokens::<f64, D, DY, E, N>(&t);
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    let label = format!("D={D} DY={DY} N={N} seed={seed}");
    assert_close(&format!("{label}: LSA (associative) vs GD step"), &flat(&c, &q), &want, F64_REL);
    let (mut c, mut q) = tokens::<f64, D, DY, E, N>(&t);
    let mut scratch = Box::new(LinearScratch::<f64, N, E, E, 1>::new());
    lsa_quadratic(&layer, Mask::Full, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
    assert_close(&format!("{label}: LSA (quadratic) vs GD step"), &flat(&c, &q), &want, F64_REL);
    // The prediction against GD's, relative to the size of the tokens it is computed from: a prediction near 0 is a
    // difference of O(1) terms, so its own size is no yardstick (seed 18242817285645520641 gave 1.7e-4 with an
    // error of 3.6e-12 of that, 6e-16 of the tokens).
    let pred = prediction::<f64, E, DY>(&q);
    let token_scale = scale(&want);
    for (p, w) in pred.iter().zip(predict(&w1, &t.xq).iter()) {
        let r = (p - w).abs() / token_scale;
        assert!(r <= F64_REL, "{label}: prediction: got {p:e}, want {w:e}, |diff| / token scale = {r:e}");
    }

    let l32 = gd_layer::<f32, D, DY, E>(&t.w0.map(|v| v as f32), t.eta as f32, N).unwrap();
    let (mut c, mut q) = tokens::<f32, D, DY, E, N>(&t);
    lsa_associative(&l32, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    assert_close(&format!("{label}: f32 LSA vs f64 GD"), &flat(&c, &q), &want, F32_REL)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn one_lsa_layer_is_one_gd_step(seed in any::<u64>()) {
        check_one_step::<10, 1, 11, 10>(seed);
        check_one_step::<3, 2, 5, 6>(seed);
        check_one_step::<7, 4, 11, 20>(seed);
        check_one_step::<1, 1, 2, 1>(seed);
    }

    #[test]
    fn dual_steps_are_primal_steps(seed in any::<u64>(), k in 1usize..6) {
        let mut g = Gen::new(seed);
        let t = task::<5, 3, 9>(&mut g);
        let eta = t.eta / 4.0;
        let primal = predict(&gd_steps(&t.w0, &t.xs, &t.ys, eta, k).unwrap(), &t.xq);
        let dual = dual_steps(&t.w0, &t.xs, &t.ys, &t.xq, eta, k).unwrap();
        assert_close("k dual steps vs k primal steps", &dual, &primal, F64_REL);
    }

    #[test]
    fn irie_dual_form_equals_primal(seed in any::<u64>()) {
        let mut g = Gen::new(seed);
        let t = task::<6, 2, 12>(&mut g);
        let es = error_signals(&t.w0, &t.xs, &t.ys, t.eta).unwrap();
        let x: [f64; 6] = g.array(-1.0, 1.0);
        let primal = irie_primal(&t.w0, &t.xs, &es, &x);
        assert_close("Irie dual vs primal", &irie_dual(&t.w0, &t.xs, &es, &x), &primal, F64_REL);
        // The error signals are those of a GD step: W0 + sum e_t x_t^T = gd_step(W0).
        let w1 = gd_step(&t.w0, &t.xs, &t.ys, t.eta).unwrap();
        assert_close("Irie weights vs GD step", &primal, &predict(&w1, &x), F64_REL);
    }
}

#[test]
fn one_layer_f32_error_is_within_bound() {
    let worst = (0..100).map(check_one_step::<10, 1, 11, 10>).fold(0.0, f64::max);
    eprintln!("worst f32 relative error of one constructed LSA layer vs the f64 GD step: {worst:e}");
}

#[test]
fn reference_check_100_shared_layers_are_100_gd_steps() {
    // The reference code's own check: d_in = 12, d_out = 8, N = 45, eta = 1, random W0, one shared layer applied
    // 100 times against 100 GD steps, both in f32.
    const D: usize = 12;
    const DY: usize = 8;
    const E: usize = 20;
    const N: usize = 45;
    let mut g = Gen::new(2022);
    let t = task::<D, DY, N>(&mut g);
    let w0 = t.w0.map(|v| v as f32);
    let xs = t.xs.map(|x| cast::<f32, D>(&x));
    let ys = t.ys.map(|y| cast::<f32, DY>(&y));
    let xq = cast::<f32, D>(&t.xq);
    let gd = predict(&gd_steps(&w0, &xs, &ys, 1.0f32, 100).unwrap(), &xq);
    let layer = gd_layer::<f32, D, DY, E>(&w0, 1.0, N).unwrap();
    let mut ctx: [[f32; E]; N] = core::array::from_fn(|j| token_from(&xs[j], &ys[j]));
    let mut q = token_from(&xq, &predict(&w0, &xq).map(|v| -v));
    let lsa = run_stack::<_, _, E, N, DY>(&mut [&layer], 100, &Update::residual(), &mut ctx, &mut q, None).unwrap();
    let diff = gd.iter().zip(&lsa).map(|(a, b)| ((a - b) as f64).powi(2)).sum::<f64>().sqrt();
    let norm = gd.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    eprintln!("100 shared LSA layers vs 100 GD steps (f32): |pred diff| = {diff:e} (|pred| = {norm:.3})");
    // The authors' notebook computes this difference (constructed_token_setup.ipynb, cell "Running the constructed
    // Transformer forward", after cell "Gradient descent on linear regression" with these settings and seed 0:
    // "Differences in final predictions"); it is published without outputs, and about 2.6e-6 is the value this
    // project recorded for it. Require the same order of magnitude, not a looser "close enough".
    assert!(diff < 2e-5, "f32 difference {diff:e}");
    // And in f64 the two agree to rounding.
    let gd64 = predict(&gd_steps(&t.w0, &t.xs, &t.ys, 1.0, 100).unwrap(), &t.xq);
    let l64 = gd_layer::<f64, D, DY, E>(&t.w0, 1.0, N).unwrap();
    let (mut c, mut q) = tokens::<f64, D, DY, E, N>(&Task { eta: 1.0, ..t });
    let lsa64 = run_stack::<_, _, E, N, DY>(&mut [&l64], 100, &Update::residual(), &mut c, &mut q, None).unwrap();
    assert_close("100 steps f64", &lsa64, &gd64, 1e-11);
}

#[test]
fn k_distinct_layers_are_k_gd_steps_with_their_rates() {
    const D: usize = 4;
    const DY: usize = 2;
    const E: usize = 6;
    const N: usize = 8;
    let mut g = Gen::new(31);
    let t = task::<D, DY, N>(&mut g);
    let etas = [0.7, 1.3, 0.2, 2.0, 0.9];
    let mut w = t.w0;
    for &eta in &etas {
        w = gd_step(&w, &t.xs, &t.ys, eta).unwrap();
    }
    let mut layers = gd_stack::<f64, D, DY, E, 5>(&t.w0, &etas, N).unwrap();
    let (mut c, mut q) = tokens::<f64, D, DY, E, N>(&t);
    let mut readout = [[0.0; DY]; 5];
    let pred = run_stack(&mut layers, 1, &Update::residual(), &mut c, &mut q, Some(&mut readout)).unwrap();
    assert_close("5 distinct layers vs 5 steps", &pred, &predict(&w, &t.xq), F64_REL);
    // The per-layer readout is the K-step GD curve.
    let mut w = t.w0;
    for (k, &eta) in etas.iter().enumerate() {
        w = gd_step(&w, &t.xs, &t.ys, eta).unwrap();
        assert_close(&format!("readout after layer {k}"), &readout[k], &predict(&w, &t.xq), F64_REL);
    }
}

#[test]
fn gdpp_layers_equal_the_gdpp_reference() {
    const D: usize = 5;
    const DY: usize = 2;
    const E: usize = 7;
    const N: usize = 11;
    let mut g = Gen::new(41);
    let t = task::<D, DY, N>(&mut g);
    let (eta, gamma) = (0.8, 0.05);
    let (mut xs, mut ys, mut xq) = (t.xs, t.ys, t.xq);
    let mut yq = predict(&t.w0, &t.xq).map(|v| -v);
    let layer = gdpp_layer::<f64, D, DY, E>(&t.w0, eta, gamma, N).unwrap();
    let (mut c, mut q) = tokens::<f64, D, DY, E, N>(&t);
    for step in 0..3 {
        gdpp_step(&t.w0, &mut xs, &mut ys, &mut xq, &mut yq, eta, gamma).unwrap();
        lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
        let want: Vec<f64> = xs
            .iter()
            .zip(&ys)
            .map(|(x, y)| token_from::<f64, D, DY, E>(x, y))
            .chain(core::iter::once(token_from::<f64, D, DY, E>(&xq, &yq)))
            .flatten()
            .collect();
        assert_close(&format!("GD++ layer {step} vs reference"), &flat(&c, &q), &want, F64_REL);
    }
    // gamma = 0 is plain GD.
    let plain = gd_layer::<f64, D, DY, E>(&t.w0, eta, N).unwrap();
    let zero_gamma = gdpp_layer::<f64, D, DY, E>(&t.w0, eta, 0.0, N).unwrap();
    let (mut c1, mut q1) = tokens::<f64, D, DY, E, N>(&t);
    let (mut c2, mut q2) = tokens::<f64, D, DY, E, N>(&t);
    lsa_associative(&plain, Mask::Full, &Update::residual(), &mut c1, &mut q1).unwrap();
    lsa_associative(&zero_gamma, Mask::Full, &Update::residual(), &mut c2, &mut q2).unwrap();
    assert_eq!((c1, q1), (c2, q2));
}

#[test]
fn single_dual_step_moves_targets_like_the_primal_step() {
    let mut g = Gen::new(51);
    let t = task::<4, 1, 7>(&mut g);
    let w1 = gd_step(&t.w0, &t.xs, &t.ys, t.eta).unwrap();
    let mut ys = t.ys;
    let mut yq = [0.0];
    dual_step(&t.w0, &t.xs, &mut ys, &t.xq, &mut yq, t.eta).unwrap();
    for (j, (y1, (x, y))) in ys.iter().zip(t.xs.iter().zip(&t.ys)).enumerate() {
        let want = y[0] - predict(&(w1 - t.w0), x)[0];
        assert!((y1[0] - want).abs() < 1e-12, "target {j}");
    }
    assert!((yq[0] + predict(&(w1 - t.w0), &t.xq)[0]).abs() < 1e-12);
}

#[test]
fn gradient_and_loss_match_finite_differences() {
    let mut g = Gen::new(61);
    let t = task::<3, 2, 5>(&mut g);
    let grad = gradient(&t.w0, &t.xs, &t.ys).unwrap();
    let h = 1e-6;
    for i in 0..2 {
        for j in 0..3 {
            let (mut wp, mut wm) = (t.w0, t.w0);
            wp[(i, j)] += h;
            wm[(i, j)] -= h;
            let fd = (loss(&wp, &t.xs, &t.ys).unwrap() - loss(&wm, &t.xs, &t.ys).unwrap()) / (2.0 * h);
            assert!((fd - grad[(i, j)]).abs() < 1e-7, "dL/dW[{i},{j}]: fd {fd} vs {}", grad[(i, j)]);
        }
    }
}

#[test]
fn reader_recovers_constructions_and_rejects_random_weights() {
    const D: usize = 10;
    const E: usize = 11;
    const N: usize = 10;
    let mut g = Gen::new(81);
    let w0 = g.matrix::<1, D>(1.0);
    let layer = gd_layer::<f64, D, 1, E>(&w0, 6.06, N).unwrap();
    let fit: GdFit<f64, D, 1> = read_gd(&layer.heads[0], N).unwrap();
    assert!(fit.residual < 1e-14, "residual {}", fit.residual);
    assert!((fit.eta - 6.06).abs() < 1e-12);
    assert_close("W0", fit.w0.as_slice(), w0.as_slice(), 1e-14);
    // Moving scale between W_Q and P leaves the function and the reading unchanged.
    let mut h = layer.heads[0].clone();
    h.w_q *= 3.0;
    h.p /= 3.0;
    let fit2: GdFit<f64, D, 1> = read_gd(&h, N).unwrap();
    assert!(fit2.residual < 1e-14 && (fit2.eta - 6.06).abs() < 1e-12 && (fit2.scale - 3.0).abs() < 1e-14);
    // A small perturbation gives a small residual; random weights a residual of order one.
    let mut near = layer.heads[0].clone();
    near.w_k[(2, 3)] += 0.01;
    let r_near = read_gd::<f64, E, E, E, D, 1>(&near, N).unwrap().residual;
    let random = g.layer::<E, E, E, 1>();
    let r_rand = read_gd::<f64, E, E, E, D, 1>(&random.heads[0], N).unwrap().residual;
    eprintln!("GD-family residual: perturbed {r_near:e}, random {r_rand:e}");
    assert!(r_near > 1e-4 && r_near < 1e-2, "perturbed: {r_near}");
    assert!(r_rand > 0.5, "random: {r_rand}");
}

/// The functional residual ignores the blocks that never reach the query's prediction, and the two parts add up
/// to the whole residual.
#[test]
fn functional_residual_ignores_dead_blocks() {
    const D: usize = 4;
    const E: usize = 5;
    const N: usize = 8;
    let layer = gd_layer::<f64, D, 1, E>(&SMatrix::zeros(), 2.0, N).unwrap();
    let mut m = MergedHead::from_head(&layer.heads[0]);
    // Dead: A's y column and B's x rows.
    m.a[(1, D)] = 3.0;
    m.b[(0, 2)] = -4.0;
    let fit: GdFit<f64, D, 1> = read_gd_merged(&m, N).unwrap();
    assert!(fit.functional < 1e-15, "dead blocks leaked into the functional residual: {}", fit.functional);
    assert!(fit.dead > 1.0 && fit.residual > 1.0, "{fit:?}");
    assert!((fit.residual.powi(2) - fit.functional.powi(2) - fit.dead.powi(2)).abs() < 1e-12);
    // Functional: an entry of A's x columns (the key's y against the query's x) and of B's y row.
    let mut f = MergedHead::from_head(&layer.heads[0]);
    f.a[(D, 1)] = 0.5;
    f.b[(D, 3)] = 0.01;
    let fit: GdFit<f64, D, 1> = read_gd_merged(&f, N).unwrap();
    assert!(fit.dead < 1e-15 && fit.functional > 0.1, "{fit:?}");
    assert!((fit.residual - fit.functional).abs() < 1e-15);
}

#[test]
fn bad_inputs_are_errors() {
    let w0 = SMatrix::<f64, 1, 2>::zeros();
    assert_eq!(gd_layer::<f64, 2, 1, 3>(&w0, 1.0, 0), Err(Error::Empty));
    assert!(matches!(gd_layer::<f64, 2, 1, 3>(&w0, f64::NAN, 4), Err(Error::InvalidParameter(_))));
    assert!(matches!(gdpp_layer::<f64, 2, 1, 3>(&w0, 1.0, f64::INFINITY, 4), Err(Error::InvalidParameter(_))));
    let xs: [[f64; 2]; 0] = [];
    let ys: [[f64; 1]; 0] = [];
    assert_eq!(gradient(&w0, &xs, &ys), Err(Error::Empty));
    assert_eq!(loss(&w0, &xs, &ys), Err(Error::Empty));
    assert_eq!(read_gd::<f64, 3, 3, 3, 2, 1>(&Head::zeros(), 5), Err(Error::ZeroNormaliser));
    assert_eq!(read_gd::<f64, 3, 3, 3, 2, 1>(&Head::zeros(), 0), Err(Error::Empty));
}

/// `to_head` is a factorisation of the merged matrices: merging it gives them back bit for bit.
#[test]
fn merged_head_round_trips_through_to_head() {
    let m = MergedHead::from_head(&Gen::new(7).layer::<5, 5, 5, 1>().heads[0]);
    let back = MergedHead::from_head(&m.to_head());
    assert_eq!(back, m);
    let m32 = MergedHead::<f32, 5> { a: m.a.map(|v| v as f32), b: m.b.map(|v| v as f32) };
    assert_eq!(MergedHead::from_head(&m32.to_head()), m32);
}

/// The seed that once failed the prediction check by measuring a near-zero prediction against its own size.
#[test]
fn near_zero_prediction_is_checked_against_the_token_scale() {
    check_one_step::<10, 1, 11, 10>(18242817285645520641);
}
