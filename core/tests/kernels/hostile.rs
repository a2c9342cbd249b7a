//! Hostile inputs (the probe of the core's promises): counts that would overflow, NaN through clipping and the
//! streaming drift. Each test failed before its fix.

use crate::common::*;
use dualform::*;

// Saturating token counts: a unit test in `attention/associative.rs` (the count is private).

/// Clipping keeps NaN as NaN (the docs: non-finite inputs propagate) and clips infinities to the bound, also at
/// a bound of 0.
#[test]
fn clipping_propagates_nan_and_bounds_infinities() {
    let rule = Update { scale: 1.0, first: 0, clip: Some(5.0f32) };
    let mut h = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 3.0, -7.0];
    rule.apply(&mut h, &[0.0; 5]);
    assert!(h[0].is_nan(), "{h:?}");
    assert_eq!(&h[1..], &[5.0, -5.0, 3.0, -5.0]);
    let zero = Update { scale: 1.0, first: 0, clip: Some(0.0f32) };
    let mut q = [f32::NAN, 2.0];
    zero.apply(&mut q, &[0.0; 2]);
    assert!(q[0].is_nan() && q[1] == 0.0, "{q:?}");
}

/// A window holding a NaN token reports a NaN drift, not 0.
#[test]
fn drift_of_a_window_with_a_nan_token_is_nan() {
    let mut g = Gen::new(32);
    let layer = cast_layer::<f32, 4, 4, 4, 1>(&g.layer::<4, 4, 4, 1>());
    let mut stream = StreamingContext::<f32, 4, 4, 4, 1, 3>::new(&layer, 0);
    stream.push([0.1, 0.2, 0.3, 0.4]).unwrap();
    stream.push([f32::NAN, 0.0, 0.0, 1.0]).unwrap();
    assert!(stream.drift().is_nan(), "drift {}", stream.drift());
}

/// Key width 0: every logit is 0, so softmax attention averages the values uniformly instead of failing.
#[test]
fn softmax_attention_with_key_width_zero_is_a_uniform_average() {
    let mut g = Gen::new(33);
    let mut layer = g.layer::<3, 0, 3, 1>();
    layer.heads[0].w_v = nalgebra::SMatrix::identity();
    layer.heads[0].p = nalgebra::SMatrix::identity();
    let ctx0 = g.tokens::<3, 4>();
    let (mut ctx, mut q) = (ctx0, [0.0f64; 3]);
    let mut scratch = LinearScratch::new();
    softmax_attention(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q, &mut scratch).unwrap();
    for i in 0..3 {
        let mean = ctx0.iter().map(|e| e[i]).sum::<f64>() / 4.0;
        assert!((q[i] - mean).abs() < 1e-15, "{q:?}");
    }
}

/// The reader refuses `DY = 0`, and a head whose rate is tiny reads back with an infinite `W0` but a finite
/// residual (the residual does not depend on `W0`).
#[test]
fn reader_refuses_no_targets_and_keeps_the_residual_finite_for_tiny_rates() {
    let m = MergedHead::<f64, 3>::zeros();
    assert!(matches!(read_gd_merged::<f64, 3, 3, 0>(&m, 4), Err(Error::InvalidParameter(_))));
    let layer = gd_layer::<f64, 2, 1, 3>(&nalgebra::SMatrix::zeros(), 1e-308, 4).unwrap();
    let mut h = MergedHead::from_head(&layer.heads[0]);
    h.b[(2, 0)] = 1.0; // a W0 entry far larger than c
    let fit: GdFit<f64, 2, 1> = read_gd_merged(&h, 4).unwrap();
    assert!(fit.residual.is_finite() && fit.residual < 1e-12, "{fit:?}");
    assert!(fit.w0[(0, 0)].is_infinite());
}

