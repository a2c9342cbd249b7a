//! The merged form of one LSA head for a single query: the query's update depends on the weights only through
//! `A = W_K^T W_Q` and `B = P W_V` (both E x E), as
//! `u = P S W_Q h = B z` with `z = sum_j e_j (e_j . A h)`.
//! That is O(N E + E^2) per query instead of O(N E DK) for building `S`, and it is what von Oswald et al. analyse
//! (the products `W_KQ` and `P W_V`).
//!
//! The kernels are [`MergedRef`]'s (run-time width), called on this head's arrays: the same bits at either width.
//!
//! Numerical contract: `a = A h` by [`matvec`] (columns in order), `alpha_j = e_j . a` by [`dot`] (four lanes),
//! `z` accumulated over `j` in increasing order, `u = B z` by [`matvec`]. Equal to the associative and quadratic
//! LSA kernels in real arithmetic (tests: 1e-12 relative in f64); in f32 the results differ from those kernels by
//! rounding, so a host and a device that must agree bit for bit must both use this kernel or both the other.
//!
//! Backward ([`MergedHead::query_backward`]), for `G = dL/dh'` with `h' = h + u`:
//! `dB += G z^T`, `g_z = B^T G`, `g_a = sum_j e_j (e_j . g_z)`, `dA += g_a h^T`, `dh = G + A^T g_a`,
//! `de_j += (e_j . a) g_z + (e_j . g_z) a`. [`MergedHead::pullback`] maps `(dA, dB)` to the head's weights:
//! `dW_Q = W_K dA`, `dW_K = W_Q dA^T`, `dP = dB W_V^T`, `dW_V = P^T dB`.

use crate::layer::{prediction, Head};
#[cfg(doc)]
use crate::linalg::dot;
use crate::linalg::{dot2, matvec, zeros};
use crate::merged_ref::{merge, pullback, GradMut, HeadShape, MergedRef};
use crate::{Error, Real};
use nalgebra::SMatrix;

/// `A = W_K^T W_Q` and `B = P W_V` of one head (or their gradients).
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct MergedHead<T: Real, const E: usize> {
    /// `W_K^T W_Q`: the score of key token `e` for query token `h` is `e . A h`.
    pub a: SMatrix<T, E, E>,
    /// `P W_V`.
    pub b: SMatrix<T, E, E>,
}

/// Stack scratch for [`merge`] and [`pullback`] at fixed sizes: `2 max(E, DK, DV) E` values, from whichever of
/// three arrays is the largest (a const generic cannot name the maximum).
struct Scratch<T, const E: usize, const DK: usize, const DV: usize> {
    e: [[[T; E]; E]; 2],
    k: [[[T; E]; DK]; 2],
    v: [[[T; E]; DV]; 2],
}

impl<T: Real, const E: usize, const DK: usize, const DV: usize> Scratch<T, E, DK, DV> {
    fn new() -> Self {
        Self { e: [[[T::ZERO; E]; E]; 2], k: [[[T::ZERO; E]; DK]; 2], v: [[[T::ZERO; E]; DV]; 2] }
    }

    fn slice(&mut self) -> &mut [T] {
        if E >= DK && E >= DV {
            self.e.as_flattened_mut().as_flattened_mut()
        } else if DK >= DV {
            self.k.as_flattened_mut().as_flattened_mut()
        } else {
            self.v.as_flattened_mut().as_flattened_mut()
        }
    }
}

impl<T: Real, const E: usize> MergedHead<T, E> {
    /// Zero matrices (an identity layer; also an empty gradient).
    pub fn zeros() -> Self {
        Self { a: zeros(), b: zeros() }
    }

    /// A merged head from `A` and `B` written row by row, in a `const fn` (so it can live in a `static`).
    ///
    /// ```
    /// use dualform::MergedHead;
    /// // E = 2: one GD step from W0 = 0 at eta / N = 0.5: A = I_x, B = -0.5 on the y diagonal.
    /// static HEAD: MergedHead<f32, 2> = MergedHead::from_rows([[1.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, -0.5]]);
    /// let ctx = [[1.0, 2.0], [2.0, 4.0]]; // y = 2 x
    /// // w = 0.5 * (1 * 2 + 2 * 4) = 5, so the prediction at x = 3 is 15.
    /// assert_eq!(HEAD.predict_scalar(&ctx, &[3.0, 0.0]), 15.0);
    /// ```
    pub const fn from_rows(a: [[T; E]; E], b: [[T; E]; E]) -> Self {
        Self { a: crate::layer::from_rows(&a), b: crate::layer::from_rows(&b) }
    }

