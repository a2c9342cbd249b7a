//! The query's unnormalised linear attention at widths chosen at run time (Dai's linear positive control in the
//! harness): heads borrowed as column-major slices ([`crate::head_ref`]), tokens as rows of flat slices, the small
//! vectors and the `dv x dk` state in caller-provided scratch. The operations of the fixed-size
//! [`crate::attention::query_forward`] over [`crate::attention::context_state`] and of
//! [`crate::backward::lsa_query_backward`], in the same order (a test holds both to the same bits).

use crate::head_ref::{carve, check_grads, check_heads, expect_len, HeadMut, HeadRef, Vectors, Widths};
use crate::linalg::slices::{add_outer, axpy, chunk_pairs, dot, matvec, matvec_acc, matvec_t};
use crate::{Error, Real};

/// `S = sum_j (W_V e_j)(W_K e_j)^T` of one head over `ctx` into `map` (`dv x dk`), tokens in order; `k`, `v` scratch.
fn linear_state<T: Real>(head: &HeadRef<'_, T>, ctx: &[T], e: usize, map: &mut [T], k: &mut [T], v: &mut [T]) {
    map.fill(T::ZERO);
    for tok in ctx.chunks_exact(e.max(1)) {
        matvec(k, head.w_k, tok);
        matvec(v, head.w_v, tok);
        add_outer(map, v, k);
    }
}

/// Checks the lengths shared by the linear kernels.
fn check_linear<T>(w: Widths, heads: &[HeadRef<'_, T>], ctx: &[T], h: &[T], map: &[T]) -> Result<(), Error> {
    check_heads(w, heads)?;
    expect_len(w.e, h.len())?;
    expect_len(0, ctx.len() % w.e.max(1))?;
    expect_len(w.dv.saturating_mul(w.dk), map.len())
}

/// Unnormalised linear attention of one token `h` over `ctx` (no scale), written to `u` without the residual:
/// `sum_heads P S W_Q h` with `S = sum_j (W_V e_j)(W_K e_j)^T` accumulated in token order, the operations of
/// [`crate::attention::query_forward`] over [`crate::attention::context_state`]. `map` (`dv * dk`) is scratch.
pub fn token_update<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    h: &[T],
    u: &mut [T],
    vecs: &mut Vectors<'_, T>,
    map: &mut [T],
) -> Result<(), Error> {
    check_linear(w, heads, ctx, h, map)?;
    expect_len(w.e, u.len())?;
    let [q, k, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [v, r, _, _] = carve::<T, 4>(vecs.value, w.dv)?;
    u.fill(T::ZERO);
    for head in heads {
        linear_state(head, ctx, w.e, map, k, v);
        matvec(q, head.w_q, h);
        matvec(r, map, q);
        matvec_acc(u, head.p, r);
    }
    Ok(())
}

/// The VJP of [`token_update`] with the residual (one token `h` whose output gradient is `g`): adds the
/// parameter gradients into `grads`, writes `dL/dh` into `dh` and, when given, adds `dL/de_j` into `g_ctx`; the
/// operations of [`crate::backward::lsa_query_backward`]. `map` (`dv * dk`) is scratch.
#[allow(clippy::too_many_arguments)]
pub fn token_backward<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    h: &[T],
    g: &[T],
    grads: &mut [HeadMut<'_, T>],
    dh: &mut [T],
    mut g_ctx: Option<&mut [T]>,
    vecs: &mut Vectors<'_, T>,
    map: &mut [T],
) -> Result<(), Error> {
    check_linear(w, heads, ctx, h, map)?;
    check_grads(w, heads.len(), grads)?;
    expect_len(w.e, g.len())?;
    expect_len(w.e, dh.len())?;
    if let Some(gc) = g_ctx.as_deref() {
        expect_len(ctx.len(), gc.len())?;
    }
    let [q, k, gq, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [v, r, gr, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let [a, b, ca, cb, dq] = carve::<T, 5>(vecs.token, w.e)?;
    let e = w.e.max(1);
    dh.copy_from_slice(g);
    for (head, gh) in heads.iter().zip(grads.iter_mut()) {
        linear_state(head, ctx, w.e, map, k, v);
        matvec(q, head.w_q, h);
        matvec(r, map, q);
        matvec_t(gr, head.p, g);
        add_outer(gh.p, g, r);
        matvec_t(gq, map, gr);
        add_outer(gh.w_q, gq, h);
        matvec_t(dq, head.w_q, gq);
        for (d, &x) in dh.iter_mut().zip(dq.iter()) {
            *d += x;
        }
        matvec_t(a, head.w_k, q);
        matvec_t(b, head.w_v, gr);
        ca.fill(T::ZERO);
        cb.fill(T::ZERO);
        for tok in ctx.chunks_exact(e) {
            axpy(ca, dot(a, tok), tok);
            axpy(cb, dot(b, tok), tok);
        }
        add_outer(gh.w_v, gr, ca);
        add_outer(gh.w_k, q, cb);
        if let Some(gc) = g_ctx.as_deref_mut() {
            for (gj, tok) in chunk_pairs(gc, e, ctx, e) {
                axpy(gj, dot(a, tok), b);
                axpy(gj, dot(b, tok), a);
            }
        }
    }
    Ok(())
}
