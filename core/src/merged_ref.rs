//! One merged LSA head over a token width chosen at run time: [`MergedRef`] borrows `A = W_K^T W_Q` and
//! `B = P W_V` as column-major slices. It is the one implementation of the merged kernels: [`crate::MergedHead`]
//! (fixed width, what firmware runs) calls these with its arrays, so both give the same bits.
//!
//! Tokens are rows of a flat slice: a context of N tokens of width `e` is `N * e` values, token `j` at `j * e..`.
//! Scratch space is passed in by the caller; [`MergedRef::query_update`] (`2 e` saved values), [`MergedRef::query_scratch`] and
//! [`MergedRef::layer_backward_scratch`] say how much. Every length is checked before anything is written:
//! [`Error::LengthMismatch`] for a token, context or weight of the wrong length, [`Error::BufferTooSmall`] for short
//! scratch.
//!
//! Numerical contract: those of [`crate::merged`] (query) and [`crate::merged_layer`] (every token), operation for
//! operation; the tests of those modules hold both forms to the same bits.

use crate::layer::Update;
use crate::linalg::slices::{add_outer, axpy, dot, gram, matmul, matmul_nt, matmul_tn, matvec, matvec_t};
use crate::linalg::slices::{matvec_t_of_transpose, transpose};
use crate::{Error, Real};

/// A merged head borrowed as slices: `A` and `B`, each `e x e` column-major.
#[derive(Clone, Copy, Debug)]
pub struct MergedRef<'w, T> {
    e: usize,
    a: &'w [T],
    b: &'w [T],
}

/// The three `e x e` matrices a layer's forward keeps for its backward (see [`crate::LayerCache`]).
#[derive(Debug)]
pub struct CacheMut<'c, T> {
    /// `G = sum_j e_j e_j^T` over the layer's input context.
    pub gram: &'c mut [T],
    /// `F = G A`.
    pub ga: &'c mut [T],
    /// `C = B F`.
    pub c: &'c mut [T],
}

/// A read-only [`CacheMut`].
#[derive(Clone, Copy, Debug)]
pub struct CacheRef<'c, T> {
    /// `G`.
    pub gram: &'c [T],
    /// `F = G A`.
    pub ga: &'c [T],
    /// `C = B F`.
    pub c: &'c [T],
}

/// The gradient of a merged head, `(dL/dA, dL/dB)`, each `e x e` column-major, accumulated into.
#[derive(Debug)]
pub struct GradMut<'g, T> {
    /// `dL/dA`.
    pub a: &'g mut [T],
    /// `dL/dB`.
    pub b: &'g mut [T],
}

fn expect_len(expected: usize, found: usize) -> Result<(), Error> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch { expected, found })
    }
}

fn expect_room(needed: usize, found: usize) -> Result<(), Error> {
    if found >= needed {
        Ok(())
    } else {
        Err(Error::BufferTooSmall { needed, found })
    }
}

/// The number of tokens of width `e` in `tokens`, or an error if it is not a whole number.
fn token_count(tokens: usize, e: usize) -> Result<usize, Error> {
    if e == 0 || !tokens.is_multiple_of(e) {
        return Err(Error::LengthMismatch { expected: e * tokens.div_ceil(e.max(1)), found: tokens });
    }
    Ok(tokens / e)
}

/// `z = sum_j e_j (e_j . a)` over the tokens of `ctx`, in order.
#[inline(always)]
fn gather<T: Real>(z: &mut [T], ctx: &[T], a: &[T]) {
    z.fill(T::ZERO);
    let e = z.len();
    if e == 0 {
        return;
    }
    for tok in ctx.chunks_exact(e) {
        axpy(z, dot(tok, a), tok);
    }
}