    /// Merges a head: `A = W_K^T W_Q` by [`crate::linalg::matmul_tn`], `B = P W_V` by [`crate::linalg::matmul`]
    /// ([`crate::merged_ref::merge`]).
    pub fn from_head<const DK: usize, const DV: usize>(head: &Head<T, E, DK, DV>) -> Self {
        let mut out = Self::zeros();
        let mut scratch = Scratch::<T, E, DK, DV>::new();
        let scratch = scratch.slice();
        // The shapes are right by construction, so the merge cannot refuse them.
        let _ = merge(
            HeadShape { e: E, dk: DK, dv: DV },
            [head.w_q.as_slice(), head.w_k.as_slice(), head.w_v.as_slice(), head.p.as_slice()],
            out.a.as_mut_slice(),
            out.b.as_mut_slice(),
            scratch,
        );
        out
    }

    /// A head with these merged matrices: `W_K = W_V = I`, `W_Q = A`, `P = B` (one of the many factorisations;
    /// [`MergedHead::from_head`] of it gives back `A` and `B` exactly).
    pub fn to_head(&self) -> Head<T, E, E, E> {
        let mut eye = zeros::<T, E, E>();
        for i in 0..E {
            if let Some(v) = eye.get_mut((i, i)) {
                *v = T::ONE;
            }
        }
        Head { w_q: self.a, w_k: eye, w_v: eye, p: self.b }
    }

