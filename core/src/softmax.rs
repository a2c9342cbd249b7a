//! Softmax and softmax attention by a one-pass online softmax (Milakov and Gimelshein 2018): a running maximum `m`
//! and a running sum `l`, rescaled by `exp(m_old - m_new)` whenever the maximum grows; no N x N scratch.
//!
//! Numerical contract:
//! - [`online_max_sum`] visits the logits once, in order. [`softmax`] then writes `exp(x_i - m) / l`; each weight
//!   matches a two-pass (max, then sum) reference to a few ulps (tests: 8 ulps in f32). Their sum is 1 up to the
//!   error of summing `n` terms in order, which grows with `n`: within `n` epsilons (`n * T::EPSILON`, the bound of
//!   recursive summation), in practice far less (measured in f32, logits uniform in [-10, 10]: a few ulps at
//!   n = 10^3, tens at 10^4, hundreds at 10^5; test `softmax_sum_error_grows_with_length_within_the_bound`).
//! - [`attend_softmax`] fuses the weighted value sum into the same pass: the accumulator is rescaled with `l`.
//! - Logits must be finite: any NaN or infinite logit (also one produced by `q . k` overflowing) returns
//!   [`Error::NonFinite`]. Finite logits of any size (for example +-1e30) are handled exactly as moderate ones: the
//!   largest gets weight `exp(0) = 1` and the rest underflow gracefully to 0.
//! - An empty set of keys has no softmax: [`softmax`] returns [`Error::Empty`]; in a layer, a query with no visible
//!   key (only possible for a context of N = 0) gets a zero update.

use crate::attention::{project_context, visible, LinearScratch};
use crate::features::Identity;
use crate::head_ref::{FixedVectors, HeadRef};
use crate::layer::{Layer, Mask, Update};
use crate::linalg::{matvec, matvec_acc};
use crate::softmax_ref::{self, attend, logit_scale, online_finish, online_push, MaxSum, Projected};
use crate::{Error, Real};

/// One pass over `logits`: their maximum `m` and `l = sum_i exp(x_i - m)`.
pub fn online_max_sum<T: Real>(logits: &[T]) -> Result<(T, T), Error> {
    if logits.is_empty() {
        return Err(Error::Empty);
    }
    let mut acc = MaxSum::new();
    for &x in logits {
        acc.push(x)?;
    }
    Ok((acc.m, acc.l))
}

/// `out_i = exp(x_i - m) / sum_j exp(x_j - m)` by [`online_max_sum`]. Errors: [`Error::Empty`],
/// [`Error::LengthMismatch`] if `out` differs in length, [`Error::NonFinite`] for a NaN or infinite logit.
pub fn softmax<T: Real>(logits: &[T], out: &mut [T]) -> Result<(), Error> {
    if logits.is_empty() {
        return Err(Error::Empty);
    }
    if out.len() != logits.len() {
        return Err(Error::LengthMismatch { expected: logits.len(), found: out.len() });
    }
    let (m, l) = online_max_sum(logits)?;
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = (x - m).exp() / l;
    }
    Ok(())
}

/// The running state of a one-pass softmax-weighted sum `sum_j softmax(s)_j v_j`: maximum `m`, normaliser `l`
/// (relative to `m`) and accumulator, rescaled by `exp(m_old - m_new)` when the maximum grows.
#[derive(Clone, Copy, Debug)]
pub struct OnlineSoftmax<T, const DV: usize> {
    m: T,
    l: T,
    acc: [T; DV],
}

impl<T: Real, const DV: usize> OnlineSoftmax<T, DV> {
    /// No terms yet.
    pub fn new() -> Self {
        Self { m: -T::INFINITY, l: T::ZERO, acc: [T::ZERO; DV] }
    }

    /// Adds the term with logit `s` and value `v`. Errors: [`Error::NonFinite`] for a NaN or infinite logit.
    #[inline(always)]
    pub fn push(&mut self, s: T, v: &[T; DV]) -> Result<(), Error> {
        online_push(&mut self.m, &mut self.l, &mut self.acc, s, v)
    }

    /// `acc / l`, or zeros when no term was added.
    pub fn finish(&self) -> [T; DV] {
        let mut out = self.acc;
        online_finish(self.l, &mut out);
        out
    }
}

impl<T: Real, const DV: usize> Default for OnlineSoftmax<T, DV> {
    fn default() -> Self {
        Self::new()
    }
}

