//! The run-time-shape attention kernels (`softmax_ref`, `linear_ref`): softmax at widths no fixed instance has, against a naive
//! f64 reference (two-pass softmax, direct sums) and central differences; the linear kernels against the fixed LSA
//! query forward and backward, bit for bit; bad lengths and short scratch refused without a panic.

use crate::common::*;
use dualform::attention::{context_state, query_forward};
use dualform::backward::{lsa_query_backward, LayerGrad};
use dualform::head_ref::{HeadMut, HeadRef, Vectors, Widths};
use dualform::linear_ref::{token_backward as linear_token_backward, token_update as linear_token_update};
use dualform::softmax_ref::{
    attention, backward, project, token_backward, token_backward_projected, token_update, token_update_projected,
    Projection, Work,
};
use dualform::{Error, Mask, Update};

/// Owned scratch and weights at run-time widths.
struct Setup {
    w: Widths,
    heads: Vec<[Vec<f64>; 4]>,
    key: Vec<f64>,
    value: Vec<f64>,
    token: Vec<f64>,
    stats: Vec<f64>,
}

impl Setup {
    fn new(g: &mut Gen, w: Widths, heads: usize, std: f64) -> Self {
        let mut m = |n: usize| (0..n).map(|_| g.normal() * std).collect::<Vec<f64>>();
        let heads = (0..heads).map(|_| [m(w.dk * w.e), m(w.dk * w.e), m(w.dv * w.e), m(w.e * w.dv)]).collect();
        Self {
            w,
            heads,
            key: vec![0.0; Vectors::<f64>::KEY * w.dk],
            value: vec![0.0; Vectors::<f64>::VALUE * w.dv],
            token: vec![0.0; Vectors::<f64>::TOKEN * w.e],
            stats: vec![0.0; 2 * 4],
        }
    }

    fn vectors(&mut self) -> Vectors<'_, f64> {
        Vectors { key: &mut self.key, value: &mut self.value, token: &mut self.token, heads: &mut self.stats }
    }
}

/// `y = A x` for a column-major `rows x cols` matrix, naively.
fn mv(a: &[f64], rows: usize, x: &[f64]) -> Vec<f64> {
    (0..rows).map(|r| x.iter().enumerate().map(|(c, xc)| a[c * rows + r] * xc).sum()).collect()
}

/// The softmax update of one token by the definition: every head's two-pass softmax over its logits.
fn naive_update(s: &Setup, ctx: &[f64], h: &[f64]) -> Vec<f64> {
    let Widths { e, dk, dv } = s.w;
    let mut u = vec![0.0; e];
    for [w_q, w_k, w_v, p] in &s.heads {
        let q = mv(w_q, dk, h);
        let toks: Vec<&[f64]> = ctx.chunks_exact(e).collect();
        let logits: Vec<f64> = toks
            .iter()
            .map(|t| mv(w_k, dk, t).iter().zip(&q).map(|(a, b)| a * b).sum::<f64>() / (dk as f64).sqrt())
            .collect();
        let a = softmax_two_pass(&logits);
        let mut o = vec![0.0; dv];
        for (t, aj) in toks.iter().zip(&a) {
            for (oi, vi) in o.iter_mut().zip(mv(w_v, dv, t)) {
                *oi += aj * vi;
            }
        }
        for (ui, pi) in u.iter_mut().zip(mv(p, e, &o)) {
            *ui += pi;
        }
    }
    u
}

/// The bits of an f32 slice.
fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|v| v.to_bits()).collect()
}

/// The bits of every head's four gradient matrices, in order.
fn flat_grads(gr: &[[Vec<f32>; 4]]) -> Vec<u32> {
    gr.iter().flatten().flat_map(|m| bits(m)).collect()
}

