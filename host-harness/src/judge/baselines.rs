//! The one-layer alternatives a trained layer is told apart from: the class optimum (the best matrix `M` in
//! `y_hat = g^T M x_q`, `g = 1/N sum_j y_j x_j`), its diagonal restriction (preconditioned GD), and ridge
//! regression on each task's context (least squares at penalty 0). The first two are one-layer LSA heads
//! ([`m_head`]) and run on the core's kernel like every other model; ridge is not an attention model and is computed
//! per task in f64.
//!
//! Fits are linear least squares in f64 over tasks the held-out evaluation never sees: the normal equations are
//! accumulated per chunk of tasks and summed in chunk order (the result does not depend on the thread count).

use crate::net::{Forward, Merged, Net};
use crate::tasks::TaskSampler;
use nalgebra::{DMatrix, DVector};

/// The LSA head computing `y_hat = 1/N sum_j y_j x_j^T M x_q` (`M` is `d x d`): `A_xx = M`, and `B`'s `y` row
/// reads `-y_j / N` (the layer writes `-y_hat` into the query's `y`, as the GD construction does).
pub fn m_head(d: usize, m: &DMatrix<f64>, n: usize) -> Merged {
    let e = d + 1;
    let mut h = Merged::zeros(e);
    for i in 0..d.min(m.nrows()) {
        for j in 0..d.min(m.ncols()) {
            h.a[j * e + i] = m[(i, j)] as f32;
        }
    }
    h.b[d * e + d] = -1.0 / n as f32;
    h
}

/// The net of [`m_head`] for `d` inputs.
pub fn m_net(d: usize, m: &DMatrix<f64>, n: usize) -> Net {
    Net::single(m_head(d, m, n)).unwrap_or_else(|_| unreachable!("a head of width d + 1 >= 1"))
}

/// The diagonal matrix of `gamma`.
pub fn diagonal(gamma: &[f64]) -> DMatrix<f64> {
    DMatrix::from_diagonal(&DVector::from_column_slice(gamma))
}

/// Which matrices a fit ranges over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Every `d x d` matrix: the one-layer class optimum on these tasks.
    Full,
    /// Diagonal matrices: the best preconditioned GD step.
    Diagonal,
}

/// The least-squares `M` of `class` over `count` tasks of `(seed, first_stream + chunk)` (f64 normal equations, a
/// relative ridge of 1e-12 on the diagonal against singular systems).
pub fn fit_m(sampler: &TaskSampler, class: Class, seed: u64, first_stream: u64, count: usize) -> DMatrix<f64> {
    let d = sampler.d;
    let p = if class == Class::Full { d * d } else { d };
    // Blocks of chunks, each block's chunks in parallel and every chunk added in order: the memory of one block
    // of accumulators (not one per chunk of the whole fit), the same sums as one pass.
    const CHUNKS_PER_BLOCK: usize = 64;
    let (mut ff, mut fy) = (DMatrix::zeros(p, p), DVector::zeros(p));
    let block = CHUNKS_PER_BLOCK * crate::tasks::CHUNK;
    for b in 0..count.div_ceil(block) {
        let chunks = sampler.par_chunks::<(DMatrix<f64>, DVector<f64>, Vec<f64>)>(
            seed,
            first_stream + (b * CHUNKS_PER_BLOCK) as u64,
            block.min(count - b * block),
            || (DMatrix::zeros(p, p), DVector::zeros(p), vec![0.0; p]),
            |(ff, fy, phi), ctx, query, y| {
                let g = gradient_at_zero(ctx, d);
                match class {
                    Class::Full => {
                        for a in 0..d {
                            for b in 0..d {
                                phi[a * d + b] = g[a] * query[b] as f64;
                            }
                        }
                    }
                    Class::Diagonal => {
                        for a in 0..d {
                            phi[a] = g[a] * query[a] as f64;
                        }
                    }
                }
                let y = y as f64;
                for (j, pj) in phi.iter().enumerate() {
                    fy[j] += pj * y;
                    for (i, pi) in phi.iter().enumerate().skip(j) {
                        ff[(i, j)] += pi * pj;
                    }
                }
            },
        );
        for (cf, cy, _) in &chunks {
            ff += cf;
            fy += cy;
        }
    }
    for j in 0..p {
        for i in 0..j {
            ff[(i, j)] = ff[(j, i)];
        }
    }
    let trace = ff.trace().max(f64::MIN_POSITIVE);
    for i in 0..p {
        ff[(i, i)] += 1e-12 * trace / p as f64;
    }
    let m = ff.cholesky().map(|c| c.solve(&fy)).unwrap_or_else(|| DVector::zeros(p));
    match class {
        Class::Full => DMatrix::from_fn(d, d, |a, b| m[a * d + b]),
        Class::Diagonal => diagonal(m.as_slice()),
    }
}

