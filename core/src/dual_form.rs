//! The dual form of a linear layer trained by gradient descent (Irie, Csordas and Schmidhuber 2022), and the split
//! of an attention output into a zero-shot and an in-context part (Dai et al. 2023).
//!
//! Irie: a linear layer `W = W0 + sum_t e_t x_t^T`, trained by GD from `W0` on inputs `x_t` with error signals
//! `e_t` (for a GD step on `L(W) = 1/(2N) sum ||W x - y||^2`, `e_t = -eta/N (W x_t - y_t)`, see
//! [`error_signals`]), satisfies `W x = W0 x + sum_t e_t (x_t . x)`: unnormalised linear attention over keys `x_t`
//! and values `e_t` ([`irie_dual`]). [`irie_primal`] forms `W` and multiplies. Equal in real arithmetic; tests hold
//! them to 1e-12 relative in f64.
//!
//! Dai: for a head and a query token `x` with `q = W_Q x`, over demonstration tokens `X'` and query-part tokens `X`,
//! relaxed (linear, unnormalised) attention is `F(q) = W_V [X', X] (W_K [X', X])^T q = W_ZSL q + dW_ICL q` with
//! `W_ZSL = W_V X (W_K X)^T` and `dW_ICL = sum_i (W_V x'_i) (W_K x'_i)^T` ([`dai_split`]; exact for linear
//! attention). For softmax attention the relaxation replaces `exp(s)` by `1 + s` (its first-order term) in
//! `sum_j exp(s_j) v_j / sum_j exp(s_j)`, `s_j = q . k_j / sqrt(DK)`; the numerator is then
//! `sum_j v_j + (W_ZSL + dW_ICL) q / sqrt(DK)`. [`softmax_relaxation_error`] returns the relative error
//! `||A_softmax - A_relaxed|| / ||A_softmax||`: positive for non-zero logits, O(s^2) as the logits shrink. This is
//! the number behind "softmax attention is approximately a meta-gradient step".
//!
//! Measured as Dai wrote it: the change the demonstrations cause in the head's softmax attention output (in value
//! space, before `P`), `Attn([X', X]; q) - Attn(X; q)`, against `dW_ICL q` (unnormalised: no denominator, no
//! `1/sqrt(DK)`): [`dai_demo_effect`] returns their cosine and the relative residual after the best scalar fit.
//! For linear attention the change is `dW_ICL q` itself; for softmax the normaliser mixes in a shift toward the
//! demonstrations' mean value that `dW_ICL q` does not have.

use crate::attention::attend_linear;
use crate::head_ref::{carve, check_heads, FixedVectors, HeadRef, Vectors, Widths};
use crate::layer::Head;
use crate::linalg::slices as sl;
use crate::linalg::{add_outer, axpy, dot, matvec, matvec_acc, zeros};
use crate::softmax_ref::logit_scale;
use crate::softmax_ref::{online_finish, online_push};
use crate::{Error, Real};
use nalgebra::SMatrix;

/// `e_t = -eta/N (W x_t - y_t)`: the error signals of one GD step on the in-context least-squares loss, so that
/// `gd_step(W) = W + sum_t e_t x_t^T`.
pub fn error_signals<T: Real, const D: usize, const DY: usize, const N: usize>(
    w: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &[[T; DY]; N],
    eta: T,
) -> Result<[[T; DY]; N], Error> {
    let c = -eta * crate::gd::inv_n::<T>(N)?;
    let mut e = [[T::ZERO; DY]; N];
    for ((et, x), y) in e.iter_mut().zip(xs.iter()).zip(ys.iter()) {
        *et = matvec(w, x);
        for (a, &b) in et.iter_mut().zip(y.iter()) {
            *a = c * (*a - b);
        }
    }
    Ok(e)
}

/// `(W0 + sum_t e_t x_t^T) x`: the primal side, forming the trained weights.
pub fn irie_primal<T: Real, const D: usize, const DO: usize, const NT: usize>(
    w0: &SMatrix<T, DO, D>,
    xs: &[[T; D]; NT],
    es: &[[T; DO]; NT],
    x: &[T; D],
) -> [T; DO] {
    let mut w = *w0;
    for (e, xt) in es.iter().zip(xs.iter()) {
        add_outer(&mut w, e, xt);
    }
    matvec(&w, x)
}

