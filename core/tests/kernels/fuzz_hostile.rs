//! Property tests over hostile values: every case draws its numbers from NaN, the infinities, signed zeros, the
//! smallest subnormal, values at the overflow threshold (f32::MAX, 1e30) and ordinary values, with slice lengths that
//! may disagree, and checks the core's promises for that class of input: no panic, the documented error, NaN
//! propagated rather than swallowed, results in their documented range. 1 000 cases per property, 9 properties
//! (9 000 cases per run; the seed is fixed, so a failure reproduces).

use dualform::linalg::dot_slice;
use dualform::rng::SplitMix64;
use dualform::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// Cases per property in a test run; `DUALFORM_FUZZ_CASES` overrides it (for a long campaign).
const CASES: u32 = 1000;

fn runner() -> TestRunner {
    let cases = std::env::var("DUALFORM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]))
}

/// One f32 from the hostile classes.
fn hostile() -> impl Strategy<Value = f32> {
    prop_oneof![
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(0.0f32),
        Just(-0.0f32),
        Just(f32::from_bits(1)),
        Just(f32::MAX),
        Just(-f32::MAX),
        Just(1e30f32),
        -10.0f32..10.0,
        -10.0f32..10.0,
        -10.0f32..10.0,
        any::<u32>().prop_map(f32::from_bits),
        any::<u32>().prop_map(f32::from_bits),
    ]
}

fn token() -> impl Strategy<Value = [f32; 3]> {
    [hostile(), hostile(), hostile()]
}

fn finite(v: &[f32]) -> bool {
    v.iter().all(|x| x.is_finite())
}

#[test]
fn softmax_errors_on_non_finite_logits_and_otherwise_sums_to_one() {
    runner()
        .run(&prop::collection::vec(hostile(), 0..40), |logits| {
            let mut out = vec![0.0f32; logits.len()];
            let r = softmax(&logits, &mut out);
            if logits.is_empty() {
                prop_assert_eq!(r, Err(Error::Empty));
            } else if !finite(&logits) {
                prop_assert_eq!(r, Err(Error::NonFinite));
            } else {
                prop_assert!(r.is_ok());
                prop_assert!(out.iter().all(|p| (0.0..=1.0).contains(p)));
                let sum: f64 = out.iter().map(|p| *p as f64).sum();
                prop_assert!((sum - 1.0).abs() <= logits.len() as f64 * f32::EPSILON as f64);
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn attend_softmax_refuses_mismatches_and_keeps_finite_values_finite() {
    let case = (token(), prop::collection::vec(token(), 0..8), prop::collection::vec(token(), 0..8), hostile());
    runner()
        .run(&case, |(q, keys, values, scale)| {
            let r = attend_softmax(&q, &keys, &values, scale);
            if keys.len() != values.len() {
                prop_assert_eq!(r, Err(Error::LengthMismatch { expected: keys.len(), found: values.len() }));
            } else if let Ok(out) = r {
                // A convex combination of finite values is finite.
                if values.iter().all(|v| finite(v)) {
                    prop_assert!(finite(&out), "{:?}", out);
                }
            } else {
                prop_assert_eq!(r, Err(Error::NonFinite));
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn clipping_bounds_finite_values_and_keeps_nan() {
    runner()
        .run(&(token(), 0.0f32..100.0), |(h, c)| {
            let mut out = h;
            Update { scale: 1.0, first: 0, clip: Some(c) }.apply(&mut out, &[0.0; 3]);
            for (o, x) in out.iter().zip(h.iter()) {
                if x.is_nan() {
                    prop_assert!(o.is_nan());
                } else {
                    prop_assert!(o.abs() <= c);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn lsa_layers_never_panic_and_propagate_nan() {
    let case = ([token(), token(), token()], [token(), token(), token()], token(), prop::collection::vec(token(), 4));
    runner()
        .run(&case, |(wq, wk, ctx4, qv)| {
            let mut layer = Layer::<f32, 3, 3, 3, 1>::zeros();
            layer.heads[0].w_q = nalgebra::SMatrix::from_fn(|i, j| wq[i][j]);
            layer.heads[0].w_k = nalgebra::SMatrix::from_fn(|i, j| wk[i][j]);
            layer.heads[0].w_v = nalgebra::SMatrix::identity();
            layer.heads[0].p = nalgebra::SMatrix::identity();
            let ctx0: [[f32; 3]; 4] = core::array::from_fn(|i| qv[i]);
            let (mut c, mut q) = (ctx0, ctx4);
            let r = lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q);
            prop_assert!(r.is_ok());
            // A NaN query coordinate never turns finite.
            for (after, before) in q.iter().zip(ctx4.iter()) {
                if before.is_nan() {
                    prop_assert!(after.is_nan());
                }
            }
            let mut scratch = LinearScratch::new();
            let (mut c2, mut q2) = (ctx0, ctx4);
            let r2 = softmax_attention(&layer, Mask::Causal, &Update::residual(), &mut c2, &mut q2, &mut scratch);
            prop_assert!(r2.is_ok() || r2 == Err(Error::NonFinite));
            let (mut c3, mut q3) = (ctx0, ctx4);
            let r3 = efficient_attention(&layer, &Update::residual(), &mut c3, &mut q3);
            prop_assert!(r3.is_ok() || r3 == Err(Error::NonFinite));
            Ok(())
        })
        .unwrap();
}

#[test]
fn gd_functions_refuse_non_finite_rates_and_never_panic() {
    let case = ([token(), token()], [hostile(), hostile()], hostile());
    runner()
        .run(&case, |(xs, ys, eta)| {
            let w = nalgebra::SMatrix::<f32, 1, 3>::zeros();
            let ys = [[ys[0]], [ys[1]]];
            let r = gd::gd_step(&w, &xs, &ys, eta);
            if !eta.is_finite() {
                prop_assert!(matches!(r, Err(Error::InvalidParameter(_))));
            }
            let l = gd::loss(&w, &xs, &ys).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert!(l.is_nan() || l >= 0.0);
            if finite(&[ys[0][0], ys[1][0]]) && xs.iter().all(|x| finite(x)) {
                // With W = 0 the residuals are the targets: finite inputs give a non-NaN loss (the rescaling keeps
                // squares that overflow from turning into inf - inf).
                prop_assert!(!l.is_nan());
            }
            Ok(())
        })
        .unwrap();
}

/// Finite magnitudes, many of whose squares overflow f32.
fn finite_large() -> impl Strategy<Value = f32> {
    prop_oneof![Just(1e30f32), Just(-1e30f32), Just(3e19f32), Just(f32::MAX / 1e3), Just(0.0f32), -10.0f32..10.0]
}

/// The reader's three numbers for `E = 3, D = 2, DY = 1` recomputed in f64 from the same f32 normalised entries
/// (`A / scale`, `B * scale`), with plain sums of squares (no rescaling needed in f64 at these magnitudes):
/// `(residual, functional, dead)`.
fn reader_in_f64(a: &[[f32; 3]; 3], b: &[[f32; 3]; 3], scale: f32) -> (f64, f64, f64) {
    let an = |i: usize, j: usize| (a[i][j] / scale) as f64;
    let bn = |i: usize, j: usize| (b[i][j] * scale) as f64;
    let c = -bn(2, 2);
    let (mut functional, mut dead) = (0.0, 0.0);
    for i in 0..3 {
        for j in 0..3 {
            let da = an(i, j) - if i == j && i < 2 { 1.0 } else { 0.0 };
            // Row 2 of B is matched exactly (its W0 block copied, its diagonal -c), so only rows 0 and 1 differ.
            let db = if i < 2 { bn(i, j) } else { 0.0 };
            if j < 2 {
                functional += da * da
            } else {
                dead += da * da
            }
            dead += db * db;
        }
    }
    let norm = 2.0 + c * c + bn(2, 0) * bn(2, 0) + bn(2, 1) * bn(2, 1);
    (((functional + dead) / norm).sqrt(), (functional / norm).sqrt(), (dead / norm).sqrt())
}

/// The reader never panics; a head it reads back has the residual, functional and dead parts that an f64
/// computation gives from the same normalised entries, rounded to f32: finite wherever that value is (even when the
/// entries' squares leave f32's range), infinite only where it exceeds f32's range, NaN only from NaN or infinite
/// weights.
#[test]
fn the_reader_matches_an_f64_recomputation_at_every_magnitude() {
    let value = prop_oneof![hostile(), finite_large()];
    let token = [value.clone(), value.clone(), value];
    let case = ([token.clone(), token.clone(), token.clone()], [token.clone(), token.clone(), token]);
    runner()
        .run(&case, |(a, b)| {
            let m = MergedHead::<f32, 3> {
                a: nalgebra::SMatrix::from_fn(|i, j| a[i][j]),
                b: nalgebra::SMatrix::from_fn(|i, j| b[i][j]),
            };
            let fit = match read_gd_merged::<f32, 3, 2, 1>(&m, 4) {
                Ok(fit) => fit,
                Err(e) => {
                    prop_assert_eq!(e, Error::ZeroNormaliser);
                    return Ok(());
                }
            };
            let normalised = a.iter().flatten().map(|v| v / fit.scale).chain(b.iter().flatten().map(|v| v * fit.scale));
            if !normalised.clone().all(f32::is_finite) {
                prop_assert!(
                    fit.residual.is_nan() || fit.residual >= f32::MAX,
                    "a non-finite entry gives no finite residual: {:?}",
                    fit
                );
                return Ok(());
            }
            let (residual, functional, dead) = reader_in_f64(&a, &b, fit.scale);
            let largest = normalised.map(|v| (v as f64).abs()).fold(0.0, f64::max);
            let norm = 2.0f64.sqrt(); // the normaliser's least value (A* = I_x with D = 2)
            for (got, want) in [(fit.residual, residual), (fit.functional, functional), (fit.dead, dead)] {
                if want > f32::MAX as f64 * (1.0 + 1e-6) {
                    prop_assert_eq!(got, f32::INFINITY, "{:?} vs {}", fit, want);
                } else if want < f32::MAX as f64 * (1.0 - 1e-6) {
                    // f32 rounding of ~20 entries of size <= `largest`, relative to a normaliser >= sqrt(2).
                    let tolerance = 1e-5 * want + 1e-6 * largest / norm;
                    prop_assert!(((got as f64) - want).abs() <= tolerance, "{:?}: {} vs {}", fit, got, want);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn dot_slice_runs_over_the_common_length() {
    let case = (prop::collection::vec(-10.0f32..10.0, 0..20), prop::collection::vec(-10.0f32..10.0, 0..20));
    runner()
        .run(&case, |(a, b)| {
            let n = a.len().min(b.len());
            prop_assert_eq!(dot_slice(&a, &b).to_bits(), dot_slice(&a[..n], &b[..n]).to_bits());
            Ok(())
        })
        .unwrap();
}

#[test]
fn open01_stays_inside_the_open_interval() {
    runner()
        .run(&any::<u64>(), |bits| {
            let u = SplitMix64::open01(bits);
            prop_assert!(u > 0.0 && u < 1.0);
            // The edges too, every case.
            prop_assert!(SplitMix64::open01(u64::MAX) < 1.0 && SplitMix64::open01(0) > 0.0);
            Ok(())
        })
        .unwrap();
}

/// The streaming learner over any sequence of pairs (any bit patterns, window capacity 4, resync every 0..3
/// evictions): no panic; a window of finite, moderate tokens keeps finite sums, drift and predictions; a NaN that
/// has left the window no longer affects the prediction once the sums are recomputed.
#[test]
fn the_streaming_learner_never_panics_and_recovers_after_resync() {
    let case = (prop::collection::vec(token(), 0..12), 0usize..3, token());
    runner()
        .run(&case, |(pairs, resync_every, q)| {
            let layer = gd_layer::<f32, 2, 1, 3>(&nalgebra::SMatrix::zeros(), 0.5, 4).unwrap();
            let mut stream = StreamingContext::<f32, 3, 3, 3, 1, 4>::new(&layer, resync_every);
            for p in &pairs {
                let _ = stream.push_pair::<2, 1>(&[p[0], p[1]], &[p[2]]);
            }
            prop_assert_eq!(stream.len(), pairs.len().min(4));
            let moderate = |t: &[f32; 3]| t.iter().all(|v| v.is_finite() && v.abs() < 1e6);
            let x = [q[0], q[1]];
            stream.resync();
            if stream.window().all(moderate) && moderate(&q) {
                prop_assert!(stream.drift() == 0.0, "a fresh resync has no drift: {}", stream.drift());
                prop_assert!(stream.predict::<2, 1>(&x)[0].is_finite());
            }
            Ok(())
        })
        .unwrap();
}