    /// This head as a run-time-width view (the one implementation of the merged kernels).
    #[inline(always)]
    pub fn view(&self) -> MergedRef<'_, T> {
        MergedRef::fixed(E, self.a.as_slice(), self.b.as_slice())
    }

    /// The query's update `u = B sum_j e_j (e_j . A h)` over the context tokens `ctx` (any number, 0 gives 0).
    pub fn query_update(&self, ctx: &[[T; E]], h: &[T; E]) -> [T; E] {
        let (mut u, mut saved) = ([T::ZERO; E], [[T::ZERO; E]; 2]);
        // The shapes are right by construction, so the view cannot refuse them.
        let _ = self.view().query_update_at(ctx.as_flattened(), h, &mut u, saved.as_flattened_mut());
        u
    }

    /// The query token after the layer, `h + u`.
    pub fn query_forward(&self, ctx: &[[T; E]], h: &[T; E]) -> [T; E] {
        let (mut out, mut saved) = ([T::ZERO; E], [[T::ZERO; E]; 2]);
        let _ = self.view().query_forward_at(ctx.as_flattened(), h, &mut out, saved.as_flattened_mut());
        out
    }

    /// The prediction for the query token `h`: minus the last `DY` coordinates of [`MergedHead::query_forward`].
    pub fn predict<const DY: usize>(&self, ctx: &[[T; E]], h: &[T; E]) -> [T; DY] {
        prediction(&self.query_forward(ctx, h))
    }

    /// The prediction for a scalar target (`DY = 1`): minus the query token's last coordinate after the layer,
    /// computing only that coordinate. With `a = A h` and `b` the last row of `B`, it is
    /// `-(h_y + sum_j (b . e_j) (e_j . a))`: `E^2 + 2 N E + N` multiply-adds instead of [`MergedHead::predict`]'s
    /// `2 E^2 + 2 N E`, and each context token is read once ([`crate::linalg::dot2`]). Equal to `predict::<1>` in
    /// real arithmetic, not bit for bit (the sum over the context and the row of `B` are taken in the other order);
    /// a host and a device that compare bits must both use this one. An empty context gives `-h_y`.
    pub fn predict_scalar(&self, ctx: &[[T; E]], h: &[T; E]) -> T {
        let a = matvec(&self.a, h);
        let mut b = [T::ZERO; E];
        for (bj, col) in b.iter_mut().zip(self.b.data.0.iter()) {
            *bj = col.last().copied().unwrap_or(T::ZERO);
        }
        let mut acc = T::ZERO;
        for e in ctx {
            let (alpha, beta) = dot2(e, &a, &b);
            acc += alpha * beta;
        }
        -(h.last().copied().unwrap_or(T::ZERO) + acc)
    }

    /// The prediction of [`MergedHead::predict_scalar`] (the same bits) and, in `terms` (one per context token), what
    /// each demonstration contributes to it: `terms[j] = -(b . e_j) (e_j . a)`, so that the prediction is
    /// `-h_y + sum_j terms[j]` ([`MergedRef::attribution`]). Errors: [`Error::LengthMismatch`] when `terms` has
    /// another length than `ctx`.
    pub fn attribution(&self, ctx: &[[T; E]], h: &[T; E], terms: &mut [T]) -> Result<T, Error> {
        let mut saved = [[T::ZERO; E]; 2];
        self.view().attribution(ctx.as_flattened(), h, terms, saved.as_flattened_mut())
    }

    /// VJP of [`MergedHead::query_forward`] for `g = dL/dh'`: adds `(dA, dB)` into `grad` and the context inputs'
    /// gradients into `g_ctx` (when given); returns `dL/dh`. Errors: [`Error::LengthMismatch`] when `g_ctx` is given
    /// with another length than `ctx` (nothing is accumulated then).
    pub fn query_backward(
        &self,
        ctx: &[[T; E]],
        h: &[T; E],
        g: &[T; E],
        grad: &mut MergedHead<T, E>,
        g_ctx: Option<&mut [[T; E]]>,
    ) -> Result<[T; E], Error> {
        Ok(self.query_forward_backward(ctx, h, |_| *g, grad, g_ctx)?.1)
    }

    /// Forward and VJP in one pass over the context: computes `h' = h + u`, asks `loss_grad(h')` for `dL/dh'`,
    /// and accumulates as [`MergedHead::query_backward`]. Returns `(h', dL/dh)`; errors as
    /// [`MergedHead::query_backward`].
    pub fn query_forward_backward(
        &self,
        ctx: &[[T; E]],
        h: &[T; E],
        loss_grad: impl FnOnce(&[T; E]) -> [T; E],
        grad: &mut MergedHead<T, E>,
        g_ctx: Option<&mut [[T; E]]>,
    ) -> Result<([T; E], [T; E]), Error> {
        if let Some(gc) = g_ctx.as_deref() {
            if gc.len() != ctx.len() {
                return Err(Error::LengthMismatch { expected: ctx.len(), found: gc.len() });
            }
        }
        let view = self.view();
        let ctx = ctx.as_flattened();
        let (mut out, mut saved) = ([T::ZERO; E], [[T::ZERO; E]; 2]);
        let saved = saved.as_flattened_mut();
        view.query_forward_at(ctx, h, &mut out, saved)?;
        let g = loss_grad(&out);
        let (mut dh, mut scratch) = ([T::ZERO; E], [[T::ZERO; E]; 2]);
        let grad = GradMut { a: grad.a.as_mut_slice(), b: grad.b.as_mut_slice() };
        let g_ctx = g_ctx.map(|gc| gc.as_flattened_mut());
        view.query_backward_at(ctx, h, saved, &g, grad, g_ctx, &mut dh, scratch.as_flattened_mut())?;
        Ok((out, dh))
    }

    /// Adds into `grad` the gradient of `head`'s weights implied by the merged gradient `dm` (the chain rule through
    /// `A = W_K^T W_Q` and `B = P W_V`; [`crate::merged_ref::pullback`]).
    pub fn pullback<const DK: usize, const DV: usize>(
        head: &Head<T, E, DK, DV>,
        dm: &MergedHead<T, E>,
        grad: &mut Head<T, E, DK, DV>,
    ) {
        let mut scratch = Scratch::<T, E, DK, DV>::new();
        let scratch = scratch.slice();
        let Head { w_q, w_k, w_v, p } = grad;
        let _ = pullback(
            HeadShape { e: E, dk: DK, dv: DV },
            [head.w_q.as_slice(), head.w_k.as_slice(), head.w_v.as_slice(), head.p.as_slice()],
            dm.a.as_slice(),
            dm.b.as_slice(),
            [w_q.as_mut_slice(), w_k.as_mut_slice(), w_v.as_mut_slice(), p.as_mut_slice()],
            scratch,
        );
    }
}
