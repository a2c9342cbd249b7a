//! The merged LSA head at run-time widths (`MergedRef`): the query and full-layer kernels against a naive f64
//! reference (dense matrices, the definition `h_t + P sum_j (W_Q h_t . W_K e_j) W_V e_j` in merged form), their
//! backward against central finite differences, at widths the const-generic tests never reach (beyond one 16-wide
//! tile, E = 1, empty contexts), and every bad length refused without a panic.

use crate::common::assert_close;
use dualform::merged_ref::{CacheMut, CacheRef, GradMut};
use dualform::{Error, MergedRef, Update};
use nalgebra::{DMatrix, DVector};

/// An identity exact in real arithmetic, in f64.
const F64_REL: f64 = 1e-12;
/// Analytic against central-difference gradients (step 1e-6, f64).
const FD_REL: f64 = 1e-6;
const STEP: f64 = 1e-6;

/// Widths and context lengths: one coordinate, around the four lanes, past one tile of 16, and a large E.
const SHAPES: [(usize, usize); 6] = [(1, 3), (3, 0), (5, 7), (17, 4), (23, 30), (40, 9)];

struct Rng(dualform::rng::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(dualform::rng::SplitMix64::new(seed))
    }
    fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| (self.0.next_open01() - 0.5) * 2.0 * scale).collect()
    }
}

fn dense(e: usize, col_major: &[f64]) -> DMatrix<f64> {
    DMatrix::from_column_slice(e, e, col_major)
}

/// The merged layer's `C = B (sum_j e_j e_j^T) A` in dense f64.
fn naive_c(e: usize, a: &[f64], b: &[f64], ctx: &[f64]) -> DMatrix<f64> {
    let mut g = DMatrix::zeros(e, e);
    for tok in ctx.chunks_exact(e) {
        let v = DVector::from_column_slice(tok);
        g += &v * v.transpose();
    }
    dense(e, b) * g * dense(e, a)
}

fn rules() -> [(&'static str, Update<f64>); 3] {
    [
        ("residual", Update::residual()),
        ("damped 0.75, last only", Update { scale: 0.75, first: usize::MAX, clip: None }),
        ("damped 0.5, all", Update { scale: 0.5, first: 0, clip: None }),
    ]
}

/// `rule` at width `e` (a `first` past the width means "only the last coordinate").
fn at_width(rule: Update<f64>, e: usize) -> Update<f64> {
    Update { first: rule.first.min(e - 1), ..rule }
}

#[test]
fn the_query_kernel_matches_the_naive_reference_at_any_width() {
    for (e, n) in SHAPES {
        let mut r = Rng::new((e * 100 + n) as u64);
        let (a, b, ctx, h) = (r.vec(e * e, 0.5), r.vec(e * e, 0.5), r.vec(n * e, 1.0), r.vec(e, 1.0));
        let head = MergedRef::new(e, &a, &b).unwrap();
        let (mut out, mut saved) = (vec![0.0; e], vec![0.0; 2 * e]);
        head.query_forward(&ctx, &h, &mut out, &mut saved).unwrap();
        let hv = DVector::from_column_slice(&h);
        let want = &hv + naive_c(e, &a, &b, &ctx) * &hv;
        assert_close(&format!("query, e {e}, n {n}"), &out, want.as_slice(), F64_REL);
    }
}

#[test]
fn the_layer_kernel_matches_the_naive_reference_under_each_rule() {
    for (e, n) in SHAPES {
        let mut r = Rng::new((e * 1000 + n) as u64);
        let (a, b, ctx, query) = (r.vec(e * e, 0.5), r.vec(e * e, 0.5), r.vec(n * e, 1.0), r.vec(e, 1.0));
        let head = MergedRef::new(e, &a, &b).unwrap();
        let c = naive_c(e, &a, &b, &ctx);
        for (name, rule) in rules() {
            let upd = at_width(rule, e);
            let (mut cx, mut q) = (ctx.clone(), query.clone());
            let (mut gram, mut ga, mut cm, mut u) =
                (vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e]);
            let cache = CacheMut { gram: &mut gram, ga: &mut ga, c: &mut cm };
            head.layer_forward(&upd, &mut cx, &mut q, cache, &mut u).unwrap();
            let mut want = Vec::new();
            for tok in ctx.chunks_exact(e).chain(std::iter::once(&query[..])) {
                let uv = &c * DVector::from_column_slice(tok);
                want.extend(
                    tok.iter().enumerate().map(|(i, &t)| if i >= upd.first { t + upd.scale * uv[i] } else { t }),
                );
            }
            let got: Vec<f64> = cx.iter().chain(&q).copied().collect();
            assert_close(&format!("layer, e {e}, n {n}, {name}"), &got, &want, F64_REL);
        }
    }
}

