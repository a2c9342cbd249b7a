//! Backward (vector-Jacobian) kernels of the LSA layer (full mask, residual update), so that training and inference
//! share one forward: the harness runs the forward kernels of this crate and these VJPs, nothing else.
//!
//! Forward, per head: `k_j = W_K e_j`, `v_j = W_V e_j` over the context, `S = sum_j v_j k_j^T`, and for every token
//! `q_t = W_Q h_t`, `r_t = S q_t`, `h'_t = h_t + sum_heads P r_t`. Given `G_t = dL/dh'_t`:
//! `g_t = P^T G_t`, `dP += G_t r_t^T`, `dS = sum_t g_t q_t^T`, `dW_Q += (S^T g_t) h_t^T`,
//! `dh_t += W_Q^T S^T g_t`, and through `S`: `dW_V += (dS k_j) e_j^T`, `dW_K += (dS^T v_j) e_j^T`,
//! `de_j += W_V^T dS k_j + W_K^T dS^T v_j`.
//!
//! - [`lsa_backward`]: every token carries a gradient (layers of a stack); O(N E DK) per head.
//! - [`lsa_query_backward`]: only the query carries one (a single layer whose loss reads the query). Then
//!   `dS = g q^T` is rank one and, with `a = W_K^T q` and `b = W_V^T g`, `dW_V += g (sum_j (a . e_j) e_j)^T`,
//!   `dW_K += q (sum_j (b . e_j) e_j)^T` and `de_j += b (a . e_j) + a (b . e_j)`: O(N E) per head beyond the
//!   `E x DK` products. The context is a slice, so N need not be a compile-time constant.
//!
//! Softmax attention ([`crate::softmax_attention`]), per head and token `h` over its visible context: `q = W_Q h`,
//! logits `s_j = c q . k_j` with `c = 1/sqrt(DK)`, weights `a = softmax(s)`, `o = sum_j a_j v_j`, `h' = h + P o`.
//! Given `G = dL/dh'`: `dP += G o^T`, `g_o = P^T G`, `g_s_j = a_j (g_o . v_j - g_o . o)`, `g_q = c sum_j g_s_j k_j`,
//! `dW_Q += g_q h^T`, `dh += W_Q^T g_q`, and for each context token `dW_K += c g_s_j q e_j^T`,
//! `dW_V += a_j g_o e_j^T`, `de_j += W_K^T (c g_s_j q) + W_V^T (a_j g_o)`. The weights are recomputed from the
//! logits' running maximum and sum ([`softmax_token_backward`] keeps no buffer of length N):
//! [`softmax_backward`] applies it to every token of a layer, causal or full.
//!
//! Gradients are accumulated (`+=`) into a [`Layer`]-shaped gradient in the fixed orders of [`crate::linalg`]
//! (tokens in increasing index, heads in order). Only the plain residual update is differentiated (the harness
//! trains with it). The tests check every formula against central finite differences in f64 (1e-7 relative).

use crate::attention::{visible, AssociativeState, Normalise};
use crate::features::Identity;
use crate::layer::Layer;
use crate::linalg::{add_outer, axpy, dot, matvec, matvec_t, zeros};
use crate::softmax::{logit_scale, MaxSum, SoftmaxWork};
use crate::{Error, Real};

/// A gradient has the shape of the layer it belongs to.
pub type LayerGrad<T, const E: usize, const DK: usize, const DV: usize, const H: usize> = Layer<T, E, DK, DV, H>;

/// The running sums `S` of a layer's context given as a slice (N known at run time).
pub fn context_state<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    ctx: &[[T; E]],
) -> AssociativeState<T, DK, DV, H> {
    let mut state = AssociativeState::new();
    for e in ctx {
        state.add(layer, &Identity, Normalise::None, e);
    }
    state
}

/// The query's output `h + sum_heads P S W_Q h` for a context state (the forward of [`lsa_query_backward`]).
pub fn query_forward<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    state: &AssociativeState<T, DK, DV, H>,
    h: &[T; E],
) -> [T; E] {
    let mut out = *h;
    // Identity features and no normaliser: `update` cannot fail.
    if let Ok(u) = state.update(layer, &Identity, Normalise::None, h) {
        for (o, ui) in out.iter_mut().zip(u.iter()) {
            *o += *ui;
        }
    }
    out
}

