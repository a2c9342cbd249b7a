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
use crate::linalg::slices::{add_outer, axpy, chunk_pairs, dot, matvec, matvec_t};
use crate::{Error, Real};

mod layer;
mod shape;

pub use shape::{merge, pullback, HeadShape};

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

    /// Which demonstration the scalar prediction draws on: with `a = A h` and `b` the last row of `B`, the prediction
    /// `-(h_y + sum_j (e_j . a) (e_j . b))` is the query's own term `-h_y` plus one term per context token,
    /// `terms[j] = -(e_j . a) (e_j . b)` (exact: the layer is a sum over its context). Writes `terms` (one per token
    /// of `ctx`) and returns the prediction, in the operation order of [`crate::MergedHead::predict_scalar`] (the
    /// same bits). `saved`: at least `2 e` values. `E^2 + 2 N E` multiply-adds, no allocation.
    pub fn attribution(&self, ctx: &[T], h: &[T], terms: &mut [T], saved: &mut [T]) -> Result<T, Error> {
        let e = self.e;
        let n = token_count(ctx.len(), e)?;
        expect_len(e, h.len())?;
        expect_len(n, terms.len())?;
        expect_room(2 * e, saved.len())?;
        let (a, rest) = saved.split_at_mut(e);
        let b = rest.get_mut(..e).unwrap_or_default();
        matvec(a, self.a, h);
        for (bc, col) in b.iter_mut().zip(self.b.chunks_exact(e)) {
            *bc = col.last().copied().unwrap_or(T::ZERO);
        }
        let mut acc = T::ZERO;
        for (t, tok) in terms.iter_mut().zip(ctx.chunks_exact(e)) {
            let product = dot(tok, a) * dot(tok, b);
            acc += product;
            *t = -product;
        }
        Ok(-(h.last().copied().unwrap_or(T::ZERO) + acc))
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
            for (gj, tok) in chunk_pairs(gc, e, ctx, e) {
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
}