/// `L = sum_t w_t . h'_t` over every output token of the layer (context, then query).
fn layer_loss(e: usize, upd: &Update<f64>, a: &[f64], b: &[f64], ctx: &[f64], query: &[f64], w: &[f64]) -> f64 {
    let head = MergedRef::new(e, a, b).unwrap();
    let (mut cx, mut q) = (ctx.to_vec(), query.to_vec());
    let (mut gram, mut ga, mut cm, mut u) = (vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e]);
    head.layer_forward(upd, &mut cx, &mut q, CacheMut { gram: &mut gram, ga: &mut ga, c: &mut cm }, &mut u).unwrap();
    cx.iter().chain(&q).zip(w).map(|(x, y)| x * y).sum()
}

/// Central differences of `f` along each coordinate of `x` that `pick` selects.
fn numeric(x: &[f64], pick: impl Fn(usize) -> bool, f: impl Fn(&[f64]) -> f64) -> Vec<(usize, f64)> {
    (0..x.len())
        .filter(|&i| pick(i))
        .map(|i| {
            let (mut p, mut m) = (x.to_vec(), x.to_vec());
            p[i] += STEP;
            m[i] -= STEP;
            (i, (f(&p) - f(&m)) / (2.0 * STEP))
        })
        .collect()
}

fn check(label: &str, analytic: &[f64], numeric: &[(usize, f64)]) {
    let got: Vec<f64> = numeric.iter().map(|&(i, _)| analytic[i]).collect();
    let want: Vec<f64> = numeric.iter().map(|&(_, v)| v).collect();
    assert_close(label, &got, &want, FD_REL);
}

#[test]
fn the_layer_backward_matches_finite_differences_at_any_width() {
    for (e, n) in [(1, 3), (5, 7), (17, 4), (23, 6)] {
        let mut r = Rng::new((e * 7 + n) as u64);
        let (a, b, ctx, query) = (r.vec(e * e, 0.3), r.vec(e * e, 0.3), r.vec(n * e, 1.0), r.vec(e, 1.0));
        let w = r.vec((n + 1) * e, 1.0);
        let every = |i: usize| i.is_multiple_of(7) || i < 3;
        for (name, rule) in rules() {
            let upd = at_width(rule, e);
            let head = MergedRef::new(e, &a, &b).unwrap();
            let (mut cx, mut q) = (ctx.clone(), query.clone());
            let (mut gram, mut ga, mut cm, mut u) =
                (vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e]);
            head.layer_forward(&upd, &mut cx, &mut q, CacheMut { gram: &mut gram, ga: &mut ga, c: &mut cm }, &mut u)
                .unwrap();
            let (mut gc, mut gq) = (w[..n * e].to_vec(), w[n * e..].to_vec());
            let (mut da, mut db) = (vec![0.0; e * e], vec![0.0; e * e]);
            let (sm, sv) = MergedRef::<f64>::layer_backward_scratch(e);
            let (mut mats, mut vecs) = (vec![f64::NAN; sm], vec![f64::NAN; sv]);
            let cache = CacheRef { gram: &gram, ga: &ga, c: &cm };
            head.layer_backward(
                &upd,
                cache,
                &ctx,
                &query,
                &mut gc,
                &mut gq,
                GradMut { a: &mut da, b: &mut db },
                &mut mats,
                &mut vecs,
            )
            .unwrap();
            let label = format!("e {e}, n {n}, {name}");
            let fa = numeric(&a, every, |x| layer_loss(e, &upd, x, &b, &ctx, &query, &w));
            check(&format!("{label}: dA"), &da, &fa);
            let fb = numeric(&b, every, |x| layer_loss(e, &upd, &a, x, &ctx, &query, &w));
            check(&format!("{label}: dB"), &db, &fb);
            let fc = numeric(&ctx, every, |x| layer_loss(e, &upd, &a, &b, x, &query, &w));
            check(&format!("{label}: d context"), &gc, &fc);
            let fq = numeric(&query, |_| true, |x| layer_loss(e, &upd, &a, &b, &ctx, x, &w));
            check(&format!("{label}: d query"), &gq, &fq);
        }
    }
}

