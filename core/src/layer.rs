//! Attention weights, masks and the residual update rule shared by every attention kernel.
//!
//! A layer maps tokens `h_t` in R^E to `h_t + sum_heads P_h a_h(t)`, where `a_h(t)` is the head's attention output
//! for token `t` (linear, kernelised or softmax). Keys and values come from the N context tokens only; queries come
//! from all N context tokens and the query token, so context tokens are updated too (the reference convention).
//! [`Update`] decides how the summed update is written back: a damping factor, the first coordinate written (to
//! update only the `y` part), and optional clipping of the token after the update.

use crate::{Error, Real};
use nalgebra::SMatrix;

/// One attention head: query/key projections to `DK`, a value projection to `DV`, and the output projection `P`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Head<T: Real, const E: usize, const DK: usize, const DV: usize> {
    /// Query projection, `DK x E`.
    pub w_q: SMatrix<T, DK, E>,
    /// Key projection, `DK x E`.
    pub w_k: SMatrix<T, DK, E>,
    /// Value projection, `DV x E`.
    pub w_v: SMatrix<T, DV, E>,
    /// Output projection, `E x DV` (the reference's `P`, which also carries the 1/N).
    pub p: SMatrix<T, E, DV>,
}

/// A column-major static matrix from row-major rows, in a `const fn` (so weights can be written in a `static`).
pub(crate) const fn from_rows<T: Real, const R: usize, const C: usize>(rows: &[[T; C]; R]) -> SMatrix<T, R, C> {
    let mut cols = [[T::ZERO; R]; C];
    let mut r = 0;
    while r < R {
        let mut c = 0;
        while c < C {
            // Indexing is the only way to copy in a `const fn` (no iterators there); `r < R` and `c < C` keep every
            // index inside the fixed-size arrays.
            #[allow(clippy::indexing_slicing)]
            {
                cols[c][r] = rows[r][c];
            }
            c += 1;
        }
        r += 1;
    }
    SMatrix::from_array_storage(nalgebra::ArrayStorage(cols))
}

impl<T: Real, const E: usize, const DK: usize, const DV: usize> Head<T, E, DK, DV> {
    /// A head from its four matrices written row by row (as they are printed, and as a weight file stores them), in
    /// a `const fn`, so that weights can live in a `static` (in flash) without a build script.
    ///
    /// ```
    /// use dualform::{Head, LsaLayer};
    /// // E = 2 (x and y in R): the GD construction with W0 = 0 and eta / N = 0.25.
    /// static LAYER: LsaLayer<f32, 2> = LsaLayer::single(Head::from_rows(
    ///     [[1.0, 0.0], [0.0, 0.0]],   // W_Q: reads x
    ///     [[1.0, 0.0], [0.0, 0.0]],   // W_K: reads x
    ///     [[0.0, 0.0], [0.0, -1.0]],  // W_V: -y
    ///     [[0.0, 0.0], [0.0, 0.25]],  // P = (eta / N) on the y row
    /// ));
    /// assert_eq!(LAYER.heads[0].w_v[(1, 1)], -1.0); // (row, column)
    /// ```
    pub const fn from_rows(w_q: [[T; E]; DK], w_k: [[T; E]; DK], w_v: [[T; E]; DV], p: [[T; DV]; E]) -> Self {
        Self { w_q: from_rows(&w_q), w_k: from_rows(&w_k), w_v: from_rows(&w_v), p: from_rows(&p) }
    }

    /// A head whose four matrices are zero (the layer is then the identity).
    pub fn zeros() -> Self {
        Self {
            w_q: crate::linalg::zeros(),
            w_k: crate::linalg::zeros(),
            w_v: crate::linalg::zeros(),
            p: crate::linalg::zeros(),
        }
    }
}

/// A multi-head attention layer with `H` heads; the heads' outputs are summed in head order.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Layer<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize> {
    /// The heads, summed in this order.
    pub heads: [Head<T, E, DK, DV>; H],
}

impl<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize> Layer<T, E, DK, DV, H> {
    /// A layer of zero heads' weights (the identity map).
    pub fn zeros() -> Self {
        Self { heads: core::array::from_fn(|_| Head::zeros()) }
    }
}