/// `g = 1/N sum_j y_j x_j` in f64.
fn gradient_at_zero(ctx: &[f32], d: usize) -> Vec<f64> {
    let e = d + 1;
    let mut g = vec![0.0; d];
    for tok in ctx.chunks_exact(e) {
        for (gi, x) in g.iter_mut().zip(tok) {
            *gi += tok[e - 1] as f64 * *x as f64;
        }
    }
    let n = (ctx.len() / e).max(1) as f64;
    g.iter_mut().for_each(|v| *v /= n);
    g
}

/// Ridge regression on one task's context, `w = (X^T X + lambda I)^-1 X^T y` in f64 (`lambda = 0`: least squares,
/// the minimum-norm solution when N < d). Returns `w`, which is also the prediction's sensitivity to `x_q`; with no
/// pairs (a context of one demonstration left out of itself) `w = 0`.
pub fn ridge_weights(ctx: &[f32], d: usize, lambda: f64) -> DVector<f64> {
    let e = d + 1;
    let n = ctx.len() / e;
    if n == 0 || d == 0 {
        return DVector::zeros(d);
    }
    let x = DMatrix::from_fn(n, d, |i, j| ctx[i * e + j] as f64);
    let t = DVector::from_iterator(n, ctx.chunks_exact(e).map(|tok| tok[e - 1] as f64));
    if lambda == 0.0 {
        return x.svd(true, true).solve(&t, 1e-12).unwrap_or_else(|_| DVector::zeros(d));
    }
    let mut xtx = x.tr_mul(&x);
    for i in 0..d {
        xtx[(i, i)] += lambda;
    }
    let xty = x.tr_mul(&t);
    xtx.cholesky().map(|c| c.solve(&xty)).unwrap_or_else(|| DVector::zeros(d))
}