#[test]
fn the_query_backward_matches_finite_differences_at_any_width() {
    for (e, n) in [(1, 2), (6, 9), (19, 5)] {
        let mut r = Rng::new((e * 31 + n) as u64);
        let (a, b, ctx, h, w) = (r.vec(e * e, 0.4), r.vec(e * e, 0.4), r.vec(n * e, 1.0), r.vec(e, 1.0), r.vec(e, 1.0));
        let loss = |a: &[f64], b: &[f64], ctx: &[f64], h: &[f64]| {
            let (mut out, mut saved) = (vec![0.0; e], vec![0.0; 2 * e]);
            MergedRef::new(e, a, b).unwrap().query_forward(ctx, h, &mut out, &mut saved).unwrap();
            out.iter().zip(&w).map(|(x, y)| x * y).sum::<f64>()
        };
        let head = MergedRef::new(e, &a, &b).unwrap();
        let (mut out, mut saved) = (vec![0.0; e], vec![0.0; 2 * e]);
        head.query_forward(&ctx, &h, &mut out, &mut saved).unwrap();
        let (mut da, mut db, mut gc, mut dh) = (vec![0.0; e * e], vec![0.0; e * e], vec![0.0; n * e], vec![0.0; e]);
        let mut scratch = vec![f64::NAN; MergedRef::<f64>::query_scratch(e)];
        let grad = GradMut { a: &mut da, b: &mut db };
        head.query_backward(&ctx, &h, &saved, &w, grad, Some(&mut gc), &mut dh, &mut scratch).unwrap();
        let all = |_| true;
        check(&format!("e {e}: dA"), &da, &numeric(&a, all, |x| loss(x, &b, &ctx, &h)));
        check(&format!("e {e}: dB"), &db, &numeric(&b, all, |x| loss(&a, x, &ctx, &h)));
        check(&format!("e {e}: d context"), &gc, &numeric(&ctx, all, |x| loss(&a, &b, x, &h)));
        check(&format!("e {e}: dh"), &dh, &numeric(&h, all, |x| loss(&a, &b, &ctx, x)));
    }
}

