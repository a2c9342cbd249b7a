//! Softmax attention over shapes chosen at run time: heads borrowed as column-major slices
//! ([`crate::head_ref`]), tokens as rows of flat slices (token `j` at `j * e..`), and the small vectors of every kernel
//! in caller-provided [`Vectors`]. It is the one implementation of softmax attention:
//! the fixed-size forms in [`mod@crate::softmax`] and [`crate::backward`] call these with their arrays, so both give the
//! same bits.
//!
//! Numerical contract: that of [`mod@crate::softmax`] (one pass with a running maximum and sum; a logit whose unscaled
//! dot product overflows is recomputed with the query scaled first; a weighted sum that overflows is recomputed with
//! the values scaled down) and of [`crate::backward`] (softmax VJPs, weights recomputed from the logits' maximum and
//! sum), operation for operation. Every length is checked before anything is written: [`Error::LengthMismatch`] for
//! a token, context, gradient or weight of the wrong length, [`Error::BufferTooSmall`] for short scratch.

use crate::attention::visible;
use crate::head_ref::{carve, check_grads, check_heads, expect_len, row, row_mut, HeadMut, HeadRef, Vectors, Widths};
use crate::layer::{Mask, Update};
use crate::linalg::slices::{add_outer, axpy, dot, matvec, matvec_acc, matvec_t};
use crate::softmax::{logit_scale, MaxSum};
use crate::{Error, Real};

/// The running state of one-pass softmax: maximum `m`, normaliser `l` relative to `m`, and the weighted sum in
/// `acc`. Adds the term with logit `s` and value `v`; [`Error::NonFinite`] for a NaN or infinite logit.
#[inline(always)]
pub(crate) fn online_push<T: Real>(m: &mut T, l: &mut T, acc: &mut [T], s: T, v: &[T]) -> Result<(), Error> {
    if !s.is_finite() {
        return Err(Error::NonFinite);
    }
    if s > *m {
        let c = (*m - s).exp();
        for a in acc.iter_mut() {
            *a *= c;
        }
        *l *= c;
        *m = s;
    }
    let w = (s - *m).exp();
    *l += w;
    axpy(acc, w, v);
    Ok(())
}

/// `acc /= l` when some term was added (`l > 0`).
#[inline(always)]
pub(crate) fn online_finish<T: Real>(l: T, acc: &mut [T]) {
    if l > T::ZERO {
        for a in acc.iter_mut() {
            *a /= l;
        }
    }
}

/// A source of `(key, value)` pairs, visited in order by [`attend`] (once per pass).
pub(crate) trait Pairs<T> {
    /// Number of pairs.
    fn count(&self) -> usize;
    /// Pair `j` (`j < count()`).
    fn pair(&mut self, j: usize) -> (&[T], &[T]);
}

/// Keys and values already projected: `count` rows of `dk` and `dv` values.
pub(crate) struct Projected<'a, T> {
    pub(crate) keys: &'a [T],
    pub(crate) values: &'a [T],
    pub(crate) dk: usize,
    pub(crate) dv: usize,
    pub(crate) count: usize,
}

impl<T> Pairs<T> for Projected<'_, T> {
    fn count(&self) -> usize {
        self.count
    }
    #[inline(always)]
    fn pair(&mut self, j: usize) -> (&[T], &[T]) {
        (row(self.keys, j, self.dk), row(self.values, j, self.dv))
    }
}

/// Keys and values projected from context tokens on the fly, into `k` and `v`.
struct OnTheFly<'a, T> {
    head: HeadRef<'a, T>,
    ctx: &'a [T],
    e: usize,
    k: &'a mut [T],
    v: &'a mut [T],
}

impl<T: Real> Pairs<T> for OnTheFly<'_, T> {
    fn count(&self) -> usize {
        self.ctx.len().checked_div(self.e).unwrap_or(0)
    }
    #[inline(always)]
    fn pair(&mut self, j: usize) -> (&[T], &[T]) {
        let tok = row(self.ctx, j, self.e);
        matvec(self.k, self.head.w_k, tok);
        matvec(self.v, self.head.w_v, tok);
        (self.k, self.v)
    }
}

