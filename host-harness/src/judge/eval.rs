//! Evaluation on held-out tasks with the core's kernels: losses, the reference work's agreement metrics between two
//! models, loss after every layer application, and the baselines (predict zero, least squares on the context).
//!
//! Metrics of model `a` against model `b` on the same tasks (von Oswald et al.): Preds diff `|y_hat_a - y_hat_b|`;
//! the sensitivities `g = d y_hat / d x_q` (exact, from the backward kernels; an LSA stack is a polynomial in its
//! inputs and the backward is its exact derivative); Model cos `<g_a/|g_a|, g_b/|g_b|>` (0 where one is zero); Model
//! diff `|g_a - g_b|`. Each with a 95% interval over tasks ([`Stat`]).

use crate::judge::baselines::Predictor;
use crate::judge::stats::Stat;
use crate::net::{Forward, Net};
use crate::tasks::TaskSampler;
use serde::{Deserialize, Serialize};

/// Model `a` against model `b` on the same tasks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    /// Loss `0.5 (y_hat - y)^2` of `a`.
    pub loss_a: Stat,
    /// Loss of `b`.
    pub loss_b: Stat,
    /// `|y_hat_a - y_hat_b|`.
    pub preds_diff: Stat,
    /// Cosine of the two sensitivities `d y_hat / d x_q`.
    pub model_cos: Stat,
    /// Euclidean norm of the difference of the sensitivities.
    pub model_diff: Stat,
    /// Model diff relative to `b`'s sensitivity, `|g_a - g_b| / |g_b|` (NaN where `g_b = 0`).
    pub model_diff_rel: Stat,
}

/// `cos(a, b) = a . b / (|a| |b|)` (each sum in index order), or `None` when either is zero or the result is not
/// finite.
pub fn cosine(a: &[f64], b: &[f64]) -> Option<f64> {
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    let (na, nb) = (norm(a), norm(b));
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let c = dot / (na * nb);
    (na > 0.0 && nb > 0.0 && c.is_finite()).then_some(c)
}

/// Whether model `a` matches model `b` by [`verdict::matches`](crate::judge::verdict::matches).
pub fn matches(c: &Comparison) -> bool {
    crate::judge::verdict::matches(c.loss_a.mean, c.loss_b.mean, c.model_cos.lo())
}

