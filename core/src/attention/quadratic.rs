//! The quadratic evaluation order of kernelised linear attention: for every token, the scores against the visible
//! context keys, then the score-weighted sum of the values (O(N^2 (F + DV)) per head).
//!
//! Numerical contract: keys and values are projected into the caller's [`LinearScratch`] first (from the layer's
//! input); per token and head, `attend_linear` sums `s_tj v_j` and `s_tj` over `j` in increasing order, the
//! normaliser divides once, and the heads' `P a(t)` accumulate in head order. Equal to the associative order in
//! real arithmetic (tests: 1e-12 relative in f64).

use super::{attend_linear, normalise, project_context, visible, LinearScratch, Normalise};
use crate::features::{FeatureMap, Identity};
use crate::layer::{Layer, Mask, Update};
use crate::linalg::{matvec, matvec_acc};
use crate::{Error, Real};

/// The quadratic-order update of one token from projected context (first `visible` tokens).
fn quadratic_update<
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
    scratch: &LinearScratch<T, N, F, DV, H>,
    h: &[T; E],
    visible: usize,
) -> Result<[T; E], Error>
where
    T: Real,
    M: FeatureMap<T, DK, F>,
{
    let mut u = [T::ZERO; E];
    for (head, (ks, vs)) in layer.heads.iter().zip(scratch.keys.iter().zip(scratch.values.iter())) {
        let q = phi.map(&matvec(&head.w_q, h));
        let (ks, vs) = (ks.get(..visible).unwrap_or(ks), vs.get(..visible).unwrap_or(vs));
        let (mut r, den) = attend_linear(&q, ks, vs)?;
        normalise(&mut r, den, norm, visible > 0)?;
        matvec_acc(&mut u, &head.p, &r);
    }
    Ok(u)
}

/// Kernelised linear attention layer, quadratic order (scores, then weighted sums). See the module docs.
///
/// ```
/// use dualform::{linear_attention_associative, linear_attention_quadratic, EluPlusOne, Layer, LinearScratch};
/// use dualform::{Mask, Normalise, Update};
/// use dualform::nalgebra::SMatrix;
/// // elu+1 features with the sum normaliser ("Transformers are RNNs"): both orders give the same layer.
/// let mut layer = Layer::<f64, 2, 2, 2, 1>::zeros();
/// layer.heads[0].w_q = SMatrix::identity();
/// layer.heads[0].w_k = SMatrix::identity();
/// layer.heads[0].w_v = SMatrix::identity();
/// layer.heads[0].p = SMatrix::identity();
/// let (ctx0, q0) = ([[0.5, -1.0], [1.0, 0.25], [-0.5, 0.5]], [0.3, 0.1]);
/// let (mut c1, mut q1, mut c2, mut q2) = (ctx0, q0, ctx0, q0);
/// let mut scratch = LinearScratch::new();
/// let upd = Update::residual();
/// linear_attention_quadratic(&layer, &EluPlusOne, Normalise::Sum, Mask::Causal, &upd, &mut c1, &mut q1, &mut scratch)?;
/// linear_attention_associative(&layer, &EluPlusOne, Normalise::Sum, Mask::Causal, &upd, &mut c2, &mut q2)?;
/// assert!((q1[0] - q2[0]).abs() < 1e-12 && (c1[2][1] - c2[2][1]).abs() < 1e-12);
/// # Ok::<(), dualform::Error>(())
/// ```
#[allow(clippy::too_many_arguments)]
pub fn linear_attention_quadratic<
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
    scratch: &mut LinearScratch<T, N, F, DV, H>,
) -> Result<(), Error>
where
    T: Real,
    M: FeatureMap<T, DK, F>,
{
    upd.validate(E)?;
    project_context(layer, phi, ctx, scratch);
    for (t, h) in ctx.iter_mut().enumerate() {
        let u = quadratic_update(layer, phi, norm, scratch, h, visible(mask, t, N))?;
        upd.apply(h, &u);
    }
    let u = quadratic_update(layer, phi, norm, scratch, query, N)?;
    upd.apply(query, &u);
    Ok(())
}

/// The LSA layer of the reference work, quadratic order: `h_t += sum_heads P sum_j (W_Q h_t . W_K e_j) W_V e_j`.
/// The same layer as [`crate::lsa_associative`] (equal in real arithmetic, not bit for bit in f32), with an
/// `N x N` score scratch.
///
/// ```
/// use dualform::{gd_layer, lsa_quadratic, LinearScratch, Mask, Update};
/// use dualform::nalgebra::SMatrix;
/// let layer = gd_layer::<f32, 1, 1, 2>(&SMatrix::zeros(), 1.0, 2)?;
/// let (mut ctx, mut query) = ([[1.0, 3.0], [-1.0, -3.0]], [2.0, 0.0]);
/// lsa_quadratic(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut query, &mut LinearScratch::new())?;
/// assert_eq!(query, [2.0, -6.0]); // one GD step: W1 = 3
/// # Ok::<(), dualform::Error>(())
/// ```
pub fn lsa_quadratic<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    mask: Mask,
    upd: &Update<T>,
    ctx: &mut [[T; E]; N],
    query: &mut [T; E],
    scratch: &mut LinearScratch<T, N, DK, DV, H>,
) -> Result<(), Error> {
    linear_attention_quadratic(layer, &Identity, Normalise::None, mask, upd, ctx, query, scratch)
}