#[test]
fn bad_widths_lengths_and_short_scratch_are_errors_not_panics() {
    let (a, b) = (vec![0.5f32; 9], vec![0.25f32; 9]);
    assert!(matches!(MergedRef::new(0, &a[..0], &b[..0]), Err(Error::InvalidParameter(_))));
    assert_eq!(MergedRef::new(3, &a[..8], &b).unwrap_err(), Error::LengthMismatch { expected: 9, found: 8 });
    let head = MergedRef::new(3, &a, &b).unwrap();
    let (ctx, h) = (vec![1.0f32; 6], vec![1.0f32; 3]);
    let (mut out, mut saved) = (vec![0.0f32; 3], vec![0.0f32; 6]);
    // A context that is not a whole number of tokens, a short token, short saved values.
    assert!(head.query_forward(&ctx[..5], &h, &mut out, &mut saved).is_err());
    assert!(head.query_forward(&ctx, &h[..2], &mut out, &mut saved).is_err());
    assert!(matches!(head.query_forward(&ctx, &h, &mut out, &mut saved[..5]), Err(Error::BufferTooSmall { .. })));
    head.query_forward(&ctx, &h, &mut out, &mut saved).unwrap();
    let (mut da, mut db, mut dh, mut s) = (vec![0.0f32; 9], vec![0.0f32; 9], vec![0.0f32; 3], vec![0.0f32; 6]);
    let mut gc = vec![0.0f32; 3];
    let r =
        head.query_backward(&ctx, &h, &saved, &h, GradMut { a: &mut da, b: &mut db }, Some(&mut gc), &mut dh, &mut s);
    assert_eq!(r, Err(Error::LengthMismatch { expected: 6, found: 3 }));
    assert!(da.iter().chain(&db).all(|&v| v == 0.0), "nothing is accumulated on a refused call");
    // The layer: a bad rule and short scratch leave every token as it was.
    let (mut cx, mut q) = (ctx.clone(), h.clone());
    let (mut g1, mut g2, mut g3, mut u) = (vec![0.0f32; 9], vec![0.0f32; 9], vec![0.0f32; 9], vec![0.0f32; 3]);
    let bad = Update { scale: f32::NAN, first: 0, clip: None };
    let cache = CacheMut { gram: &mut g1, ga: &mut g2, c: &mut g3 };
    assert!(head.layer_forward(&bad, &mut cx, &mut q, cache, &mut u).is_err());
    assert_eq!((&cx, &q), (&ctx, &h));
    let (mut gcx, mut gq) = (vec![1.0f32; 6], vec![1.0f32; 3]);
    let (mut mats, mut vecs) = (vec![0.0f32; 6 * 9 - 1], vec![0.0f32; 12]);
    let cache = CacheRef { gram: &g1, ga: &g2, c: &g3 };
    let grad = GradMut { a: &mut da, b: &mut db };
    let r = head.layer_backward(&Update::residual(), cache, &ctx, &h, &mut gcx, &mut gq, grad, &mut mats, &mut vecs);
    assert!(matches!(r, Err(Error::BufferTooSmall { .. })));
    assert!(gcx.iter().chain(&gq).all(|&v| v == 1.0));
}

#[test]
fn merge_and_pullback_match_dense_products_for_any_head_shape() {
    use dualform::merged_ref::{merge, pullback, HeadShape};
    for (e, dk, dv) in [(1, 1, 1), (4, 2, 7), (11, 11, 11), (18, 5, 3), (6, 20, 9)] {
        let shape = HeadShape { e, dk, dv };
        let mut r = Rng::new((e * 97 + dk * 13 + dv) as u64);
        let (w_q, w_k, w_v, p) = (r.vec(dk * e, 1.0), r.vec(dk * e, 1.0), r.vec(dv * e, 1.0), r.vec(e * dv, 1.0));
        let (da, db) = (r.vec(e * e, 1.0), r.vec(e * e, 1.0));
        let m = |rows, cols, v: &[f64]| DMatrix::from_column_slice(rows, cols, v);
        let (mq, mk, mv, mp) = (m(dk, e, &w_q), m(dk, e, &w_k), m(dv, e, &w_v), m(e, dv, &p));
        let mut scratch = vec![f64::NAN; shape.scratch()];
        let (mut a, mut b) = (vec![0.0; e * e], vec![0.0; e * e]);
        merge(shape, [&w_q, &w_k, &w_v, &p], &mut a, &mut b, &mut scratch).unwrap();
        let label = format!("e {e}, dk {dk}, dv {dv}");
        assert_close(&format!("{label}: A"), &a, (mk.transpose() * &mq).as_slice(), F64_REL);
        assert_close(&format!("{label}: B"), &b, (&mp * &mv).as_slice(), F64_REL);
        // Gradients are added to what is there.
        let mut g: [Vec<f64>; 4] = [vec![1.0; dk * e], vec![1.0; dk * e], vec![1.0; dv * e], vec![1.0; e * dv]];
        let [g_q, g_k, g_v, g_p] = &mut g;
        let grad = [&mut g_q[..], &mut g_k[..], &mut g_v[..], &mut g_p[..]];
        pullback(shape, [&w_q, &w_k, &w_v, &p], &da, &db, grad, &mut scratch).unwrap();
        let (mda, mdb) = (m(e, e, &da), m(e, e, &db));
        let one = |rows, cols| DMatrix::from_element(rows, cols, 1.0);
        assert_close(&format!("{label}: dW_Q"), &g[0], (one(dk, e) + &mk * &mda).as_slice(), F64_REL);
        assert_close(&format!("{label}: dW_K"), &g[1], (one(dk, e) + &mq * mda.transpose()).as_slice(), F64_REL);
        assert_close(&format!("{label}: dW_V"), &g[2], (one(dv, e) + mp.transpose() * &mdb).as_slice(), F64_REL);
        assert_close(&format!("{label}: dP"), &g[3], (one(e, dv) + &mdb * mv.transpose()).as_slice(), F64_REL);
        // Short scratch or a matrix of the wrong size: refused.
        let short = shape.scratch() - 1;
        assert!(merge(shape, [&w_q, &w_k, &w_v, &p], &mut a, &mut b, &mut scratch[..short]).is_err());
        assert!(merge(shape, [&w_q, &w_k, &w_v[1..], &p], &mut a, &mut b, &mut scratch).is_err());
    }
}

