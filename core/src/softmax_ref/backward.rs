//! The VJPs of softmax attention on run-time shapes: one token ([`token_backward`], over a projection
//! [`token_backward_projected`]) and every token of a layer ([`backward`]).

use super::{logit_scale, weights_block, MaxSum, BLOCK};
use crate::attention::visible;
use crate::head_ref::{carve, check_grads, check_heads, expect_len, row, row_mut, HeadMut, HeadRef, Vectors, Widths};
use crate::layer::Mask;
use crate::linalg::slices::{add_outer, axpy, chunk_pairs, dot, matvec, matvec_t};
use crate::{Error, Real};

use super::tokens::{Scratch, Tok, TokenBackward};
use super::{Projection, Work};
use crate::linalg::pairs::add_outer2;
use core::slice::ChunksExact;

/// The VJP of [`token_update`](super::token_update) with the residual (one token `h` whose output gradient is `g`): adds the parameter
/// gradients into `grads` (one per head), writes `dL/dh` into `dh` and, when given, adds `dL/de_j` into `g_ctx`
/// (`N * e`). The contract of [`crate::backward::softmax_token_backward`]: the logits' maximum and sum of every head
/// first (so a non-finite logit is reported before anything is written), then per head the weights recomputed.
#[allow(clippy::too_many_arguments)]
pub fn token_backward<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    h: &[T],
    g: &[T],
    grads: &mut [HeadMut<'_, T>],
    dh: &mut [T],
    g_ctx: Option<&mut [T]>,
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    token_backward_from(w, heads, None, ctx, h, g, grads, dh, g_ctx, &mut [], vecs, true)
}

/// [`token_backward`] over a context whose keys and values were projected once by [`project`](super::project), with `weights` (`N`
/// values) to keep the softmax weights between the passes: the same bits, with no projection and one exponential
/// fewer per key. Errors: those of [`token_backward`], and [`Error::LengthMismatch`] for a projection of other
/// widths, heads or length, or `weights` of another length. Inlined into its caller, as is everything it calls
/// (see [`token_update_projected`](super::token_update_projected)).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn token_backward_projected<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    proj: &Projection<'_, T>,
    ctx: &[T],
    h: &[T],
    g: &[T],
    grads: &mut [HeadMut<'_, T>],
    dh: &mut [T],
    g_ctx: Option<&mut [T]>,
    weights: &mut [T],
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    let n = ctx.len() / w.e.max(1);
    proj.check(w, heads.len(), n)?;
    expect_len(n, weights.len())?;
    token_backward_from(w, heads, Some(proj), ctx, h, g, grads, dh, g_ctx, weights, vecs, true)
}

/// Head `hd`'s key of context token `j` in `proj`, if there is one.
#[inline(always)]
fn stored_key<'p, T>(proj: Option<&'p Projection<'_, T>>, hd: usize, j: usize) -> Result<Option<&'p [T]>, Error> {
    match proj {
        Some(p) => p.key(hd, j).map(Some),
        None => Ok(None),
    }
}

/// Head `hd`'s value of context token `j` in `proj`, if there is one.
#[inline(always)]
fn stored_value<'p, T>(proj: Option<&'p Projection<'_, T>>, hd: usize, j: usize) -> Result<Option<&'p [T]>, Error> {
    match proj {
        Some(p) => p.value(hd, j).map(Some),
        None => Ok(None),
    }
}

/// A key or value read from a projection (`stored`), or projected from `tok` through `m` into `scratch`.
#[inline(always)]
fn or_project<'s, T: Real>(stored: Option<&'s [T]>, m: &[T], tok: &[T], scratch: &'s mut [T]) -> &'s [T] {
    match stored {
        Some(s) => s,
        None => {
            matvec(scratch, m, tok);
            scratch
        }
    }
}

