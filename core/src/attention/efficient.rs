//! Efficient Attention (Shen et al. 2020), full mask: a softmax over each query's own features and, per key
//! feature, a softmax over the N positions; the head output is `S rho_q(q)` with `S = sum_j v_j rho_k(k)_j^T`.
//!
//! Numerical contract: per head and key feature, an online maximum and sum of exponentials over positions in
//! increasing order (pass 1), then `S` by rank-one updates in increasing order (pass 2); the query's softmax by
//! [`SoftmaxFeatures`]; heads in order. Exponentials from `libm`.

use crate::features::{FeatureMap, SoftmaxFeatures};
use crate::layer::{Layer, Update};
use crate::linalg::{add_outer, matvec, matvec_acc, zeros};
use crate::{Error, Real};
use nalgebra::SMatrix;

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
    let mut sums: [SMatrix<T, DV, DK>; H] = core::array::from_fn(|_| zeros());
    for (head, s) in layer.heads.iter().zip(sums.iter_mut()) {
        // Pass 1: per-feature online max and sum of exponentials over positions.
        let mut m = [-T::INFINITY; DK];
        let mut l = [T::ZERO; DK];
        for e in ctx.iter() {
            let k = matvec(&head.w_k, e);
            for ((mf, lf), &kf) in m.iter_mut().zip(l.iter_mut()).zip(k.iter()) {
                if !kf.is_finite() {
                    return Err(Error::NonFinite);
                }
                if kf > *mf {
                    *lf = *lf * (*mf - kf).exp() + T::ONE;
                    *mf = kf;
                } else {
                    *lf += (kf - *mf).exp();
                }
            }
        }
        // Pass 2: S = sum_j v_j rho_k(k_j)^T.
        for e in ctx.iter() {
            let mut k = matvec(&head.w_k, e);
            for ((kf, &mf), &lf) in k.iter_mut().zip(m.iter()).zip(l.iter()) {
                *kf = (*kf - mf).exp() / lf;
            }
            add_outer(s, &matvec(&head.w_v, e), &k);
        }
    }
    let token_update = |h: &[T; E]| -> Result<[T; E], Error> {
        let mut u = [T::ZERO; E];
        for (head, s) in layer.heads.iter().zip(sums.iter()) {
            let logits = matvec(&head.w_q, h);
            if logits.iter().any(|v| !v.is_finite()) {
                return Err(Error::NonFinite);
            }
            let q = SoftmaxFeatures.map(&logits);
            matvec_acc(&mut u, &head.p, &matvec(s, &q));
        }
        Ok(u)
    };
    for h in ctx.iter_mut() {
        let u = token_update(h)?;
        upd.apply(h, &u);
    }
    let u = token_update(query)?;
    upd.apply(query, &u);
    Ok(())
}