/// VJP of the query's output with respect to the parameters, the query input and (optionally) the context inputs,
/// when only the query's output carries the gradient `g = dL/dh'`. `state` must be [`context_state`] of `ctx`.
/// Adds into `grad` and `g_ctx`; returns `dL/dh`. Errors: [`Error::LengthMismatch`] when `g_ctx` (if given) or
/// `state.count()` differs from the number of context tokens (checked before anything is accumulated).
pub fn lsa_query_backward<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    ctx: &[[T; E]],
    state: &AssociativeState<T, DK, DV, H>,
    h: &[T; E],
    g: &[T; E],
    grad: &mut LayerGrad<T, E, DK, DV, H>,
    mut g_ctx: Option<&mut [[T; E]]>,
) -> Result<[T; E], Error> {
    if state.count != ctx.len() {
        return Err(Error::LengthMismatch { expected: ctx.len(), found: state.count });
    }
    if let Some(gc) = g_ctx.as_deref() {
        if gc.len() != ctx.len() {
            return Err(Error::LengthMismatch { expected: ctx.len(), found: gc.len() });
        }
    }
    let mut dh = *g;
    for ((head, s), gh) in layer.heads.iter().zip(state.s.iter()).zip(grad.heads.iter_mut()) {
        let q = matvec(&head.w_q, h);
        let r = matvec(s, &q);
        let gr = matvec_t(&head.p, g);
        add_outer(&mut gh.p, g, &r);
        let gq = matvec_t(s, &gr);
        add_outer(&mut gh.w_q, &gq, h);
        let dq = matvec_t(&head.w_q, &gq);
        for (d, x) in dh.iter_mut().zip(dq.iter()) {
            *d += *x;
        }
        let a = matvec_t(&head.w_k, &q);
        let b = matvec_t(&head.w_v, &gr);
        let mut ca = [T::ZERO; E];
        let mut cb = [T::ZERO; E];
        for e in ctx {
            axpy(&mut ca, dot(&a, e), e);
            axpy(&mut cb, dot(&b, e), e);
        }
        add_outer(&mut gh.w_v, &gr, &ca);
        add_outer(&mut gh.w_k, &q, &cb);
        if let Some(gc) = g_ctx.as_deref_mut() {
            for (gj, e) in gc.iter_mut().zip(ctx.iter()) {
                axpy(gj, dot(&a, e), &b);
                axpy(gj, dot(&b, e), &a);
            }
        }
    }
    Ok(dh)
}

/// VJP of a full LSA layer (every token, residual update). `ctx`/`query` are the layer's inputs; `g_ctx`/`g_query`
/// hold `dL/d(output)` on entry and `dL/d(input)` on return; parameter gradients are added into `grad`.
pub fn lsa_backward<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    ctx: &[[T; E]; N],
    query: &[T; E],
    g_ctx: &mut [[T; E]; N],
    g_query: &mut [T; E],
    grad: &mut LayerGrad<T, E, DK, DV, H>,
) {
    let state = context_state(layer, ctx);
    let g_out_ctx = *g_ctx;
    let g_out_query = *g_query;
    let tokens = || ctx.iter().zip(g_out_ctx.iter()).chain(core::iter::once((query, &g_out_query)));
    for ((head, s), gh) in layer.heads.iter().zip(state.s.iter()).zip(grad.heads.iter_mut()) {
        let mut ds = zeros::<T, DV, DK>();
        let grads_in = g_ctx.iter_mut().chain(core::iter::once(&mut *g_query));
        for ((h, g), gin) in tokens().zip(grads_in) {
            let q = matvec(&head.w_q, h);
            let gr = matvec_t(&head.p, g);
            add_outer(&mut gh.p, g, &matvec(s, &q));
            add_outer(&mut ds, &gr, &q);
            let gq = matvec_t(s, &gr);
            add_outer(&mut gh.w_q, &gq, h);
            let dq = matvec_t(&head.w_q, &gq);
            for (d, x) in gin.iter_mut().zip(dq.iter()) {
                *d += *x;
            }
        }
        for (e, gin) in ctx.iter().zip(g_ctx.iter_mut()) {
            let k = matvec(&head.w_k, e);
            let v = matvec(&head.w_v, e);
            let gv = matvec(&ds, &k);
            let gk = matvec_t(&ds, &v);
            add_outer(&mut gh.w_v, &gv, e);
            add_outer(&mut gh.w_k, &gk, e);
            let dv = matvec_t(&head.w_v, &gv);
            let dk = matvec_t(&head.w_k, &gk);
            for ((d, x), y) in gin.iter_mut().zip(dv.iter()).zip(dk.iter()) {
                *d += *x + *y;
            }
        }
    }
}

