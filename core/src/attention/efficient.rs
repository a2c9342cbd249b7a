//! Efficient Attention (Shen et al. 2020), full mask: a softmax over each query's own features and, per key
//! feature, a softmax over the N positions; the head output is `S rho_q(q)` with `S = sum_j v_j rho_k(k)_j^T`.
//!
//! Numerical contract: per head and key feature, an online maximum and sum of exponentials over positions in
//! increasing order (pass 1), then `S` by rank-one updates in increasing order (pass 2); the query's softmax by
//! [`SoftmaxFeatures`]; heads in order. Exponentials from `libm`.

use crate::features::{FeatureMap, SoftmaxFeatures};
use crate::layer::{Layer, Update};
use crate::linalg::{add_outer, all_finite, matvec, matvec_acc, zeros};
use crate::softmax_ref::max_sum_step;
use crate::{Error, Real};
use nalgebra::SMatrix;

/// The context's side of Efficient Attention, per head: the per-feature maximum `m` and sum `l` of the key
/// exponentials over positions, and `S = sum_j v_j rho_k(k_j)^T`. Built from a slice (N known at run time);
/// [`EfficientState::update`] gives any token's update `sum_heads P S rho_q(W_Q h)`.
#[derive(Clone, Debug, PartialEq)]
pub struct EfficientState<T: Real, const DK: usize, const DV: usize, const H: usize> {
    pub(crate) m: [[T; DK]; H],
    pub(crate) l: [[T; DK]; H],
    pub(crate) s: [SMatrix<T, DV, DK>; H],
}

impl<T: Real, const DK: usize, const DV: usize, const H: usize> EfficientState<T, DK, DV, H> {
    /// The two passes over `ctx` of every head. Errors: [`Error::NonFinite`] for a NaN or infinite key feature.
    #[inline(always)]
    pub fn new<const E: usize>(layer: &Layer<T, E, DK, DV, H>, ctx: &[[T; E]]) -> Result<Self, Error> {
        let mut st = Self { m: [[-T::INFINITY; DK]; H], l: [[T::ZERO; DK]; H], s: [zeros(); H] };
        for (head, ((m, l), s)) in layer.heads.iter().zip(st.m.iter_mut().zip(st.l.iter_mut()).zip(st.s.iter_mut())) {
            // Pass 1: per-feature online max and sum of exponentials over positions.
            for e in ctx.iter() {
                let k = matvec(&head.w_k, e);
                for ((mf, lf), &kf) in m.iter_mut().zip(l.iter_mut()).zip(k.iter()) {
                    if !kf.is_finite() {
                        return Err(Error::NonFinite);
                    }
                    // Per element: the same choice as a branch, lane by lane.
                    (*mf, *lf) = max_sum_step(*mf, *lf, kf);
                }
            }
            // Pass 2: S = sum_j v_j rho_k(k_j)^T.
            for e in ctx.iter() {
                add_outer(s, &matvec(&head.w_v, e), &key_weights(&matvec(&head.w_k, e), m, l));
            }
        }
        Ok(st)
    }

    /// `S` per head (`DV x DK`).
    pub fn sums(&self) -> &[SMatrix<T, DV, DK>; H] {
        &self.s
    }

    /// The update `sum_heads P S rho_q(W_Q h)` of token `h` (heads in order). Errors: [`Error::NonFinite`] for a
    /// NaN or infinite query feature.
    #[inline(always)]
    pub fn update<const E: usize>(&self, layer: &Layer<T, E, DK, DV, H>, h: &[T; E]) -> Result<[T; E], Error> {
        let mut u = [T::ZERO; E];
        for (head, s) in layer.heads.iter().zip(self.s.iter()) {
            let logits = matvec(&head.w_q, h);
            if !all_finite(&logits) {
                return Err(Error::NonFinite);
            }
            let q = SoftmaxFeatures.map(&logits);
            matvec_acc(&mut u, &head.p, &matvec(s, &q));
        }
        Ok(u)
    }
}

/// A key's weights `rho_k(k)_f = exp(k_f - m_f) / l_f` (over an empty context, `l_f = 0`, never reached).
#[inline(always)]
pub(crate) fn key_weights<T: Real, const DK: usize>(k: &[T; DK], m: &[T; DK], l: &[T; DK]) -> [T; DK] {
    let mut w = *k;
    for ((kf, &mf), &lf) in w.iter_mut().zip(m.iter()).zip(l.iter()) {
        *kf = (*kf - mf).exp() / lf;
    }
    w
}

/// Efficient Attention (Shen et al. 2020), full mask: queries take a softmax over their own `DK` features, keys a
/// softmax over the N positions for each feature, and the head output is `S rho_q(q)` with
/// `S = sum_j v_j rho_k(k)_j^T`. Two passes over the context per head (running max and sum per key feature, then
/// the weighted sum), so no scratch. A context of N = 0 gives a zero update. Errors, as for
/// [`crate::softmax_attention`]: [`Error::NonFinite`] for a NaN or infinite key feature (found before any token
/// changes) or query feature (tokens before the failing one are updated).
///
/// ```
/// use dualform::{efficient_attention, Layer, Update};
/// use dualform::nalgebra::SMatrix;
/// // Zero key and query projections: every softmax is uniform, so each token moves by P times the mean value.
/// let mut layer = Layer::<f64, 2, 2, 2, 1>::zeros();
/// layer.heads[0].w_v = SMatrix::identity();
/// layer.heads[0].p = SMatrix::identity();
/// let (mut ctx, mut query) = ([[1.0, 2.0], [3.0, 4.0]], [0.0, 0.0]);
/// efficient_attention(&layer, &Update::residual(), &mut ctx, &mut query)?;
/// // rho_q is uniform over the 2 features and rho_k over the 2 positions: S rho_q = mean of the values.
/// assert_eq!(query, [2.0, 3.0]);
/// # Ok::<(), dualform::Error>(())
/// ```
pub fn efficient_attention<
    T: Real,
    const E: usize,
    const DK: usize,
    const DV: usize,
    const H: usize,
    const N: usize,
>(
    layer: &Layer<T, E, DK, DV, H>,
    upd: &Update<T>,
    ctx: &mut [[T; E]; N],
    query: &mut [T; E],
) -> Result<(), Error> {
    upd.validate(E)?;
    let state = EfficientState::new(layer, ctx)?;
    for h in ctx.iter_mut() {
        let u = state.update(layer, h)?;
        upd.apply(h, &u);
    }
    let u = state.update(layer, query)?;
    upd.apply(query, &u);
    Ok(())
}
