//! Evaluation on held-out tasks with the core's kernels: predictions, exact sensitivities `d y_hat / d x_q`
//! (the query-input gradient of the core's backward kernel; exact because an LSA layer is linear in its query),
//! the GD rate fitted on the evaluation distribution, an ordinary-least-squares baseline, and 95% confidence
//! intervals over tasks (normal approximation, `1.96 sd / sqrt(n)`).

use crate::params::Lsa;
use crate::tasks::TaskSampler;
use dualform::{gd_layer, MergedHead};
use nalgebra::{DMatrix, DVector};
use serde::Serialize;

/// A mean with its 95% confidence half-width over `n` samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    /// Sample mean.
    pub mean: f64,
    /// Half-width of the 95% interval of the mean.
    pub ci95: f64,
    /// Samples.
    pub n: usize,
}

impl Stat {
    /// Mean and 95% half-width of `values`.
    pub fn of(values: impl Iterator<Item = f64> + Clone) -> Stat {
        let (mut n, mut sum) = (0usize, 0.0f64);
        for v in values.clone() {
            n += 1;
            sum += v;
        }
        if n == 0 {
            return Stat { mean: f64::NAN, ci95: f64::NAN, n };
        }
        let mean = sum / n as f64;
        let var = if n > 1 { values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64 } else { 0.0 };
        Stat { mean, ci95: 1.96 * (var / n as f64).sqrt(), n }
    }
}

/// One model's prediction for a task and its sensitivity to the query token.
pub struct Prediction<const E: usize> {
    /// `y_hat = -h'_query[last]`.
    pub y_hat: f32,
    /// `d y_hat / d h_query` (the first d entries are `d y_hat / d x_q`).
    pub grad: [f32; E],
}

/// Runs a merged head on a task with the core's kernel and its VJP (the sensitivity is `dL/dh` for
/// `L = y_hat`).
pub fn predict<const E: usize>(m: &MergedHead<f32, E>, ctx: &[[f32; E]], query: &[f32; E]) -> Prediction<E> {
    let mut unused = MergedHead::zeros();
    let (out, grad) = m.query_forward_backward(
        ctx,
        query,
        |_| {
            let mut g = [0.0f32; E];
            g[E - 1] = -1.0;
            g
        },
        &mut unused,
        None,
    );
    Prediction { y_hat: -out[E - 1], grad }
}

/// Model `a` against model `b` on the same tasks.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Comparison {
    /// Loss `0.5 (y_hat - y)^2` of `a`.
    pub loss_a: Stat,
    /// Loss of `b`.
    pub loss_b: Stat,
    /// Loss of predicting 0.
    pub loss_zero: Stat,
    /// `|y_hat_a - y_hat_b|`.
    pub preds_diff: Stat,
    /// Cosine of the two sensitivities `d y_hat / d x_q` (0 where one is zero).
    pub model_cos: Stat,
    /// Euclidean norm of the difference of the sensitivities.
    pub model_diff: Stat,
}

/// Compares `a` and `b` on `count` tasks of the streams `(seed, first_stream + chunk)`; `d` input coordinates.
pub fn compare<const E: usize>(
    a: &Lsa<E>,
    b: &Lsa<E>,
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Comparison {
    let d = sampler.d;
    let (a, b) = (&MergedHead::from_head(&a.heads[0]), &MergedHead::from_head(&b.heads[0]));
    let rows: Vec<[f64; 6]> = sampler
        .par_chunks::<E, Vec<[f64; 6]>>(seed, first_stream, count, Vec::new, |acc, ctx, query, y| {
            let (pa, pb) = (predict(a, ctx, query), predict(b, ctx, query));
            let ga: Vec<f64> = pa.grad[..d].iter().map(|v| *v as f64).collect();
            let gb: Vec<f64> = pb.grad[..d].iter().map(|v| *v as f64).collect();
            let dotp: f64 = ga.iter().zip(&gb).map(|(x, z)| x * z).sum();
            let (na, nb) = (ga.iter().map(|x| x * x).sum::<f64>().sqrt(), gb.iter().map(|x| x * x).sum::<f64>().sqrt());
            let cos = if na > 0.0 && nb > 0.0 { dotp / (na * nb) } else { 0.0 };
            let diff = ga.iter().zip(&gb).map(|(x, z)| (x - z).powi(2)).sum::<f64>().sqrt();
            let (ya, yb, y) = (pa.y_hat as f64, pb.y_hat as f64, y as f64);
            acc.push([0.5 * (ya - y).powi(2), 0.5 * (yb - y).powi(2), 0.5 * y * y, (ya - yb).abs(), cos, diff]);
        })
        .concat();
    let col = |k: usize| Stat::of(rows.iter().map(move |r| r[k]));
    Comparison {
        loss_a: col(0),
        loss_b: col(1),
        loss_zero: col(2),
        preds_diff: col(3),
        model_cos: col(4),
        model_diff: col(5),
    }
}

/// The GD construction from `W0 = 0` with rate `eta` over `n` pairs, as the model type.
pub fn gd_model<const D: usize, const E: usize>(eta: f32, n: usize) -> Result<Lsa<E>, dualform::Error> {
    gd_layer::<f32, D, 1, E>(&nalgebra::SMatrix::zeros(), eta, n)
}

/// The rate of one GD step (from 0) that minimises the mean loss over the given tasks, exactly: the prediction is
/// `eta * a` with `a` the prediction at rate 1, so the optimum is `sum a y / sum a^2`.
pub fn tune_gd_rate<const D: usize, const E: usize>(
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Result<f64, dualform::Error> {
    let unit = MergedHead::from_head(&gd_model::<D, E>(1.0, sampler.n)?.heads[0]);
    let sums = sampler.par_chunks::<E, (f64, f64)>(
        seed,
        first_stream,
        count,
        || (0.0, 0.0),
        |acc, ctx, query, y| {
            let a = predict(&unit, ctx, query).y_hat as f64;
            acc.0 += a * y as f64;
            acc.1 += a * a;
        },
    );
    let (ay, aa) = sums.iter().fold((0.0, 0.0), |s, c| (s.0 + c.0, s.1 + c.1));
    Ok(ay / aa)
}

/// Ordinary least squares on each task's context (minimum-norm solution when N < d), in f64: the loss of the
/// best linear fit of the context, an alternative that one GD step does not approach.
pub fn ols_loss<const E: usize>(sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Stat {
    let d = sampler.d;
    let rows = sampler
        .par_chunks::<E, Vec<f64>>(seed, first_stream, count, Vec::new, |acc, ctx, query, y| {
            let x = DMatrix::from_fn(ctx.len(), d, |i, j| ctx[i][j] as f64);
            let t = DVector::from_iterator(ctx.len(), ctx.iter().map(|e| e[E - 1] as f64));
            let w = x.svd(true, true).solve(&t, 1e-12).unwrap_or_else(|_| DVector::zeros(d));
            let pred: f64 = (0..d).map(|j| w[j] * query[j] as f64).sum();
            acc.push(0.5 * (pred - y as f64).powi(2));
        })
        .concat();
    Stat::of(rows.iter().copied())
}
