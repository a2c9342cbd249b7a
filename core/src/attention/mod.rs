//! Linear attention layers, kernelised by a feature map, in two evaluation orders, full and causal.
//!
//! For each head and token `t` with query `q_t = phi(W_Q h_t)` over visible context tokens `j` with
//! `k_j = phi(W_K e_j)` and `v_j = W_V e_j`, the head output is
//! `a(t) = sum_j (q_t . k_j) v_j`, divided by `sum_j q_t . k_j` when [`Normalise::Sum`] is chosen; the token then
//! takes `sum_heads P a(t)` by its [`Update`](crate::Update) rule. With [`Identity`](crate::Identity) and
//! [`Normalise::None`] this is the linear self-attention (LSA) layer of von Oswald et al.: [`lsa_associative`],
//! [`lsa_quadratic`].
//!
//! One file per concept: this one holds what the orders share (the normaliser choice, the caller's scratch, the
//! projection of the context, one query's attention over a key set); [`quadratic`] and [`associative`] hold the two
//! evaluation orders, [`efficient`] Efficient Attention. Evaluation orders (equal in exact arithmetic; the tests hold
//! them to 1e-12 relative in f64 and a few hundred ulps of the output scale in f32):
//! - quadratic: scores `q_t . k_j`, then `sum_j s_tj v_j` in increasing `j`; O(N^2 (F + DV)) per head. Needs the
//!   keys and values of the context before it is updated: the caller passes a [`LinearScratch`].
//! - associative: `S = sum_j v_j k_j^T` (and `z = sum_j k_j`) in increasing `j`, then `S q_t`; O(N F DV) per head
//!   and no scratch. With [`Mask::Causal`] `S` grows token by token: the recurrent form of causal linear attention.
//!
//! Every token is updated from the layer's input (keys and values are taken before any token changes), so the
//! in-place update is the layer's function. A context of N = 0 gives a zero update. Non-finite inputs propagate as
//! IEEE values, except that a normaliser that is zero or not finite returns [`Error::ZeroNormaliser`]; on an error
//! the tokens before the failing one have already been updated.

pub mod associative;
pub mod efficient;
pub mod quadratic;

pub use associative::{
    context_state, linear_attention_associative, lsa_associative, query_forward, AssociativeState, Projection,
};
pub use efficient::{efficient_attention, EfficientState};
pub use quadratic::{linear_attention_quadratic, lsa_quadratic};

use crate::features::FeatureMap;
use crate::layer::{Layer, Mask};
use crate::linalg::{axpy, dot, matvec};
use crate::{Error, Real};

/// Whether a kernelised head divides by the sum of its attention weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Normalise {
    /// Plain sum (LSA).
    #[default]
    None,
    /// Divide by `sum_j phi(q) . phi(k_j)` (Katharopoulos et al.).
    Sum,
}

/// Caller-owned scratch of the quadratic order and of softmax attention: the context's features of keys
/// (`F` per token) and values (`DV` per token), per head. Its size is `size_of::<LinearScratch<..>>()`,
/// i.e. `H * N * (F + DV)` scalars; on a host with large `N`, box it.
#[derive(Clone, Debug)]
pub struct LinearScratch<T, const N: usize, const F: usize, const DV: usize, const H: usize> {
    /// Key features per head and context token.
    pub keys: [[[T; F]; N]; H],
    /// Values per head and context token.
    pub values: [[[T; DV]; N]; H],
}

impl<T: Real, const N: usize, const F: usize, const DV: usize, const H: usize> LinearScratch<T, N, F, DV, H> {
    /// Zeroed scratch.
    pub fn new() -> Self {
        Self { keys: [[[T::ZERO; F]; N]; H], values: [[[T::ZERO; DV]; N]; H] }
    }

    /// Bytes this scratch occupies.
    pub const fn bytes() -> usize {
        core::mem::size_of::<Self>()
    }
}

impl<T: Real, const N: usize, const F: usize, const DV: usize, const H: usize> Default
    for LinearScratch<T, N, F, DV, H>
{
    fn default() -> Self {
        Self::new()
    }
}

/// Divides `r` by `den` for [`Normalise::Sum`] over a non-empty set of keys.
#[inline(always)]
pub(crate) fn normalise<T: Real, const DV: usize>(
    r: &mut [T; DV],
    den: T,
    norm: Normalise,
    any: bool,
) -> Result<(), Error> {
    if norm == Normalise::None || !any {
        return Ok(());
    }
    if den.has_zero() || !den.is_finite() {
        return Err(Error::ZeroNormaliser);
    }
    for x in r.iter_mut() {
        *x /= den;
    }
    Ok(())
}

/// Fills `scratch` with `phi(W_K e_j)` and `W_V e_j` for every head and context token (the shared first phase of
/// the quadratic order and of softmax attention).
pub(crate) fn project_context<
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
    ctx: &[[T; E]; N],
    scratch: &mut LinearScratch<T, N, F, DV, H>,
) where
    T: Real,
    M: FeatureMap<T, DK, F>,
{
    for (head, (ks, vs)) in layer.heads.iter().zip(scratch.keys.iter_mut().zip(scratch.values.iter_mut())) {
        for ((k, v), e) in ks.iter_mut().zip(vs.iter_mut()).zip(ctx.iter()) {
            *k = phi.map(&matvec(&head.w_k, e));
            *v = matvec(&head.w_v, e);
        }
    }
}

/// Unnormalised linear attention of one query over `keys`/`values` (one value per key), quadratic order:
/// returns `sum_j (q . k_j) v_j` and `sum_j q . k_j`, both accumulated in increasing `j`.
/// Errors: [`Error::LengthMismatch`] when `values` and `keys` differ in length.
#[inline(always)]
pub fn attend_linear<T: Real, const F: usize, const DV: usize>(
    q: &[T; F],
    keys: &[[T; F]],
    values: &[[T; DV]],
) -> Result<([T; DV], T), Error> {
    if values.len() != keys.len() {
        return Err(Error::LengthMismatch { expected: keys.len(), found: values.len() });
    }
    let mut r = [T::ZERO; DV];
    let mut den = T::ZERO;
    for (k, v) in keys.iter().zip(values.iter()) {
        let s = dot(q, k);
        den += s;
        axpy(&mut r, s, v);
    }
    Ok((r, den))
}

/// Number of context tokens the `t`-th context token sees under `mask`.
#[inline(always)]
pub(crate) fn visible(mask: Mask, t: usize, n: usize) -> usize {
    match mask {
        Mask::Full => n,
        Mask::Causal => t + 1,
    }
}
