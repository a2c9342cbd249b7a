//! The VJPs of softmax attention on run-time shapes: one token ([`token_backward`], over a projection
//! [`token_backward_projected`]) and every token of a layer ([`backward`]).

use super::{logit_scale, weights_block, MaxSum, BLOCK};
use crate::attention::visible;
use crate::head_ref::{carve, check_grads, check_heads, expect_len, row, row_mut, HeadMut, HeadRef, Vectors, Widths};
use crate::layer::Mask;
use crate::linalg::slices::{add_outer, axpy, chunk_pairs, dot, matvec, matvec_t};
use crate::{Error, Real};

use super::{Projection, Work};

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
    token_backward_from(w, heads, None, ctx, h, g, grads, dh, g_ctx, &mut [], vecs)
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
    token_backward_from(w, heads, Some(proj), ctx, h, g, grads, dh, g_ctx, weights, vecs)
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
/// kept in `weights` where it has room (else computed again). No closures: see [`token_backward_projected`].
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn token_backward_from<T: Real>(
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
    let [q, k, g_q, g_k] = carve::<T, 4>(vecs.key, w.dk)?;
    let [v, o, g_o, g_v] = carve::<T, 4>(vecs.value, w.dv)?;
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
        for (j, tok) in ctx.chunks_exact(e).enumerate() {
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
            add_outer(gh.w_k, g_k, tok);
            add_outer(gh.w_v, g_v, tok);
            if let Some(gc) = g_ctx.as_deref_mut() {
                matvec_t(de_k, head.w_k, g_k);
                matvec_t(de_v, head.w_v, g_v);
                for ((d, &x), &y) in row_mut(gc, j, e)?.iter_mut().zip(de_k.iter()).zip(de_v.iter()) {
                    *d += x + y;
                }
            }
        }
        add_outer(gh.w_q, g_q, h);
        matvec_t(de_k, head.w_q, g_q);
        for (d, &x) in dh.iter_mut().zip(de_k.iter()) {
            *d += x;
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
    let [q, g_q, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [o, g_o, _, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let [dh, de_k, de_v] = carve::<T, 3>(vecs.token, w.e)?;
    let c = logit_scale::<T>(w.dk);
    let Work { keys, values, g_keys, g_values, weights, stats, scores, kept } = work;
    let (stats, scores): (&[T], &[T]) = if *kept { (stats, scores) } else { (&[], &[]) };
    let mut tok = TokenBackward { w, heads, n, c, keys, values, g_keys, g_values, weights };
    let mut kept_stats = stats.chunks_exact(per_token.max(1));
    let mut kept_scores = scores.chunks_exact(heads.len().saturating_mul(w.dk + n).max(1));
    for (t, (g, h)) in chunk_pairs(g_ctx, e, ctx, e).enumerate() {
        tok.run(
            h,
            g,
            visible(mask, t, n).min(n),
            [kept_stats.next().unwrap_or_default(), kept_scores.next().unwrap_or_default()],
            grads,
            [&mut *q, &mut *g_q],
            [&mut *o, &mut *g_o],
            [&mut *dh, &mut *de_k],
        )?;
    }
    let kept = [kept_stats.next().unwrap_or_default(), kept_scores.next().unwrap_or_default()];
    tok.run(query, g_query, n, kept, grads, [&mut *q, &mut *g_q], [&mut *o, &mut *g_o], [&mut *dh, &mut *de_k])?;
    let (g_keys, g_values) = (&*tok.g_keys, &*tok.g_values);
    // The keys' and values' gradients, summed over every token that saw them, to the weights and the tokens.
    for (hd, (head, gh)) in heads.iter().zip(grads.iter_mut()).enumerate() {
        let at = hd * n;
        for (j, (ge, tok)) in chunk_pairs(g_ctx, e, ctx, e).enumerate() {
            let (gk, gv) = (row(g_keys, at + j, w.dk)?, row(g_values, at + j, w.dv)?);
            add_outer(gh.w_k, gk, tok);
            add_outer(gh.w_v, gv, tok);
            matvec_t(de_k, head.w_k, gk);
            matvec_t(de_v, head.w_v, gv);
            for ((d, &x), &y) in ge.iter_mut().zip(de_k.iter()).zip(de_v.iter()) {
                *d += x + y;
            }
        }
    }
    Ok(())
}

/// One token's part of [`backward`]: the layer's projected keys and values, their gradients (added to) and the
/// kept weights.
struct TokenBackward<'a, 'h, T> {
    w: Widths,
    heads: &'a [HeadRef<'h, T>],
    n: usize,
    c: T,
    keys: &'a [T],
    values: &'a [T],
    g_keys: &'a mut [T],
    g_values: &'a mut [T],
    weights: &'a mut [T],
}

impl<T: Real> TokenBackward<'_, '_, T> {
    /// The weight of key `k` for query `q` from the logits' maximum and sum.
    #[inline(always)]
    fn weight(&self, q: &[T], k: &[T], acc: MaxSum<T>) -> T {
        (dot(q, k) * self.c - acc.m).exp() / acc.l
    }

    /// Token `h` with output gradient `g` seeing the first `seen` keys: its input gradient, written over `g`, and
    /// the parameter gradients added into `grads` (`q, g_q`: key-width scratch, `o, g_o`: value-width, `dh, de`:
    /// token-width). Head `hd`'s logits' maximum and sum are taken from `stats[2 hd..][..2]` where the forward kept
    /// a finite maximum there, else computed; with them, its query and logits from `scores` where that holds the
    /// head's (see [`Work::scores`]), else computed.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn run(
        &mut self,
        h: &[T],
        g: &mut [T],
        seen: usize,
        [stats, scores]: [&[T]; 2],
        grads: &mut [HeadMut<'_, T>],
        [q, g_q]: [&mut [T]; 2],
        [o, g_o]: [&mut [T]; 2],
        [dh, de_k]: [&mut [T]; 2],
    ) -> Result<(), Error> {
        let (w, n, c) = (self.w, self.n, self.c);
        dh.copy_from_slice(g);
        for (hd, (head, gh)) in self.heads.iter().zip(grads.iter_mut()).enumerate() {
            let at = hd * n;
            if seen == 0 {
                continue;
            }
            // The forward's statistics where it kept a finite maximum, and with them its query and logits where it
            // kept those too (the same bits as computing them here).
            let from_forward = match stats.get(2 * hd..).and_then(|s| s.first_chunk::<2>()) {
                Some(&[m, l]) if m.is_finite() => Some(MaxSum { m, l }),
                _ => None,
            };
            let kept = match (from_forward, scores.get(hd * (w.dk + n)..)) {
                (Some(_), Some(sc)) => match sc.split_at_checked(w.dk) {
                    Some((kept_q, logits)) => logits.get(..seen).map(|l| (kept_q, l)),
                    None => None,
                },
                _ => None,
            };
            let logits: &[T] = match kept {
                Some((kept_q, logits)) => {
                    q.copy_from_slice(kept_q);
                    logits
                }
                None => {
                    matvec(q, head.w_q, h);
                    &[]
                }
            };
            let acc = match from_forward {
                Some(acc) => acc,
                None => {
                    let mut acc = MaxSum::new();
                    let mut j0 = 0;
                    while j0 < seen {
                        let b = (seen - j0).min(BLOCK);
                        let mut s = [T::ZERO; BLOCK];
                        for (t, st) in s.iter_mut().enumerate().take(b) {
                            *st = dot(q, row(self.keys, at + j0 + t, w.dk)?) * c;
                        }
                        acc.push_block(&s, b)?;
                        j0 += b;
                    }
                    acc
                }
            };
            o.fill(T::ZERO);
            let mut j0 = 0;
            while j0 < seen {
                let b = (seen - j0).min(BLOCK);
                let mut a = [T::ZERO; BLOCK];
                for (t, x) in a.iter_mut().enumerate().take(b) {
                    let s = match logits.get(j0 + t) {
                        Some(&s) => s,
                        None => dot(q, row(self.keys, at + j0 + t, w.dk)?) * c,
                    };
                    *x = s - acc.m;
                }
                weights_block(&mut a, b, acc.l);
                for (t, &x) in a.iter().enumerate().take(b) {
                    if let Some(kept) = self.weights.get_mut(j0 + t) {
                        *kept = x;
                    }
                    axpy(o, x, row(self.values, at + j0 + t, w.dv)?);
                }
                j0 += b;
            }
            add_outer(gh.p, g, o);
            matvec_t(g_o, head.p, g);
            let g_dot_o = dot(g_o, o);
            g_q.fill(T::ZERO);
            for j in 0..seen {
                let (k, v) = (row(self.keys, at + j, w.dk)?, row(self.values, at + j, w.dv)?);
                let a = match self.weights.get(j) {
                    Some(&a) => a,
                    None => self.weight(q, k, acc),
                };
                let g_s = a * (dot(g_o, v) - g_dot_o) * c;
                axpy(g_q, g_s, k);
                axpy(row_mut(self.g_keys, at + j, w.dk)?, g_s, q);
                axpy(row_mut(self.g_values, at + j, w.dv)?, a, g_o);
            }
            add_outer(gh.w_q, g_q, h);
            matvec_t(de_k, head.w_q, g_q);
            for (d, &x) in dh.iter_mut().zip(de_k.iter()) {
                *d += x;
            }
        }
        g.copy_from_slice(dh);
        Ok(())
    }
}
