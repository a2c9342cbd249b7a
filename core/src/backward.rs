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

use crate::attention::{context_state, AssociativeState};
use crate::head_ref::{FixedVectors, HeadMut, HeadRef};
use crate::layer::Layer;
use crate::linalg::{add_outer, axpy, dot, matvec, matvec_t, zeros};
use crate::softmax::SoftmaxWork;
use crate::softmax_ref;
use crate::{Error, Real};

/// A gradient has the shape of the layer it belongs to.
pub type LayerGrad<T, const E: usize, const DK: usize, const DV: usize, const H: usize> = Layer<T, E, DK, DV, H>;

/// VJP of the query's output with respect to the parameters, the query input and (optionally) the context inputs,
/// when only the query's output carries the gradient `g = dL/dh'`. `state` must be [`context_state`] of `ctx`.
/// Adds into `grad` and `g_ctx`; returns `dL/dh`. Errors: [`Error::LengthMismatch`] when `g_ctx` (if given) or
/// `state.count()` differs from the number of context tokens (checked before anything is accumulated).
#[inline(always)]
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
    g_ctx: Option<&mut [[T; E]]>,
) -> Result<[T; E], Error> {
    if let Some(gc) = g_ctx.as_deref() {
        if gc.len() != ctx.len() {
            return Err(Error::LengthMismatch { expected: ctx.len(), found: gc.len() });
        }
    }
    let heads = layer.heads.each_ref().map(HeadRef::from);
    let mut grads = grad.heads.each_mut().map(HeadMut::from);
    let mut vecs = FixedVectors::<T, E, DK, DV, H>::new();
    let mut dh = [T::ZERO; E];
    softmax_ref::token_backward(
        FixedVectors::<T, E, DK, DV, H>::WIDTHS,
        &heads,
        ctx.as_flattened(),
        h,
        g,
        &mut grads,
        &mut dh,
        g_ctx.map(|gc| gc.as_flattened_mut()),
        &mut vecs.vectors(),
    )?;
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
    work.check(ctx.len(), g_ctx.len(), H * ctx.len(), true)?;
    let heads = layer.heads.each_ref().map(HeadRef::from);
    let mut grads = grad.heads.each_mut().map(HeadMut::from);
    let mut vecs = FixedVectors::<T, E, DK, DV, H>::new();
    softmax_ref::backward(
        FixedVectors::<T, E, DK, DV, H>::WIDTHS,
        &heads,
        mask,
        ctx.as_flattened(),
        query,
        g_ctx.as_flattened_mut(),
        g_query,
        &mut grads,
        &mut work.flat(),
        &mut vecs.vectors(),
    )
}