/// The reader's norms do not overflow: a dead entry of 1e200 (whose square is beyond f64) reads back as a residual
/// 1e200 times that of the same head with the entry 1, not as infinity.
#[test]
fn reader_norms_survive_entries_whose_squares_overflow() {
    let layer = gd_layer::<f64, 2, 1, 3>(&nalgebra::SMatrix::zeros(), 0.5, 4).unwrap();
    let fit_with = |v: f64| {
        let mut h = MergedHead::from_head(&layer.heads[0]);
        h.b[(0, 1)] = v; // a dead block: never reaches the prediction
        read_gd_merged::<f64, 3, 2, 1>(&h, 4).unwrap()
    };
    let (one, huge) = (fit_with(1.0), fit_with(1e200));
    assert!(huge.residual.is_finite() && huge.dead.is_finite(), "{huge:?}");
    assert!((huge.residual / one.residual / 1e200 - 1.0).abs() < 1e-12, "{huge:?} vs {one:?}");
    assert!((huge.dead / one.dead / 1e200 - 1.0).abs() < 1e-12);
    assert!(huge.functional < 1e-15);
    let inf = fit_with(f64::INFINITY);
    assert_eq!((inf.residual, inf.dead, inf.functional), (f64::INFINITY, f64::INFINITY, 0.0));
    assert!(fit_with(f64::NAN).residual.is_nan());
}

/// Slices of different lengths are refused, not truncated; an empty softmax is `Empty` whatever `out` is; GD
/// refuses non-finite rates and gammas.
#[test]
fn mismatched_lengths_empty_inputs_and_non_finite_rates_are_errors() {
    let q = [1.0f64, 0.5];
    let keys = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]];
    let values = [[2.0], [3.0]];
    let mismatch = Err(Error::LengthMismatch { expected: 3, found: 2 });
    assert_eq!(attend_softmax(&q, &keys, &values, 1.0), mismatch);
    assert_eq!(attend_linear(&q, &keys, &values).map(|_| ()), mismatch.map(|_: [f64; 1]| ()));
    assert!(attend_linear(&q, &keys[..2], &values).is_ok());
    let mut out = [0.0f64; 2];
    assert_eq!(softmax(&[], &mut out), Err(Error::Empty));

    let w = nalgebra::SMatrix::<f64, 1, 2>::zeros();
    let xs = [[0.1, 0.2], [0.3, -0.1]];
    let ys = [[0.5], [0.2]];
    for bad in [f64::NAN, f64::INFINITY] {
        assert!(matches!(gd::gd_step(&w, &xs, &ys, bad), Err(Error::InvalidParameter(_))));
        let (mut y2, mut yq) = (ys, [0.0]);
        assert!(matches!(gd::dual_step(&w, &xs, &mut y2, &[0.1, 0.1], &mut yq, bad), Err(Error::InvalidParameter(_))));
        let (mut x2, mut xq) = (xs, [0.1, 0.1]);
        let r = gd::gdpp_step(&w, &mut x2, &mut y2, &mut xq, &mut yq, 1.0, bad);
        assert!(matches!(r, Err(Error::InvalidParameter(_))) && x2 == xs, "nothing changes on error");
    }
    // A negative rate is gradient ascent, not an error.
    assert!(gd::gd_step(&w, &xs, &ys, -1.0).is_ok());
}