#[test]
fn the_run_time_gd_constructions_are_the_fixed_size_ones() {
    use dualform::nalgebra::SMatrix;
    use dualform::{gd_head_into, gd_layer, gdpp_layer};
    let w0 = SMatrix::<f32, 2, 3>::from_fn(|i, j| (i * 3 + j) as f32 * 0.25 - 0.5);
    for gamma in [None, Some(0.125f32)] {
        let layer = match gamma {
            None => gd_layer::<f32, 3, 2, 5>(&w0, 0.7, 6).unwrap(),
            Some(g) => gdpp_layer::<f32, 3, 2, 5>(&w0, 0.7, g, 6).unwrap(),
        };
        let h = &layer.heads[0];
        let mut m: [Vec<f32>; 4] = std::array::from_fn(|_| vec![f32::NAN; 25]);
        let [a, b, c, d] = &mut m;
        gd_head_into(3, 2, w0.as_slice(), 0.7, gamma, 6, [a, b, c, d]).unwrap();
        for (got, want) in m.iter().zip([h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()]) {
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                want.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                "{gamma:?}"
            );
        }
        let [a, b, c, d] = &mut m;
        assert!(gd_head_into(3, 2, &w0.as_slice()[1..], 0.7, gamma, 6, [a, b, c, d]).is_err());
        let [a, b, c, d] = &mut m;
        assert!(gd_head_into(3, 2, w0.as_slice(), f32::NAN, gamma, 6, [a, b, c, d]).is_err());
        let [a, b, c, d] = &mut m;
        assert!(gd_head_into(3, 2, w0.as_slice(), 0.7, gamma, 0, [a, b, c, d]).is_err());
    }
}