/// Calls `$method` on a fixed-width instance (a function of its own, with the width a constant the compiler unrolls
/// the short loops for) when the width is 2 to 17, and on the run-time width otherwise: the kernels, whose inner
/// loops are of length E, are much faster with the width a constant. Every instance is the same
/// code, so the results are the same bits whichever runs.
macro_rules! by_width {
    ($view:expr, $method:ident ( $($arg:expr),* )) => {
        match $view.e {
            2 => $view.$method::<2>($($arg),*),
            3 => $view.$method::<3>($($arg),*),
            4 => $view.$method::<4>($($arg),*),
            5 => $view.$method::<5>($($arg),*),
            6 => $view.$method::<6>($($arg),*),
            7 => $view.$method::<7>($($arg),*),
            8 => $view.$method::<8>($($arg),*),
            9 => $view.$method::<9>($($arg),*),
            10 => $view.$method::<10>($($arg),*),
            11 => $view.$method::<11>($($arg),*),
            12 => $view.$method::<12>($($arg),*),
            13 => $view.$method::<13>($($arg),*),
            14 => $view.$method::<14>($($arg),*),
            15 => $view.$method::<15>($($arg),*),
            16 => $view.$method::<16>($($arg),*),
            17 => $view.$method::<17>($($arg),*),
            _ => $view.$method::<0>($($arg),*),
        }
    };
}

impl<'w, T: Real> MergedRef<'w, T> {
    /// A view without the checks of [`MergedRef::new`], for the fixed-width [`crate::MergedHead`] whose shapes are
    /// right by construction.
    pub(crate) fn fixed(e: usize, a: &'w [T], b: &'w [T]) -> Self {
        Self { e, a, b }
    }

    /// A head of width `e >= 1` from `A` and `B` (`e * e` values each, column-major).
    pub fn new(e: usize, a: &'w [T], b: &'w [T]) -> Result<Self, Error> {
        if e == 0 {
            return Err(Error::InvalidParameter("a token needs at least one coordinate"));
        }
        let size = e.checked_mul(e).ok_or(Error::InvalidParameter("token width too large"))?;
        expect_len(size, a.len())?;
        expect_len(size, b.len())?;
        Ok(Self { e, a, b })
    }

    /// The token width.
    pub fn width(&self) -> usize {
        self.e
    }

    /// Scratch values [`MergedRef::query_backward`] needs: `2 e`.
    pub const fn query_scratch(e: usize) -> usize {
        2 * e
    }

    /// Scratch [`MergedRef::layer_backward`] needs: `6 e^2` values for matrices and `4 e` for vectors.
    pub const fn layer_backward_scratch(e: usize) -> (usize, usize) {
        (6 * e * e, 4 * e)
    }

    /// This view at width `W` (0: the run-time width), for [`by_width`].
    #[inline(always)]
    fn at<const W: usize>(&self) -> Self {
        Self { e: if W == 0 { self.e } else { W }, ..*self }
    }

    #[inline(never)]
    fn query_update_w<const W: usize>(&self, ctx: &[T], h: &[T], u: &mut [T], saved: &mut [T]) -> Result<(), Error> {
        self.at::<W>().query_update_at(ctx, h, u, saved)
    }