/// A loss whose squared residual overflows but whose value is representable comes back finite; so does the
/// relaxation error of values whose squares overflow.
#[test]
fn sums_of_squares_do_not_overflow_representable_results() {
    let w = nalgebra::SMatrix::<f64, 1, 1>::zeros();
    let xs = [[1.0], [1.0]];
    let ys = [[1.5e154], [0.0]];
    // True loss: (1.5e154)^2 / (2 * 2) = 5.6e307, representable; the plain sum of squares is 2.25e308 = inf.
    let l = gd::loss(&w, &xs, &ys).unwrap();
    assert!(l.is_finite() && (l / 5.625e307 - 1.0).abs() < 1e-12, "{l}");
    assert_eq!(gd::loss(&w, &[[1.0]], &[[3.0]]).unwrap(), 4.5, "ordinary losses unchanged");

    let mut g = Gen::new(35);
    let mut head = g.layer::<3, 3, 3, 1>().heads[0].clone();
    let small = softmax_relaxation_error(&head, &g.tokens::<3, 4>(), &[[0.0; 3]; 0], &[0.1, 0.2, 0.3]).unwrap();
    head.w_v *= 1e200;
    let demos = g.tokens::<3, 4>();
    let big = softmax_relaxation_error(&head, &demos, &[[0.0; 3]; 0], &[0.1, 0.2, 0.3]).unwrap();
    assert!(big.is_finite() && small.is_finite(), "{big} {small}");
    head.w_v /= 1e200;
    let same = softmax_relaxation_error(&head, &demos, &[[0.0; 3]; 0], &[0.1, 0.2, 0.3]).unwrap();
    assert!((big - same).abs() <= 1e-12 * same, "the error is scale-free: {big} vs {same}");
}

/// The documented bound on the sum of softmax weights: within `n` epsilons for `n` logits.
#[test]
fn softmax_sum_error_grows_with_length_within_the_bound() {
    let mut g = Gen::new(36);
    for n in [1_000usize, 10_000, 100_000] {
        let logits: Vec<f32> = (0..n).map(|_| g.uniform(-10.0, 10.0) as f32).collect();
        let mut out = vec![0.0f32; n];
        softmax(&logits, &mut out).unwrap();
        let sum: f64 = out.iter().map(|v| *v as f64).sum();
        let ulps = (sum - 1.0).abs() / f32::EPSILON as f64;
        eprintln!("softmax over {n} logits: sum within {ulps:.0} ulps of 1");
        assert!(ulps <= n as f64, "{n}: {ulps}");
    }
}

/// The documented bound on the streaming drift is in terms of the largest token seen since the last resync: an
/// outlier's residue outlives its eviction until `resync` clears it.
#[test]
fn an_evicted_outlier_leaves_a_residue_until_the_next_resync() {
    let mut g = Gen::new(37);
    let layer = cast_layer::<f32, 4, 4, 4, 1>(&g.layer::<4, 4, 4, 1>());
    let mut stream = StreamingContext::<f32, 4, 4, 4, 1, 4>::new(&layer, 0);
    let mut ordinary = || -> [f32; 4] { cast(&g.array::<4>(-1.0, 1.0)) };
    for _ in 0..4 {
        stream.push(ordinary()).unwrap();
    }
    let before = stream.drift();
    stream.push([1e4, -1e4, 1e4, 1e4]).unwrap();
    for _ in 0..4 {
        stream.push(ordinary()).unwrap(); // the outlier leaves the window
    }
    let after = stream.drift();
    eprintln!("drift: {before:e} before the outlier, {after:e} after its eviction");
    assert!(after > 100.0 * before.max(f32::EPSILON), "the outlier's residue stays: {after} vs {before}");
    stream.resync();
    assert_eq!(stream.drift(), 0.0);
}

/// Small helpers at the edges of their documented ranges: `open01` never returns 0 or 1; the dot product runs
/// over the common length; elu+1 is positive down to `exp`'s underflow and 0 below (as documented).
#[test]
fn helper_contracts_hold_at_their_edges() {
    use dualform::rng::SplitMix64;
    for bits in [0u64, 1, u64::MAX, u64::MAX - 1, 1 << 11, u64::MAX >> 1] {
        let u = SplitMix64::open01(bits);
        assert!(u > 0.0 && u < 1.0, "{bits:#x} -> {u}");
    }
    use dualform::linalg::dot_slice;
    assert_eq!(dot_slice(&[1.0f64, 2.0, 3.0], &[1.0, 1.0]), 3.0);
    assert_eq!(dot_slice::<f64>(&[], &[1.0]), 0.0);
    // Lengths 9 and 5: the common length is 5, so the result is 1 + 2 + 3 + 4 + 5 (not ... + 9 * 1).
    let long: Vec<f64> = (1..=9).map(f64::from).collect();
    assert_eq!(dot_slice(&long, &[1.0; 5]), 15.0);
    assert_eq!(dot_slice(&[1.0; 5], &long), 15.0);
    let phi = <EluPlusOne as FeatureMap<f32, 3, 3>>::map(&EluPlusOne, &[-80.0, -104.0, 1e30]);
    assert!(phi[0] > 0.0 && phi[1] == 0.0 && phi[2] == 1e30, "{phi:?}");
    let phi = <EluPlusOne as FeatureMap<f64, 2, 2>>::map(&EluPlusOne, &[-700.0, -800.0]);
    assert!(phi[0] > 0.0 && phi[1] == 0.0, "{phi:?}");
}