/// Keys and values projected once (and the weights kept between the backward's two passes) give the bits of
/// projecting them for every token and computing the weights twice: the token update and its VJP, and the full
/// layer's VJP under both masks, in f32 at three width sets (1 to 3 heads, an empty context included). A projection
/// of other widths, heads or length, and kept weights of another length, are refused.
#[test]
fn projected_kernels_and_kept_weights_give_the_bits_of_the_token_kernels() {
    let mut g = Gen::new(33);
    for (w, heads, n) in [
        (Widths { e: 11, dk: 11, dv: 11 }, 2, 10),
        (Widths { e: 23, dk: 7, dv: 5 }, 3, 9),
        (Widths { e: 4, dk: 3, dv: 2 }, 1, 0),
    ] {
        let mut m = |len: usize| (0..len).map(|_| (g.normal() * 0.6) as f32).collect::<Vec<f32>>();
        let hs: Vec<[Vec<f32>; 4]> =
            (0..heads).map(|_| [m(w.dk * w.e), m(w.dk * w.e), m(w.dv * w.e), m(w.e * w.dv)]).collect();
        let (ctx, h, r, g_ctx_out) = (m(n * w.e), m(w.e), m(w.e), m(n * w.e));
        let refs: Vec<HeadRef<'_, f32>> = hs.iter().map(|[w_q, w_k, w_v, p]| HeadRef { w_q, w_k, w_v, p }).collect();
        let (mut key, mut value) =
            (vec![0.0f32; Vectors::<f32>::KEY * w.dk], vec![0.0f32; Vectors::<f32>::VALUE * w.dv]);
        let (mut token, mut stats) = (vec![0.0f32; Vectors::<f32>::TOKEN * w.e], vec![0.0f32; 2 * heads]);
        let mut vecs = Vectors { key: &mut key, value: &mut value, token: &mut token, heads: &mut stats };
        let entries = heads * n;
        let (mut keys, mut values) = (vec![0.0f32; entries * w.dk], vec![0.0f32; entries * w.dv]);
        let zero_grads =
            || -> Vec<[Vec<f32>; 4]> { hs.iter().map(|m| [0, 1, 2, 3].map(|i| vec![0.0; m[i].len()])).collect() };

        let (mut u1, mut u2) = (vec![0.0f32; w.e], vec![0.0f32; w.e]);
        token_update(w, &refs, &ctx, &h, &mut u1, &mut vecs).unwrap();
        let proj = project(w, &refs, &ctx, &mut keys, &mut values).unwrap();
        token_update_projected(w, &refs, &proj, &h, &mut u2, &mut vecs).unwrap();
        assert_eq!(bits(&u1), bits(&u2), "update at {w:?}");

        let (mut gr1, mut gr2) = (zero_grads(), zero_grads());
        let (mut dh1, mut dh2) = (vec![0.0f32; w.e], vec![0.0f32; w.e]);
        let (mut gc1, mut gc2) = (g_ctx_out.clone(), g_ctx_out.clone());
        let mut gm: Vec<HeadMut<'_, f32>> =
            gr1.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
        token_backward(w, &refs, &ctx, &h, &r, &mut gm, &mut dh1, Some(&mut gc1), &mut vecs).unwrap();
        let mut weights = vec![0.0f32; n];
        let mut gm: Vec<HeadMut<'_, f32>> =
            gr2.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
        token_backward_projected(
            w,
            &refs,
            &proj,
            &ctx,
            &h,
            &r,
            &mut gm,
            &mut dh2,
            Some(&mut gc2),
            &mut weights,
            &mut vecs,
        )
        .unwrap();
        assert_eq!(bits(&dh1), bits(&dh2), "dh at {w:?}");
        assert_eq!(bits(&gc1), bits(&gc2), "g_ctx at {w:?}");
        drop(gm);
        assert_eq!(flat_grads(&gr1), flat_grads(&gr2), "parameter gradients at {w:?}");
        // Refusals: kept weights of another length, a projection of fewer tokens, other heads.
        let bad = |r: Result<(), Error>| matches!(r, Err(Error::LengthMismatch { .. }));
        let (kc, vc) = (keys.clone(), values.clone());
        let mut gm: Vec<HeadMut<'_, f32>> =
            gr2.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
        let proj = Projection::written(w, heads, n, &kc, &vc).unwrap();
        let mut long = vec![0.0f32; n + 1];
        let r2 = &r;
        assert!(bad(token_backward_projected(
            w, &refs, &proj, &ctx, &h, r2, &mut gm, &mut dh2, None, &mut long, &mut vecs
        )));
        if n > 0 {
            let m1 = heads * (n - 1);
            let fewer = Projection::written(w, heads, n - 1, &kc[..m1 * w.dk], &vc[..m1 * w.dv]).unwrap();
            let mut wf = vec![0.0f32; n];
            assert!(bad(token_backward_projected(
                w, &refs, &fewer, &ctx, &h, r2, &mut gm, &mut dh2, None, &mut wf, &mut vecs
            )));
        }
        assert!(bad(Projection::written(w, heads, n + 1, &kc, &vc).map(|_| ())));
        if heads > 1 {
            assert!(bad(token_update_projected(w, &refs[1..], &proj, &h, &mut u2, &mut vecs)));
        }
        for mask in [Mask::Full, Mask::Causal] {
            let mut outs = Vec::new();
            // Weights computed twice, kept for one token of each pair the backward runs together or for both; then
            // also the forward's keys, values and logit statistics kept (the keys and values first spoiled, so that
            // only the forward's projection can give the bits); then its queries and logits too (NaN where the
            // forward wrote none, which would spoil the gradients).
            for (keep, from_forward, with_scores) in [
                (0, false, false),
                (1, false, false),
                (2, false, false),
                (2, true, false),
                (2, true, true),
                (1, true, true),
            ] {
                let mut gr = zero_grads();
                let mut gm: Vec<HeadMut<'_, f32>> =
                    gr.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
                let (mut gc, mut gq) = (g_ctx_out.clone(), r.clone());
                let (mut gk, mut gv) = (vec![0.0f32; entries * w.dk], vec![0.0f32; entries * w.dv]);
                let mut kept = vec![0.0f32; keep * n];
                let mut st = vec![f32::NAN; if from_forward { (n + 1) * heads * 2 } else { 0 }];
                let mut sc = vec![f32::NAN; if with_scores { (n + 1) * heads * (w.dk + n) } else { 0 }];
                keys.fill(7.0);
                values.fill(-3.0);
                let mut work = Work {
                    keys: &mut keys,
                    values: &mut values,
                    g_keys: &mut gk,
                    g_values: &mut gv,
                    weights: &mut kept,
                    stats: &mut st,
                    scores: &mut sc,
                    kept: false,
                };
                if from_forward {
                    let (mut c_out, mut q_out) = (vec![0.0f32; n * w.e], vec![0.0f32; w.e]);
                    let upd = Update::residual();
                    attention(w, &refs, mask, &upd, &ctx, &h, &mut c_out, &mut q_out, &mut work, &mut vecs).unwrap();
                    let written = work.stats.iter().all(|v| v.is_finite());
                    assert!(n == 0 || mask != Mask::Full || written, "every statistic written at {w:?}");
                    work.kept = true;
                }
                backward(w, &refs, mask, &ctx, &h, &mut gc, &mut gq, &mut gm, &mut work, &mut vecs).unwrap();
                drop(gm);
                outs.push([bits(&gc), bits(&gq), flat_grads(&gr)]);
            }
            for (i, out) in outs.iter().enumerate().skip(1) {
                assert_eq!(&outs[0], out, "full layer backward, variant {i}, at {w:?}, {mask:?}");
            }
        }
    }
}