/// `acc = sum_j softmax_j(scale q . k_j) v_j` over `pairs` (zeros for none), by the contract of
/// [`crate::softmax::attend_softmax`]; `qs` (width of `q`) and `vs` (width of `acc`) are scratch.
#[inline(always)]
pub(crate) fn attend<T: Real, P: Pairs<T>>(
    q: &[T],
    pairs: &mut P,
    scale: T,
    qs: &mut [T],
    acc: &mut [T],
    vs: &mut [T],
) -> Result<(), Error> {
    for (s, &x) in qs.iter_mut().zip(q) {
        *s = x * scale;
    }
    // A logit whose unscaled dot product overflows but whose scaled value is finite: the dot again with `q` scaled
    // first (only then, so ordinary logits keep their bits).
    let logit = |k: &[T], qs: &[T]| {
        let l = dot(q, k) * scale;
        if l.is_finite() {
            l
        } else {
            dot(qs, k)
        }
    };
    let (mut m, mut l) = (-T::INFINITY, T::ZERO);
    acc.fill(T::ZERO);
    for j in 0..pairs.count() {
        let (k, v) = pairs.pair(j);
        online_push(&mut m, &mut l, acc, logit(k, qs), v)?;
    }
    online_finish(l, acc);
    if acc.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    // The weighted sum overflowed although it is a convex combination of the values: again with the values divided
    // by their largest magnitude, then scaled back (non-finite values still give a non-finite result).
    let mut s = T::ZERO;
    for j in 0..pairs.count() {
        for &x in pairs.pair(j).1 {
            if x.abs() > s {
                s = x.abs();
            }
        }
    }
    if !s.is_finite() || s == T::ZERO {
        return Ok(());
    }
    let (mut m, mut l) = (-T::INFINITY, T::ZERO);
    acc.fill(T::ZERO);
    for j in 0..pairs.count() {
        let (k, v) = pairs.pair(j);
        for (d, &x) in vs.iter_mut().zip(v) {
            *d = x / s;
        }
        online_push(&mut m, &mut l, acc, logit(k, qs), vs)?;
    }
    online_finish(l, acc);
    for a in acc.iter_mut() {
        *a *= s;
    }
    Ok(())
}

/// Every head's keys and values of one context (`N` tokens), projected once by [`project`] for the token kernels
/// [`token_update_projected`] and [`token_backward_projected`]: the same bits as projecting them token by token, as
/// [`token_update`] and [`token_backward`] do, without the `O(N E (DK + DV))` work per token.
#[derive(Clone, Copy, Debug)]
pub struct Projection<'a, T> {
    keys: &'a [T],
    values: &'a [T],
    w: Widths,
    heads: usize,
    n: usize,
}

impl<'a, T> Projection<'a, T> {
    /// The projection that [`project`] wrote into `keys` and `values` for `heads` heads of widths `w` over `n`
    /// tokens, read again: the lengths are checked, the contents are the caller's word.
    /// Errors: [`Error::LengthMismatch`] for buffers of other lengths.
    pub fn written(w: Widths, heads: usize, n: usize, keys: &'a [T], values: &'a [T]) -> Result<Self, Error> {
        let entries = heads.saturating_mul(n);
        expect_len(entries.saturating_mul(w.dk), keys.len())?;
        expect_len(entries.saturating_mul(w.dv), values.len())?;
        Ok(Self { keys, values, w, heads, n })
    }

    /// The number of context tokens projected.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True for a projection of an empty context.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Head `hd`'s key of context token `j`.
    #[inline(always)]
    fn key(&self, hd: usize, j: usize) -> &[T] {
        row(self.keys, hd * self.n + j, self.w.dk)
    }

    /// Head `hd`'s value of context token `j`.
    #[inline(always)]
    fn value(&self, hd: usize, j: usize) -> &[T] {
        row(self.values, hd * self.n + j, self.w.dv)
    }

    /// [`Error::LengthMismatch`] unless it was projected at widths `w` for `heads` heads over `n` tokens.
    fn check(&self, w: Widths, heads: usize, n: usize) -> Result<(), Error> {
        if self.w != w {
            return Err(Error::LengthMismatch { expected: w.e, found: self.w.e });
        }
        expect_len(heads, self.heads)?;
        expect_len(n, self.n)
    }
}