/// `chunk_pairs` visits exactly the pairs `a.chunks_exact_mut(m).zip(b.chunks_exact(n))` visits, stopping at the
/// shorter side, and nothing for a zero chunk size (where `chunks_exact` would panic).
#[test]
fn chunk_pairs_visit_what_a_zip_of_exact_chunks_visits() {
    use dualform::linalg::slices::chunk_pairs;
    let b: Vec<u32> = (100..117).collect();
    for (len_a, m, n) in [(12, 3, 4), (12, 3, 5), (7, 2, 3), (0, 2, 3), (5, 6, 1), (9, 3, 0), (9, 0, 3), (20, 1, 1)] {
        let mut a: Vec<u32> = (0..len_a).collect();
        let mut want = a.clone();
        let expected: Vec<(Vec<u32>, Vec<u32>)> = if m == 0 || n == 0 {
            Vec::new()
        } else {
            want.chunks_exact_mut(m).zip(b.chunks_exact(n)).map(|(x, y)| (x.to_vec(), y.to_vec())).collect()
        };
        let got: Vec<(Vec<u32>, Vec<u32>)> = chunk_pairs(&mut a, m, &b, n)
            .map(|(x, y)| {
                x.iter_mut().for_each(|v| *v += 1000);
                (x.iter().map(|v| v - 1000).collect(), y.to_vec())
            })
            .collect();
        assert_eq!(got, expected, "a of {len_a}, chunks of {m} and {n}");
        let touched = expected.len() * m;
        assert!(a.iter().take(touched).all(|&v| v >= 1000) && a.iter().skip(touched).all(|&v| v < 1000));
    }
}

/// A stack over an empty context returns at once at a fixed point, whatever the number of repeats, with every
/// readout row filled; a non-empty context still runs every application.
#[test]
fn a_stack_over_an_empty_context_returns_at_a_fixed_point() {
    let mut g = Gen::new(38);
    let layer = g.layer::<3, 3, 3, 1>();
    let mut ctx: [[f64; 3]; 0] = [];
    let mut q = [0.5, -0.25, 0.0];
    let clip = Update { scale: 1.0, first: 0, clip: Some(0.3) };
    let last = run_stack::<_, _, 3, 0, 1>(&mut [&layer], usize::MAX, &clip, &mut ctx, &mut q, None).unwrap();
    assert_eq!((last, q), ([-0.0], [0.3, -0.25, 0.0]));
    let mut readout = [[9.0; 1]; 5];
    let mut q = [0.5, -0.25, 1.0];
    run_stack::<_, _, 3, 0, 1>(&mut [&layer], 5, &clip, &mut ctx, &mut q, Some(&mut readout)).unwrap();
    assert_eq!(readout, [[-0.3]; 5]);
}