/// Softmax at widths no fixed instance was compiled for (E = 23 and 40, keys and values of other widths, three
/// heads): the update equals the definition, and the VJP equals central differences of it.
#[test]
fn softmax_at_run_time_widths_matches_the_definition_and_its_gradient() {
    let mut g = Gen::new(21);
    for (w, n) in [(Widths { e: 23, dk: 7, dv: 5 }, 9), (Widths { e: 40, dk: 40, dv: 40 }, 3)] {
        let mut s = Setup::new(&mut g, w, 3, 0.3);
        let ctx: Vec<f64> = (0..n * w.e).map(|_| g.uniform(-1.0, 1.0)).collect();
        let h: Vec<f64> = (0..w.e).map(|_| g.uniform(-1.0, 1.0)).collect();
        let mut u = vec![0.0; w.e];
        let heads: Vec<[Vec<f64>; 4]> = s.heads.clone();
        let refs: Vec<HeadRef<'_, f64>> = heads.iter().map(|[w_q, w_k, w_v, p]| HeadRef { w_q, w_k, w_v, p }).collect();
        token_update(w, &refs, &ctx, &h, &mut u, &mut s.vectors()).unwrap();
        assert_close("update", &u, &naive_update(&s, &ctx, &h), 1e-12);
        // L = r . (h + u): the VJP with g = r against central differences in h, in the context and in one weight.
        let r: Vec<f64> = (0..w.e).map(|_| g.uniform(-1.0, 1.0)).collect();
        let loss = |s: &Setup, ctx: &[f64], h: &[f64]| -> f64 {
            naive_update(s, ctx, h).iter().zip(h).zip(&r).map(|((ui, hi), ri)| (ui + hi) * ri).sum()
        };
        let mut grads: Vec<[Vec<f64>; 4]> = heads.iter().map(|m| [0, 1, 2, 3].map(|i| vec![0.0; m[i].len()])).collect();
        let mut gm: Vec<HeadMut<'_, f64>> =
            grads.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
        let (mut dh, mut g_ctx) = (vec![0.0; w.e], vec![0.0; ctx.len()]);
        token_backward(w, &refs, &ctx, &h, &r, &mut gm, &mut dh, Some(&mut g_ctx), &mut s.vectors()).unwrap();
        let fd = |f: &dyn Fn(f64) -> f64| (f(STEP) - f(-STEP)) / (2.0 * STEP);
        for i in [0, w.e / 2, w.e - 1] {
            let num = fd(&|d| {
                let mut hh = h.clone();
                hh[i] += d;
                loss(&s, &ctx, &hh)
            });
            assert!((num - dh[i]).abs() < 1e-7 * (1.0 + num.abs()), "dh[{i}]: {} vs {num}", dh[i]);
        }
        for i in [0, ctx.len() / 2, ctx.len() - 1] {
            let num = fd(&|d| {
                let mut c = ctx.clone();
                c[i] += d;
                loss(&s, &c, &h)
            });
            assert!((num - g_ctx[i]).abs() < 1e-7 * (1.0 + num.abs()), "g_ctx[{i}]: {} vs {num}", g_ctx[i]);
        }
        for (head, which) in [(0, 0), (1, 1), (2, 2), (0, 3)] {
            let i = grads[head][which].len() / 3;
            let num = fd(&|d| {
                let mut t = Setup::new(&mut Gen::new(0), w, 0, 0.0);
                t.heads = heads.clone();
                t.heads[head][which][i] += d;
                loss(&t, &ctx, &h)
            });
            let ana = grads[head][which][i];
            assert!((num - ana).abs() < 1e-7 * (1.0 + num.abs()), "head {head} matrix {which}: {ana} vs {num}");
        }
    }
}