/// Projects every head's keys and values of `ctx` (`N * e`) into `keys` (`H * N * dk`, head-major: head `h`'s token
/// `j` at `(h * N + j) * dk..`) and `values` (`H * N * dv`). Errors: lengths (see the module docs).
pub fn project<'a, T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    keys: &'a mut [T],
    values: &'a mut [T],
) -> Result<Projection<'a, T>, Error> {
    check_heads(w, heads)?;
    expect_len(0, ctx.len() % w.e.max(1))?;
    let n = ctx.len() / w.e.max(1);
    project_into(w, heads, ctx, n, keys, values)?;
    Ok(Projection { keys, values, w, heads: heads.len(), n })
}

/// Checks the lengths of `keys` and `values` for `heads.len() * n` entries and writes the projections.
fn project_into<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    n: usize,
    keys: &mut [T],
    values: &mut [T],
) -> Result<(), Error> {
    let entries = heads.len().saturating_mul(n);
    expect_len(entries.saturating_mul(w.dk), keys.len())?;
    expect_len(entries.saturating_mul(w.dv), values.len())?;
    for (hd, head) in heads.iter().enumerate() {
        for j in 0..n {
            let tok = row(ctx, j, w.e);
            matvec(row_mut(keys, hd * n + j, w.dk), head.w_k, tok);
            matvec(row_mut(values, hd * n + j, w.dv), head.w_v, tok);
        }
    }
    Ok(())
}

