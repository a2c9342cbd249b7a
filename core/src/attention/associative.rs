//! The associative evaluation order of kernelised linear attention: per head the running sums
//! `S = sum_j v_j k_j^T` (and `z = sum_j k_j` when normalising), then every token's `S q_t` (O(N F DV) per head, no
//! scratch); with [`Mask::Causal`] the sums grow token by token, the recurrent form of causal linear attention.
//! [`AssociativeState`] is also the streaming context's state.
//!
//! Numerical contract: `S` by rank-one updates over `j` in increasing order (one `axpy` per column), `S q` by the
//! column-order matvec, the normaliser `z . q` by the four-lane dot, heads in order. Equal to the quadratic order
//! in real arithmetic (tests: 1e-12 relative in f64).

use super::{normalise, Normalise};
use crate::features::{FeatureMap, Identity};
use crate::layer::{Layer, Mask, Update};
use crate::linalg::{add_outer, axpy, dot, matvec, matvec_acc, sub_outer};
use crate::{Error, Real};
use nalgebra::SMatrix;

/// The per-head projections of one context token: features of its key and its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Projection<T, const F: usize, const DV: usize, const H: usize> {
    /// `phi(W_K e)` per head.
    pub k: [[T; F]; H],
    /// `W_V e` per head.
    pub v: [[T; DV]; H],
}

/// Running sums of the associative order, one per head: `S = sum_j v_j k_j^T` (`DV x F`) and `z = sum_j k_j`.
///
/// The fields are private so that the sums and the count always describe the same tokens: they change only through
/// [`add`](Self::add), [`remove`](Self::remove), [`add_projection`](Self::add_projection) and
/// [`replace`](Self::replace), and are read through [`sums`](Self::sums), [`normalisers`](Self::normalisers) and
/// [`count`](Self::count).
#[derive(Clone, Debug, PartialEq)]
pub struct AssociativeState<T: Real, const F: usize, const DV: usize, const H: usize> {
    /// `S` per head.
    pub(crate) s: [SMatrix<T, DV, F>; H],
    /// `z` per head (kept only when normalising).
    pub(crate) z: [[T; F]; H],
    /// Number of keys summed (saturating at `usize::MAX`).
    pub(crate) count: usize,
}

impl<T: Real, const F: usize, const DV: usize, const H: usize> AssociativeState<T, F, DV, H> {
    /// Empty sums (a `const fn`, so a state can live in a `static`).
    pub const fn new() -> Self {
        let zero = SMatrix::from_array_storage(nalgebra::ArrayStorage([[T::ZERO; DV]; F]));
        Self { s: [zero; H], z: [[T::ZERO; F]; H], count: 0 }
    }

    /// `S = sum_j v_j k_j^T` per head (`DV x F`).
    pub fn sums(&self) -> &[SMatrix<T, DV, F>; H] {
        &self.s
    }

    /// `z = sum_j k_j` per head (all zero unless the tokens were added under [`Normalise::Sum`]).
    pub fn normalisers(&self) -> &[[T; F]; H] {
        &self.z
    }

    /// The number of tokens summed: adds minus removes, saturating at 0 and at `usize::MAX`.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Adds context token `e` to the sums (in head order; `z` only under [`Normalise::Sum`]).
    ///
    /// Written out rather than as `add_projection(&project(..))`: the same operations, but building the
    /// intermediate [`Projection`] cost 1% more instructions for the full layer and 7% for a streaming push on the
    /// Cortex-M4 (measured with `dualform firmware-report`).
    #[inline(always)]
    pub fn add<M, const E: usize, const DK: usize>(
        &mut self,
        layer: &Layer<T, E, DK, DV, H>,
        phi: &M,
        norm: Normalise,
        e: &[T; E],
    ) where
        M: FeatureMap<T, DK, F>,
    {
        for (head, (s, z)) in layer.heads.iter().zip(self.s.iter_mut().zip(self.z.iter_mut())) {
            let k = phi.map(&matvec(&head.w_k, e));
            let v = matvec(&head.w_v, e);
            add_outer(s, &v, &k);
            if norm == Normalise::Sum {
                for (zi, &ki) in z.iter_mut().zip(k.iter()) {
                    *zi += ki;
                }
            }
        }
        self.count = self.count.saturating_add(1);
    }

    /// Removes context token `e` from the sums: the exact reverse of [`AssociativeState::add`] in real arithmetic
    /// (`S -= v k^T`); in floating point each add/remove pair leaves a rounding residue (see [`crate::stream`]).
    pub fn remove<M, const E: usize, const DK: usize>(
        &mut self,
        layer: &Layer<T, E, DK, DV, H>,
        phi: &M,
        norm: Normalise,
        e: &[T; E],
    ) where
        M: FeatureMap<T, DK, F>,
    {
        for (head, (s, z)) in layer.heads.iter().zip(self.s.iter_mut().zip(self.z.iter_mut())) {
            let k = phi.map(&matvec(&head.w_k, e));
            let v = matvec(&head.w_v, e);
            sub_outer(s, &v, &k);
            if norm == Normalise::Sum {
                for (zi, &ki) in z.iter_mut().zip(k.iter()) {
                    *zi -= ki;
                }
            }
        }
        self.count = self.count.saturating_sub(1);
    }

