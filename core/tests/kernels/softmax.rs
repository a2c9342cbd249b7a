//! Online softmax and softmax attention against a plain two-pass reference, with the named edge cases.

use crate::common::*;
use dualform::*;
use proptest::prelude::*;

/// f32 online softmax against the f64 two-pass reference, in units of f32 epsilon of the largest probability.
const F32_ULPS: f64 = 8.0;

fn check_softmax_f64(logits: &[f64]) {
    let mut out = vec![0.0; logits.len()];
    softmax(logits, &mut out).unwrap();
    assert_close("online softmax f64", &out, &softmax_two_pass(logits), 1e-13);
    let sum: f64 = out.iter().sum();
    assert!((sum - 1.0).abs() < 1e-13, "sum {sum}");
}

fn check_softmax_f32(logits: &[f64]) {
    let l32: Vec<f32> = logits.iter().map(|&v| v as f32).collect();
    let mut out = vec![0.0f32; l32.len()];
    softmax(&l32, &mut out).unwrap();
    let want = softmax_two_pass(&l32.iter().map(|&v| v as f64).collect::<Vec<_>>());
    let got: Vec<f64> = out.iter().map(|&v| v as f64).collect();
    assert_close("online softmax f32", &got, &want, F32_ULPS * f32::EPSILON as f64);
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn online_softmax_equals_two_pass(logits in prop::collection::vec(-60.0f64..60.0, 1..80)) {
        check_softmax_f64(&logits);
        check_softmax_f32(&logits);
    }

    #[test]
    fn softmax_attention_matches_reference(seed in any::<u64>()) {
        check_attention::<11, 11, 11, 1, 10>(seed);
        check_attention::<6, 4, 3, 2, 13>(seed);
        check_attention::<5, 8, 2, 1, 1>(seed);
    }
}

fn check_attention<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(seed: u64) {
    let mut g = Gen::new(seed);
    let mut layer = g.layer::<E, DK, DV, H>();
    for h in layer.heads.iter_mut() {
        h.w_q *= 3.0; // sharper attention than the default scale
    }
    let ctx0 = g.tokens::<E, N>();
    let q0 = g.array::<E>(-1.0, 1.0);
    for (mask, causal) in [(Mask::Full, false), (Mask::Causal, true)] {
        let want = reference_layer(&layer, RefKind::Softmax, causal, &ctx0, &q0);
        let (mut c, mut q) = (ctx0, q0);
        let mut scratch = Box::new(LinearScratch::<f64, N, DK, DV, H>::new());
        softmax_attention(&layer, mask, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
        assert_close(&format!("softmax attention {mask:?} E={E} N={N} seed={seed}"), &flat(&c, &q), &want, 1e-12);
        let l32 = cast_layer::<f32, E, DK, DV, H>(&layer);
        let (mut c, mut q) = (cast_tokens::<f32, E, N>(&ctx0), cast::<f32, E>(&q0));
        let mut scratch = Box::new(LinearScratch::<f32, N, DK, DV, H>::new());
        softmax_attention(&l32, mask, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
        assert_close(&format!("softmax attention f32 {mask:?}"), &flat(&c, &q), &want, 1e-5);
        // The slice form (keys projected per token, no scratch) gives the same bits, also under another rule.
        for upd in [Update::residual(), Update { scale: 0.5, first: 2, clip: Some(0.75) }] {
            let (c_in, q_in) = (cast_tokens::<f32, E, N>(&ctx0), cast::<f32, E>(&q0));
            let (mut c, mut q) = (c_in, q_in);
            softmax_attention(&l32, mask, &upd, &mut c, &mut q, &mut scratch).unwrap();
            let (mut c2, mut q2) = ([[0.0f32; E]; N], [0.0f32; E]);
            let (mut keys, mut values) = (vec![[0.0f32; DK]; H * N], vec![[0.0f32; DV]; H * N]);
            let mut work = SoftmaxWork { keys: &mut keys, values: &mut values, g_keys: &mut [], g_values: &mut [] };
            softmax_attention_slices(&l32, mask, &upd, &c_in, &q_in, &mut c2, &mut q2, &mut work).unwrap();
            let bits = |c: &[[f32; E]; N], q: &[f32; E]| flat(c, q).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&c2, &q2), bits(&c, &q), "slice form {mask:?} {upd:?}");
        }
    }
}

#[test]
fn all_equal_logits_give_uniform_weights() {
    for n in [1usize, 2, 7, 64] {
        for v in [0.0, -3.5, 1e30] {
            let logits = vec![v; n];
            let mut out = vec![0.0; n];
            softmax(&logits, &mut out).unwrap();
            for o in &out {
                assert!((o - 1.0 / n as f64).abs() < 1e-15, "n={n} v={v}: {o}");
            }
        }
    }
}

