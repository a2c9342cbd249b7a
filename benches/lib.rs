//! Shared pieces of the benches: seeded inputs and the naive baselines (dynamic nalgebra matrices and index loops,
//! allocating freely) that the fixed-size kernels are compared with.

use dualform::rng::SplitMix64;
use dualform::{Head, Layer};
use nalgebra::DMatrix;

/// Deterministic inputs.
pub struct Inputs(SplitMix64);

impl Inputs {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }
    /// Uniform in (-1, 1).
    pub fn value(&mut self) -> f32 {
        (2.0 * self.0.next_open01() - 1.0) as f32
    }
    /// A single-head layer with key and value size E, entries of order 1/sqrt(E).
    pub fn layer<const E: usize>(&mut self) -> Layer<f32, E, E, E, 1> {
        let s = 1.0 / (E as f32).sqrt();
        let mut m = || nalgebra::SMatrix::<f32, E, E>::from_fn(|_, _| s * self.value());
        Layer { heads: [Head { w_q: m(), w_k: m(), w_v: m(), p: m() }] }
    }
    /// N tokens of width E, boxed (large N would not fit a thread's stack).
    pub fn tokens<const E: usize, const N: usize>(&mut self) -> Box<[[f32; E]; N]> {
        let mut b: Box<[[f32; E]; N]> =
            vec![[0.0f32; E]; N].into_boxed_slice().try_into().unwrap_or_else(|_| unreachable!());
        for t in b.iter_mut() {
            for v in t.iter_mut() {
                *v = self.value();
            }
        }
        b
    }
}

/// The four matrices of a single-head layer as dynamic matrices.
pub fn dynamic<const E: usize>(l: &Layer<f32, E, E, E, 1>) -> [DMatrix<f32>; 4] {
    let h = &l.heads[0];
    let d = |m: &nalgebra::SMatrix<f32, E, E>| DMatrix::from_column_slice(E, E, m.as_slice());
    [d(&h.w_q), d(&h.w_k), d(&h.w_v), d(&h.p)]
}

/// All tokens `H` (context then query, as columns), and `Q = W_Q H`, `K = W_K C`, `V = W_V C` over the context `C`.
fn naive_qkv(w: &[DMatrix<f32>; 4], ctx: &[f32], query: &[f32], e: usize) -> [DMatrix<f32>; 4] {
    let n = ctx.len() / e;
    let c = DMatrix::from_column_slice(e, n, ctx);
    let mut h = DMatrix::zeros(e, n + 1);
    h.columns_mut(0, n).copy_from(&c);
    h.column_mut(n).copy_from_slice(query);
    let q = &w[0] * &h;
    [h, q, &w[1] * &c, &w[2] * &c]
}

/// Naive LSA layer (all tokens, full mask) with dynamic matrices: `H + P V (K^T Q)` computed as written,
/// the N x (N + 1) score matrix included.
pub fn naive_lsa(w: &[DMatrix<f32>; 4], ctx: &[f32], query: &[f32], e: usize) -> DMatrix<f32> {
    let [h, q, k, v] = naive_qkv(w, ctx, query, e);
    let scores = k.transpose() * q; // N x (N + 1)
    h + &w[3] * (v * scores)
}

/// Naive softmax attention for all tokens with an N x (N + 1) score buffer and a two-pass softmax per column.
pub fn naive_softmax(w: &[DMatrix<f32>; 4], ctx: &[f32], query: &[f32], e: usize) -> DMatrix<f32> {
    let [h, q, k, v] = naive_qkv(w, ctx, query, e);
    let mut scores = (k.transpose() * q) / (e as f32).sqrt();
    for mut col in scores.column_iter_mut() {
        let m = col.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for x in col.iter_mut() {
            *x = (*x - m).exp();
            sum += *x;
        }
        col /= sum;
    }
    h + &w[3] * (v * scores)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dualform::{lsa_associative, softmax_attention, LinearScratch, Mask, Update};

    /// The baselines compute the same layers as the kernels they are compared with.
    #[test]
    fn naive_baselines_compute_the_kernels_layers() {
        let mut inp = Inputs::new(9);
        let layer = inp.layer::<6>();
        let ctx = inp.tokens::<6, 5>();
        let q = inp.tokens::<6, 1>()[0];
        let w = dynamic(&layer);
        let flat: Vec<f32> = ctx.iter().flatten().copied().collect();
        let close = |naive: &DMatrix<f32>, c: &[[f32; 6]; 5], q: &[f32; 6]| {
            let got: Vec<f32> = c.iter().flatten().chain(q.iter()).copied().collect();
            for (a, b) in naive.as_slice().iter().zip(&got) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        };
        let (mut c, mut qq) = (*ctx, q);
        lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut qq).unwrap();
        close(&naive_lsa(&w, &flat, &q, 6), &c, &qq);
        let (mut c, mut qq) = (*ctx, q);
        let mut scratch = LinearScratch::<f32, 5, 6, 6, 1>::new();
        softmax_attention(&layer, Mask::Full, &Update::residual(), &mut c, &mut qq, &mut scratch).unwrap();
        close(&naive_softmax(&w, &flat, &q, 6), &c, &qq);
    }
}