/// The ridge penalty (from a grid of 0 and 10^-4 .. 10^2 in steps of 10^0.25) with the lowest mean loss on the given
/// tasks.
pub fn tune_ridge(sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> f64 {
    let grid: Vec<f64> = std::iter::once(0.0).chain((0..=24).map(|k| 10f64.powf(-4.0 + 0.25 * k as f64))).collect();
    let d = sampler.d;
    let sums = sampler.par_chunks::<Vec<f64>>(
        seed,
        first_stream,
        count,
        || vec![0.0; grid.len()],
        |acc, ctx, query, y| {
            for (s, &lambda) in acc.iter_mut().zip(&grid) {
                let w = ridge_weights(ctx, d, lambda);
                let pred: f64 = (0..d).map(|j| w[j] * query[j] as f64).sum();
                *s += 0.5 * (pred - y as f64).powi(2);
            }
        },
    );
    let total: Vec<f64> = (0..grid.len()).map(|k| sums.iter().map(|c| c[k]).sum()).collect();
    let best = (0..grid.len()).min_by(|&a, &b| total[a].total_cmp(&total[b])).unwrap_or(0);
    grid[best]
}

/// A model's prediction and its sensitivity `d y_hat / d x_q` per task, behind a trait object (any [`Forward`] net
/// is one), so that one list can hold nets of several kinds.
pub trait Sensitive: Sync {
    /// A workspace for contexts of `n` pairs.
    fn new_workspace(&self, n: usize) -> Box<dyn std::any::Any + Send>;
    /// The prediction and its sensitivity to the query's `d` inputs; `ws` is a workspace of this model (another
    /// is replaced).
    fn sensitivity(&self, ctx: &[f32], query: &[f32], ws: &mut Box<dyn std::any::Any + Send>) -> (f64, Vec<f64>);
    /// The prediction alone (the forward pass, no sensitivity); `ws` as for [`Sensitive::sensitivity`].
    fn prediction(&self, ctx: &[f32], query: &[f32], ws: &mut Box<dyn std::any::Any + Send>) -> f64;
}

impl<F: Forward> Sensitive for F {
    fn new_workspace(&self, n: usize) -> Box<dyn std::any::Any + Send> {
        Box::new(self.workspace(n))
    }

    fn sensitivity(&self, ctx: &[f32], query: &[f32], ws: &mut Box<dyn std::any::Any + Send>) -> (f64, Vec<f64>) {
        let e = self.width();
        if !ws.is::<F::Workspace>() {
            *ws = self.new_workspace(ctx.len() / e.max(1));
        }
        let Some(ws) = ws.downcast_mut::<F::Workspace>() else { return (f64::NAN, vec![f64::NAN; e - 1]) };
        let mut g = vec![0.0f32; e];
        let y = self.forward_backward(ctx, query, ws, |_| 1.0, None, Some(&mut g));
        (y as f64, g[..e - 1].iter().map(|v| *v as f64).collect())
    }

    fn prediction(&self, ctx: &[f32], query: &[f32], ws: &mut Box<dyn std::any::Any + Send>) -> f64 {
        if !ws.is::<F::Workspace>() {
            *ws = self.new_workspace(ctx.len() / self.width().max(1));
        }
        let Some(ws) = ws.downcast_mut::<F::Workspace>() else { return f64::NAN };
        f64::from(self.predict(ctx, query, ws, None))
    }
}

/// A model a trained net is compared with: an attention net of any kind, or ridge regression on the context.
#[derive(Clone, Copy)]
pub enum Predictor<'a> {
    /// An attention net (LSA of any depth, softmax, ...), on the core's kernels.
    Net(&'a dyn Sensitive),
    /// Ridge regression on each task's context with this penalty (0: least squares), for `d` inputs.
    Ridge {
        /// The penalty.
        lambda: f64,
        /// The input dimension.
        d: usize,
    },
}

impl Predictor<'_> {
    /// A workspace for contexts of `n` pairs.
    pub fn workspace(&self, n: usize) -> Option<Box<dyn std::any::Any + Send>> {
        match self {
            Predictor::Net(net) => Some(net.new_workspace(n)),
            Predictor::Ridge { .. } => None,
        }
    }

    /// The prediction for one task (the forward pass alone).
    pub fn predict(&self, ctx: &[f32], query: &[f32], ws: &mut Option<Box<dyn std::any::Any + Send>>) -> f64 {
        match self {
            Predictor::Net(net) => {
                let ws = ws.get_or_insert_with(|| net.new_workspace(0));
                net.prediction(ctx, query, ws)
            }
            Predictor::Ridge { lambda, d } => {
                let w = ridge_weights(ctx, *d, *lambda);
                (0..*d).map(|j| w[j] * query[j] as f64).sum()
            }
        }
    }

    /// The prediction and its sensitivity `d y_hat / d x_q` for one task.
    pub fn predict_with_sensitivity(
        &self,
        ctx: &[f32],
        query: &[f32],
        ws: &mut Option<Box<dyn std::any::Any + Send>>,
    ) -> (f64, Vec<f64>) {
        match self {
            Predictor::Net(net) => {
                let ws = ws.get_or_insert_with(|| net.new_workspace(0));
                net.sensitivity(ctx, query, ws)
            }
            Predictor::Ridge { lambda, d } => {
                let w = ridge_weights(ctx, *d, *lambda);
                let pred = (0..*d).map(|j| w[j] * query[j] as f64).sum();
                (pred, w.as_slice().to_vec())
            }
        }
    }
}