/// [`token_backward`] with keys and values from `proj` when given (else projected token by token) and the weights
/// kept in `weights` where it has room (else computed again); the keys two at a time when `pairs` (its callers'
/// way), else one at a time (the same bits; the tests compare the two). No closures: see
/// [`token_backward_projected`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn token_backward_from<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    proj: Option<&Projection<'_, T>>,
    ctx: &[T],
    h: &[T],
    g: &[T],
    grads: &mut [HeadMut<'_, T>],
    dh: &mut [T],
    mut g_ctx: Option<&mut [T]>,
    weights: &mut [T],
    vecs: &mut Vectors<'_, T>,
    pairs: bool,
) -> Result<(), Error> {
    check_heads(w, heads)?;
    check_grads(w, heads.len(), grads)?;
    for len in [h.len(), g.len(), dh.len()] {
        expect_len(w.e, len)?;
    }
    expect_len(0, ctx.len() % w.e.max(1))?;
    if let Some(gc) = g_ctx.as_deref() {
        expect_len(ctx.len(), gc.len())?;
    }
    let [q, k, g_q, g_k, g_k2] = carve::<T, 5>(vecs.key, w.dk)?;
    let [v, o, g_o, g_v, g_v2] = carve::<T, 5>(vecs.value, w.dv)?;
    let [de_k, de_v, _] = carve::<T, 3>(vecs.token, w.e)?;
    let [stats] = carve::<T, 1>(vecs.heads, 2 * heads.len())?;
    let c = logit_scale::<T>(w.dk);
    let e = w.e.max(1);
    // First pass, every head: the logits' running maximum and sum (and the errors, before anything is written).
    for (hd, (head, st)) in heads.iter().zip(stats.chunks_exact_mut(2)).enumerate() {
        matvec(q, head.w_q, h);
        let mut acc = MaxSum::new();
        for (j0, block) in ctx.chunks(e * BLOCK).enumerate() {
            let mut s = [T::ZERO; BLOCK];
            let b = block.len() / e;
            for (t, (tok, st)) in block.chunks_exact(e).zip(s.iter_mut()).enumerate() {
                *st = dot(q, or_project(stored_key(proj, hd, j0 * BLOCK + t)?, head.w_k, tok, k)) * c;
            }
            acc.push_block(&s, b)?;
        }
        st.copy_from_slice(&[acc.m, acc.l]);
    }
    dh.copy_from_slice(g);
    if ctx.is_empty() {
        return Ok(());
    }
    for (hd, ((head, gh), st)) in heads.iter().zip(grads.iter_mut()).zip(stats.chunks_exact(2)).enumerate() {
        let (m, l) = (st.first().copied().unwrap_or(T::ZERO), st.get(1).copied().unwrap_or(T::ONE));
        matvec(q, head.w_q, h);
        // o = sum_j a_j v_j, in context order (each token's key, value and weight as in the first pass).
        o.fill(T::ZERO);
        for (j0, block) in ctx.chunks(e * BLOCK).enumerate() {
            let mut a = [T::ZERO; BLOCK];
            let b = block.len() / e;
            for (t, (tok, at)) in block.chunks_exact(e).zip(a.iter_mut()).enumerate() {
                *at = dot(q, or_project(stored_key(proj, hd, j0 * BLOCK + t)?, head.w_k, tok, k)) * c - m;
            }
            weights_block(&mut a, b, l);
            for (t, (tok, &at)) in block.chunks_exact(e).zip(a.iter()).enumerate() {
                let j = j0 * BLOCK + t;
                if let Some(kept) = weights.get_mut(j) {
                    *kept = at;
                }
                axpy(o, at, or_project(stored_value(proj, hd, j)?, head.w_v, tok, v));
            }
        }
        add_outer(gh.p, g, o);
        matvec_t(g_o, head.p, g);
        let g_dot_o = dot(g_o, o);
        g_q.fill(T::ZERO);
        // Two keys at a time into the key and value weights' gradients (the first's term, then the second's).
        let (shared, weights) = ((head, proj, hd), &*weights);
        let (qo, sums) = ([&*q, &*g_o], [g_dot_o, m, l, c]);
        let paired = if pairs { ctx.len() / (2 * e) } else { 0 };
        let (two_by_two, rest) = ctx.split_at(paired * 2 * e);
        for (p, two) in two_by_two.chunks_exact(2 * e).enumerate() {
            let (t0, t1) = two.split_at(e);
            key_terms(shared, 2 * p, t0, qo, sums, weights, [&mut *k, &mut *v], [&mut *g_q, &mut *g_k, &mut *g_v])?;
            key_terms(
                shared,
                2 * p + 1,
                t1,
                qo,
                sums,
                weights,
                [&mut *k, &mut *v],
                [&mut *g_q, &mut *g_k2, &mut *g_v2],
            )?;
            add_outer2(gh.w_k, g_k, t0, g_k2, t1);
            add_outer2(gh.w_v, g_v, t0, g_v2, t1);
            to_context(g_ctx.as_deref_mut(), 2 * p, head, [&*g_k, &*g_v], [&mut *de_k, &mut *de_v])?;
            to_context(g_ctx.as_deref_mut(), 2 * p + 1, head, [&*g_k2, &*g_v2], [&mut *de_k, &mut *de_v])?;
        }
        for (i, tok) in rest.chunks_exact(e).enumerate() {
            let j = 2 * paired + i;
            key_terms(shared, j, tok, qo, sums, weights, [&mut *k, &mut *v], [&mut *g_q, &mut *g_k, &mut *g_v])?;
            add_outer(gh.w_k, g_k, tok);
            add_outer(gh.w_v, g_v, tok);
            to_context(g_ctx.as_deref_mut(), j, head, [&*g_k, &*g_v], [&mut *de_k, &mut *de_v])?;
        }
        add_outer(gh.w_q, g_q, h);
        matvec_t(de_k, head.w_q, g_q);
        for (d, &x) in dh.iter_mut().zip(de_k.iter()) {
            *d += x;
        }
    }
    Ok(())
}