/// VJP of softmax attention for one token `h` attending over all of `ctx` (residual update), when its output
/// carries `g = dL/dh'`: adds into `grad` and (when given) the context tokens' gradients `g_ctx` through keys and
/// values; returns `dL/dh` (`g` plus the path through the query). An empty context gives `g` and adds nothing.
/// Errors: [`Error::LengthMismatch`] when `g_ctx` has another length than `ctx`, [`Error::NonFinite`] for a
/// non-finite logit (checked before anything is accumulated).
pub fn softmax_token_backward<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    ctx: &[[T; E]],
    h: &[T; E],
    g: &[T; E],
    grad: &mut LayerGrad<T, E, DK, DV, H>,
    mut g_ctx: Option<&mut [[T; E]]>,
) -> Result<[T; E], Error> {
    if let Some(gc) = g_ctx.as_deref() {
        if gc.len() != ctx.len() {
            return Err(Error::LengthMismatch { expected: ctx.len(), found: gc.len() });
        }
    }
    let c = logit_scale::<T>(DK);
    // First pass, every head: the logits' running maximum and sum (and the errors, before anything is written).
    let mut stats = [(T::ZERO, T::ZERO); H];
    for (head, st) in layer.heads.iter().zip(stats.iter_mut()) {
        let q = matvec(&head.w_q, h);
        let mut acc = MaxSum::new();
        for e in ctx {
            acc.push(dot(&q, &matvec(&head.w_k, e)) * c)?;
        }
        *st = (acc.m, acc.l);
    }
    let mut dh = *g;
    if ctx.is_empty() {
        return Ok(dh);
    }
    for ((head, gh), &(m, l)) in layer.heads.iter().zip(grad.heads.iter_mut()).zip(stats.iter()) {
        let q = matvec(&head.w_q, h);
        // The token's key, value and softmax weight (the logit exactly as in the first pass).
        let project = |e: &[T; E]| {
            let k = matvec(&head.w_k, e);
            let a = (dot(&q, &k) * c - m).exp() / l;
            (k, matvec(&head.w_v, e), a)
        };
        // o = sum_j a_j v_j, in context order.
        let mut o = [T::ZERO; DV];
        for e in ctx {
            let (_, v, a) = project(e);
            axpy(&mut o, a, &v);
        }
        add_outer(&mut gh.p, g, &o);
        let g_o = matvec_t(&head.p, g);
        let g_dot_o = dot(&g_o, &o);
        let mut g_q = [T::ZERO; DK];
        for (j, e) in ctx.iter().enumerate() {
            let (k, v, a) = project(e);
            let g_s = a * (dot(&g_o, &v) - g_dot_o);
            axpy(&mut g_q, g_s * c, &k);
            let g_k = q.map(|x| x * (g_s * c));
            let g_v = g_o.map(|x| x * a);
            add_outer(&mut gh.w_k, &g_k, e);
            add_outer(&mut gh.w_v, &g_v, e);
            if let Some(gj) = g_ctx.as_deref_mut().and_then(|gc| gc.get_mut(j)) {
                let (dk, dv) = (matvec_t(&head.w_k, &g_k), matvec_t(&head.w_v, &g_v));
                for ((d, x), y) in gj.iter_mut().zip(dk.iter()).zip(dv.iter()) {
                    *d += *x + *y;
                }
            }
        }
        add_outer(&mut gh.w_q, &g_q, h);
        for (d, x) in dh.iter_mut().zip(matvec_t(&head.w_q, &g_q).iter()) {
            *d += *x;
        }
    }
    Ok(dh)
}

/// VJP of a full softmax attention layer (every token, residual update, `mask` as in the forward). `ctx`/`query`
/// are the layer's inputs; `g_ctx`/`g_query` hold `dL/d(output)` on entry and `dL/d(input)` on return; parameter
/// gradients are added into `grad`. The operations of [`softmax_backward_slices`], on arrays.
/// Errors: [`Error::NonFinite`] for a non-finite logit (then `g_ctx`, `g_query` and `grad` may be partly updated).
pub fn softmax_backward<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    mask: crate::layer::Mask,
    ctx: &[[T; E]; N],
    query: &[T; E],
    g_ctx: &mut [[T; E]; N],
    g_query: &mut [T; E],
    grad: &mut LayerGrad<T, E, DK, DV, H>,
) -> Result<(), Error> {
    let (mut keys, mut values) = ([[[T::ZERO; DK]; N]; H], [[[T::ZERO; DV]; N]; H]);
    let (mut g_keys, mut g_values) = ([[[T::ZERO; DK]; N]; H], [[[T::ZERO; DV]; N]; H]);
    let mut work = SoftmaxWork {
        keys: keys.as_flattened_mut(),
        values: values.as_flattened_mut(),
        g_keys: g_keys.as_flattened_mut(),
        g_values: g_values.as_flattened_mut(),
    };
    softmax_backward_slices(layer, mask, ctx, query, g_ctx, g_query, grad, &mut work)
}

