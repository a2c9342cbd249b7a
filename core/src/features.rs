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

/// A feature map with its vector-Jacobian product, for training through it.
pub trait FeatureVjp<T: Real, const D: usize, const F: usize>: FeatureMap<T, D, F> {
    /// `J_phi(x)^T g`: the gradient with respect to `x` of `g . phi(x)`.
    fn vjp(&self, x: &[T; D], g: &[T; F]) -> [T; D];
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

impl<T: Real, const D: usize> FeatureVjp<T, D, D> for Identity {
    #[inline(always)]
    fn vjp(&self, _x: &[T; D], g: &[T; D]) -> [T; D] {
        *g
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
        // `Real::elu_plus_one`, not `if_gt` with closures: a closure holding the exponential was kept out of line,
        // compiled for the baseline unit inside the kernels built for a wider one (two fifths of the elu+1 step).
        for (o, &xi) in out.iter_mut().zip(x.iter()) {
            *o = xi.elu_plus_one();
        }
        out
    }
}

/// The derivative is 1 for `x_i > 0` and `exp(x_i)` otherwise (continuous at 0).
impl<T: Real, const D: usize> FeatureVjp<T, D, D> for EluPlusOne {
    #[inline(always)]
    fn vjp(&self, x: &[T; D], g: &[T; D]) -> [T; D] {
        let mut out = [T::ZERO; D];
        for ((o, &xi), &gi) in out.iter_mut().zip(x.iter()).zip(g.iter()) {
            *o = xi.elu_plus_one_vjp(gi);
        }
        out
    }
}

/// Softmax over the vector's own `D` features (max-subtracted; sums to 1 for finite input).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SoftmaxFeatures;

impl<T: Real, const D: usize> FeatureMap<T, D, D> for SoftmaxFeatures {
    #[inline(always)]
    fn map(&self, x: &[T; D]) -> [T; D] {
        let mut out = [T::ZERO; D];
        // Infallible here: an array of finite values has a finite max; NaN input propagates as NaN.
        let mut m = -T::INFINITY;
        for &v in x {
            m = m.max(v);
        }
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

/// With `p = phi(x)`: `p * (g - p . g)`.
impl<T: Real, const D: usize> FeatureVjp<T, D, D> for SoftmaxFeatures {
    #[inline(always)]
    fn vjp(&self, x: &[T; D], g: &[T; D]) -> [T; D] {
        let p = self.map(x);
        let pg = dot(&p, g);
        let mut out = [T::ZERO; D];
        for ((o, &pi), &gi) in out.iter_mut().zip(p.iter()).zip(g.iter()) {
            *o = pi * (gi - pg);
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
    #[inline(always)]
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

/// With `xs = s x` and `p = phi(x)`: `s sum_i g_i p_i (w_i - xs)` (the projection is fixed, not trained).
impl<T: Real, const D: usize, const F: usize> FeatureVjp<T, D, F> for PositiveRandomFeatures<T, D, F> {
    #[inline(always)]
    fn vjp(&self, x: &[T; D], g: &[T; F]) -> [T; D] {
        let p = self.map(x);
        let mut xs = *x;
        for v in xs.iter_mut() {
            *v *= self.scale;
        }
        let mut out = [T::ZERO; D];
        let mut total = T::ZERO;
        for ((w, &pi), &gi) in self.w.iter().zip(p.iter()).zip(g.iter()) {
            let c = gi * pi;
            crate::linalg::axpy(&mut out, c, w);
            total += c;
        }
        for (o, &x) in out.iter_mut().zip(xs.iter()) {
            *o = (*o - total * x) * self.scale;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every map's VJP against central differences of `g . phi(x)` in f64.
    fn check<M: FeatureVjp<f64, 4, F>, const F: usize>(phi: &M, x: [f64; 4]) {
        let g: [f64; F] = core::array::from_fn(|i| 0.3 + 0.7 * (i as f64 * 1.3).sin());
        let ana = phi.vjp(&x, &g);
        for (i, &a) in ana.iter().enumerate() {
            let h = 1e-6;
            let (mut p, mut m) = (x, x);
            p[i] += h;
            m[i] -= h;
            let num = (dot(&phi.map(&p), &g) - dot(&phi.map(&m), &g)) / (2.0 * h);
            assert!((a - num).abs() < 1e-7 * (1.0 + num.abs()), "coordinate {i}: {a} vs {num}");
        }
    }

    #[test]
    fn feature_map_vjps_match_finite_differences() {
        for x in [[0.4, -1.3, 2.0, -0.2], [-0.7, 0.9, -2.5, 1.1]] {
            check(&Identity, x);
            check(&EluPlusOne, x);
            check(&SoftmaxFeatures, x);
            check(&PositiveRandomFeatures::<f64, 4, 6>::seeded(3), x);
        }
    }
}