#[test]
fn huge_logits_are_finite_and_exact() {
    // +-1e30 (f32 and f64): the largest logit wins outright, the others underflow to 0 without NaN.
    let mut out = [0.0f32; 4];
    softmax(&[1e30f32, -1e30, 0.0, 1e30], &mut out).unwrap();
    assert_eq!(out, [0.5, 0.0, 0.0, 0.5]);
    let mut out = [0.0f64; 3];
    softmax(&[-1e30, -1e30 + 1e15, -1e30], &mut out).unwrap();
    assert_eq!(out, [0.0, 1.0, 0.0]);
    // The online rescaling path: a growing maximum at every step.
    let logits: Vec<f64> = (0..50).map(|i| -1e30 + 1e29 * i as f64).collect();
    let mut out = vec![0.0; 50];
    softmax(&logits, &mut out).unwrap();
    assert_eq!(out[49], 1.0);
    assert!(out.iter().all(|v| v.is_finite()));
    // Attention with huge but finite scores: the best-matching key's value is returned exactly.
    let q = [1e15f64];
    let keys = [[1e15], [-1e15], [0.5e15]];
    let values = [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]];
    assert_eq!(attend_softmax(&q, &keys, &values, 1.0).unwrap(), [1.0, 2.0]);
}

#[test]
fn non_finite_logits_and_bad_lengths_are_errors() {
    let mut out = [0.0f64; 3];
    assert_eq!(softmax(&[0.0, f64::NAN, 1.0], &mut out), Err(Error::NonFinite));
    assert_eq!(softmax(&[0.0, f64::INFINITY, 1.0], &mut out), Err(Error::NonFinite));
    assert_eq!(softmax(&[0.0, f64::NEG_INFINITY, 1.0], &mut out), Err(Error::NonFinite));
    assert_eq!(softmax::<f64>(&[], &mut []), Err(Error::Empty));
    assert_eq!(softmax(&[1.0, 2.0], &mut out), Err(Error::LengthMismatch { expected: 2, found: 3 }));
    // A score that overflows to infinity inside attention is reported, not turned into NaN.
    let q = [1e200f64];
    assert_eq!(attend_softmax(&q, &[[1e200]], &[[1.0]], 1.0), Err(Error::NonFinite));
    // f32 overflow inside a layer.
    let mut layer = Layer::<f32, 2, 2, 2, 1>::zeros();
    layer.heads[0].w_q[(0, 0)] = 1e20;
    layer.heads[0].w_k[(0, 0)] = 1e20;
    let mut ctx = [[1.0f32, 0.0]];
    let mut q = [1.0f32, 0.0];
    let mut scratch = LinearScratch::<f32, 1, 2, 2, 1>::new();
    let (c_in, q_in) = (ctx, q);
    assert_eq!(
        softmax_attention(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q, &mut scratch),
        Err(Error::NonFinite)
    );
    // The slice form: the same error, and a length mismatch of its output.
    let (mut c_out, mut q_out) = ([[0.0f32; 2]], [0.0f32; 2]);
    let slices = |l: &Layer<f32, 2, 2, 2, 1>, c_out: &mut [[f32; 2]], q_out: &mut [f32; 2], short: bool| {
        let (mut keys, mut values) = ([[0.0f32; 2]; 1], [[0.0f32; 2]; 1]);
        let keys = &mut keys[..usize::from(!short)];
        let mut w = SoftmaxWork { keys, values: &mut values, g_keys: &mut [], g_values: &mut [] };
        softmax_attention_slices(l, Mask::Full, &Update::residual(), &c_in, &q_in, c_out, q_out, &mut w)
    };
    assert_eq!(slices(&layer, &mut c_out, &mut q_out, false), Err(Error::NonFinite));
    layer.heads[0].w_q[(0, 0)] = 1.0;
    assert_eq!(slices(&layer, &mut [], &mut q_out, false), Err(Error::LengthMismatch { expected: 1, found: 0 }));
    assert_eq!(slices(&layer, &mut c_out, &mut q_out, true), Err(Error::LengthMismatch { expected: 1, found: 0 }));
    assert_eq!(slices(&layer, &mut c_out, &mut q_out, false), Ok(()));
}

#[test]
fn single_key_and_empty_context() {
    // One key: weight exactly 1.
    assert_eq!(attend_softmax(&[0.3f64, -2.0], &[[5.0, 1.0]], &[[7.0, -1.0, 2.0]], 0.5).unwrap(), [7.0, -1.0, 2.0]);
    // No keys: zero output; a layer over N = 0 leaves the query unchanged.
    let empty: [[f64; 2]; 0] = [];
    let values: [[f64; 3]; 0] = [];
    assert_eq!(attend_softmax(&[1.0f64, 1.0], &empty, &values, 1.0).unwrap(), [0.0; 3]);
    let layer = Gen::new(3).layer::<4, 4, 4, 1>();
    let mut ctx: [[f64; 4]; 0] = [];
    let mut q = [0.1, 0.2, 0.3, 0.4];
    let mut scratch = LinearScratch::<f64, 0, 4, 4, 1>::new();
    softmax_attention(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q, &mut scratch).unwrap();
    assert_eq!(q, [0.1, 0.2, 0.3, 0.4]);
}

#[test]
fn zero_query_attends_uniformly() {
    let keys = [[1.0f64, 2.0], [-3.0, 0.5], [0.0, 9.0]];
    let values = [[3.0], [6.0], [9.0]];
    let out = attend_softmax(&[0.0, 0.0], &keys, &values, 1.0).unwrap();
    assert!((out[0] - 6.0).abs() < 1e-14);
}
