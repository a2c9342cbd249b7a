//! Feature maps for kernelised linear attention: `sim(q, k) = phi(q) . phi(k)`.
//!
//! - [`Identity`]: `phi(x) = x` (plain linear attention; with no normaliser this is the LSA layer).
//! - [`EluPlusOne`]: `phi(x)_i = elu(x_i) + 1` = `x_i + 1` for `x_i > 0`, else `exp(x_i)` (Katharopoulos et al. 2020).
//!   Positive for finite input down to where `exp` underflows (about -87 in f32, -745 in f64), and 0 below it.
//! - [`PositiveRandomFeatures`]: `phi(x)_i = exp(w_i . (s x) - |s x|^2 / 2) / sqrt(F)` with a fixed projection
//!   `w_i ~ N(0, I)` drawn from a seed (FAVOR+, Choromanski et al. 2021); `E[phi(q).phi(k)] = exp(s^2 q.k)`, so with
//!   `s = DK^(-1/4)` it estimates the softmax kernel `exp(q.k / sqrt(DK))`. Overflows to infinity for very large
//!   inputs (reported by the attention kernels as [`crate::Error::ZeroNormaliser`]).
//! - [`SoftmaxFeatures`]: softmax over the vector's own features, max-subtracted (the query normalisation of
//!   Efficient Attention, Shen et al. 2020). Its key-side twin, softmax over positions, is not a per-vector map and
//!   lives in [`crate::attention::efficient_attention`].
//!
//! Dot products inside the maps use [`crate::linalg::dot`]'s fixed four-lane order.

use crate::linalg::dot;
use crate::rng::SplitMix64;
use crate::Real;

/// A map from a key/query vector of size `D` to `F` features.
pub trait FeatureMap<T: Real, const D: usize, const F: usize> {
    /// The features of `x`.
    fn map(&self, x: &[T; D]) -> [T; F];
}

/// `phi(x) = x`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Identity;

impl<T: Real, const D: usize> FeatureMap<T, D, D> for Identity {
    #[inline(always)]
    fn map(&self, x: &[T; D]) -> [T; D] {
        *x
    }
}

/// `phi(x)_i = elu(x_i) + 1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct EluPlusOne;

impl<T: Real, const D: usize> FeatureMap<T, D, D> for EluPlusOne {
    #[inline(always)]
    fn map(&self, x: &[T; D]) -> [T; D] {
        let mut out = [T::ZERO; D];
        for (o, &xi) in out.iter_mut().zip(x.iter()) {
            *o = if xi > T::ZERO { xi + T::ONE } else { xi.exp() };
        }
        out
    }
}

/// Softmax over the vector's own `D` features (max-subtracted; sums to 1 for finite input).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SoftmaxFeatures;

impl<T: Real, const D: usize> FeatureMap<T, D, D> for SoftmaxFeatures {
    fn map(&self, x: &[T; D]) -> [T; D] {
        let mut out = [T::ZERO; D];
        // Infallible here: an array of finite values has a finite max; NaN input propagates as NaN.
        let m = x.iter().fold(-T::INFINITY, |m, &v| m.max(v));
        let mut sum = T::ZERO;
        for (o, &xi) in out.iter_mut().zip(x.iter()) {
            *o = (xi - m).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
        out
    }
}

/// Positive random features with a fixed projection `w` (`F` rows of size `D`) and input scale `s`.
#[derive(Clone, Debug, PartialEq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct PositiveRandomFeatures<T, const D: usize, const F: usize> {
    /// Projection rows `w_i`.
    pub w: [[T; D]; F],
    /// Input scale `s` (`D^(-1/4)` approximates the softmax kernel with `1/sqrt(D)` temperature).
    pub scale: T,
}

impl<T: Real, const D: usize, const F: usize> PositiveRandomFeatures<T, D, F> {
    /// Draws the projection from `seed` (see [`crate::rng::SplitMix64`]) with the softmax scale `D^(-1/4)`.
    pub fn seeded(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut w = [[T::ZERO; D]; F];
        for row in w.iter_mut() {
            rng.fill_normal(row);
        }
        let scale = T::ONE / T::from_f64(D as f64).sqrt().sqrt();
        Self { w, scale }
    }
}

impl<T: Real, const D: usize, const F: usize> FeatureMap<T, D, F> for PositiveRandomFeatures<T, D, F> {
    fn map(&self, x: &[T; D]) -> [T; F] {
        let mut xs = *x;
        for v in xs.iter_mut() {
            *v *= self.scale;
        }
        let half_sq = dot(&xs, &xs) / T::from_f64(2.0);
        let norm = T::ONE / T::from_f64(F as f64).sqrt();
        let mut out = [T::ZERO; F];
        for (o, w) in out.iter_mut().zip(self.w.iter()) {
            *o = (dot(w, &xs) - half_sq).exp() * norm;
        }
        out
    }
}