/// Efficient Attention reports a non-finite key like softmax attention does (before touching any token), instead
/// of returning NaN with Ok.
#[test]
fn efficient_attention_reports_non_finite_keys_like_softmax_attention() {
    let mut g = Gen::new(39);
    let layer = g.layer::<3, 3, 3, 1>();
    let mut ctx = g.tokens::<3, 4>();
    ctx[2][0] = f64::INFINITY;
    let (c0, q0) = (ctx, [0.1, 0.2, 0.3]);
    let mut q = q0;
    assert_eq!(efficient_attention(&layer, &Update::residual(), &mut ctx, &mut q), Err(Error::NonFinite));
    assert_eq!((ctx, q), (c0, q0), "nothing changed");
    let mut scratch = LinearScratch::new();
    let (mut c2, mut q2) = (c0, q0);
    assert_eq!(
        softmax_attention(&layer, Mask::Full, &Update::residual(), &mut c2, &mut q2, &mut scratch),
        Err(Error::NonFinite)
    );
}

/// The backward kernels refuse gradient slices and states that do not match the context, instead of truncating.
#[test]
fn backward_kernels_refuse_mismatched_gradients_and_states() {
    use dualform::attention::context_state;
    use dualform::backward::{lsa_query_backward, LayerGrad};
    let mut g = Gen::new(40);
    let layer = g.layer::<3, 3, 3, 1>();
    let ctx = g.tokens::<3, 4>();
    let (h, gr) = ([0.1, 0.2, 0.0], [0.0, 0.0, 1.0]);
    let state = context_state(&layer, &ctx);
    let mut grad = LayerGrad::zeros();
    let mut short = [[0.0; 3]; 3];
    let r = lsa_query_backward(&layer, &ctx, &state, &h, &gr, &mut grad, Some(&mut short));
    assert_eq!(r, Err(Error::LengthMismatch { expected: 4, found: 3 }));
    let stale = context_state(&layer, &ctx[..2]);
    let r = lsa_query_backward(&layer, &ctx, &stale, &h, &gr, &mut grad, None);
    assert_eq!(r, Err(Error::LengthMismatch { expected: 4, found: 2 }));
    assert_eq!(grad, LayerGrad::zeros(), "nothing accumulated");
    let m = MergedHead::from_head(&layer.heads[0]);
    let mut dm = MergedHead::zeros();
    assert_eq!(
        m.query_backward(&ctx, &h, &gr, &mut dm, Some(&mut short)),
        Err(Error::LengthMismatch { expected: 4, found: 3 })
    );
    assert_eq!(dm, MergedHead::zeros());
}

/// Softmax attention near the overflow threshold: values of 3e38 (f32) average to 3e38, and a dot product that
/// overflows before scaling gives its finite scaled logit.
#[test]
fn attend_softmax_keeps_representable_results_near_overflow() {
    let q = [1.0f32, 1.0];
    let keys = [[0.0f32, 0.0], [0.0, 0.0], [0.0, 0.0]];
    let values = [[3e38f32], [3e38], [3e38]];
    let out = attend_softmax(&q, &keys, &values, 1.0).unwrap();
    assert!((out[0] / 3e38 - 1.0).abs() < 1e-6, "{out:?}");
    // f64: q . k = 2e308 overflows; scaled by 1/4 it is 5e307. Two keys with that logit and one at 0: the weights
    // are (1/2, 1/2, ~0).
    let q = [1e154f64, 1e154];
    let keys = [[1e154, 1e154], [1e154, 1e154], [0.0, 0.0]];
    let values = [[1.0], [3.0], [100.0]];
    let out = attend_softmax(&q, &keys, &values, 0.25).unwrap();
    assert!((out[0] - 2.0).abs() < 1e-12, "{out:?}");
    // Ordinary inputs: the same bits as the plain one-pass result.
    let (q, k, v) = ([0.3f32, -0.2], [[0.1f32, 0.4], [-0.5, 0.2]], [[1.0f32], [2.0]]);
    let mut acc = OnlineSoftmax::new();
    for (ki, vi) in k.iter().zip(&v) {
        acc.push(dualform::linalg::dot(&q, ki) * 0.7, vi).unwrap();
    }
    assert_eq!(attend_softmax(&q, &k, &v, 0.7).unwrap(), acc.finish());
}