/// `a` against each of `refs` on `count` tasks of the streams `(seed, first_stream + chunk)`.
pub fn compare_many(
    a: &Net,
    refs: &[&Net],
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<Comparison> {
    let refs: Vec<Predictor<'_>> = refs.iter().map(|r| Predictor::Net(*r)).collect();
    compare_predictors(Predictor::Net(a), &refs, sampler, seed, first_stream, count)
}

/// [`compare_many`] for any predictors (nets, or ridge regression on the context).
pub fn compare_predictors(
    a: Predictor<'_>,
    refs: &[Predictor<'_>],
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<Comparison> {
    let r = refs.len();
    type Space = Option<Box<dyn std::any::Any + Send>>;
    // Per task: loss_a, then per reference (loss_b, preds diff, cos, diff, relative diff).
    let rows: Vec<Vec<f64>> = sampler
        .par_chunks::<(Vec<Vec<f64>>, Space, Vec<Space>)>(
            seed,
            first_stream,
            count,
            || (Vec::new(), a.workspace(sampler.n), refs.iter().map(|b| b.workspace(sampler.n)).collect()),
            |(acc, wa, wb), ctx, query, y| {
                let y = y as f64;
                let (ya, ga) = a.predict_with_sensitivity(ctx, query, wa);
                let mut row = vec![0.5 * (ya - y).powi(2)];
                for (b, ws) in refs.iter().zip(wb.iter_mut()) {
                    let (yb, gb) = b.predict_with_sensitivity(ctx, query, ws);
                    let nb = gb.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let cos = cosine(&ga, &gb).unwrap_or(0.0);
                    let diff = ga.iter().zip(&gb).map(|(x, z)| (x - z).powi(2)).sum::<f64>().sqrt();
                    let rel = if nb > 0.0 { diff / nb } else { f64::NAN };
                    row.extend([0.5 * (yb - y).powi(2), (ya - yb).abs(), cos, diff, rel]);
                }
                acc.push(row);
            },
        )
        .into_iter()
        .flat_map(|(rows, _, _)| rows)
        .collect();
    let col = |k: usize| Stat::of(rows.iter().map(move |row| row[k]));
    (0..r)
        .map(|i| Comparison {
            loss_a: col(0),
            loss_b: col(1 + 5 * i),
            preds_diff: col(2 + 5 * i),
            model_cos: col(3 + 5 * i),
            model_diff: col(4 + 5 * i),
            model_diff_rel: col(5 + 5 * i),
        })
        .collect()
}

/// `a` against `b` (see [`compare_many`]).
pub fn compare(a: &Net, b: &Net, sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Comparison {
    compare_many(a, &[b], sampler, seed, first_stream, count).remove(0)
}

/// The loss after each of the net's applications (the per-layer readout of the query's prediction).
pub fn readout_losses<F: Forward>(
    net: &F,
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<Stat> {
    let k = net.applications();
    let rows: Vec<Vec<f64>> = sampler
        .par_chunks::<(Vec<Vec<f64>>, F::Workspace, Vec<f32>)>(
            seed,
            first_stream,
            count,
            || (Vec::new(), net.workspace(sampler.n), vec![0.0; k]),
            |(acc, ws, readout), ctx, query, y| {
                net.predict(ctx, query, ws, Some(readout));
                acc.push(readout.iter().map(|p| 0.5 * ((p - y) as f64).powi(2)).collect());
            },
        )
        .into_iter()
        .flat_map(|(rows, _, _)| rows)
        .collect();
    (0..k).map(|i| Stat::of(rows.iter().map(move |r| r[i]))).collect()
}

/// The loss of `net` alone.
pub fn loss<F: Forward>(net: &F, sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Stat {
    let rows: Vec<f64> = sampler
        .par_chunks::<(Vec<f64>, F::Workspace)>(
            seed,
            first_stream,
            count,
            || (Vec::new(), net.workspace(sampler.n)),
            |(acc, ws), ctx, query, y| acc.push(0.5 * ((net.predict(ctx, query, ws, None) - y) as f64).powi(2)),
        )
        .into_iter()
        .flat_map(|(rows, _)| rows)
        .collect();
    Stat::of(rows.iter().copied())
}

/// The loss of predicting 0.
pub fn zero_loss(sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Stat {
    let rows = sampler
        .par_chunks::<Vec<f64>>(seed, first_stream, count, Vec::new, |acc, _, _, y| acc.push(0.5 * (y as f64).powi(2)))
        .concat();
    Stat::of(rows.iter().copied())
}

/// Ordinary least squares on each task's context (minimum-norm solution when N < d), in f64: the loss of the best
/// linear fit of the context, an alternative that GD steps approach only slowly.
pub fn ols_loss(sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Stat {
    let d = sampler.d;
    let rows = sampler
        .par_chunks::<Vec<f64>>(seed, first_stream, count, Vec::new, |acc, ctx, query, y| {
            let w = crate::judge::baselines::ridge_weights(ctx, d, 0.0);
            let pred: f64 = (0..d).map(|j| w[j] * query[j] as f64).sum();
            acc.push(0.5 * (pred - y as f64).powi(2));
        })
        .concat();
    Stat::of(rows.iter().copied())
}

/// The rate of one GD step from 0 that minimises the mean loss over the given tasks, exactly (see [`best_scale`]).
pub fn tune_gd_rate(sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Result<f64, dualform::Error> {
    Ok(best_scale(&gd_net(sampler.d, 1.0, sampler.n)?, sampler, seed, first_stream, count))
}

/// The factor `c` that minimises the mean loss of `c * unit`'s prediction over the given tasks, exactly: the
/// prediction is `c * a` with `a` the unit net's, so the optimum is `sum a y / sum a^2` (chunk sums in order).
pub fn best_scale<F: Forward>(unit: &F, sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> f64 {
    let sums = sampler.par_chunks::<(f64, f64, F::Workspace)>(
        seed,
        first_stream,
        count,
        || (0.0, 0.0, unit.workspace(sampler.n)),
        |acc, ctx, query, y| {
            let a = unit.predict(ctx, query, &mut acc.2, None) as f64;
            acc.0 += a * y as f64;
            acc.1 += a * a;
        },
    );
    let (ay, aa) = sums.iter().fold((0.0, 0.0), |s, c| (s.0 + c.0, s.1 + c.1));
    ay / aa
}

/// The core's one-step GD construction from `W0 = 0` with rate `eta` over `n` pairs of `d` inputs, as a net.
pub fn gd_net(d: usize, eta: f32, n: usize) -> Result<Net, dualform::Error> {
    Net::single(gd_head(d, eta, n)?.merged()).map_err(|_| dualform::Error::InvalidParameter("d"))
}

/// The core's one-step GD construction from `W0 = 0` with rate `eta` over `n` pairs of `d` inputs, as LSA weights.
pub fn gd_head(d: usize, eta: f32, n: usize) -> Result<crate::model::LsaHead, dualform::Error> {
    let mut head = crate::model::LsaHead::zeros(d + 1);
    dualform::gd_head_into(d, 1, &vec![0.0; d], eta, None, n, head.mats_mut())?;
    Ok(head)
}