/// Key `j` (context token `tok`) of head `hd` for the query `q` of [`token_backward_from`] (`g_o` its output's
/// gradient, `g_dot_o = g_o . o`, `(m, l)` its logits' maximum and sum, `c` the logit scale): the gradient of its logit
/// into `g_q`, its key's gradient `q (g_s c)` into `g_k` and its value's `a g_o` into `g_v` (`k` and `v` scratch for
/// the key and value when `proj` has none).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn key_terms<T: Real>(
    (head, proj, hd): (&HeadRef<'_, T>, Option<&Projection<'_, T>>, usize),
    j: usize,
    tok: &[T],
    [q, g_o]: [&[T]; 2],
    [g_dot_o, m, l, c]: [T; 4],
    weights: &[T],
    [k, v]: [&mut [T]; 2],
    [g_q, g_k, g_v]: [&mut [T]; 3],
) -> Result<(), Error> {
    let kj = or_project(stored_key(proj, hd, j)?, head.w_k, tok, k);
    let a = match weights.get(j) {
        Some(&a) => a,
        None => (dot(q, kj) * c - m).exp() / l,
    };
    let vj = or_project(stored_value(proj, hd, j)?, head.w_v, tok, v);
    let g_s = a * (dot(g_o, vj) - g_dot_o);
    axpy(g_q, g_s * c, kj);
    for (d, &x) in g_k.iter_mut().zip(q.iter()) {
        *d = x * (g_s * c);
    }
    for (d, &x) in g_v.iter_mut().zip(g_o.iter()) {
        *d = x * a;
    }
    Ok(())
}

/// `g_ctx[j] += W_K^T g_k + W_V^T g_v` when there is a `g_ctx` (through the scratch `de_k`, `de_v`).
#[inline(always)]
fn to_context<T: Real>(
    g_ctx: Option<&mut [T]>,
    j: usize,
    head: &HeadRef<'_, T>,
    [g_k, g_v]: [&[T]; 2],
    [de_k, de_v]: [&mut [T]; 2],
) -> Result<(), Error> {
    if let Some(gc) = g_ctx {
        matvec_t(de_k, head.w_k, g_k);
        matvec_t(de_v, head.w_v, g_v);
        for ((d, &x), &y) in row_mut(gc, j, de_k.len())?.iter_mut().zip(de_k.iter()).zip(de_v.iter()) {
            *d += x + y;
        }
    }
    Ok(())
}

/// The VJP of [`attention`](super::attention) (every token, residual update, `mask` as in the forward): `ctx`/`query` are the layer's
/// inputs; `g_ctx`/`g_query` hold `dL/d(output)` on entry and `dL/d(input)` on return; parameter gradients are
/// added into `grads`. The contract of [`crate::backward::softmax_backward_slices`].
/// Errors: lengths (see the module docs), [`Error::NonFinite`] (then `g_ctx`, `g_query` and `grads` may be partly
/// updated).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn backward<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    mask: Mask,
    ctx: &[T],
    query: &[T],
    g_ctx: &mut [T],
    g_query: &mut [T],
    grads: &mut [HeadMut<'_, T>],
    work: &mut Work<'_, T>,
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    backward_in(w, heads, mask, [ctx, query], [g_ctx, g_query], grads, work, vecs, true)
}

