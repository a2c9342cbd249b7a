//! Softmax attention over shapes chosen at run time: heads borrowed as column-major slices
//! ([`crate::head_ref`]), tokens as rows of flat slices (token `j` at `j * e..`), and the small vectors of every kernel
//! in caller-provided [`Vectors`](crate::head_ref::Vectors). It is the one implementation of softmax attention:
//! the fixed-size forms in [`mod@crate::softmax`] and [`crate::backward`] call these with their arrays, so both give the
//! same bits.
//!
//! Numerical contract: that of [`mod@crate::softmax`] (one pass with a running maximum and sum; a logit whose unscaled
//! dot product overflows is recomputed with the query scaled first; a weighted sum that overflows is recomputed with
//! the values scaled down) and of [`crate::backward`] (softmax VJPs, weights recomputed from the logits' maximum and
//! sum), operation for operation. Every length is checked before anything is written: [`Error::LengthMismatch`] for
//! a token, context, gradient or weight of the wrong length, [`Error::BufferTooSmall`] for short scratch.

use crate::head_ref::row;
use crate::linalg::slices::{all_finite, axpy, dot};
use crate::{Error, Real};

mod backward;
mod layer;
mod projection;
#[cfg(test)]
mod tests;
mod tokens;
mod update;

pub use backward::{backward, token_backward, token_backward_projected};
pub use layer::{attention, Work};
pub use projection::{project, Projection};
use update::update_projected;
pub use update::{token_update, token_update_projected};

/// The logit scale of softmax attention with key width `dk`: `1/sqrt(dk)`, or 0 for `dk = 0` (every logit is the
/// empty dot product 0, so the weights are uniform, not `0 / sqrt(0)`).
pub(crate) fn logit_scale<T: Real>(dk: usize) -> T {
    if dk == 0 {
        T::ZERO
    } else {
        T::ONE / T::from_f64(dk as f64).sqrt()
    }
}

/// The running maximum `m` and sum `l = sum_i exp(x_i - m)` of logits seen one at a time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MaxSum<T> {
    pub(crate) m: T,
    pub(crate) l: T,
}

impl<T: Real> MaxSum<T> {
    /// Statistics a backward must compute itself: a non-finite maximum.
    pub(crate) const UNKNOWN: Self = Self { m: T::INFINITY, l: T::ZERO };

    pub(crate) fn new() -> Self {
        Self { m: -T::INFINITY, l: T::ZERO }
    }

    /// Takes logit `x`; [`Error::NonFinite`] for a NaN or infinite one.
    #[inline(always)]
    pub(crate) fn push(&mut self, x: T) -> Result<(), Error> {
        if !x.is_finite() {
            return Err(Error::NonFinite);
        }
        (self.m, self.l) = max_sum_step(self.m, self.l, x);
        Ok(())
    }
}

/// Logits per block of the kernels' loops over keys: a block's logits are computed first, then their
/// exponentials (independent of each other, so that they overlap in the CPU rather than wait on one another), then
/// what depends on them, in key order. Every value takes the same operations as one key at a time: the same bits.
pub(crate) const BLOCK: usize = 4;

/// For logits `s[..b]` met in order after the running maximum `m`: the exponential [`max_sum_step`] and
/// [`online_push`] take for each, `exp(-|s_t - m_t|)` with `m_t` the maximum before it, computed together.
/// [`Error::NonFinite`] for a NaN or infinite logit.
#[inline(always)]
fn block_exps<T: Real>(m: T, s: &[T; BLOCK], b: usize) -> Result<[T; BLOCK], Error> {
    let mut x = [T::ZERO; BLOCK];
    let mut run = m;
    for (&st, xt) in s.iter().zip(x.iter_mut()).take(b) {
        if !st.is_finite() {
            return Err(Error::NonFinite);
        }
        *xt = st.pick_gt(run, run - st, st - run);
        run = st.pick_gt(run, st, run);
    }
    for xt in x.iter_mut().take(b) {
        *xt = xt.exp();
    }
    Ok(x)
}