    #[inline(never)]
    fn query_forward_w<const W: usize>(&self, ctx: &[T], h: &[T], o: &mut [T], saved: &mut [T]) -> Result<(), Error> {
        self.at::<W>().query_forward_at(ctx, h, o, saved)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn query_backward_w<const W: usize>(
        &self,
        ctx: &[T],
        h: &[T],
        saved: &[T],
        g: &[T],
        grad: GradMut<'_, T>,
        g_ctx: Option<&mut [T]>,
        dh: &mut [T],
        scratch: &mut [T],
    ) -> Result<(), Error> {
        self.at::<W>().query_backward_at(ctx, h, saved, g, grad, g_ctx, dh, scratch)
    }

    #[inline(never)]
    fn layer_forward_w<const W: usize>(
        &self,
        upd: &Update<T>,
        ctx: &mut [T],
        query: &mut [T],
        cache: CacheMut<'_, T>,
        u: &mut [T],
    ) -> Result<(), Error> {
        self.at::<W>().layer_forward_at(upd, ctx, query, cache, u)
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn layer_backward_w<const W: usize>(
        &self,
        upd: &Update<T>,
        cache: CacheRef<'_, T>,
        ctx_in: &[T],
        query_in: &[T],
        g_ctx: &mut [T],
        g_query: &mut [T],
        grad: GradMut<'_, T>,
        mats: &mut [T],
        vecs: &mut [T],
    ) -> Result<(), Error> {
        self.at::<W>().layer_backward_at(upd, cache, ctx_in, query_in, g_ctx, g_query, grad, mats, vecs)
    }

    /// The query's update `u = B z` with `z = sum_j e_j (e_j . A h)` over the tokens of `ctx`; `saved` (at least
    /// `2 e` values) receives `A h` and `z` for [`MergedRef::query_backward`].
    pub fn query_update(&self, ctx: &[T], h: &[T], u: &mut [T], saved: &mut [T]) -> Result<(), Error> {
        by_width!(self, query_update_w(ctx, h, u, saved))
    }

    /// The query token after the layer, `out = h + u` ([`MergedRef::query_update`], whose `saved` it fills).
    pub fn query_forward(&self, ctx: &[T], h: &[T], out: &mut [T], saved: &mut [T]) -> Result<(), Error> {
        by_width!(self, query_forward_w(ctx, h, out, saved))
    }

    /// VJP of [`MergedRef::query_forward`] for `g = dL/dout`, from its `saved` values: adds `(dA, dB)` into `grad`
    /// and the context tokens' gradients into `g_ctx` (when given, of the length of `ctx`), and writes `dL/dh` into
    /// `dh`. `scratch`: [`MergedRef::query_scratch`] values.
    #[allow(clippy::too_many_arguments)]
    pub fn query_backward(
        &self,
        ctx: &[T],
        h: &[T],
        saved: &[T],
        g: &[T],
        grad: GradMut<'_, T>,
        g_ctx: Option<&mut [T]>,
        dh: &mut [T],
        scratch: &mut [T],
    ) -> Result<(), Error> {
        by_width!(self, query_backward_w(ctx, h, saved, g, grad, g_ctx, dh, scratch))
    }

    /// The layer on every token: `h_t <- rule(h_t, C h_t)` for the context tokens in order and then the query, with
    /// `C` from the layer's input context; `cache` receives `G`, `F`, `C`, and `u` (`e` values) is scratch. Errors
    /// (before any token changes): an invalid rule, wrong lengths.
    pub fn layer_forward(
        &self,
        upd: &Update<T>,
        ctx: &mut [T],
        query: &mut [T],
        cache: CacheMut<'_, T>,
        u: &mut [T],
    ) -> Result<(), Error> {
        by_width!(self, layer_forward_w(upd, ctx, query, cache, u))
    }

    /// VJP of [`MergedRef::layer_forward`]. `ctx_in` / `query_in` are the layer's inputs and `cache` its forward
    /// cache; `g_ctx` / `g_query` hold `dL/d(output)` on entry and `dL/d(input)` on return; `(dA, dB)` are added into
    /// `grad`. `mats` and `vecs`: scratch of the sizes [`MergedRef::layer_backward_scratch`] gives.
    #[allow(clippy::too_many_arguments)]
    pub fn layer_backward(
        &self,
        upd: &Update<T>,
        cache: CacheRef<'_, T>,
        ctx_in: &[T],
        query_in: &[T],
        g_ctx: &mut [T],
        g_query: &mut [T],
        grad: GradMut<'_, T>,
        mats: &mut [T],
        vecs: &mut [T],
    ) -> Result<(), Error> {
        by_width!(self, layer_backward_w(upd, cache, ctx_in, query_in, g_ctx, g_query, grad, mats, vecs))
    }

    /// The query's update `u = B z` with `z = sum_j e_j (e_j . A h)` over the tokens of `ctx`; `saved` (at least
    /// `2 e` values) receives `A h` and `z` for [`MergedRef::query_backward`].
    #[inline(always)]
    pub(crate) fn query_update_at(&self, ctx: &[T], h: &[T], u: &mut [T], saved: &mut [T]) -> Result<(), Error> {
        let e = self.e;
        token_count(ctx.len(), e)?;
        expect_len(e, h.len())?;
        expect_len(e, u.len())?;
        expect_room(2 * e, saved.len())?;
        let (a, rest) = saved.split_at_mut(e);
        let z = rest.get_mut(..e).unwrap_or_default();
        matvec(a, self.a, h);
        gather(z, ctx, a);
        matvec(u, self.b, z);
        Ok(())
    }

    /// The query token after the layer, `out = h + u` ([`MergedRef::query_update`], whose `saved` it fills).
    #[inline(always)]
    pub(crate) fn query_forward_at(&self, ctx: &[T], h: &[T], out: &mut [T], saved: &mut [T]) -> Result<(), Error> {
        self.query_update_at(ctx, h, out, saved)?;
        for (o, &hi) in out.iter_mut().zip(h) {
            *o = hi + *o;
        }
        Ok(())
    }

    /// VJP of [`MergedRef::query_forward`] for `g = dL/dout`, from its `saved` values: adds `(dA, dB)` into `grad`
    /// and the context tokens' gradients into `g_ctx` (when given, of the length of `ctx`), and writes `dL/dh` into
    /// `dh`. `scratch`: [`MergedRef::query_scratch`] values.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn query_backward_at(
        &self,
        ctx: &[T],
        h: &[T],
        saved: &[T],
        g: &[T],
        grad: GradMut<'_, T>,
        g_ctx: Option<&mut [T]>,
        dh: &mut [T],
        scratch: &mut [T],
    ) -> Result<(), Error> {
        let e = self.e;
        token_count(ctx.len(), e)?;
        for len in [h.len(), g.len(), dh.len()] {
            expect_len(e, len)?;
        }
        expect_len(e * e, grad.a.len())?;
        expect_len(e * e, grad.b.len())?;
        expect_room(2 * e, saved.len())?;
        expect_room(2 * e, scratch.len())?;
        if let Some(gc) = g_ctx.as_deref() {
            expect_len(ctx.len(), gc.len())?;
        }
        let (a, z) = saved.split_at(e);
        let (gz, rest) = scratch.split_at_mut(e);
        let ga = rest.get_mut(..e).unwrap_or_default();
        add_outer(grad.b, g, z);
        matvec_t(gz, self.b, g);
        gather(ga, ctx, gz);
        add_outer(grad.a, ga, h);
        if let Some(gc) = g_ctx {
            for (gj, tok) in gc.chunks_exact_mut(e).zip(ctx.chunks_exact(e)) {
                axpy(gj, dot(tok, a), gz);
                axpy(gj, dot(tok, gz), a);
            }
        }
        // dh = g + A^T ga: the product first (into `gz`, no longer needed), then the sum.
        matvec_t(gz, self.a, ga);
        for ((d, &gi), &x) in dh.iter_mut().zip(g).zip(gz.iter()) {
            *d = gi + x;
        }
        Ok(())
    }

    /// Fills `cache` with `G`, `F = G A` and `C = B F` for the tokens of `ctx` (any number; none gives `C = 0`).
    #[inline(always)]
    pub fn layer_matrix(&self, ctx: &[T], cache: CacheMut<'_, T>) -> Result<(), Error> {
        let e = self.e;
        token_count(ctx.len(), e)?;
        for len in [cache.gram.len(), cache.ga.len(), cache.c.len()] {
            expect_len(e * e, len)?;
        }
        gram(cache.gram, ctx, e);
        matmul(cache.ga, cache.gram, self.a, e, e);
        matmul(cache.c, self.b, cache.ga, e, e);
        Ok(())
    }

    /// The layer on every token: `h_t <- rule(h_t, C h_t)` for the context tokens in order and then the query, with
    /// `C` from the layer's input context; `cache` receives `G`, `F`, `C`, and `u` (`e` values) is scratch. Errors
    /// (before any token changes): an invalid rule, wrong lengths.
    #[inline(always)]
    pub(crate) fn layer_forward_at(
        &self,
        upd: &Update<T>,
        ctx: &mut [T],
        query: &mut [T],
        cache: CacheMut<'_, T>,
        u: &mut [T],
    ) -> Result<(), Error> {
        let e = self.e;
        upd.validate(e)?;
        expect_len(e, query.len())?;
        expect_len(e, u.len())?;
        self.layer_matrix(ctx, CacheMut { gram: &mut *cache.gram, ga: &mut *cache.ga, c: &mut *cache.c })?;
        let c: &[T] = cache.c;
        // The plain residual rule on its own loop: the same additions as `apply`, without its run-time start and
        // clip, so that the compiler can unroll it when the rule is not a constant at the call.
        let residual = *upd == Update::residual();
        for h in ctx.chunks_exact_mut(e).chain(core::iter::once(query)) {
            matvec(u, c, h);
            if residual {
                for (hi, &ui) in h.iter_mut().zip(u.iter()) {
                    *hi += ui;
                }
            } else {
                upd.apply_slice(h, u);
            }
        }
        Ok(())
    }

    /// VJP of [`MergedRef::layer_forward`]. `ctx_in` / `query_in` are the layer's inputs and `cache` its forward
    /// cache; `g_ctx` / `g_query` hold `dL/d(output)` on entry and `dL/d(input)` on return; `(dA, dB)` are added into
    /// `grad`. `mats` and `vecs`: scratch of the sizes [`MergedRef::layer_backward_scratch`] gives.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn layer_backward_at(
        &self,
        upd: &Update<T>,
        cache: CacheRef<'_, T>,
        ctx_in: &[T],
        query_in: &[T],
        g_ctx: &mut [T],
        g_query: &mut [T],
        grad: GradMut<'_, T>,
        mats: &mut [T],
        vecs: &mut [T],
    ) -> Result<(), Error> {
        let e = self.e;
        let ee = e * e;
        token_count(ctx_in.len(), e)?;
        expect_len(ctx_in.len(), g_ctx.len())?;
        for len in [query_in.len(), g_query.len()] {
            expect_len(e, len)?;
        }
        for len in [cache.gram.len(), cache.ga.len(), cache.c.len(), grad.a.len(), grad.b.len()] {
            expect_len(ee, len)?;
        }
        expect_room(6 * ee, mats.len())?;
        expect_room(4 * e, vecs.len())?;
        let (dc, rest) = mats.split_at_mut(ee);
        let (ct, rest) = rest.split_at_mut(ee);
        let (tmp, rest) = rest.split_at_mut(ee);
        let (m1, rest) = rest.split_at_mut(ee);
        let (m2, rest) = rest.split_at_mut(ee);
        let m3 = rest.get_mut(..ee).unwrap_or_default();
        let (gu, rest) = vecs.split_at_mut(e);
        let (back, rest) = rest.split_at_mut(e);
        let (u, pre) = rest.split_at_mut(e);
        let pre = pre.get_mut(..e).unwrap_or_default();
        dc.fill(T::ZERO);
        // `C^T g` per token from `C^T`, once: the bits of a dot per output, vectorised across the outputs.
        transpose(ct, cache.c, e, e);
        let tokens = ctx_in.chunks_exact(e).chain(core::iter::once(query_in));
        let grads = g_ctx.chunks_exact_mut(e).chain(core::iter::once(&mut *g_query));
        let first = upd.first.min(e);
        for (h, g) in tokens.zip(grads) {
            if let Some(c) = upd.clip {
                // The coordinates the rule clamped pass no gradient.
                matvec(u, cache.c, h);
                pre.copy_from_slice(h);
                let unclipped = Update { clip: None, ..*upd };
                unclipped.apply_slice(pre, u);
                for (gi, &p) in g.iter_mut().zip(pre.iter()) {
                    // A NaN coordinate passes no gradient either.
                    *gi = gi.pass_if_within(p, c);
                }
            }
            gu.fill(T::ZERO);
            if let (Some((_, o)), Some((_, gs))) = (gu.split_at_mut_checked(first), g.split_at_checked(first)) {
                for (o, &gi) in o.iter_mut().zip(gs) {
                    *o = if upd.scale == T::ONE { gi } else { upd.scale * gi };
                }
            }
            add_outer(dc, gu, h);
            matvec_t_of_transpose(back, ct, gu);
            for (gi, b) in g.iter_mut().zip(back.iter()) {
                *gi += *b;
            }
        }
        // C = B F, F = G A: dB = dC F^T, dF = B^T dC, dA = G dF, dG = dF A^T.
        matmul_nt(m1, dc, cache.ga, e, e, tmp);
        for (acc, d) in grad.b.iter_mut().zip(m1.iter()) {
            *acc += *d;
        }
        matmul_tn(m2, self.b, dc, e, e, tmp);
        matmul(m1, cache.gram, m2, e, e);
        for (acc, d) in grad.a.iter_mut().zip(m1.iter()) {
            *acc += *d;
        }
        matmul_nt(m3, m2, self.a, e, e, tmp);
        // G = sum_j e_j e_j^T: de_j = (dG + dG^T) e_j; the symmetric sum in place (IEEE addition commutes).
        for c in 0..e {
            for r in 0..=c {
                let (Some(&x), Some(&y)) = (m3.get(c * e + r), m3.get(r * e + c)) else { continue };
                let s = x + y;
                if let Some(v) = m3.get_mut(c * e + r) {
                    *v = s;
                }
                if let Some(v) = m3.get_mut(r * e + c) {
                    *v = s;
                }
            }
        }
        for (gj, tok) in g_ctx.chunks_exact_mut(e).zip(ctx_in.chunks_exact(e)) {
            matvec(back, m3, tok);
            for (gi, v) in gj.iter_mut().zip(back.iter()) {
                *gi += *v;
            }
        }
        Ok(())
    }
}