/// The layer kernels on [`Lanes`]: eight tasks side by side, lane `l` the same bits as the `f32` kernel on task `l`
/// (outputs, caches, input gradients and weight gradients), under each rule and with token clipping that clamps
/// some coordinates of some tasks only, at widths with and without a fixed-width instance.
#[test]
fn eight_tasks_in_lanes_are_the_bits_of_eight_f32_runs() {
    use dualform::lanes::Lanes;
    use dualform::Real;
    const L: usize = 8;
    let clipped = Update { scale: 1.0, first: 0, clip: Some(0.6) };
    for (e, n) in [(1, 3), (3, 0), (5, 7), (11, 10), (17, 4), (23, 6)] {
        let mut rng = Rng::new(41 + e as u64);
        let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
        let (a, b) = (f(rng.vec(e * e, 0.6)), f(rng.vec(e * e, 0.6)));
        type Task = (Vec<f32>, Vec<f32>, Vec<f32>);
        let tasks: Vec<Task> =
            (0..L).map(|_| (f(rng.vec(n * e, 1.0)), f(rng.vec(e, 1.0)), f(rng.vec((n + 1) * e, 1.0)))).collect();
        let lanes = |pick: &dyn Fn(&Task) -> &Vec<f32>| -> Vec<Lanes<L>> {
            (0..pick(&tasks[0]).len()).map(|i| Lanes(core::array::from_fn(|l| pick(&tasks[l])[i]))).collect()
        };
        let splat = |m: &[f32]| m.iter().map(|&v| Lanes::<L>::splat(v)).collect::<Vec<_>>();
        let (la, lb) = (splat(&a), splat(&b));
        let rules = rules().map(|(name, r)| (name, at_width(r, e)));
        let rules = rules.iter().map(|(name, r)| (*name, Update { scale: r.scale as f32, first: r.first, clip: None }));
        for (name, upd) in rules.chain([("clipped at 0.6", clipped)]) {
            let lupd = Update { scale: Lanes::splat(upd.scale), first: upd.first, clip: upd.clip.map(Lanes::splat) };
            // The lanes' run.
            let head = MergedRef::new(e, &la, &lb).unwrap();
            let (mut ctx, mut query) = (lanes(&|t| &t.0), lanes(&|t| &t.1));
            let (ctx_in, query_in) = (ctx.clone(), query.clone());
            let z = || vec![Lanes::<L>::ZERO; e * e];
            let (mut gram, mut ga, mut c) = (z(), z(), z());
            let mut u = vec![Lanes::ZERO; e];
            let cache = CacheMut { gram: &mut gram, ga: &mut ga, c: &mut c };
            head.layer_forward(&lupd, &mut ctx, &mut query, cache, &mut u).unwrap();
            let g_out = lanes(&|t| &t.2);
            let (mut gc, mut gq) = (g_out[..n * e].to_vec(), g_out[n * e..].to_vec());
            let (mut da, mut db) = (z(), z());
            let (ms, vs) = MergedRef::<f32>::layer_backward_scratch(e);
            let (mut mats, mut vecs) = (vec![Lanes::ZERO; ms], vec![Lanes::ZERO; vs]);
            let cache = CacheRef { gram: &gram, ga: &ga, c: &c };
            let grad = GradMut { a: &mut da, b: &mut db };
            head.layer_backward(&lupd, cache, &ctx_in, &query_in, &mut gc, &mut gq, grad, &mut mats, &mut vecs)
                .unwrap();
            // Each task alone in f32.
            let head = MergedRef::new(e, &a, &b).unwrap();
            for (l, (t_ctx, t_query, t_g)) in tasks.iter().enumerate() {
                let (mut ctx1, mut query1) = (t_ctx.clone(), t_query.clone());
                let (mut gram1, mut ga1, mut c1) = (vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e]);
                let cache = CacheMut { gram: &mut gram1, ga: &mut ga1, c: &mut c1 };
                head.layer_forward(&upd, &mut ctx1, &mut query1, cache, &mut vec![0.0; e]).unwrap();
                let (mut gc1, mut gq1) = (t_g[..n * e].to_vec(), t_g[n * e..].to_vec());
                let (mut da1, mut db1) = (vec![0.0; e * e], vec![0.0; e * e]);
                let cache = CacheRef { gram: &gram1, ga: &ga1, c: &c1 };
                let grad = GradMut { a: &mut da1, b: &mut db1 };
                let (mut mats, mut vecs) = (vec![0.0; ms], vec![0.0; vs]);
                head.layer_backward(&upd, cache, t_ctx, t_query, &mut gc1, &mut gq1, grad, &mut mats, &mut vecs)
                    .unwrap();
                let lane = |v: &[Lanes<L>]| v.iter().map(|x| x.0[l].to_bits()).collect::<Vec<u32>>();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                let at = format!("E {e} N {n} {name}, lane {l}");
                assert_eq!(lane(&ctx), bits(&ctx1), "{at}: context out");
                assert_eq!(lane(&query), bits(&query1), "{at}: query out");
                assert_eq!(lane(&c), bits(&c1), "{at}: C");
                assert_eq!(lane(&gc), bits(&gc1), "{at}: dL/dctx");
                assert_eq!(lane(&gq), bits(&gq1), "{at}: dL/dquery");
                assert_eq!(lane(&da), bits(&da1), "{at}: dA");
                assert_eq!(lane(&db), bits(&db1), "{at}: dB");
            }
            if upd.clip.is_some() && n > 0 {
                // The clip decided differently between tasks: some coordinate is clamped in one lane, free in another.
                let clamped = |l: usize| ctx.iter().filter(|x| x.0[l].abs() == 0.6).count();
                assert!((0..L).any(|l| clamped(l) > 0), "E {e}: the clip never acts");
                assert!((0..L).any(|l| clamped(l) < n * e), "E {e}: the clip clamps everything");
            }
        }
    }
}

