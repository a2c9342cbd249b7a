//! The merged form of one LSA head applied to every token of a layer, forward and backward: what deep and
//! recurrent stacks train with.
//!
//! Keys and values come from the N context tokens only, so with the context Gram matrix
//! `G = sum_j e_j e_j^T` every token's update is `u_t = B G A h_t = C h_t` with `C = B (G A)`
//! (`A = W_K^T W_Q`, `B = P W_V`, see [`crate::merged`]): one E x E matrix per layer and task, applied to the N
//! context tokens and the query alike. The token is then written by the layer's [`Update`] rule (damping, "update
//! only y", clipping). Cost: `N E^2` for `G`, `2 E^3` for `C`, `(N + 1) E^2` to apply it, against
//! `N E (DK + DV) + (N + 1) (E DK + DK DV + DV E)` for [`crate::lsa_associative`] (equal at N = 10, E = 11; the
//! merged form wins as soon as the key and value sizes exceed E or the layer is differentiated).
//!
//! The kernels are [`crate::MergedRef`]'s (run-time width), called on these arrays: the same bits at either width.
//!
//! Numerical contract: `G` by [`gram`] (each entry summed over `j` in increasing order; the same bits as [`add_outer`]
//! per token); `F = G A` and `C = B F` by [`matmul`];
//! `u_t = C h_t` by [`matvec`]; context tokens in order, then the query, each by [`Update::apply`], all from the
//! layer's input (the Gram matrix is taken before any token changes). Equal to [`crate::lsa_associative`] in real
//! arithmetic (tests: 1e-12 relative in f64); the f32 bits differ from that kernel, so a host and a device that must
//! agree bit for bit both use this kernel or both the other.
//!
//! Backward, for `G_t = dL/dh'_t` on every token: where the rule clips, the gradient of a clipped coordinate is 0
//! (`Gp_t`); `Gu_t = scale * Gp_t` on the written coordinates (0 below `first`); `dh_t = Gp_t + C^T Gu_t`;
//! `dC = sum_t Gu_t h_t^T`; `dB += dC F^T`; `dF = B^T dC`; `dA += G dF` (`G` is symmetric); `dG = dF A^T`; and
//! every context token also takes `(dG + dG^T) e_j`. The tests check it against central finite differences in f64.

use crate::layer::Update;
#[cfg(doc)]
use crate::linalg::{add_outer, matmul, matvec};
use crate::linalg::{slices, zeros};
use crate::merged::MergedHead;
use crate::merged_ref::{CacheMut, CacheRef, GradMut};
use crate::{Error, Real};
use nalgebra::SMatrix;

/// The context Gram matrix `G = sum_j e_j e_j^T`: the upper triangle (rows `0..=c` of each column `c`), each entry
/// summed over `j` in increasing order, then mirrored ([`crate::linalg::slices::gram`]). The same bits as rank-one
/// updates of the whole matrix ([`crate::linalg::add_outer`] per token) in a little over half the multiply-adds.
pub fn gram<T: Real, const E: usize>(ctx: &[[T; E]]) -> SMatrix<T, E, E> {
    let mut g = zeros::<T, E, E>();
    slices::gram(g.as_mut_slice(), ctx.as_flattened(), E);
    g
}

/// What a layer's forward keeps for its backward: the context Gram matrix `G`, `F = G A` and `C = B F`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCache<T: Real, const E: usize> {
    /// `G = sum_j e_j e_j^T` over the layer's input context.
    pub gram: SMatrix<T, E, E>,
    /// `F = G A`.
    pub ga: SMatrix<T, E, E>,
    /// `C = B G A`: every token's update is `C h_t`.
    pub c: SMatrix<T, E, E>,
}

impl<T: Real, const E: usize> LayerCache<T, E> {
    /// Zero matrices.
    pub fn zeros() -> Self {
        Self { gram: zeros(), ga: zeros(), c: zeros() }
    }
}

impl<T: Real, const E: usize> Default for LayerCache<T, E> {
    fn default() -> Self {
        Self::zeros()
    }
}