impl<T: Real, const E: usize, const DK: usize, const DV: usize> Layer<T, E, DK, DV, 1> {
    /// A layer of one head, in a `const fn` (see [`Head::from_rows`]).
    pub const fn single(head: Head<T, E, DK, DV>) -> Self {
        Self { heads: [head] }
    }
}

/// The common case: one LSA head whose key and value width is the token width E (the shape of the GD construction
/// [`crate::gd_layer`] and of the reference's trained layers).
pub type LsaLayer<T, const E: usize> = Layer<T, E, E, E, 1>;

/// A single-head layer from one head.
impl<T: Real, const E: usize, const DK: usize, const DV: usize> From<Head<T, E, DK, DV>> for Layer<T, E, DK, DV, 1> {
    fn from(head: Head<T, E, DK, DV>) -> Self {
        Self { heads: [head] }
    }
}

/// Which context tokens each query sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Mask {
    /// Every query sees all N context tokens.
    #[default]
    Full,
    /// Context token `t` sees context tokens `0..=t`; the query token (last) sees all N.
    Causal,
}

/// How a layer's summed update `u` is written into a token `h`:
/// `h[i] += scale * u[i]` for `i >= first`, then, if `clip` is set, every coordinate is clamped to `[-clip, clip]`.
///
/// With `scale = 1` the multiplication is skipped (it is exact anyway), so [`Update::residual`] is the plain
/// residual `h += u` of the reference model.
#[derive(Clone, Copy, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Update<T> {
    /// Damping factor applied to the update (1 = none).
    pub scale: T,
    /// First coordinate that is written; `E - d_out` updates only the `y` part, 0 updates everything.
    pub first: usize,
    /// Clamp the whole token to `[-clip, clip]` after the update.
    pub clip: Option<T>,
}

impl<T: Real> Default for Update<T> {
    fn default() -> Self {
        Self::residual()
    }
}

impl<T: Real> Update<T> {
    /// The plain residual update `h += u`.
    pub fn residual() -> Self {
        Self { scale: T::ONE, first: 0, clip: None }
    }

    /// Checks the rule against a token width `E`: `first <= E`, `scale` finite, `clip` finite and `>= 0`.
    pub fn validate(&self, e: usize) -> Result<(), Error> {
        if self.first > e {
            return Err(Error::InvalidParameter("Update::first exceeds the token width"));
        }
        if !self.scale.is_finite() {
            return Err(Error::InvalidParameter("Update::scale must be finite"));
        }
        if let Some(c) = self.clip {
            if !c.is_finite() || c < T::ZERO {
                return Err(Error::InvalidParameter("Update::clip must be finite and >= 0"));
            }
        }
        Ok(())
    }

    /// Writes `u` into `h` by this rule. Call [`Update::validate`] once before a batch of calls.
    #[inline(always)]
    pub fn apply<const E: usize>(&self, h: &mut [T; E], u: &[T; E]) {
        self.apply_slice(h, u);
    }

    /// [`Update::apply`] for a token of run-time width (`h` and `u` of one length; a longer `u` is cut).
    #[inline(always)]
    pub fn apply_slice(&self, h: &mut [T], u: &[T]) {
        // Slices from `first` on (a zip that skips would call `nth` per token on a small target).
        let first = self.first.min(h.len());
        if let (Some((_, hs)), Some((_, us))) = (h.split_at_mut_checked(first), u.split_at_checked(first)) {
            if self.scale == T::ONE {
                for (hi, &ui) in hs.iter_mut().zip(us) {
                    *hi += ui;
                }
            } else {
                for (hi, &ui) in hs.iter_mut().zip(us) {
                    *hi += self.scale * ui;
                }
            }
        }
        if let Some(c) = self.clip {
            // Comparisons, not `max`/`min`: a NaN stays NaN (see [`Real::clip`]).
            for hi in h.iter_mut() {
                *hi = hi.clip(c);
            }
        }
    }
}

/// The prediction read from a token: minus its last `DY` coordinates (the reference's `-h_query[last]`).
/// `DY > E` is rejected at compile time.
#[inline(always)]
pub fn prediction<T: Real, const E: usize, const DY: usize>(token: &[T; E]) -> [T; DY] {
    const { assert!(DY <= E, "prediction width DY must not exceed the token width E") };
    let mut out = [T::ZERO; DY];
    for (o, &h) in out.iter_mut().zip(token.iter().skip(E - DY)) {
        *o = -h;
    }
    out
}
