//! A residual MLP feature map for scalar inputs: the learned embedding in front of an attention layer when the
//! in-context task is not linear in its input (the sine regression of the harness's `mlp-sine`).
//!
//! `h0 = w_e x + b_e` (width F), `a = W_1 h0 + b_1` (width M), `phi(x) = h0 + W_2 gelu(a) + b_2`, with GELU in its
//! tanh form, `gelu(a) = a / 2 (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))`, `tanh` written through one `exp` so that
//! the result is the same on every target. [`ScalarMlp::backward`] is its vector-Jacobian product, accumulated into
//! a gradient of the same shape in a fixed order.

use crate::linalg::{add_outer, matvec, matvec_t};
use crate::Real;
use nalgebra::SMatrix;

/// `tanh(u) = 1 - 2 / (exp(2u) + 1)` from `e2 = exp(2u)` (exact limits: `exp` overflowing to infinity gives 1,
/// underflowing gives -1).
#[inline(always)]
fn tanh_from_exp<T: Real>(e2: T) -> T {
    T::ONE - T::from_f64(2.0) / (e2 + T::ONE)
}

/// `sqrt(2/pi)` and the cubic coefficient of the tanh form of GELU.
#[inline(always)]
fn gelu_consts<T: Real>() -> (T, T) {
    (T::from_f64(0.797_884_560_802_865_4), T::from_f64(0.044_715))
}

/// Twice the argument of the tanh of GELU at `a`: `2 sqrt(2/pi) (a + 0.044715 a^3)`, as `u + u`.
#[inline(always)]
fn gelu_twice_inner<T: Real>(a: T) -> T {
    let (c, k) = gelu_consts::<T>();
    let inner = c * (a + k * a * a * a);
    inner + inner
}

/// GELU, tanh form.
pub fn gelu<T: Real>(a: T) -> T {
    gelu_and_grad(a).0
}

/// The derivative of [`gelu`].
pub fn gelu_grad<T: Real>(a: T) -> T {
    gelu_and_grad(a).1
}

/// [`gelu`] and [`gelu_grad`] at `a` from one `tanh` (the bits of each computed alone).
#[inline(always)]
pub fn gelu_and_grad<T: Real>(a: T) -> (T, T) {
    gelu_from_exp(a, gelu_twice_inner(a).exp())
}

/// [`gelu_and_grad`] at `a` given `e2 = exp(gelu_twice_inner(a))`, so that a caller can take the exponentials of
/// many units at once ([`Real::exp_each`]).
#[inline(always)]
fn gelu_from_exp<T: Real>(a: T, e2: T) -> (T, T) {
    let t = tanh_from_exp(e2);
    let (c, k) = gelu_consts::<T>();
    let half = T::from_f64(0.5);
    let d_inner = c * (T::ONE + T::from_f64(3.0) * k * a * a);
    (half * a * (T::ONE + t), half * (T::ONE + t) + half * a * (T::ONE - t * t) * d_inner)
}

/// What [`ScalarMlp::backward_cached`] needs of a forward pass: the embedding `h0`, the GELU of the first layer's
/// output and its slope (see [`ScalarMlp::forward_cached`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MlpCache<T, const F: usize, const M: usize> {
    h0: [T; F],
    act: [T; M],
    slope: [T; M],
}

/// The feature map `phi: R -> R^F` with a hidden width M (see the module documentation).
#[derive(Clone, Debug, PartialEq)]
pub struct ScalarMlp<T: Real, const F: usize, const M: usize> {
    /// Embedding weights.
    pub w_e: [T; F],
    /// Embedding bias.
    pub b_e: [T; F],
    /// First layer of the residual block, `M x F`.
    pub w_1: SMatrix<T, M, F>,
    /// Its bias.
    pub b_1: [T; M],
    /// Second layer, `F x M`.
    pub w_2: SMatrix<T, F, M>,
    /// Its bias.
    pub b_2: [T; F],
}

impl<T: Real, const F: usize, const M: usize> ScalarMlp<T, F, M> {
    /// Every weight zero (the map is then 0).
    pub fn zeros() -> Self {
        Self {
            w_e: [T::ZERO; F],
            b_e: [T::ZERO; F],
            w_1: crate::linalg::zeros(),
            b_1: [T::ZERO; M],
            w_2: crate::linalg::zeros(),
            b_2: [T::ZERO; F],
        }
    }

    #[inline(always)]
    fn hidden(&self, x: T) -> ([T; F], [T; M]) {
        let mut h0 = self.b_e;
        for (h, w) in h0.iter_mut().zip(self.w_e.iter()) {
            *h += *w * x;
        }
        let mut a = matvec(&self.w_1, &h0);
        for (ai, bi) in a.iter_mut().zip(self.b_1.iter()) {
            *ai += *bi;
        }
        (h0, a)
    }