/// [`softmax_backward`] on slices (N known at run time), with keys, values and their gradients in `work`
/// (`H * N` entries each). Tokens in order, then the query; per token and head the softmax weights over the keys it
/// sees, `dL/dW_Q`, `dL/dP` and its input gradient (written over its output gradient once read); the key and value
/// gradients are summed per context token over every query that sees it, then taken to `dL/dW_K`, `dL/dW_V` and the
/// tokens once per token (`O(N^2 (DK + DV) + N E (DK + DV))` per head, not `O(N^2 E (DK + DV))`).
/// Errors: [`Error::LengthMismatch`] when `g_ctx` differs in length from `ctx` or `work` from `H * N`,
/// [`Error::NonFinite`] for a non-finite logit (then `g_ctx`, `g_query` and `grad` may be partly updated).
#[allow(clippy::too_many_arguments)]
pub fn softmax_backward_slices<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    mask: crate::layer::Mask,
    ctx: &[[T; E]],
    query: &[T; E],
    g_ctx: &mut [[T; E]],
    g_query: &mut [T; E],
    grad: &mut LayerGrad<T, E, DK, DV, H>,
    work: &mut SoftmaxWork<'_, T, DK, DV>,
) -> Result<(), Error> {
    let n = ctx.len();
    if g_ctx.len() != n {
        return Err(Error::LengthMismatch { expected: n, found: g_ctx.len() });
    }
    work.project(layer, ctx, true)?;
    work.g_keys.fill([T::ZERO; DK]);
    work.g_values.fill([T::ZERO; DV]);
    let c = logit_scale::<T>(DK);
    let SoftmaxWork { keys, values, g_keys, g_values } = work;
    // One token `h` with output gradient `g` seeing the first `seen` keys: returns its input gradient.
    let mut token = |h: &[T; E], g: &[T; E], seen: usize, grad: &mut LayerGrad<T, E, DK, DV, H>| {
        let mut dh = *g;
        for (hd, (head, gh)) in layer.heads.iter().zip(grad.heads.iter_mut()).enumerate() {
            let at = hd * n;
            let (Some(ks), Some(vs)) = (keys.get(at..at + seen), values.get(at..at + seen)) else { continue };
            let (Some(gks), Some(gvs)) = (g_keys.get_mut(at..at + seen), g_values.get_mut(at..at + seen)) else {
                continue;
            };
            if ks.is_empty() {
                continue;
            }
            let q = matvec(&head.w_q, h);
            let mut acc = MaxSum::new();
            for k in ks.iter() {
                acc.push(dot(&q, k) * c)?;
            }
            let weight = |k: &[T; DK]| (dot(&q, k) * c - acc.m).exp() / acc.l;
            let mut o = [T::ZERO; DV];
            for (k, v) in ks.iter().zip(vs.iter()) {
                axpy(&mut o, weight(k), v);
            }
            add_outer(&mut gh.p, g, &o);
            let g_o = matvec_t(&head.p, g);
            let g_dot_o = dot(&g_o, &o);
            let mut g_q = [T::ZERO; DK];
            for (((k, v), gk), gv) in ks.iter().zip(vs.iter()).zip(gks.iter_mut()).zip(gvs.iter_mut()) {
                let a = weight(k);
                let g_s = a * (dot(&g_o, v) - g_dot_o) * c;
                axpy(&mut g_q, g_s, k);
                axpy(gk, g_s, &q);
                axpy(gv, a, &g_o);
            }
            add_outer(&mut gh.w_q, &g_q, h);
            for (d, x) in dh.iter_mut().zip(matvec_t(&head.w_q, &g_q).iter()) {
                *d += *x;
            }
        }
        Ok::<_, Error>(dh)
    };
    for (t, (h, g)) in ctx.iter().zip(g_ctx.iter_mut()).enumerate() {
        *g = token(h, g, visible(mask, t, n).min(n), grad)?;
    }
    *g_query = token(query, g_query, n, grad)?;
    // The keys' and values' gradients, summed over every token that saw them, to the weights and the tokens.
    for (hd, (head, gh)) in layer.heads.iter().zip(grad.heads.iter_mut()).enumerate() {
        let at = hd * n;
        let (Some(gks), Some(gvs)) = (g_keys.get(at..at + n), g_values.get(at..at + n)) else { continue };
        for (((e, gk), gv), ge) in ctx.iter().zip(gks.iter()).zip(gvs.iter()).zip(g_ctx.iter_mut()) {
            add_outer(&mut gh.w_k, gk, e);
            add_outer(&mut gh.w_v, gv, e);
            let (dk, dv) = (matvec_t(&head.w_k, gk), matvec_t(&head.w_v, gv));
            for ((d, x), y) in ge.iter_mut().zip(dk.iter()).zip(dv.iter()) {
                *d += *x + *y;
            }
        }
    }
    Ok(())
}