const STEP: f64 = 1e-6;

/// The run-time linear kernels give the fixed LSA query forward and backward's bits (E = 5, DK = 3, DV = 4, two
/// heads), gradients of the context included.
#[test]
fn linear_kernels_give_the_fixed_query_kernels_bits() {
    let mut g = Gen::new(5);
    let layer = g.layer::<5, 3, 4, 2>();
    let ctx = g.tokens::<5, 6>();
    let (h, r) = (g.array::<5>(-1.0, 1.0), g.array::<5>(-1.0, 1.0));
    let w = Widths { e: 5, dk: 3, dv: 4 };
    let refs = layer.heads.each_ref().map(HeadRef::from);
    let mut s = Setup::new(&mut g, w, 0, 0.0);
    let mut map = vec![0.0; 12];
    let mut u = [0.0; 5];
    linear_token_update(w, &refs, ctx.as_flattened(), &h, &mut u, &mut s.vectors(), &mut map).unwrap();
    let fixed = query_forward(&layer, &context_state(&layer, &ctx), &h);
    let sum: Vec<f64> = h.iter().zip(&u).map(|(a, b)| a + b).collect();
    assert_eq!(sum.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), fixed.map(f64::to_bits).to_vec());
    let mut grad = LayerGrad::<f64, 5, 3, 4, 2>::zeros();
    let mut g_ctx = [[0.0; 5]; 6];
    let state = context_state(&layer, &ctx);
    let dh = lsa_query_backward(&layer, &ctx, &state, &h, &r, &mut grad, Some(&mut g_ctx)).unwrap();
    let mut grad2 = LayerGrad::<f64, 5, 3, 4, 2>::zeros();
    let (mut dh2, mut g_ctx2) = ([0.0; 5], [[0.0; 5]; 6]);
    let mut gm = grad2.heads.each_mut().map(HeadMut::from);
    linear_token_backward(
        w,
        &refs,
        ctx.as_flattened(),
        &h,
        &r,
        &mut gm,
        &mut dh2,
        Some(g_ctx2.as_flattened_mut()),
        &mut s.vectors(),
        &mut map,
    )
    .unwrap();
    assert_eq!(dh.map(f64::to_bits), dh2.map(f64::to_bits));
    assert_eq!(g_ctx, g_ctx2);
    assert_eq!(grad, grad2);
}