/// Softmax attention of one query over `keys`/`values` (one value per key), logits `scale * q . k_j`:
/// `sum_j softmax_j v_j`, in one pass ([`OnlineSoftmax`]). An empty key set gives zeros. Results that are
/// representable stay so near the overflow threshold: a logit whose unscaled dot product overflows is recomputed
/// with `q` scaled first, and a weighted sum that overflows is recomputed with the values scaled down.
/// Errors: [`Error::LengthMismatch`] when `values` and `keys` differ in length, [`Error::NonFinite`].
pub fn attend_softmax<T: Real, const DK: usize, const DV: usize>(
    q: &[T; DK],
    keys: &[[T; DK]],
    values: &[[T; DV]],
    scale: T,
) -> Result<[T; DV], Error> {
    if values.len() != keys.len() {
        return Err(Error::LengthMismatch { expected: keys.len(), found: values.len() });
    }
    let (k, v) = (keys.as_flattened(), values.as_flattened());
    let mut pairs = Projected { keys: k, values: v, dk: DK, dv: DV, count: keys.len() };
    let (mut qs, mut acc, mut vs) = ([T::ZERO; DK], [T::ZERO; DV], [T::ZERO; DV]);
    attend(q, &mut pairs, scale, &mut qs, &mut acc, &mut vs, &mut [])?;
    Ok(acc)
}

/// The softmax-attention update of one token `h` over `ctx` (a slice, any length), every head, keys and values
/// projected on the fly: `sum_heads P softmax_j(W_Q h . W_K e_j / sqrt(DK)) W_V e_j`, without the residual. The same
/// operations in the same order as [`softmax_attention`] (bit for bit); an empty context gives zeros.
/// Errors: [`Error::NonFinite`] for a non-finite logit.
pub fn softmax_token_update<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    ctx: &[[T; E]],
    h: &[T; E],
) -> Result<[T; E], Error> {
    let heads = layer.heads.each_ref().map(HeadRef::from);
    let mut vecs = FixedVectors::<T, E, DK, DV, H>::new();
    let mut u = [T::ZERO; E];
    softmax_ref::token_update(
        FixedVectors::<T, E, DK, DV, H>::WIDTHS,
        &heads,
        ctx.as_flattened(),
        h,
        &mut u,
        &mut vecs.vectors(),
    )?;
    Ok(u)
}

/// Caller-provided scratch of the slice forms of a softmax layer ([`softmax_attention_slices`],
/// [`crate::backward::softmax_backward_slices`]): the projected keys and values of every head (head-major: head `h`'s
/// token `j` at `h * N + j`, `H * N` entries each), and for the backward their gradients (likewise).
pub struct SoftmaxWork<'a, T, const DK: usize, const DV: usize> {
    /// `W_K e_j` per head and token.
    pub keys: &'a mut [[T; DK]],
    /// `W_V e_j` per head and token.
    pub values: &'a mut [[T; DV]],
    /// `dL/dk_j` per head and token (backward only; may be empty for the forward).
    pub g_keys: &'a mut [[T; DK]],
    /// `dL/dv_j` per head and token (backward only; may be empty for the forward).
    pub g_values: &'a mut [[T; DV]],
}

impl<T: Real, const DK: usize, const DV: usize> SoftmaxWork<'_, T, DK, DV> {
    /// Checks that `ctx_out` (the context's output or its gradient) has `n` tokens and every buffer `entries`
    /// (`H * n`) of them (the gradients too when `backward`), reporting lengths in tokens as this form counts them.
    pub(crate) fn check(&self, n: usize, ctx_out: usize, entries: usize, backward: bool) -> Result<(), Error> {
        if ctx_out != n {
            return Err(Error::LengthMismatch { expected: n, found: ctx_out });
        }
        let mut lens = [self.keys.len(), self.values.len(), entries, entries];
        if backward {
            lens[2..].copy_from_slice(&[self.g_keys.len(), self.g_values.len()]);
        }
        match lens.iter().find(|&&l| l != entries) {
            Some(&found) => Err(Error::LengthMismatch { expected: entries, found }),
            None => Ok(()),
        }
    }

    /// The run-time form of these buffers.
    pub(crate) fn flat(&mut self) -> softmax_ref::Work<'_, T> {
        softmax_ref::Work {
            keys: self.keys.as_flattened_mut(),
            values: self.values.as_flattened_mut(),
            g_keys: self.g_keys.as_flattened_mut(),
            g_values: self.g_values.as_flattened_mut(),
            weights: &mut [],
            stats: &mut [],
            scores: &mut [],
            kept: false,
        }
    }
}