/// [`backward`], the context's tokens two at a time when `pairs` (its way), else one at a time (the same bits; the
/// tests compare the two).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn backward_in<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    mask: Mask,
    [ctx, query]: [&[T]; 2],
    [g_ctx, g_query]: [&mut [T]; 2],
    grads: &mut [HeadMut<'_, T>],
    work: &mut Work<'_, T>,
    vecs: &mut Vectors<'_, T>,
    pairs: bool,
) -> Result<(), Error> {
    check_heads(w, heads)?;
    check_grads(w, heads.len(), grads)?;
    expect_len(0, ctx.len() % w.e.max(1))?;
    expect_len(ctx.len(), g_ctx.len())?;
    expect_len(w.e, query.len())?;
    expect_len(w.e, g_query.len())?;
    let e = w.e.max(1);
    let n = ctx.len() / e;
    let per_token = 2 * heads.len();
    work.project(w, heads, ctx, n, true)?;
    work.g_keys.fill(T::ZERO);
    work.g_values.fill(T::ZERO);
    let [q_a, g_q_a, q_b, g_q_b] = carve::<T, 4>(vecs.key, w.dk)?;
    let [o_a, g_o_a, o_b, g_o_b] = carve::<T, 4>(vecs.value, w.dv)?;
    let [dh_a, dh_b, de] = carve::<T, 3>(vecs.token, w.e)?;
    let c = logit_scale::<T>(w.dk);
    let Work { keys, values, g_keys, g_values, weights, stats, scores, kept } = work;
    let (stats, scores): (&[T], &[T]) = if *kept { (stats, scores) } else { (&[], &[]) };
    // Two tokens' weights where there is room for them (else the second token's are computed again).
    let (w_a, w_b) = if weights.len() >= 2 * n { weights.split_at_mut(n) } else { (&mut weights[..], &mut [][..]) };
    let mut sa = Scratch { q: q_a, g_q: g_q_a, o: o_a, g_o: g_o_a, dh: dh_a, weights: w_a };
    let mut sb = Scratch { q: q_b, g_q: g_q_b, o: o_b, g_o: g_o_b, dh: dh_b, weights: w_b };
    let mut tok = TokenBackward { w, heads, n, c, keys, values, g_keys, g_values };
    let per_scores = heads.len().saturating_mul(w.dk + n);
    // The context's tokens two at a time (with `pairs`), the rest one at a time, then the query.
    let (mut ks, mut sc) = (stats.chunks_exact(per_token.max(1)), scores.chunks_exact(per_scores.max(1)));
    let paired = if pairs { n / 2 } else { 0 };
    let (g_pairs, g_rest) = g_ctx.split_at_mut(paired * 2 * e);
    let (c_pairs, c_rest) = ctx.split_at(g_pairs.len());
    for (p, (g2, h2)) in chunk_pairs(g_pairs, 2 * e, c_pairs, 2 * e).enumerate() {
        let ((g, g_next), (h, h_next)) = (g2.split_at_mut(e), h2.split_at(e));
        let a = Tok { h, g, seen: visible(mask, 2 * p, n).min(n), kept: next_kept(&mut ks, &mut sc) };
        let b =
            Tok { h: h_next, g: g_next, seen: visible(mask, 2 * p + 1, n).min(n), kept: next_kept(&mut ks, &mut sc) };
        tok.run(a, Some(b), grads, &mut sa, &mut sb, &mut *de)?;
    }
    for (i, (g, h)) in chunk_pairs(g_rest, e, c_rest, e).enumerate() {
        let a = Tok { h, g, seen: visible(mask, 2 * paired + i, n).min(n), kept: next_kept(&mut ks, &mut sc) };
        tok.run(a, None, grads, &mut sa, &mut sb, &mut *de)?;
    }
    let a = Tok { h: query, g: g_query, seen: n, kept: next_kept(&mut ks, &mut sc) };
    tok.run(a, None, grads, &mut sa, &mut sb, &mut *de)?;
    let (g_keys, g_values) = (&*tok.g_keys, &*tok.g_values);
    let [de_k, de_v] = [de, sb.dh];
    // The keys' and values' gradients, summed over every token that saw them, to the weights and the tokens: two
    // keys at a time into the weights' gradients (the first's term, then the second's), each key to its token.
    for (hd, (head, gh)) in heads.iter().zip(grads.iter_mut()).enumerate() {
        let at = hd * n;
        for (j, (ge, tok)) in chunk_pairs(g_ctx, e, ctx, e).enumerate() {
            let (gk, gv) = (row(g_keys, at + j, w.dk)?, row(g_values, at + j, w.dv)?);
            if pairs && j % 2 == 1 {
                let (gk0, gv0) = (row(g_keys, at + j - 1, w.dk)?, row(g_values, at + j - 1, w.dv)?);
                let tok0 = row(ctx, j - 1, e)?;
                add_outer2(gh.w_k, gk0, tok0, gk, tok);
                add_outer2(gh.w_v, gv0, tok0, gv, tok);
            } else if !pairs || j + 1 == n {
                add_outer(gh.w_k, gk, tok);
                add_outer(gh.w_v, gv, tok);
            }
            matvec_t(de_k, head.w_k, gk);
            matvec_t(de_v, head.w_v, gv);
            for ((d, &x), &y) in ge.iter_mut().zip(de_k.iter()).zip(de_v.iter()) {
                *d += x + y;
            }
        }
    }
    Ok(())
}

/// The next token's kept statistics and scores (empty when the forward kept none).
#[inline(always)]
fn next_kept<'k, T>(stats: &mut ChunksExact<'k, T>, scores: &mut ChunksExact<'k, T>) -> [&'k [T]; 2] {
    [stats.next().unwrap_or_default(), scores.next().unwrap_or_default()]
}