/// Tokens, weights or scratch of the wrong length are errors, and nothing is written before the check.
#[test]
fn bad_lengths_and_short_scratch_are_errors_not_panics() {
    let mut g = Gen::new(8);
    let w = Widths { e: 4, dk: 3, dv: 2 };
    let mut s = Setup::new(&mut g, w, 2, 0.5);
    let heads = s.heads.clone();
    let refs: Vec<HeadRef<'_, f64>> = heads.iter().map(|[w_q, w_k, w_v, p]| HeadRef { w_q, w_k, w_v, p }).collect();
    let (ctx, h) = (vec![0.5; 12], vec![0.25; 4]);
    let mut u = vec![7.0; 4];
    let bad = |r: Result<(), Error>| matches!(r, Err(Error::LengthMismatch { .. } | Error::BufferTooSmall { .. }));
    assert!(bad(token_update(w, &refs, &ctx[..11], &h, &mut u, &mut s.vectors())));
    assert!(bad(token_update(w, &refs, &ctx, &h[..3], &mut u, &mut s.vectors())));
    let short = HeadRef { w_q: &refs[0].w_q[..5], ..refs[0] };
    assert!(bad(token_update(w, &[short], &ctx, &h, &mut u, &mut s.vectors())));
    let mut key = vec![0.0; 2];
    let (mut value, mut token, mut stats) = (vec![0.0; 8], vec![0.0; 20], vec![0.0; 4]);
    let mut tiny = Vectors { key: &mut key, value: &mut value, token: &mut token, heads: &mut stats };
    assert!(bad(token_update(w, &refs, &ctx, &h, &mut u, &mut tiny)));
    assert_eq!(u, [7.0; 4], "nothing written before the checks");
    let mut map = vec![0.0; 5];
    assert!(bad(linear_token_update(w, &refs, &ctx, &h, &mut u, &mut s.vectors(), &mut map)));
    let mut grads: Vec<[Vec<f64>; 4]> = heads.iter().map(|m| [0, 1, 2, 3].map(|i| vec![0.0; m[i].len()])).collect();
    let mut gm: Vec<HeadMut<'_, f64>> =
        grads.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
    let mut dh = vec![0.0; 4];
    let mut g_short = vec![0.0; 8];
    let r = token_backward(w, &refs, &ctx, &h, &h, &mut gm, &mut dh, Some(&mut g_short), &mut s.vectors());
    assert!(bad(r));
    assert!(bad(token_backward(w, &refs, &ctx, &h, &h, &mut gm[..1], &mut dh, None, &mut s.vectors())));
    assert!(grads.iter().flatten().flatten().all(|&v| v == 0.0));
}