impl<T: Real, const E: usize> LayerCache<T, E> {
    fn view_mut(&mut self) -> CacheMut<'_, T> {
        CacheMut { gram: self.gram.as_mut_slice(), ga: self.ga.as_mut_slice(), c: self.c.as_mut_slice() }
    }

    fn view(&self) -> CacheRef<'_, T> {
        CacheRef { gram: self.gram.as_slice(), ga: self.ga.as_slice(), c: self.c.as_slice() }
    }
}

impl<T: Real, const E: usize> MergedHead<T, E> {
    /// Fills `cache` with `G`, `F = G A` and `C = B F` for the context `ctx` (any length; 0 gives `C = 0`).
    pub fn layer_matrix(&self, ctx: &[[T; E]], cache: &mut LayerCache<T, E>) {
        // The shapes are right by construction, so the view cannot refuse them.
        let _ = self.view().layer_matrix(ctx.as_flattened(), cache.view_mut());
    }

    /// The layer on every token: `h_t <- rule(h_t, C h_t)` for the context tokens in order and then the query, with
    /// `C` from the layer's input context (see the module docs). `cache` receives `G`, `F`, `C` for
    /// [`MergedHead::layer_backward`]. Errors: an invalid [`Update`] rule (checked before any token changes).
    #[inline(always)]
    pub fn layer_forward(
        &self,
        upd: &Update<T>,
        ctx: &mut [[T; E]],
        query: &mut [T; E],
        cache: &mut LayerCache<T, E>,
    ) -> Result<(), Error> {
        self.view().layer_forward_at(upd, ctx.as_flattened_mut(), query, cache.view_mut(), &mut [T::ZERO; E])
    }

    /// Merged heads applied to every token in `schedule` order (application `k` is
    /// `heads[schedule[k]].layer_forward(upd, ..)`): K distinct layers are `schedule = [0, 1, .., K - 1]`, one layer
    /// applied K times (a recurrent or looped model) is `[0; K]`. The tokens are updated in place; returns the
    /// query's prediction after the last application, `-query[E - 1]`. What a trained stack runs on a device, in the
    /// same operations as the harness's training forward (which keeps every application's tokens for its backward).
    ///
    /// Errors (all checked before any token changes): [`Error::InvalidParameter`] for an empty schedule or one that
    /// names a head `heads` does not have; an invalid [`Update`] rule.
    pub fn run_schedule(
        heads: &[Self],
        schedule: &[usize],
        upd: &Update<T>,
        ctx: &mut [[T; E]],
        query: &mut [T; E],
        cache: &mut LayerCache<T, E>,
    ) -> Result<T, Error> {
        if schedule.is_empty() {
            return Err(Error::InvalidParameter("a schedule needs at least one application"));
        }
        if schedule.iter().any(|&k| k >= heads.len()) {
            return Err(Error::InvalidParameter("the schedule names a head that does not exist"));
        }
        upd.validate(E)?;
        for &k in schedule {
            if let Some(head) = heads.get(k) {
                head.layer_forward(upd, ctx, query, cache)?;
            }
        }
        Ok(-query.last().copied().unwrap_or(T::ZERO))
    }

    /// VJP of [`MergedHead::layer_forward`]. `ctx_in` / `query_in` are the layer's inputs and `cache` its forward
    /// cache; `g_ctx` / `g_query` hold `dL/d(output)` on entry and `dL/d(input)` on return; `(dA, dB)` are added into
    /// `grad`. Errors: [`Error::LengthMismatch`] when `g_ctx` and `ctx_in` differ in length (nothing is written).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_backward(
        &self,
        upd: &Update<T>,
        cache: &LayerCache<T, E>,
        ctx_in: &[[T; E]],
        query_in: &[T; E],
        g_ctx: &mut [[T; E]],
        g_query: &mut [T; E],
        grad: &mut MergedHead<T, E>,
    ) -> Result<(), Error> {
        let (mut mats, mut vecs) = ([[[T::ZERO; E]; E]; 6], [[T::ZERO; E]; 4]);
        self.view().layer_backward_at(
            upd,
            cache.view(),
            ctx_in.as_flattened(),
            query_in,
            g_ctx.as_flattened_mut(),
            g_query,
            GradMut { a: grad.a.as_mut_slice(), b: grad.b.as_mut_slice() },
            mats.as_flattened_mut().as_flattened_mut(),
            vecs.as_flattened_mut(),
        )
    }
}
