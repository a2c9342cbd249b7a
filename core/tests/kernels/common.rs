//! Shared test routines: seeded generators, a labelled closeness check, and naive f64 references written with
//! nalgebra's dynamic matrices and plain loops (independent of the kernels' fixed-order loops).
#![allow(dead_code)]

use dualform::rng::SplitMix64;
use dualform::{Head, Layer, Real};
use nalgebra::{DMatrix, DVector, SMatrix};

/// Seeded values for tests.
pub struct Gen(SplitMix64);

impl Gen {
    pub fn new(seed: u64) -> Self {
        Gen(SplitMix64::new(seed))
    }
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.0.next_open01()
    }
    pub fn normal(&mut self) -> f64 {
        self.0.next_normal()
    }
    pub fn array<const N: usize>(&mut self, lo: f64, hi: f64) -> [f64; N] {
        core::array::from_fn(|_| self.uniform(lo, hi))
    }
    pub fn tokens<const E: usize, const N: usize>(&mut self) -> [[f64; E]; N] {
        core::array::from_fn(|_| self.array(-1.0, 1.0))
    }
    pub fn matrix<const R: usize, const C: usize>(&mut self, std: f64) -> SMatrix<f64, R, C> {
        SMatrix::from_fn(|_, _| std * self.normal())
    }
    /// Random weights scaled so that activations stay of order one.
    pub fn layer<const E: usize, const DK: usize, const DV: usize, const H: usize>(
        &mut self,
    ) -> Layer<f64, E, DK, DV, H> {
        let s = 1.0 / (E as f64).sqrt();
        Layer {
            heads: core::array::from_fn(|_| Head {
                w_q: self.matrix(s),
                w_k: self.matrix(s),
                w_v: self.matrix(s),
                p: self.matrix(1.0 / (DV as f64).sqrt()),
            }),
        }
    }
}

pub fn cast_layer<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    l: &Layer<f64, E, DK, DV, H>,
) -> Layer<T, E, DK, DV, H> {
    Layer {
        heads: core::array::from_fn(|i| {
            let h = &l.heads[i];
            Head {
                w_q: h.w_q.map(T::from_f64),
                w_k: h.w_k.map(T::from_f64),
                w_v: h.w_v.map(T::from_f64),
                p: h.p.map(T::from_f64),
            }
        }),
    }
}

pub fn cast<T: Real, const E: usize>(x: &[f64; E]) -> [T; E] {
    core::array::from_fn(|i| T::from_f64(x[i]))
}

pub fn cast_tokens<T: Real, const E: usize, const N: usize>(x: &[[f64; E]; N]) -> [[T; E]; N] {
    core::array::from_fn(|j| cast(&x[j]))
}

/// All tokens (context, then query) as one f64 vector.
pub fn flat<T: Real, const E: usize, const N: usize>(ctx: &[[T; E]; N], query: &[T; E]) -> Vec<f64> {
    ctx.iter().chain(core::iter::once(query)).flatten().map(|v| v.to_f64()).collect()
}

/// Largest absolute value (at least `f64::MIN_POSITIVE`).
pub fn scale(x: &[f64]) -> f64 {
    x.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()))
}

/// Asserts `|got - want| <= rel * max|want|` element-wise, naming the label, the index and the ratio on failure.
/// Returns the largest observed `|got - want| / max|want|`.
pub fn assert_close(label: &str, got: &[f64], want: &[f64], rel: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "{label}: length");
    let s = scale(want);
    let mut worst = 0.0f64;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        let r = (g - w).abs() / s;
        assert!(
            r <= rel && g.is_finite() == w.is_finite(),
            "{label}: element {i}: got {g:e}, want {w:e}, |diff|/scale = {r:e} > {rel:e}"
        );
        worst = worst.max(r);
    }
    worst
}

fn dmat<const R: usize, const C: usize>(m: &SMatrix<f64, R, C>) -> DMatrix<f64> {
    DMatrix::from_column_slice(R, C, m.as_slice())
}

/// A feature map on dynamic vectors, for the references.
pub type Phi<'a> = &'a dyn Fn(&DVector<f64>) -> DVector<f64>;

pub fn phi_identity(x: &DVector<f64>) -> DVector<f64> {
    x.clone()
}

pub fn phi_elu1(x: &DVector<f64>) -> DVector<f64> {
    x.map(|v| if v > 0.0 { v + 1.0 } else { v.exp() })
}

/// Two-pass softmax (max, then sum) of a dynamic vector, the reference of the online one.
pub fn softmax_two_pass(x: &[f64]) -> Vec<f64> {
    let m = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = x.iter().map(|v| (v - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// What a layer computes for every token, by definition, with an N x N (+1) score matrix.
#[derive(Clone, Copy)]
pub enum RefKind<'a> {
    /// `sum_j (phi(q).phi(k_j)) v_j`, optionally divided by the sum of scores.
    Linear { phi: Phi<'a>, normalise: bool },
    /// `sum_j softmax_j(q.k_j / sqrt(DK)) v_j`.
    Softmax,
}

/// Naive reference of one attention layer over `ctx` and `query`; returns all tokens after the layer.
pub fn reference_layer<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<f64, E, DK, DV, H>,
    kind: RefKind<'_>,
    causal: bool,
    ctx: &[[f64; E]; N],
    query: &[f64; E],
) -> Vec<f64> {
    let tokens: Vec<DVector<f64>> =
        ctx.iter().chain(core::iter::once(query)).map(|t| DVector::from_column_slice(t)).collect();
    let mut out: Vec<DVector<f64>> = tokens.clone();
    for head in &layer.heads {
        let (wq, wk, wv, p) = (dmat(&head.w_q), dmat(&head.w_k), dmat(&head.w_v), dmat(&head.p));
        for (t, h) in tokens.iter().enumerate() {
            let visible = if causal && t < N { t + 1 } else { N };
            let q = &wq * h;
            let mut scores = Vec::new();
            for e in tokens.iter().take(visible) {
                let k = &wk * e;
                scores.push(match kind {
                    RefKind::Linear { phi, .. } => phi(&q).dot(&phi(&k)),
                    RefKind::Softmax => q.dot(&k) / (DK as f64).sqrt(),
                });
            }
            let weights: Vec<f64> = match kind {
                RefKind::Linear { normalise: true, .. } if visible > 0 => {
                    let s: f64 = scores.iter().sum();
                    scores.iter().map(|v| v / s).collect()
                }
                RefKind::Softmax if visible > 0 => softmax_two_pass(&scores),
                _ => scores,
            };
            let mut a = DVector::<f64>::zeros(DV);
            for (w, e) in weights.iter().zip(tokens.iter()) {
                a += *w * (&wv * e);
            }
            out[t] += &p * a;
        }
    }
    out.iter().flat_map(|v| v.iter().cloned().collect::<Vec<_>>()).collect()
}
