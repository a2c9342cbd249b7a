//! A softmax attention layer over every token of a context ([`attention`]) and the buffers it shares with its
//! backward ([`Work`]).

use super::projection::project_into;
use super::{logit_scale, update_projected, Projection};
use crate::attention::visible;
use crate::head_ref::{carve, check_heads, expect_len, HeadRef, Vectors, Widths};
use crate::layer::{Mask, Update};
use crate::linalg::slices::chunk_pairs;
use crate::{Error, Real};

/// Caller-provided buffers of [`attention`] and [`backward`](super::backward): every head's projected keys and
/// values (head-major: head `h`'s token `j` at `(h * N + j) * dk..`, `H * N * dk` and `H * N * dv` values), and for
/// the backward their gradients (likewise; may be empty for the forward).
#[derive(Debug)]
pub struct Work<'a, T> {
    /// `W_K e_j` per head and token.
    pub keys: &'a mut [T],
    /// `W_V e_j` per head and token.
    pub values: &'a mut [T],
    /// `dL/dk_j` per head and token.
    pub g_keys: &'a mut [T],
    /// `dL/dv_j` per head and token.
    pub g_values: &'a mut [T],
    /// `2 N` values for the backward to keep the softmax weights of the two tokens it runs together between its
    /// two passes over the keys, `N` for one token's (the other's computed twice), or empty to compute them all
    /// twice (the same bits either way).
    pub weights: &'a mut [T],
    /// `(N + 1) * H * 2` values that [`attention`] fills with each token's logits' maximum and sum per head (token
    /// `t`'s head `h` at `(t * H + h) * 2..`, the query as token `N`), or empty.
    pub stats: &'a mut [T],
    /// `(N + 1) * H * (dk + N)` values that [`attention`] fills with each token's query `W_Q h` and its logits
    /// `scale q . k_j` per head (token `t`'s head `h` at `(t * H + h) * (dk + N)..`: the query's `dk` values, then
    /// one logit per key it sees), or empty. With `stats` and `kept`, the backward takes them rather than
    /// projecting each token's query and taking every dot product with the keys again (the same bits).
    pub scores: &'a mut [T],
    /// Set by the caller of [`backward`](super::backward) when `keys`, `values` and `stats` hold what [`attention`]
    /// wrote for the same weights and inputs: the backward then takes them (the same bits) rather than projecting
    /// the keys and values and computing every token's maximum and sum again. The contents are the caller's word.
    pub kept: bool,
}

impl<T: Real> Work<'_, T> {
    /// Checks the lengths for `h` heads over `n` tokens (the gradients too when `backward`, the statistics when
    /// given or `kept`) and projects every head's keys and values of `ctx`, except for a backward whose caller
    /// says they are `kept` from the forward.
    #[inline(always)]
    pub(super) fn project(
        &mut self,
        w: Widths,
        heads: &[HeadRef<'_, T>],
        ctx: &[T],
        n: usize,
        backward: bool,
    ) -> Result<(), Error> {
        let entries = heads.len().saturating_mul(n);
        if backward {
            expect_len(entries.saturating_mul(w.dk), self.g_keys.len())?;
            expect_len(entries.saturating_mul(w.dv), self.g_values.len())?;
        }
        let kept = backward && self.kept;
        if kept || !self.stats.is_empty() {
            expect_len((n + 1).saturating_mul(2 * heads.len()), self.stats.len())?;
        }
        if !self.scores.is_empty() {
            let per_token = heads.len().saturating_mul(w.dk.saturating_add(n));
            expect_len((n + 1).saturating_mul(per_token), self.scores.len())?;
        }
        if kept {
            expect_len(entries.saturating_mul(w.dk), self.keys.len())?;
            return expect_len(entries.saturating_mul(w.dv), self.values.len());
        }
        project_into(w, heads, ctx, n, self.keys, self.values)
    }
}

/// A softmax attention layer on run-time shapes, out of place: `ctx_out[t] = ctx[t]` updated over the context tokens
/// it sees under `mask`, `query_out` updated over all of `ctx`; every update reads the layer's input, keys and values
/// are projected once into `work`. The contract of [`crate::softmax_attention_slices`].
/// Errors: lengths (see the module docs), [`Error::NonFinite`], an invalid rule.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn attention<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    mask: Mask,
    upd: &Update<T>,
    ctx: &[T],
    query: &[T],
    ctx_out: &mut [T],
    query_out: &mut [T],
    work: &mut Work<'_, T>,
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    upd.validate(w.e)?;
    check_heads(w, heads)?;
    expect_len(0, ctx.len() % w.e.max(1))?;
    expect_len(ctx.len(), ctx_out.len())?;
    expect_len(w.e, query.len())?;
    expect_len(w.e, query_out.len())?;
    let n = ctx.len() / w.e.max(1);
    work.project(w, heads, ctx, n, false)?;
    let per_token = 2 * heads.len();
    let [q, qs, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [acc, vs, _, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let [u, _, _] = carve::<T, 3>(vecs.token, w.e)?;
    let proj = Projection { keys: &*work.keys, values: &*work.values, w, heads: heads.len(), n };
    let scale = logit_scale::<T>(w.dk);
    let mut stats = work.stats.chunks_exact_mut(per_token.max(1));
    let mut scores = work.scores.chunks_exact_mut(heads.len().saturating_mul(w.dk + n).max(1));
    for (t, (out, h)) in chunk_pairs(ctx_out, w.e, ctx, w.e).enumerate() {
        let seen = visible(mask, t, n).min(n);
        let kept = [stats.next().unwrap_or_default(), scores.next().unwrap_or_default()];
        update_projected(heads, &proj, seen, scale, h, u, [&mut *q, &mut *qs], [&mut *acc, &mut *vs], kept)?;
        out.copy_from_slice(h);
        upd.apply_slice(out, u);
    }
    let kept = [stats.next().unwrap_or_default(), scores.next().unwrap_or_default()];
    update_projected(heads, &proj, n, scale, query, u, [q, qs], [acc, vs], kept)?;
    query_out.copy_from_slice(query);
    upd.apply_slice(query_out, u);
    Ok(())
}