impl<T: Real> MaxSum<T> {
    /// [`MaxSum::push`] of `s[..b]` in order (the same bits), the block's exponentials computed together.
    #[inline(always)]
    pub(crate) fn push_block(&mut self, s: &[T; BLOCK], b: usize) -> Result<(), Error> {
        let e = block_exps(self.m, s, b)?;
        for (&st, &et) in s.iter().zip(e.iter()).take(b) {
            (self.m, self.l) = max_sum_given(self.m, self.l, st, et);
        }
        Ok(())
    }
}

/// `a[t] = exp(a[t]) / l` for `t < b`: the softmax weights of a block of logits already shifted by their maximum.
#[inline(always)]
pub(crate) fn weights_block<T: Real>(a: &mut [T; BLOCK], b: usize, l: T) {
    for at in a.iter_mut().take(b) {
        *at = at.exp();
    }
    for at in a.iter_mut().take(b) {
        *at /= l;
    }
}

/// The running maximum and sum `(m, l)` after finite logit `x`: `(x, l e^(m - x) + 1)` for a new maximum, else
/// `(m, l + e^(x - m))`, per element, with one exponential (of `-|x - m|`; `m - x` and `x - m` are exact negatives),
/// so that lanes that disagree do not compute both sides.
#[inline(always)]
pub(crate) fn max_sum_step<T: Real>(m: T, l: T, x: T) -> (T, T) {
    max_sum_given(m, l, x, x.pick_gt(m, m - x, x - m).exp())
}

/// [`max_sum_step`] given its exponential `e = exp(-|x - m|)`, computed ahead.
#[inline(always)]
fn max_sum_given<T: Real>(m: T, l: T, x: T, e: T) -> (T, T) {
    (x.pick_gt(m, x, m), x.pick_gt(m, l * e + T::ONE, l + e))
}

/// The running state of one-pass softmax: maximum `m`, normaliser `l` relative to `m`, and the weighted sum in
/// `acc`. Adds the term with logit `s` and value `v`; [`Error::NonFinite`] for a NaN or infinite logit.
#[inline(always)]
pub(crate) fn online_push<T: Real>(m: &mut T, l: &mut T, acc: &mut [T], s: T, v: &[T]) -> Result<(), Error> {
    if !s.is_finite() {
        return Err(Error::NonFinite);
    }
    let old = *m;
    online_push_exp(m, l, acc, s, s.pick_gt(old, old - s, s - old).exp(), v);
    Ok(())
}

/// [`online_push`] of finite logit `s` given `e = exp(-|s - m|)`, computed ahead.
#[inline(always)]
fn online_push_exp<T: Real>(m: &mut T, l: &mut T, acc: &mut [T], s: T, e: T, v: &[T]) {
    // A new maximum rescales what was summed by `c = e^(old - s)` and takes weight `e^(s - s) = 1`; otherwise `c = 1`
    // and the weight is `e^(s - old)`: one exponential of `-|s - old|` either way (per element; a lane whose maximum
    // stays scales by 1, which changes no finite value, and the rescaling is skipped when no element needs it).
    let old = *m;
    let c = s.pick_gt(old, e, T::ONE);
    if c != T::ONE {
        for a in acc.iter_mut() {
            *a *= c;
        }
        *l *= c;
    }
    *m = s.pick_gt(old, s, old);
    let w = s.pick_gt(old, T::ONE, e);
    *l += w;
    axpy(acc, w, v);
}

/// `acc /= l` where some term was added (`l > 0`; per element, see [`Real::if_gt`]).
#[inline(always)]
pub(crate) fn online_finish<T: Real>(l: T, acc: &mut [T]) {
    let d = l.pick_gt(T::ZERO, l, T::ONE);
    if d != T::ONE {
        for a in acc.iter_mut() {
            *a /= d;
        }
    }
}

/// A source of `(key, value)` pairs, visited in order by [`attend`] (each key once and each value once per pass).
pub(crate) trait Pairs<T> {
    /// Number of pairs.
    fn count(&self) -> usize;
    /// Key `j` (`j < count()`; [`Error::BufferTooSmall`] when it is not there).
    fn key(&mut self, j: usize) -> Result<&[T], Error>;
    /// Value `j` (`j < count()`; likewise).
    fn value(&mut self, j: usize) -> Result<&[T], Error>;
}

/// Keys and values already projected: `count` rows of `dk` and `dv` values.
pub(crate) struct Projected<'a, T> {
    pub(crate) keys: &'a [T],
    pub(crate) values: &'a [T],
    pub(crate) dk: usize,
    pub(crate) dv: usize,
    pub(crate) count: usize,
}