/// The shapes of one unmerged head: token width `e`, key size `dk`, value size `dv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    /// Token width E.
    pub e: usize,
    /// Query and key size DK.
    pub dk: usize,
    /// Value size DV.
    pub dv: usize,
}

impl HeadShape {
    /// Every matrix of a head with key and value size E (the shape the harness trains).
    pub fn square(e: usize) -> Self {
        Self { e, dk: e, dv: e }
    }

    /// Scratch values [`merge`] and [`pullback`] need: `2 max(e, dk, dv) e`.
    pub const fn scratch(&self) -> usize {
        let m = if self.dk > self.dv { self.dk } else { self.dv };
        let m = if m > self.e { m } else { self.e };
        2 * m * self.e
    }

    fn check(&self, w: [usize; 4], scratch: usize) -> Result<(), Error> {
        let (e, dk, dv) = (self.e, self.dk, self.dv);
        for (want, found) in [dk * e, dk * e, dv * e, e * dv].into_iter().zip(w) {
            expect_len(want, found)?;
        }
        expect_room(self.scratch(), scratch)
    }
}

/// Merges a head given as `[W_Q (dk x e), W_K (dk x e), W_V (dv x e), P (e x dv)]`, column-major:
/// `A = W_K^T W_Q` by [`matmul_tn`], `B = P W_V` by [`matmul`], into `a` and `b` (`e x e` each).
#[inline(always)]
pub fn merge<T: Real>(
    shape: HeadShape,
    head: [&[T]; 4],
    a: &mut [T],
    b: &mut [T],
    scratch: &mut [T],
) -> Result<(), Error> {
    let HeadShape { e, dk, dv } = shape;
    shape.check(head.map(<[T]>::len), scratch.len())?;
    expect_len(e * e, a.len())?;
    expect_len(e * e, b.len())?;
    let [w_q, w_k, w_v, p] = head;
    matmul_tn(a, w_k, w_q, e, dk, scratch);
    matmul(b, p, w_v, e, dv);
    Ok(())
}