    /// The projections `(phi(W_K e), W_V e)` of a token, per head: what [`AssociativeState::add`] sums.
    pub fn project<M, const E: usize, const DK: usize>(
        layer: &Layer<T, E, DK, DV, H>,
        phi: &M,
        e: &[T; E],
    ) -> Projection<T, F, DV, H>
    where
        M: FeatureMap<T, DK, F>,
    {
        let mut p = Projection { k: [[T::ZERO; F]; H], v: [[T::ZERO; DV]; H] };
        for ((head, k), v) in layer.heads.iter().zip(p.k.iter_mut()).zip(p.v.iter_mut()) {
            *k = phi.map(&matvec(&head.w_k, e));
            *v = matvec(&head.w_v, e);
        }
        p
    }

    /// Replaces a summed token whose projections are `old` by one whose projections are `new`, in one pass over `S`:
    /// per column `c`, `S[:, c] -= k_old[c] v_old`, then `S[:, c] += k_new[c] v_new`. Element by element these are
    /// the operations of [`AssociativeState::remove`] followed by [`AssociativeState::add`], in the same order, so
    /// the result is the same bits; `S` is swept once, and the old token is not projected again.
    pub fn replace(&mut self, old: &Projection<T, F, DV, H>, new: &Projection<T, F, DV, H>, norm: Normalise) {
        let projections = old.k.iter().zip(old.v.iter()).zip(new.k.iter().zip(new.v.iter()));
        for ((s, z), ((k_old, v_old), (k_new, v_new))) in self.s.iter_mut().zip(self.z.iter_mut()).zip(projections) {
            for ((col, &ko), &kn) in s.data.0.iter_mut().zip(k_old.iter()).zip(k_new.iter()) {
                axpy(col, -ko, v_old);
                axpy(col, kn, v_new);
            }
            if norm == Normalise::Sum {
                for ((zi, &ko), &kn) in z.iter_mut().zip(k_old.iter()).zip(k_new.iter()) {
                    *zi -= ko;
                    *zi += kn;
                }
            }
        }
    }

    /// Adds a token by its projections (the same operations as [`AssociativeState::add`]).
    pub fn add_projection(&mut self, p: &Projection<T, F, DV, H>, norm: Normalise) {
        for ((s, z), (k, v)) in self.s.iter_mut().zip(self.z.iter_mut()).zip(p.k.iter().zip(p.v.iter())) {
            add_outer(s, v, k);
            if norm == Normalise::Sum {
                for (zi, &ki) in z.iter_mut().zip(k.iter()) {
                    *zi += ki;
                }
            }
        }
        self.count = self.count.saturating_add(1);
    }

    /// The layer's update for token `h` from the current sums: `sum_heads P (S q) [/ (z . q)]`.
    #[inline(always)]
    pub fn update<M, const E: usize, const DK: usize>(
        &self,
        layer: &Layer<T, E, DK, DV, H>,
        phi: &M,
        norm: Normalise,
        h: &[T; E],
    ) -> Result<[T; E], Error>
    where
        M: FeatureMap<T, DK, F>,
    {
        let mut u = [T::ZERO; E];
        for (head, (s, z)) in layer.heads.iter().zip(self.s.iter().zip(self.z.iter())) {
            let q = phi.map(&matvec(&head.w_q, h));
            let mut r = matvec(s, &q);
            let den = if norm == Normalise::Sum { dot(z, &q) } else { T::ZERO };
            normalise(&mut r, den, norm, self.count > 0)?;
            matvec_acc(&mut u, &head.p, &r);
        }
        Ok(u)
    }
}

impl<T: Real, const F: usize, const DV: usize, const H: usize> Default for AssociativeState<T, F, DV, H> {
    fn default() -> Self {
        Self::new()
    }
}

/// Kernelised linear attention layer, associative order (`S = sum_j v_j k_j^T`, then `S q`); with
/// [`Mask::Causal`], the recurrent form. See the module docs.
pub fn linear_attention_associative<
    T,
    M,
    const E: usize,
    const DK: usize,
    const DV: usize,
    const F: usize,
    const H: usize,
    const N: usize,