impl<T> Pairs<T> for Projected<'_, T> {
    fn count(&self) -> usize {
        self.count
    }
    #[inline(always)]
    fn key(&mut self, j: usize) -> Result<&[T], Error> {
        row(self.keys, j, self.dk)
    }
    #[inline(always)]
    fn value(&mut self, j: usize) -> Result<&[T], Error> {
        row(self.values, j, self.dv)
    }
}

/// The logit `scale q . k`. One whose unscaled dot product overflows but whose scaled value is finite is computed
/// again with `q` scaled first (`qs`; only then, so ordinary logits keep their bits).
#[inline(always)]
fn logit<T: Real>(q: &[T], qs: &[T], k: &[T], scale: T) -> T {
    (dot(q, k) * scale).finite_or(|| dot(qs, k))
}

/// `acc = sum_j softmax_j(scale q . k_j) v_j` over `pairs` (zeros for none), by the contract of
/// [`crate::softmax::attend_softmax`]; `qs` (width of `q`) and `vs` (width of `acc`) are scratch; logit `j` is also
/// written to `logits[j]` where `logits` has room (it may be empty). Returns the
/// logits' maximum and sum, the bits [`MaxSum`] gives over `scale q . k_j` (the one-pass update takes the same
/// steps), or `None` when some logit (in some lane) was recomputed from the scaled query: a backward must then
/// compute them itself.
#[inline(always)]
pub(crate) fn attend<T: Real, P: Pairs<T>>(
    q: &[T],
    pairs: &mut P,
    scale: T,
    qs: &mut [T],
    acc: &mut [T],
    vs: &mut [T],
    logits: &mut [T],
) -> Result<Option<MaxSum<T>>, Error> {
    for (s, &x) in qs.iter_mut().zip(q) {
        *s = x * scale;
    }
    let (mut m, mut l) = (-T::INFINITY, T::ZERO);
    let mut direct = true;
    acc.fill(T::ZERO);
    // Keys in blocks of `BLOCK` (see there): the same bits as one key at a time.
    let count = pairs.count();
    let mut j0 = 0;
    while j0 < count {
        let b = (count - j0).min(BLOCK);
        let mut s = [T::ZERO; BLOCK];
        for (t, st) in s.iter_mut().enumerate().take(b) {
            let k = pairs.key(j0 + t)?;
            let raw = dot(q, k) * scale;
            direct &= raw.is_finite();
            *st = raw.finite_or(|| dot(qs, k));
            if let Some(x) = logits.get_mut(j0 + t) {
                *x = *st;
            }
        }
        let e = block_exps(m, &s, b)?;
        for (t, (&st, &et)) in s.iter().zip(e.iter()).enumerate().take(b) {
            online_push_exp(&mut m, &mut l, acc, st, et, pairs.value(j0 + t)?);
        }
        j0 += b;
    }
    let stats = direct.then_some(MaxSum { m, l });
    online_finish(l, acc);
    if all_finite(acc) {
        return Ok(stats);
    }
    if T::LANES > 1 {
        // The recovery below compares magnitudes across the context: not decided per lane (see [`Real::LANES`]).
        return Err(Error::NonFinite);
    }
    // The weighted sum overflowed although it is a convex combination of the values: again with the values divided
    // by their largest magnitude, then scaled back (non-finite values still give a non-finite result).
    let mut s = T::ZERO;
    for j in 0..pairs.count() {
        for &x in pairs.value(j)? {
            if x.abs() > s {
                s = x.abs();
            }
        }
    }
    if !s.is_finite() || s == T::ZERO {
        return Ok(stats);
    }
    let (mut m, mut l) = (-T::INFINITY, T::ZERO);
    acc.fill(T::ZERO);
    for j in 0..pairs.count() {
        let s_j = logit(q, qs, pairs.key(j)?, scale);
        for (d, &x) in vs.iter_mut().zip(pairs.value(j)?) {
            *d = x / s;
        }
        online_push(&mut m, &mut l, acc, s_j, vs)?;
    }
    online_finish(l, acc);
    for a in acc.iter_mut() {
        *a *= s;
    }
    Ok(stats)
}