    /// `phi(x)`.
    #[inline(always)]
    pub fn forward(&self, x: T) -> [T; F] {
        self.forward_cached(x).0
    }

    /// `phi(x)` and what the backward needs of it (the same bits as [`ScalarMlp::forward`]; one `exp` per hidden
    /// unit serves both). Inlined whole, as are the backward's parts: a part left out of line is compiled for the
    /// baseline vector unit, whatever unit its caller was compiled for.
    #[inline(always)]
    pub fn forward_cached(&self, x: T) -> ([T; F], MlpCache<T, F, M>) {
        let c = self.cache(x);
        (self.output(&c.h0, &c.act), c)
    }

    #[inline(always)]
    fn cache(&self, x: T) -> MlpCache<T, F, M> {
        let (h0, a) = self.hidden(x);
        let (mut act, mut slope) = ([T::ZERO; M], [T::ZERO; M]);
        // The exponentials of every hidden unit at once (vector instructions for `f32`, see `Real::exp_each`), then
        // each unit's GELU and slope: the bits of `gelu_and_grad` per unit. Loops, not an array `map` (left out of
        // line, compiled for the baseline unit).
        let mut e2 = [T::ZERO; M];
        for (e, ai) in e2.iter_mut().zip(a.iter()) {
            *e = gelu_twice_inner(*ai);
        }
        T::exp_each(&mut e2);
        for (((ai, e), act), slope) in a.iter().zip(e2.iter()).zip(act.iter_mut()).zip(slope.iter_mut()) {
            (*act, *slope) = gelu_from_exp(*ai, *e);
        }
        MlpCache { h0, act, slope }
    }

    #[inline(always)]
    fn output(&self, h0: &[T; F], act: &[T; M]) -> [T; F] {
        let mut out = matvec(&self.w_2, act);
        for ((o, h), b) in out.iter_mut().zip(h0.iter()).zip(self.b_2.iter()) {
            *o = *h + *o + *b;
        }
        out
    }

    /// Given `g = dL/dphi(x)`, adds the parameter gradients into `grad` and returns `dL/dx` (the forward is
    /// recomputed).
    pub fn backward(&self, x: T, g: &[T; F], grad: &mut Self) -> T {
        self.backward_cached(x, &self.cache(x), g, grad)
    }