/// [`softmax_attention`] on slices (N known at run time) and out of place: `ctx_out[t] = ctx[t]` updated over the
/// context tokens it sees under `mask`, `query_out` updated over all of `ctx`; every update reads the layer's input
/// `ctx`, and keys and values are projected once into `work` (its gradient slices are not used). The same operations
/// in the same order as [`softmax_attention`] (bit for bit).
/// Errors: [`Error::LengthMismatch`] when `ctx_out` differs in length from `ctx` or `work` from `H * N`,
/// [`Error::NonFinite`], an invalid rule.
#[allow(clippy::too_many_arguments)]
pub fn softmax_attention_slices<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    mask: Mask,
    upd: &Update<T>,
    ctx: &[[T; E]],
    query: &[T; E],
    ctx_out: &mut [[T; E]],
    query_out: &mut [T; E],
    work: &mut SoftmaxWork<'_, T, DK, DV>,
) -> Result<(), Error> {
    upd.validate(E)?;
    work.check(ctx.len(), ctx_out.len(), H * ctx.len(), false)?;
    let heads = layer.heads.each_ref().map(HeadRef::from);
    let mut vecs = FixedVectors::<T, E, DK, DV, H>::new();
    softmax_ref::attention(
        FixedVectors::<T, E, DK, DV, H>::WIDTHS,
        &heads,
        mask,
        upd,
        ctx.as_flattened(),
        query,
        ctx_out.as_flattened_mut(),
        query_out,
        &mut work.flat(),
        &mut vecs.vectors(),
    )
}

/// The softmax-attention update of one token over the first `visible` projected context tokens.
fn softmax_update<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    scratch: &LinearScratch<T, N, DK, DV, H>,
    h: &[T; E],
    visible: usize,
    scale: T,
) -> Result<[T; E], Error> {
    let mut u = [T::ZERO; E];
    for (head, (ks, vs)) in layer.heads.iter().zip(scratch.keys.iter().zip(scratch.values.iter())) {
        let q = matvec(&head.w_q, h);
        let (ks, vs) = (ks.get(..visible).unwrap_or(ks), vs.get(..visible).unwrap_or(vs));
        let a = attend_softmax(&q, ks, vs, scale)?;
        matvec_acc(&mut u, &head.p, &a);
    }
    Ok(u)
}

/// Softmax attention layer, `h_t += sum_heads P softmax_j(W_Q h_t . W_K e_j / sqrt(DK)) W_V e_j`, full or causal,
/// over the context tokens; every token is updated from the layer's input (keys and values are taken into
/// `scratch` first). Errors: [`Error::NonFinite`] for a non-finite logit; tokens before the failing one are updated.
///
/// ```
/// use dualform::{softmax_attention, Layer, LinearScratch, Mask, Update};
/// use dualform::nalgebra::SMatrix;
/// // Keys all zero: uniform weights, so each token moves by P times the mean of the values (here, the tokens).
/// let mut layer = Layer::<f64, 2, 2, 2, 1>::zeros();
/// layer.heads[0].w_v = SMatrix::identity();
/// layer.heads[0].p = SMatrix::identity() * 0.5;
/// let mut ctx = [[1.0, 2.0], [3.0, 4.0]];
/// let mut query = [0.0, 0.0];
/// let mut scratch = LinearScratch::new();
/// softmax_attention(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut query, &mut scratch)?;
/// assert_eq!(query, [1.0, 1.5]); // 0.5 * mean([1, 2], [3, 4])
/// # Ok::<(), dualform::Error>(())
/// ```
pub fn softmax_attention<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    mask: Mask,
    upd: &Update<T>,
    ctx: &mut [[T; E]; N],
    query: &mut [T; E],
    scratch: &mut LinearScratch<T, N, DK, DV, H>,
) -> Result<(), Error> {
    upd.validate(E)?;
    project_context(layer, &Identity, ctx, scratch);
    let scale = logit_scale::<T>(DK);
    for (t, h) in ctx.iter_mut().enumerate() {
        let u = softmax_update(layer, scratch, h, visible(mask, t, N), scale)?;
        upd.apply(h, &u);
    }
    let u = softmax_update(layer, scratch, query, N, scale)?;
    upd.apply(query, &u);
    Ok(())
}