/// `W0 x + sum_t e_t (x_t . x)`: the dual side, unnormalised linear attention with query `x`, keys `x_t`, values
/// `e_t` (quadratic order, [`attend_linear`]).
pub fn irie_dual<T: Real, const D: usize, const DO: usize, const NT: usize>(
    w0: &SMatrix<T, DO, D>,
    xs: &[[T; D]; NT],
    es: &[[T; DO]; NT],
    x: &[T; D],
) -> [T; DO] {
    // `xs` and `es` have the same length by type, so the length check cannot fail.
    let attn = attend_linear(x, xs, es).map_or([T::ZERO; DO], |(a, _)| a);
    let mut out = matvec(w0, x);
    for (o, a) in out.iter_mut().zip(attn.iter()) {
        *o += *a;
    }
    out
}

/// The two matrices of the Dai split of a head's relaxed attention.
#[derive(Clone, Debug, PartialEq)]
pub struct DaiSplit<T: Real, const DK: usize, const DV: usize> {
    /// `W_V X (W_K X)^T` over the query-part tokens: what the head does with no demonstrations.
    pub w_zsl: SMatrix<T, DV, DK>,
    /// `sum_i (W_V x'_i) (W_K x'_i)^T` over the demonstrations: the "meta-gradient" update.
    pub dw_icl: SMatrix<T, DV, DK>,
}

impl<T: Real, const DK: usize, const DV: usize> DaiSplit<T, DK, DV> {
    /// `W_ZSL q + dW_ICL q`.
    pub fn apply(&self, q: &[T; DK]) -> [T; DV] {
        let mut out = matvec(&self.w_zsl, q);
        matvec_acc(&mut out, &self.dw_icl, q);
        out
    }
}

/// Splits `head`'s relaxed attention over demonstrations `demos` and query-part tokens `zs`.
pub fn dai_split<T: Real, const E: usize, const DK: usize, const DV: usize>(
    head: &Head<T, E, DK, DV>,
    demos: &[[T; E]],
    zs: &[[T; E]],
) -> DaiSplit<T, DK, DV> {
    let outer_sum = |tokens: &[[T; E]]| {
        let mut m = zeros::<T, DV, DK>();
        for e in tokens {
            add_outer(&mut m, &matvec(&head.w_v, e), &matvec(&head.w_k, e));
        }
        m
    };
    DaiSplit { w_zsl: outer_sum(zs), dw_icl: outer_sum(demos) }
}

/// Keys and values of all tokens `[demos, zs]` for one head.
fn keys_values<T: Real, const E: usize, const DK: usize, const DV: usize>(
    head: &Head<T, E, DK, DV>,
    demos: &[[T; E]],
    zs: &[[T; E]],
    mut f: impl FnMut([T; DK], [T; DV]),
) {
    for e in demos.iter().chain(zs.iter()) {
        f(matvec(&head.w_k, e), matvec(&head.w_v, e));
    }
}

/// Relaxed linear attention for the query token `x`, computed directly as `sum_j (q . k_j) v_j` over all tokens
/// (the left-hand side of the Dai split).
pub fn relaxed_attention<T: Real, const E: usize, const DK: usize, const DV: usize>(
    head: &Head<T, E, DK, DV>,
    demos: &[[T; E]],
    zs: &[[T; E]],
    x: &[T; E],
) -> [T; DV] {
    let q = matvec(&head.w_q, x);
    let mut out = [T::ZERO; DV];
    keys_values(head, demos, zs, |k, v| axpy(&mut out, dot(&q, &k), &v));
    out
}

/// Relative error `||A_softmax - A_relaxed|| / ||A_softmax||` of the first-order relaxation of softmax attention
/// for the query token `x` (see the module docs). Errors: [`Error::Empty`] for no tokens, [`Error::NonFinite`]
/// for a non-finite logit, [`Error::ZeroNormaliser`] if `||A_softmax||` or the relaxed normaliser is zero.
pub fn softmax_relaxation_error<T: Real, const E: usize, const DK: usize, const DV: usize>(
    head: &Head<T, E, DK, DV>,
    demos: &[[T; E]],
    zs: &[[T; E]],
    x: &[T; E],
) -> Result<T, Error> {
    let mut vecs = FixedVectors::<T, E, DK, DV, 1>::new();
    let w = FixedVectors::<T, E, DK, DV, 1>::WIDTHS;
    relaxation_error_at(w, head.into(), demos.as_flattened(), zs.as_flattened(), x, &mut vecs.vectors())
}

/// Rows of width `e` of `tokens` (none for `e = 0`).
fn rows<T>(tokens: &[T], e: usize) -> core::slice::ChunksExact<'_, T> {
    tokens.get(..if e == 0 { 0 } else { tokens.len() }).unwrap_or_default().chunks_exact(e.max(1))
}