>(
    layer: &Layer<T, E, DK, DV, H>,
    phi: &M,
    norm: Normalise,
    mask: Mask,
    upd: &Update<T>,
    ctx: &mut [[T; E]; N],
    query: &mut [T; E],
) -> Result<(), Error>
where
    T: Real,
    M: FeatureMap<T, DK, F>,
{
    upd.validate(E)?;
    let mut state = AssociativeState::<T, F, DV, H>::new();
    match mask {
        Mask::Full => {
            for e in ctx.iter() {
                state.add(layer, phi, norm, e);
            }
            for h in ctx.iter_mut() {
                let u = state.update(layer, phi, norm, h)?;
                upd.apply(h, &u);
            }
        }
        Mask::Causal => {
            for h in ctx.iter_mut() {
                state.add(layer, phi, norm, h);
                let u = state.update(layer, phi, norm, h)?;
                upd.apply(h, &u);
            }
        }
    }
    let u = state.update(layer, phi, norm, query)?;
    upd.apply(query, &u);
    Ok(())
}

/// The LSA layer of the reference work, associative order: `h_t += sum_heads P S W_Q h_t`, `S = sum_j W_V e_j (W_K e_j)^T`.
/// Every context token and the query are updated in place (`Mask::Causal`: context token `t` sees tokens `0..=t`).
/// The context is a fixed-size array `[[T; E]; N]`: the layer kernels take their context that way, while the
/// query-only kernels ([`crate::MergedHead::predict`]) take a slice of any length.
///
/// ```
/// use dualform::{gd_layer, lsa_associative, Mask, Update};
/// use dualform::nalgebra::SMatrix;
/// // The GD layer for d = 1 (E = 2): context y = 3 x, query x = 2; one step from 0 at rate 1.
/// let layer = gd_layer::<f32, 1, 1, 2>(&SMatrix::zeros(), 1.0, 2)?;
/// let mut ctx = [[1.0, 3.0], [-1.0, -3.0]];
/// let mut query = [2.0, 0.0];
/// lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut query)?;
/// // W1 = 1 * (1/2) (1 * 3 + 1 * 3) = 3; the query's y slot holds -W1 x_q.
/// assert_eq!(query, [2.0, -6.0]);
/// # Ok::<(), dualform::Error>(())
/// ```
pub fn lsa_associative<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    mask: Mask,
    upd: &Update<T>,
    ctx: &mut [[T; E]; N],
    query: &mut [T; E],
) -> Result<(), Error> {
    linear_attention_associative(layer, &Identity, Normalise::None, mask, upd, ctx, query)
}

/// The running sums `S` of a layer's context given as a slice (N known at run time). Inlined into its caller, as
/// are [`query_forward`] and [`lsa_query_backward`](crate::backward::lsa_query_backward), so that a caller compiled for
/// a wider vector unit runs them on it (the harness's feature-map model).
#[inline(always)]
pub fn context_state<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    ctx: &[[T; E]],
) -> AssociativeState<T, DK, DV, H> {
    let mut state = AssociativeState::new();
    for e in ctx {
        state.add(layer, &Identity, Normalise::None, e);
    }
    state
}

/// The query's output `h + sum_heads P S W_Q h` for a context state (the forward of
/// [`lsa_query_backward`](crate::backward::lsa_query_backward)).
#[inline(always)]
pub fn query_forward<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    state: &AssociativeState<T, DK, DV, H>,
    h: &[T; E],
) -> [T; E] {
    let mut out = *h;
    // Identity features and no normaliser: `update` cannot fail.
    if let Ok(u) = state.update(layer, &Identity, Normalise::None, h) {
        for (o, ui) in out.iter_mut().zip(u.iter()) {
            *o += *ui;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state whose count is at (or just below) its largest takes more tokens, NaN and infinite ones included,
    /// without an overflow panic (debug) or a wrap to 0 that would make `Normalise::Sum` skip its division
    /// (release); `remove` and `add` agree (both saturate).
    #[test]
    fn token_counts_saturate_instead_of_overflowing() {
        let mut layer = Layer::<f32, 3, 3, 3, 1>::zeros();
        layer.heads[0].w_k = SMatrix::identity();
        for e in [[0.5f32, -1.0, 2.0], [f32::NAN, f32::INFINITY, f32::MAX]] {
            for below_max in 0..4 {
                let mut state = AssociativeState::<f32, 3, 3, 1>::new();
                state.count = usize::MAX - below_max;
                for _ in 0..4 {
                    state.add(&layer, &Identity, Normalise::Sum, &e);
                }
                assert_eq!(state.count(), usize::MAX);
                state.add_projection(&AssociativeState::project(&layer, &Identity, &e), Normalise::Sum);
                assert_eq!(state.count(), usize::MAX);
                state.remove(&layer, &Identity, Normalise::Sum, &e);
                assert_eq!(state.count(), usize::MAX - 1);
            }
        }
        let mut empty = AssociativeState::<f32, 3, 3, 1>::new();
        empty.remove(&layer, &Identity, Normalise::Sum, &[1.0, 2.0, 3.0]);
        assert_eq!(empty.count(), 0);
    }
}
