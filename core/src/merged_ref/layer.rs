//! The merged kernels over every token of a layer: the layer matrix `C = B F` of a context, the forward of every
//! token and its VJP, and their entry points (and the query-only kernel's) inlined at a compile-time width for
//! callers compiled for a wider vector unit.

use crate::layer::Update;
use crate::linalg::slices::{add_outer, gram, matmul, matmul_nt, matmul_tn, matvec};
use crate::linalg::slices::{chunk_pairs, matvec_t_of_transpose, transpose};
use crate::{Error, Real};

use super::{expect_len, expect_room, token_count, CacheMut, CacheRef, GradMut, MergedRef};

impl<T: Real> MergedRef<'_, T> {
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

    /// [`MergedRef::layer_forward`] with the width a compile-time constant `W` (0: the run-time width), inlined into
    /// the caller, so that a caller compiled for a wider vector unit compiles the kernel for it too. `W` other than 0
    /// and the view's width is a length error. The same operations as [`MergedRef::layer_forward`], the same bits.
    #[inline(always)]
    pub fn layer_forward_inlined<const W: usize>(
        &self,
        upd: &Update<T>,
        ctx: &mut [T],
        query: &mut [T],
        cache: CacheMut<'_, T>,
        u: &mut [T],
    ) -> Result<(), Error> {
        self.expect_width::<W>()?;
        self.at::<W>().layer_forward_at(upd, ctx, query, cache, u)
    }

    /// [`MergedRef::layer_backward`] inlined at the compile-time width `W`, as
    /// [`MergedRef::layer_forward_inlined`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn layer_backward_inlined<const W: usize>(
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
        self.expect_width::<W>()?;
        self.at::<W>().layer_backward_at(upd, cache, ctx_in, query_in, g_ctx, g_query, grad, mats, vecs)
    }

    /// [`MergedRef::query_forward`] inlined at the compile-time width `W`, as [`MergedRef::layer_forward_inlined`]:
    /// the same operations, the same bits.
    #[inline(always)]
    pub fn query_forward_inlined<const W: usize>(
        &self,
        ctx: &[T],
        h: &[T],
        out: &mut [T],
        saved: &mut [T],
    ) -> Result<(), Error> {
        self.expect_width::<W>()?;
        self.at::<W>().query_forward_at(ctx, h, out, saved)
    }

    /// [`MergedRef::query_backward`] inlined at the compile-time width `W`, as
    /// [`MergedRef::layer_forward_inlined`].
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn query_backward_inlined<const W: usize>(
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
        self.expect_width::<W>()?;
        self.at::<W>().query_backward_at(ctx, h, saved, g, grad, g_ctx, dh, scratch)
    }

    #[inline(always)]
    fn expect_width<const W: usize>(&self) -> Result<(), Error> {
        if W == 0 {
            Ok(())
        } else {
            expect_len(self.e, W)
        }
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
        // Decided once: on lanes the comparison is one per lane, and LLVM kept it inside the loop below.
        let unit_scale = upd.scale == T::ONE;
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
                    *o = if unit_scale { gi } else { upd.scale * gi };
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
        for (gj, tok) in chunk_pairs(g_ctx, e, ctx_in, e) {
            matvec(back, m3, tok);
            for (gi, v) in gj.iter_mut().zip(back.iter()) {
                *gi += *v;
            }
        }
        Ok(())
    }
}
