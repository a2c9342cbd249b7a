//! Linear attention layers, kernelised by a feature map, in two evaluation orders, full and causal.
//!
//! For each head and token `t` with query `q_t = phi(W_Q h_t)` over visible context tokens `j` with
//! `k_j = phi(W_K e_j)` and `v_j = W_V e_j`, the head output is
//! `a(t) = sum_j (q_t . k_j) v_j`, divided by `sum_j q_t . k_j` when [`Normalise::Sum`] is chosen; the token then
//! takes `sum_heads P a(t)` by its [`Update`] rule. With [`Identity`] and [`Normalise::None`] this is the linear
//! self-attention (LSA) layer of von Oswald et al.: [`lsa_associative`], [`lsa_quadratic`].
//!
//! Evaluation orders (equal in exact arithmetic; the tests hold them to 1e-12 relative in f64 and a few hundred
//! ulps of the output scale in f32):
//! - quadratic: scores `q_t . k_j`, then `sum_j s_tj v_j` in increasing `j`; O(N^2 (F + DV)) per head. Needs the
//!   keys and values of the context before it is updated: the caller passes a [`LinearScratch`].
//! - associative: `S = sum_j v_j k_j^T` (and `z = sum_j k_j`) in increasing `j`, then `S q_t`; O(N F DV) per head
//!   and no scratch. With [`Mask::Causal`] `S` grows token by token: the recurrent form of causal linear attention.
//!
//! Every token is updated from the layer's input (keys and values are taken before any token changes), so the
//! in-place update is the layer's function. A context of N = 0 gives a zero update. Non-finite inputs propagate as
//! IEEE values, except that a normaliser that is zero or not finite returns [`Error::ZeroNormaliser`]; on an error
//! the tokens before the failing one have already been updated.

use crate::features::{FeatureMap, Identity, SoftmaxFeatures};
use crate::layer::{Layer, Mask, Update};
use crate::linalg::{add_outer, axpy, dot, matvec, matvec_acc, sub_outer, zeros};
use crate::{Error, Real};
use nalgebra::SMatrix;

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
fn normalise<T: Real, const DV: usize>(r: &mut [T; DV], den: T, norm: Normalise, any: bool) -> Result<(), Error> {
    if norm == Normalise::None || !any {
        return Ok(());
    }
    if den == T::ZERO || !den.is_finite() {
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

/// Unnormalised linear attention of one query over `keys`/`values` (their common length), quadratic order:
/// returns `sum_j (q . k_j) v_j` and `sum_j q . k_j`, both accumulated in increasing `j`.
#[inline(always)]
pub fn attend_linear<T: Real, const F: usize, const DV: usize>(
    q: &[T; F],
    keys: &[[T; F]],
    values: &[[T; DV]],
) -> ([T; DV], T) {
    let mut r = [T::ZERO; DV];
    let mut den = T::ZERO;
    for (k, v) in keys.iter().zip(values.iter()) {
        let s = dot(q, k);
        den += s;
        axpy(&mut r, s, v);
    }
    (r, den)
}

/// Number of context tokens the `t`-th context token sees under `mask`.
#[inline(always)]
pub(crate) fn visible(mask: Mask, t: usize, n: usize) -> usize {
    match mask {
        Mask::Full => n,
        Mask::Causal => t + 1,
    }
}

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
        let (mut r, den) = attend_linear(&q, ks, vs);
        normalise(&mut r, den, norm, visible > 0)?;
        matvec_acc(&mut u, &head.p, &r);
    }
    Ok(u)
}

/// Kernelised linear attention layer, quadratic order (scores, then weighted sums). See the module docs.
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

/// The per-head projections of one context token: features of its key and its value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Projection<T, const F: usize, const DV: usize, const H: usize> {
    /// `phi(W_K e)` per head.
    pub k: [[T; F]; H],
    /// `W_V e` per head.
    pub v: [[T; DV]; H],
}

/// Running sums of the associative order, one per head: `S = sum_j v_j k_j^T` (`DV x F`) and `z = sum_j k_j`.
#[derive(Clone, Debug, PartialEq)]
pub struct AssociativeState<T: Real, const F: usize, const DV: usize, const H: usize> {
    /// `S` per head.
    pub s: [SMatrix<T, DV, F>; H],
    /// `z` per head (kept only when normalising).
    pub z: [[T; F]; H],
    /// Number of keys summed.
    pub count: usize,
}

impl<T: Real, const F: usize, const DV: usize, const H: usize> AssociativeState<T, F, DV, H> {
    /// Empty sums.
    pub fn new() -> Self {
        Self { s: core::array::from_fn(|_| zeros()), z: [[T::ZERO; F]; H], count: 0 }
    }

    /// Adds context token `e` to the sums (in head order; `z` only under [`Normalise::Sum`]).
    ///
    /// Written out rather than as `add_projection(&project(..))`: the same operations, but building the
    /// intermediate [`Projection`] cost 1% more instructions for the full layer and 7% for a streaming push on the
    /// Cortex-M4 (measured with `dualform firmware-report`).
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
        self.count += 1;
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
        for (h, (s, z)) in self.s.iter_mut().zip(self.z.iter_mut()).enumerate() {
            let (k_old, v_old, k_new, v_new) = (&old.k[h], &old.v[h], &new.k[h], &new.v[h]);
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
        for (h, (s, z)) in self.s.iter_mut().zip(self.z.iter_mut()).enumerate() {
            add_outer(s, &p.v[h], &p.k[h]);
            if norm == Normalise::Sum {
                for (zi, &ki) in z.iter_mut().zip(p.k[h].iter()) {
                    *zi += ki;
                }
            }
        }
        self.count += 1;
    }

    /// The layer's update for token `h` from the current sums: `sum_heads P (S q) [/ (z . q)]`.
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
pub fn lsa_associative<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    mask: Mask,
    upd: &Update<T>,
    ctx: &mut [[T; E]; N],
    query: &mut [T; E],
) -> Result<(), Error> {
    linear_attention_associative(layer, &Identity, Normalise::None, mask, upd, ctx, query)
}

/// The LSA layer of the reference work, quadratic order: `h_t += sum_heads P sum_j (W_Q h_t . W_K e_j) W_V e_j`.
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

/// Efficient Attention (Shen et al. 2020), full mask: queries take a softmax over their own `DK` features, keys a
/// softmax over the N positions for each feature, and the head output is `S rho_q(q)` with
/// `S = sum_j v_j rho_k(k)_j^T`. Two passes over the context per head (running max and sum per key feature, then
/// the weighted sum), so no scratch. A context of N = 0 gives a zero update; NaN propagates.
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
    let token_update = |h: &[T; E]| {
        let mut u = [T::ZERO; E];
        for (head, s) in layer.heads.iter().zip(sums.iter()) {
            let q = SoftmaxFeatures.map(&matvec(&head.w_q, h));
            matvec_acc(&mut u, &head.p, &matvec(s, &q));
        }
        u
    };
    for h in ctx.iter_mut() {
        let u = token_update(h);
        upd.apply(h, &u);
    }
    let u = token_update(query);
    upd.apply(query, &u);
    Ok(())
}