/// Adds into `grad` (the four matrices of [`merge`]'s layout) the gradient of the head's weights implied by the
/// merged gradient `(da, db)`: `dW_Q += W_K dA`, `dW_K += W_Q dA^T`, `dP += dB W_V^T`, `dW_V += P^T dB`, each
/// product formed in `scratch` first and then added.
#[inline(always)]
pub fn pullback<T: Real>(
    shape: HeadShape,
    head: [&[T]; 4],
    da: &[T],
    db: &[T],
    grad: [&mut [T]; 4],
    scratch: &mut [T],
) -> Result<(), Error> {
    let HeadShape { e, dk, dv } = shape;
    shape.check(head.map(<[T]>::len), scratch.len())?;
    shape.check([grad[0].len(), grad[1].len(), grad[2].len(), grad[3].len()], scratch.len())?;
    expect_len(e * e, da.len())?;
    expect_len(e * e, db.len())?;
    let [w_q, w_k, w_v, p] = head;
    let [g_q, g_k, g_v, g_p] = grad;
    let (prod, tr) = scratch.split_at_mut(scratch.len() / 2);
    let add = |dst: &mut [T], src: &[T]| {
        for (d, s) in dst.iter_mut().zip(src.iter()) {
            *d += *s;
        }
    };
    let prod_k = prod.get_mut(..dk * e).unwrap_or_default();
    matmul(prod_k, w_k, da, dk, e);
    add(g_q, prod_k);
    transpose(tr, da, e, e);
    matmul(prod_k, w_q, tr.get(..e * e).unwrap_or_default(), dk, e);
    add(g_k, prod_k);
    let prod_p = prod.get_mut(..e * dv).unwrap_or_default();
    transpose(tr, w_v, dv, e);
    matmul(prod_p, db, tr.get(..e * dv).unwrap_or_default(), e, e);
    add(g_p, prod_p);
    let prod_v = prod.get_mut(..dv * e).unwrap_or_default();
    matmul_tn(prod_v, p, db, dv, e, tr);
    add(g_v, prod_v);
    Ok(())
}