/// The softmax-attention update of one token `h` (`e` values) over `ctx` (`N * e`), every head, keys and values
/// projected on the fly, written to `u` (`e` values) without the residual: the contract of
/// [`crate::softmax_token_update`]. Errors: lengths (see the module docs), [`Error::NonFinite`].
pub fn token_update<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    h: &[T],
    u: &mut [T],
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    check_heads(w, heads)?;
    expect_len(w.e, h.len())?;
    expect_len(w.e, u.len())?;
    expect_len(0, ctx.len() % w.e.max(1))?;
    let [q, qs, k, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [acc, vs, v, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let scale = logit_scale::<T>(w.dk);
    u.fill(T::ZERO);
    for head in heads {
        matvec(q, head.w_q, h);
        let mut pairs = OnTheFly { head: *head, ctx, e: w.e, k: &mut *k, v: &mut *v };
        attend(q, &mut pairs, scale, qs, acc, vs)?;
        matvec_acc(u, head.p, acc);
    }
    Ok(())
}

/// [`token_update`] over a context whose keys and values were projected once by [`project`] (the same bits).
/// Errors: those of [`token_update`], and [`Error::LengthMismatch`] for a projection of other widths or heads.
pub fn token_update_projected<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    proj: &Projection<'_, T>,
    h: &[T],
    u: &mut [T],
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    check_heads(w, heads)?;
    proj.check(w, heads.len(), proj.n)?;
    expect_len(w.e, h.len())?;
    expect_len(w.e, u.len())?;
    let [q, qs, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [acc, vs, _, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let scale = logit_scale::<T>(w.dk);
    update_projected(heads, proj, proj.n, scale, h, u, [q, qs], [acc, vs])
}

/// `u` = the update of token `h` over the first `seen` projected pairs, every head, logits scaled by `scale`
/// (`q, qs`: key-width scratch, `acc, vs`: value-width scratch).
#[allow(clippy::too_many_arguments)]
fn update_projected<T: Real>(
    heads: &[HeadRef<'_, T>],
    proj: &Projection<'_, T>,
    seen: usize,
    scale: T,
    h: &[T],
    u: &mut [T],
    [q, qs]: [&mut [T]; 2],
    [acc, vs]: [&mut [T]; 2],
) -> Result<(), Error> {
    let (w, n) = (proj.w, proj.n);
    u.fill(T::ZERO);
    for (hd, head) in heads.iter().enumerate() {
        let at = hd * n;
        let mut pairs = Projected {
            keys: proj.keys.get(at * w.dk..).unwrap_or_default(),
            values: proj.values.get(at * w.dv..).unwrap_or_default(),
            dk: w.dk,
            dv: w.dv,
            count: seen,
        };
        matvec(q, head.w_q, h);
        attend(q, &mut pairs, scale, qs, acc, vs)?;
        matvec_acc(u, head.p, acc);
    }
    Ok(())
}

/// Caller-provided buffers of [`attention`] and [`backward`]: every head's projected keys and values (head-major:
/// head `h`'s token `j` at `(h * N + j) * dk..`, `H * N * dk` and `H * N * dv` values), and for the backward their
/// gradients (likewise; may be empty for the forward).
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
    /// `N` values for the backward to keep one token's softmax weights between its two passes over the keys, or
    /// empty to compute them twice (the same bits either way).
    pub weights: &'a mut [T],
}

impl<T: Real> Work<'_, T> {
    /// Checks the lengths for `h` heads over `n` tokens (the gradients too when `backward`) and projects every
    /// head's keys and values of `ctx`.
    fn project(
        &mut self,
        w: Widths,
        heads: &[HeadRef<'_, T>],
        ctx: &[T],
        n: usize,
        backward: bool,
    ) -> Result<(), Error> {
        if backward {
            let entries = heads.len().saturating_mul(n);
            expect_len(entries.saturating_mul(w.dk), self.g_keys.len())?;
            expect_len(entries.saturating_mul(w.dv), self.g_values.len())?;
        }
        project_into(w, heads, ctx, n, self.keys, self.values)
    }
}

/// A softmax attention layer on run-time shapes, out of place: `ctx_out[t] = ctx[t]` updated over the context tokens
/// it sees under `mask`, `query_out` updated over all of `ctx`; every update reads the layer's input, keys and values
/// are projected once into `work`. The contract of [`crate::softmax_attention_slices`].
/// Errors: lengths (see the module docs), [`Error::NonFinite`], an invalid rule.
#[allow(clippy::too_many_arguments)]
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
    let [q, qs, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [acc, vs, _, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let [u, _, _] = carve::<T, 3>(vecs.token, w.e)?;
    let proj = Projection { keys: &*work.keys, values: &*work.values, w, heads: heads.len(), n };
    let scale = logit_scale::<T>(w.dk);
    let mut update = |h: &[T], seen: usize, u: &mut [T]| {
        update_projected(heads, &proj, seen, scale, h, u, [&mut *q, &mut *qs], [&mut *acc, &mut *vs])
    };
    for (t, (h, out)) in ctx.chunks_exact(w.e.max(1)).zip(ctx_out.chunks_exact_mut(w.e.max(1))).enumerate() {
        update(h, visible(mask, t, n).min(n), u)?;
        out.copy_from_slice(h);
        upd.apply_slice(out, u);
    }
    update(query, n, u)?;
    query_out.copy_from_slice(query);
    upd.apply_slice(query_out, u);
    Ok(())
}

/// The VJP of [`token_update`] with the residual (one token `h` whose output gradient is `g`): adds the parameter
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

/// [`token_backward`] over a context whose keys and values were projected once by [`project`], with `weights` (`N`
/// values) to keep the softmax weights between the passes: the same bits, with no projection and one exponential
/// fewer per key. Errors: those of [`token_backward`], and [`Error::LengthMismatch`] for a projection of other
/// widths, heads or length, or `weights` of another length.
#[allow(clippy::too_many_arguments)]
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
/// kept in `weights` where it has room (else computed again).
#[allow(clippy::too_many_arguments)]
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
        for (j, tok) in ctx.chunks_exact(e).enumerate() {
            acc.push(dot(q, or_project(proj.map(|p| p.key(hd, j)), head.w_k, tok, k)) * c)?;
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
        for (j, tok) in ctx.chunks_exact(e).enumerate() {
            let a = (dot(q, or_project(proj.map(|p| p.key(hd, j)), head.w_k, tok, k)) * c - m).exp() / l;
            if let Some(kept) = weights.get_mut(j) {
                *kept = a;
            }
            axpy(o, a, or_project(proj.map(|p| p.value(hd, j)), head.w_v, tok, v));
        }
        add_outer(gh.p, g, o);
        matvec_t(g_o, head.p, g);
        let g_dot_o = dot(g_o, o);
        g_q.fill(T::ZERO);
        for (j, tok) in ctx.chunks_exact(e).enumerate() {
            let kj = or_project(proj.map(|p| p.key(hd, j)), head.w_k, tok, k);
            let a = match weights.get(j) {
                Some(&a) => a,
                None => (dot(q, kj) * c - m).exp() / l,
            };
            let vj = or_project(proj.map(|p| p.value(hd, j)), head.w_v, tok, v);
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
            if let Some(gj) = g_ctx.as_deref_mut().and_then(|gc| gc.get_mut(j * e..(j + 1) * e)) {
                matvec_t(de_k, head.w_k, g_k);
                matvec_t(de_v, head.w_v, g_v);
                for ((d, &x), &y) in gj.iter_mut().zip(de_k.iter()).zip(de_v.iter()) {
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

/// The VJP of [`attention`] (every token, residual update, `mask` as in the forward): `ctx`/`query` are the layer's
/// inputs; `g_ctx`/`g_query` hold `dL/d(output)` on entry and `dL/d(input)` on return; parameter gradients are
/// added into `grads`. The contract of [`crate::backward::softmax_backward_slices`].
/// Errors: lengths (see the module docs), [`Error::NonFinite`] (then `g_ctx`, `g_query` and `grads` may be partly
/// updated).
#[allow(clippy::too_many_arguments)]
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
    work.project(w, heads, ctx, n, true)?;
    work.g_keys.fill(T::ZERO);
    work.g_values.fill(T::ZERO);
    let [q, g_q, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [o, g_o, _, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let [dh, de_k, de_v] = carve::<T, 3>(vecs.token, w.e)?;
    let c = logit_scale::<T>(w.dk);
    let Work { keys, values, g_keys, g_values, weights } = work;
    // One token `h` with output gradient `g` seeing the first `seen` keys: its input gradient, written over `g`.
    let mut token = |h: &[T], g: &mut [T], seen: usize, grads: &mut [HeadMut<'_, T>]| {
        dh.copy_from_slice(g);
        for (hd, (head, gh)) in heads.iter().zip(grads.iter_mut()).enumerate() {
            let at = hd * n;
            if seen == 0 {
                continue;
            }
            let key = |j: usize| row(keys, at + j, w.dk);
            matvec(q, head.w_q, h);
            let mut acc = MaxSum::new();
            for j in 0..seen {
                acc.push(dot(q, key(j)) * c)?;
            }
            let weight = |q: &[T], k: &[T]| (dot(q, k) * c - acc.m).exp() / acc.l;
            o.fill(T::ZERO);
            for j in 0..seen {
                let a = weight(q, key(j));
                if let Some(kept) = weights.get_mut(j) {
                    *kept = a;
                }
                axpy(o, a, row(values, at + j, w.dv));
            }
            add_outer(gh.p, g, o);
            matvec_t(g_o, head.p, g);
            let g_dot_o = dot(g_o, o);
            g_q.fill(T::ZERO);
            for j in 0..seen {
                let (k, v) = (key(j), row(values, at + j, w.dv));
                let a = match weights.get(j) {
                    Some(&a) => a,
                    None => weight(q, k),
                };
                let g_s = a * (dot(g_o, v) - g_dot_o) * c;
                axpy(g_q, g_s, k);
                axpy(row_mut(g_keys, at + j, w.dk), g_s, q);
                axpy(row_mut(g_values, at + j, w.dv), a, g_o);
            }
            add_outer(gh.w_q, g_q, h);
            matvec_t(de_k, head.w_q, g_q);
            for (d, &x) in dh.iter_mut().zip(de_k.iter()) {
                *d += x;
            }
        }
        g.copy_from_slice(dh);
        Ok::<_, Error>(())
    };
    for (t, (h, g)) in ctx.chunks_exact(e).zip(g_ctx.chunks_exact_mut(e)).enumerate() {
        token(h, g, visible(mask, t, n).min(n), grads)?;
    }
    token(query, g_query, n, grads)?;
    // The keys' and values' gradients, summed over every token that saw them, to the weights and the tokens.
    for (hd, (head, gh)) in heads.iter().zip(grads.iter_mut()).enumerate() {
        let at = hd * n;
        for (j, (tok, ge)) in ctx.chunks_exact(e).zip(g_ctx.chunks_exact_mut(e)).enumerate() {
            let (gk, gv) = (row(g_keys, at + j, w.dk), row(g_values, at + j, w.dv));
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