/// Checks a head and tokens of widths `w` (demonstrations and query-part tokens as rows of flat slices).
fn check_tokens<T>(w: Widths, head: &HeadRef<'_, T>, demos: &[T], zs: &[T], x: &[T]) -> Result<(), Error> {
    check_heads(w, core::slice::from_ref(head))?;
    let e = w.e.max(1);
    for (expected, found) in [(w.e, x.len()), (0, demos.len() % e), (0, zs.len() % e)] {
        if expected != found {
            return Err(Error::LengthMismatch { expected, found });
        }
    }
    Ok(())
}

/// [`softmax_relaxation_error`] at run-time widths: `head` of widths `w`, the tokens as rows of flat slices, the
/// small vectors in `vecs`. Errors: those of [`softmax_relaxation_error`], and the lengths of [`crate::head_ref`].
pub fn relaxation_error_at<T: Real>(
    w: Widths,
    head: HeadRef<'_, T>,
    demos: &[T],
    zs: &[T],
    x: &[T],
    vecs: &mut Vectors<'_, T>,
) -> Result<T, Error> {
    check_tokens(w, &head, demos, zs, x)?;
    if demos.is_empty() && zs.is_empty() {
        return Err(Error::Empty);
    }
    let [q, k, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [v, soft, relaxed, _] = carve::<T, 4>(vecs.value, w.dv)?;
    sl::matvec(q, head.w_q, x);
    let scale = logit_scale::<T>(w.dk);
    let (mut m, mut l) = (-T::INFINITY, T::ZERO);
    soft.fill(T::ZERO);
    // Relaxed side: sum_j (1 + s_j) v_j and sum_j (1 + s_j).
    relaxed.fill(T::ZERO);
    let mut den = T::ZERO;
    let mut status = Ok(());
    for tok in rows(demos, w.e).chain(rows(zs, w.e)) {
        sl::matvec(k, head.w_k, tok);
        sl::matvec(v, head.w_v, tok);
        let s = sl::dot(q, k) * scale;
        if status.is_ok() {
            status = online_push(&mut m, &mut l, soft, s, v);
        }
        sl::axpy(relaxed, T::ONE + s, v);
        den += T::ONE + s;
    }
    status?;
    if den == T::ZERO || !den.is_finite() {
        return Err(Error::ZeroNormaliser);
    }
    online_finish(l, soft);
    for r in relaxed.iter_mut() {
        *r /= den;
    }
    let sums = |scale: T| {
        let (mut diff, mut norm) = (T::ZERO, T::ZERO);
        for (a, r) in soft.iter().zip(relaxed.iter()) {
            let d = (*a - *r) / scale;
            diff += d * d;
            norm += (*a / scale) * (*a / scale);
        }
        (diff, norm)
    };
    let (mut diff, mut norm) = sums(T::ONE);
    if !(diff.is_finite() && norm.is_finite()) {
        // Squares overflowed for large values: the ratio again with everything divided by the largest |a|.
        let s = soft.iter().fold(T::ZERO, |m, v| if v.abs() > m { v.abs() } else { m });
        if s.is_finite() && s > T::ZERO {
            (diff, norm) = sums(s);
        }
    }
    if norm == T::ZERO {
        return Err(Error::ZeroNormaliser);
    }
    Ok((diff / norm).sqrt())
}

/// The change the demonstrations cause in a head's attention output, against Dai's `dW_ICL q`
/// ([`dai_demo_effect`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DemoEffect<T, const DV: usize> {
    /// The change, `Attn([demos, zs]; q) - Attn(zs; q)`.
    pub change: [T; DV],
    /// `dW_ICL q`.
    pub predicted: [T; DV],
    /// `cos(change, dW_ICL q)`.
    pub cosine: T,
    /// The best scalar fit `c` of `dW_ICL q` to the change (least squares).
    pub scale: T,
    /// `||change - c dW_ICL q|| / ||change||`: 0 when the change is a multiple of `dW_ICL q`, at most 1.
    pub residual: T,
}