/// The attribution of a scalar prediction to the demonstrations: each term against the naive f64 term
/// `-(e_j . A h) (B e_j)_last` of the definition; the prediction it returns is `-h_y + sum_j terms[j]` exactly, and
/// the same bits as `MergedHead::predict_scalar` (f32, E = 11); removing demonstration `j` from the context changes
/// the prediction by exactly its term in f64 (the layer is a sum over its context). Bad lengths are refused.
#[test]
fn attribution_splits_the_prediction_into_one_exact_term_per_demonstration() {
    let mut rng = Rng::new(71);
    for &(e, n) in &SHAPES {
        let (a, b) = (rng.vec(e * e, 0.4), rng.vec(e * e, 0.4));
        let (ctx, h) = (rng.vec(n * e, 1.0), rng.vec(e, 1.0));
        let head = MergedRef::new(e, &a, &b).unwrap();
        let (mut terms, mut saved) = (vec![0.0; n], vec![0.0; 2 * e]);
        let pred = head.attribution(&ctx, &h, &mut terms, &mut saved).unwrap();
        let (da, db) = (dense(e, &a), dense(e, &b));
        let ah = &da * DVector::from_column_slice(&h);
        let want: Vec<f64> = ctx
            .chunks_exact(e)
            .map(|tok| {
                let v = DVector::from_column_slice(tok);
                -(v.dot(&ah)) * (&db * &v)[e - 1]
            })
            .collect();
        assert_close(&format!("E {e} N {n}: terms"), &terms, &want, F64_REL);
        assert_eq!(pred, -h[e - 1] + terms.iter().sum::<f64>(), "E {e} N {n}: prediction = -h_y + sum of terms");
        // Leaving demonstration j out removes exactly its term.
        for (j, term) in terms.iter().enumerate() {
            let mut rest = ctx.clone();
            rest.drain(j * e..(j + 1) * e);
            let mut t = vec![0.0; n - 1];
            let without = head.attribution(&rest, &h, &mut t, &mut saved.clone()).unwrap();
            assert!((pred - without - term).abs() <= F64_REL * pred.abs().max(1.0), "E {e} N {n}: leave {j} out");
        }
        assert_eq!(
            head.attribution(&ctx, &h, &mut vec![0.0; n + 1], &mut saved),
            Err(Error::LengthMismatch { expected: n, found: n + 1 })
        );
        assert!(head.attribution(&ctx, &h, &mut terms, &mut saved[..2 * e - 1]).is_err());
        assert!(head.attribution(&ctx[..ctx.len().saturating_sub(1)], &h, &mut terms, &mut saved).is_err() || n == 0);
    }
    // f32 at E = 11: the prediction is predict_scalar's, bit for bit.
    let mut rng = Rng::new(72);
    for _ in 0..20 {
        let head = dualform::MergedHead::<f32, 11> {
            a: nalgebra::SMatrix::from_iterator(rng.vec(121, 0.4).into_iter().map(|v| v as f32)),
            b: nalgebra::SMatrix::from_iterator(rng.vec(121, 0.4).into_iter().map(|v| v as f32)),
        };
        let ctx: Vec<[f32; 11]> = (0..10).map(|_| core::array::from_fn(|_| (rng.vec(1, 1.0)[0]) as f32)).collect();
        let h: [f32; 11] = core::array::from_fn(|_| rng.vec(1, 1.0)[0] as f32);
        let mut terms = [0.0f32; 10];
        let pred = head.attribution(&ctx, &h, &mut terms).unwrap();
        assert_eq!(pred.to_bits(), head.predict_scalar(&ctx, &h).to_bits());
        let sum = terms.iter().fold(0.0f32, |s, t| s + t);
        assert_eq!((-h[10] + sum).to_bits(), pred.to_bits(), "the terms sum to the prediction in f32 too");
    }
}