    /// [`ScalarMlp::backward`] from the cache of [`ScalarMlp::forward_cached`] at the same `x` (the same bits).
    #[inline(always)]
    pub fn backward_cached(&self, x: T, cache: &MlpCache<T, F, M>, g: &[T; F], grad: &mut Self) -> T {
        let MlpCache { h0, act, slope } = cache;
        add_outer(&mut grad.w_2, g, act);
        let mut da = matvec_t(&self.w_2, g);
        for (d, s) in da.iter_mut().zip(slope.iter()) {
            *d *= *s;
        }
        add_outer(&mut grad.w_1, &da, h0);
        let through = matvec_t(&self.w_1, &da);
        let mut dx = T::ZERO;
        let per_unit = g.iter().zip(through.iter()).zip(self.w_e.iter());
        let grads = grad.b_2.iter_mut().zip(grad.w_e.iter_mut()).zip(grad.b_e.iter_mut());
        for (((gi, ti), we), ((b2, ge), be)) in per_unit.zip(grads) {
            *b2 += *gi;
            let dh0 = *gi + *ti;
            *ge += dh0 * x;
            *be += dh0;
            dx += dh0 * *we;
        }
        for (b, d) in grad.b_1.iter_mut().zip(da.iter()) {
            *b += *d;
        }
        dx
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    fn random(seed: u64) -> ScalarMlp<f64, 3, 4> {
        let mut s = SplitMix64::new(seed);
        let mut m = ScalarMlp::<f64, 3, 4>::zeros();
        for v in m.w_e.iter_mut().chain(m.b_e.iter_mut()).chain(m.b_1.iter_mut()).chain(m.b_2.iter_mut()) {
            *v = s.next_normal();
        }
        for v in m.w_1.iter_mut().chain(m.w_2.iter_mut()) {
            *v = s.next_normal();
        }
        m
    }

    /// GELU against the erf form it approximates (within the tanh form's known error), its limits, and its
    /// derivative against central differences.
    #[test]
    fn gelu_and_its_derivative() {
        assert_eq!(gelu(0.0f64), 0.0);
        assert_eq!(gelu(100.0f64), 100.0);
        assert_eq!(gelu(-100.0f64), 0.0);
        assert!((gelu(1.0f64) - 0.841_344_746).abs() < 1e-3);
        assert!((gelu(-1.0f64) + 0.158_655_254).abs() < 1e-3);
        for a in [-3.0, -0.7, 0.0, 0.4, 2.5] {
            let num = (gelu(a + 1e-6) - gelu(a - 1e-6)) / 2e-6;
            assert!((gelu_grad(a) - num).abs() < 1e-8, "{a}");
        }
    }

    /// The VJP against central differences of `sum_i g_i phi_i(x)` in every parameter and in x.
    #[test]
    fn backward_matches_finite_differences() {
        let m = random(3);
        let g = [0.3, -1.1, 0.7];
        let x = 0.6;
        let f = |m: &ScalarMlp<f64, 3, 4>, x: f64| m.forward(x).iter().zip(g.iter()).map(|(a, b)| a * b).sum::<f64>();
        let mut grad = ScalarMlp::zeros();
        let dx = m.backward(x, &g, &mut grad);
        let eps = 1e-6;
        assert!((dx - (f(&m, x + eps) - f(&m, x - eps)) / (2.0 * eps)).abs() < 1e-7);
        for i in 0..3 + 3 + 12 + 4 + 12 + 3 {
            let (mut plus, mut minus) = (m.clone(), m.clone());
            *param(&mut plus, i) += eps;
            *param(&mut minus, i) -= eps;
            let analytic = *param(&mut grad, i);
            let num = (f(&plus, x) - f(&minus, x)) / (2.0 * eps);
            assert!((analytic - num).abs() < 1e-7 * (1.0 + num.abs()), "parameter {i}: {analytic} vs {num}");
        }
    }

    /// Every hidden unit's GELU and slope in the forward's cache are `gelu_and_grad`'s bits for `f32` at 20 hidden
    /// units (two groups of eight exponentials at once and four one by one), over inputs that put most units where
    /// GELU bends (an exponential one bit off changes their values there).
    #[test]
    fn the_cache_holds_gelu_and_grad_of_every_hidden_unit() {
        let mut s = SplitMix64::new(21);
        let mut m = ScalarMlp::<f32, 5, 20>::zeros();
        for v in m.w_e.iter_mut().chain(m.b_e.iter_mut()).chain(m.b_1.iter_mut()) {
            *v = s.next_normal() as f32;
        }
        for v in m.w_1.iter_mut() {
            *v = 0.5 * s.next_normal() as f32;
        }
        for x in [-9.0f32, -2.0, -0.6, -0.1, 0.0, 0.2, 0.9, 1.7, 3.0] {
            let (_, a) = m.hidden(x);
            let c = m.cache(x);
            for (i, &ai) in a.iter().enumerate() {
                let (act, slope) = gelu_and_grad(ai);
                assert_eq!((c.act[i].to_bits(), c.slope[i].to_bits()), (act.to_bits(), slope.to_bits()), "{x}, {i}");
            }
        }
    }

    /// The cached forward and backward give the bits of the plain ones (f32, inputs across GELU's range).
    #[test]
    fn cached_forward_and_backward_give_the_plain_bits() {
        let m64 = random(9);
        let cast = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
        let mut m = ScalarMlp::<f32, 3, 4>::zeros();
        m.w_e.copy_from_slice(&cast(&m64.w_e));
        m.b_e.copy_from_slice(&cast(&m64.b_e));
        m.b_1.copy_from_slice(&cast(&m64.b_1));
        m.b_2.copy_from_slice(&cast(&m64.b_2));
        m.w_1.as_mut_slice().copy_from_slice(&cast(m64.w_1.as_slice()));
        m.w_2.as_mut_slice().copy_from_slice(&cast(m64.w_2.as_slice()));
        let g = [0.3f32, -1.1, 0.7];
        for x in [-4.0f32, -0.9, 0.0, 0.35, 2.2, 7.5] {
            let (phi, cache) = m.forward_cached(x);
            assert_eq!(phi.map(f32::to_bits), m.forward(x).map(f32::to_bits), "phi({x})");
            let (mut plain, mut cached) = (ScalarMlp::zeros(), ScalarMlp::zeros());
            let dx = m.backward(x, &g, &mut plain);
            let dx_cached = m.backward_cached(x, &cache, &g, &mut cached);
            assert_eq!(dx.to_bits(), dx_cached.to_bits(), "dx at {x}");
            assert_eq!(plain, cached, "gradients at {x}");
        }
    }

    fn param(m: &mut ScalarMlp<f64, 3, 4>, i: usize) -> &mut f64 {
        match i {
            0..3 => &mut m.w_e[i],
            3..6 => &mut m.b_e[i - 3],
            6..18 => &mut m.w_1.as_mut_slice()[i - 6],
            18..22 => &mut m.b_1[i - 18],
            22..34 => &mut m.w_2.as_mut_slice()[i - 22],
            _ => &mut m.b_2[i - 34],
        }
    }
}