/// Softmax attention's change from the demonstrations, `Attn([demos, zs]; q) - Attn(zs; q)` with `q = W_Q x`,
/// logits `q . k / sqrt(DK)` (as in [`crate::softmax_attention`]; with no `zs` tokens `Attn(zs; q)` is 0), against
/// `dW_ICL q` of [`dai_split`]. Errors: [`Error::NonFinite`] for a
/// non-finite logit, [`Error::ZeroNormaliser`] when the change or `dW_ICL q` is zero (no direction to compare).
pub fn dai_demo_effect<T: Real, const E: usize, const DK: usize, const DV: usize>(
    head: &Head<T, E, DK, DV>,
    demos: &[[T; E]],
    zs: &[[T; E]],
    x: &[T; E],
) -> Result<DemoEffect<T, DV>, Error> {
    let mut vecs = FixedVectors::<T, E, DK, DV, 1>::new();
    let w = FixedVectors::<T, E, DK, DV, 1>::WIDTHS;
    let (mut change, mut predicted, mut map) = ([T::ZERO; DV], [T::ZERO; DV], zeros::<T, DV, DK>());
    let (d, z) = (demos.as_flattened(), zs.as_flattened());
    let out = (&mut change[..], &mut predicted[..], map.as_mut_slice());
    let fit = demo_effect_at(w, head.into(), d, z, x, out, &mut vecs.vectors())?;
    Ok(DemoEffect { change, predicted, cosine: fit.0, scale: fit.1, residual: fit.2 })
}

/// [`dai_demo_effect`] at run-time widths: `head` of widths `w`, the tokens as rows of flat slices; `out` receives
/// the change and `dW_ICL q` (`dv` values each) and holds `dW_ICL` (`dv * dk`, scratch); the small vectors in
/// `vecs`. Returns `(cosine, scale, residual)` of [`DemoEffect`]. Errors: those of [`dai_demo_effect`], and the
/// lengths of [`crate::head_ref`].
pub fn demo_effect_at<T: Real>(
    w: Widths,
    head: HeadRef<'_, T>,
    demos: &[T],
    zs: &[T],
    x: &[T],
    (change, predicted, map): (&mut [T], &mut [T], &mut [T]),
    vecs: &mut Vectors<'_, T>,
) -> Result<(T, T, T), Error> {
    check_tokens(w, &head, demos, zs, x)?;
    for (expected, found) in [(w.dv, change.len()), (w.dv, predicted.len()), (w.dv * w.dk, map.len())] {
        if expected != found {
            return Err(Error::LengthMismatch { expected, found });
        }
    }
    let [q, k, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [v, all, zero_shot, _] = carve::<T, 4>(vecs.value, w.dv)?;
    sl::matvec(q, head.w_q, x);
    let scale = logit_scale::<T>(w.dk);
    let ((mut m_all, mut l_all), (mut m_zs, mut l_zs)) = ((-T::INFINITY, T::ZERO), (-T::INFINITY, T::ZERO));
    all.fill(T::ZERO);
    zero_shot.fill(T::ZERO);
    let mut status = Ok(());
    let n_demos = rows(demos, w.e).len();
    for (seen, tok) in rows(demos, w.e).chain(rows(zs, w.e)).enumerate() {
        sl::matvec(k, head.w_k, tok);
        sl::matvec(v, head.w_v, tok);
        let s = sl::dot(q, k) * scale;
        if status.is_ok() {
            status = online_push(&mut m_all, &mut l_all, all, s, v);
        }
        if status.is_ok() && seen >= n_demos {
            status = online_push(&mut m_zs, &mut l_zs, zero_shot, s, v);
        }
    }
    status?;
    online_finish(l_all, all);
    online_finish(l_zs, zero_shot);
    for ((c, a), b) in change.iter_mut().zip(all.iter()).zip(zero_shot.iter()) {
        *c = *a - *b;
    }
    // dW_ICL = sum_i (W_V x'_i)(W_K x'_i)^T, then the fixed-order kernel for dW_ICL q.
    map.fill(T::ZERO);
    for tok in rows(demos, w.e) {
        sl::matvec(k, head.w_k, tok);
        sl::matvec(v, head.w_v, tok);
        sl::add_outer(map, v, k);
    }
    sl::matvec(predicted, map, q);
    let (cp, cc, pp) = (sl::dot(change, predicted), sl::dot(change, change), sl::dot(predicted, predicted));
    if cc == T::ZERO || pp == T::ZERO || !(cc.is_finite() && pp.is_finite()) {
        return Err(Error::ZeroNormaliser);
    }
    let c = cp / pp;
    let mut rest = T::ZERO;
    for (a, p) in change.iter().zip(predicted.iter()) {
        let d = *a - c * *p;
        rest += d * d;
    }
    Ok((cp / (cc.sqrt() * pp.sqrt()), c, (rest / cc).sqrt()))
}
