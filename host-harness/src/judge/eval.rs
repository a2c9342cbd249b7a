//! Evaluation on held-out tasks with the core's kernels: losses, the reference work's agreement metrics between two
//! models, loss after every layer application, and the baselines (predict zero, least squares on the context), each
//! a [`Metric`]; [`evaluate`] draws every task once and measures any set of metrics on it.
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
use std::any::Any;

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
    /// `|y_hat_b|`: the scale of `b`'s predictions, the yardstick of Preds diff (missing in reports written before
    /// it was measured).
    #[serde(default = "Stat::missing")]
    pub scale_b: Stat,
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

/// Scratch of one metric on one worker.
pub type Scratch = Box<dyn Any + Send>;

/// A quantity measured on every held-out task: [`evaluate`] computes any set of them in one pass.
pub trait Metric: Sync {
    /// Values per task.
    fn columns(&self) -> usize;
    /// Scratch for contexts of `n` pairs.
    fn scratch(&self, n: usize) -> Scratch;
    /// Appends this task's [`Metric::columns`] values to `row`.
    fn measure(&self, scratch: &mut Scratch, ctx: &[f32], query: &[f32], y: f32, row: &mut Vec<f64>);
}

/// One pass over the `count` tasks of the streams `(seed, first_stream + chunk)`: each task drawn once and every
/// metric measured on it. Returns, per metric, a [`Stat`] per column (over tasks, in task order).
pub fn evaluate(
    metrics: &[&dyn Metric],
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<Vec<Stat>> {
    let width = metrics.iter().map(|m| m.columns()).sum();
    let rows: Vec<Vec<f64>> = sampler
        .par_chunks::<(Vec<Vec<f64>>, Vec<Scratch>)>(
            seed,
            first_stream,
            count,
            || (Vec::new(), metrics.iter().map(|m| m.scratch(sampler.n)).collect()),
            |(acc, scratch), ctx, query, y| {
                let mut row = Vec::with_capacity(width);
                for (m, s) in metrics.iter().zip(scratch.iter_mut()) {
                    m.measure(s, ctx, query, y, &mut row);
                }
                acc.push(row);
            },
        )
        .into_iter()
        .flat_map(|(rows, _)| rows)
        .collect();
    let mut first = 0;
    metrics
        .iter()
        .map(|m| {
            let columns = (first..first + m.columns()).map(|k| Stat::of(rows.iter().map(move |r| r[k]))).collect();
            first += m.columns();
            columns
        })
        .collect()
}

/// The scratch `s` as a `W`, made by `make` the first time (or when it holds another type).
fn scratch_as<W: Send + 'static>(s: &mut Scratch, make: impl FnOnce() -> W) -> &mut W {
    if !s.is::<W>() {
        *s = Box::new(make());
    }
    s.downcast_mut::<W>().expect("just made")
}

/// The loss `0.5 (y_hat - y)^2` of a net.
pub struct Loss<'a, F>(pub &'a F);

impl<F: Forward> Metric for Loss<'_, F> {
    fn columns(&self) -> usize {
        1
    }

    fn scratch(&self, n: usize) -> Scratch {
        Box::new(self.0.workspace(n))
    }

    fn measure(&self, scratch: &mut Scratch, ctx: &[f32], query: &[f32], y: f32, row: &mut Vec<f64>) {
        let ws = scratch_as(scratch, || self.0.workspace(0));
        row.push(0.5 * ((self.0.predict(ctx, query, ws, None) - y) as f64).powi(2));
    }
}

/// The loss after each of a net's applications (the per-layer readout of the query's prediction).
pub struct Readout<'a, F>(pub &'a F);

impl<F: Forward> Metric for Readout<'_, F> {
    fn columns(&self) -> usize {
        self.0.applications()
    }

    fn scratch(&self, n: usize) -> Scratch {
        Box::new((self.0.workspace(n), vec![0.0f32; self.0.applications()]))
    }

    fn measure(&self, scratch: &mut Scratch, ctx: &[f32], query: &[f32], y: f32, row: &mut Vec<f64>) {
        let k = self.0.applications();
        let (ws, readout) = scratch_as(scratch, || (self.0.workspace(0), vec![0.0f32; k]));
        self.0.predict(ctx, query, ws, Some(readout));
        row.extend(readout.iter().map(|p| 0.5 * ((p - y) as f64).powi(2)));
    }
}

/// Preds diff `|y_hat_a - y_hat_b|` of two nets, from their predictions alone.
pub struct PredsDiff<'a, A, B>(pub &'a A, pub &'a B);

impl<A: Forward, B: Forward> Metric for PredsDiff<'_, A, B> {
    fn columns(&self) -> usize {
        1
    }

    fn scratch(&self, n: usize) -> Scratch {
        Box::new((self.0.workspace(n), self.1.workspace(n)))
    }

    fn measure(&self, scratch: &mut Scratch, ctx: &[f32], query: &[f32], _: f32, row: &mut Vec<f64>) {
        let (wa, wb) = scratch_as(scratch, || (self.0.workspace(0), self.1.workspace(0)));
        row.push(f64::from((self.0.predict(ctx, query, wa, None) - self.1.predict(ctx, query, wb, None)).abs()));
    }
}

/// Predicting 0.
pub struct ZeroLoss;

impl Metric for ZeroLoss {
    fn columns(&self) -> usize {
        1
    }

    fn scratch(&self, _: usize) -> Scratch {
        Box::new(())
    }

    fn measure(&self, _: &mut Scratch, _: &[f32], _: &[f32], y: f32, row: &mut Vec<f64>) {
        row.push(0.5 * (y as f64).powi(2));
    }
}

/// Ordinary least squares on each task's context (minimum-norm solution when N < d), in f64, for `d` inputs: the
/// loss of the best linear fit of the context, an alternative that GD steps approach only slowly.
pub struct OlsLoss(pub usize);

impl Metric for OlsLoss {
    fn columns(&self) -> usize {
        1
    }

    fn scratch(&self, _: usize) -> Scratch {
        Box::new(())
    }

    fn measure(&self, _: &mut Scratch, ctx: &[f32], query: &[f32], y: f32, row: &mut Vec<f64>) {
        let d = self.0;
        let w = crate::judge::baselines::ridge_weights(ctx, d, 0.0);
        let pred: f64 = (0..d).map(|j| w[j] * query[j] as f64).sum();
        row.push(0.5 * (pred - y as f64).powi(2));
    }
}

/// Predictor `a` against each of `refs` ([`Comparison`]): per task the loss of `a`, then per reference its loss,
/// Preds diff, Model cos, Model diff, relative Model diff and the size of its prediction.
pub struct Agreement<'a> {
    /// The model compared.
    pub a: Predictor<'a>,
    /// What it is compared with.
    pub refs: Vec<Predictor<'a>>,
}

impl Agreement<'_> {
    /// The comparisons from the [`evaluate`] columns of this metric.
    pub fn comparisons(columns: &[Stat]) -> Vec<Comparison> {
        let col = |k: usize| columns[k];
        (0..(columns.len().saturating_sub(1)) / 6)
            .map(|i| Comparison {
                loss_a: col(0),
                loss_b: col(1 + 6 * i),
                preds_diff: col(2 + 6 * i),
                model_cos: col(3 + 6 * i),
                model_diff: col(4 + 6 * i),
                model_diff_rel: col(5 + 6 * i),
                scale_b: col(6 + 6 * i),
            })
            .collect()
    }
}

impl Metric for Agreement<'_> {
    fn columns(&self) -> usize {
        1 + 6 * self.refs.len()
    }

    fn scratch(&self, n: usize) -> Scratch {
        let spaces: Vec<_> = std::iter::once(&self.a).chain(&self.refs).map(|p| p.workspace(n)).collect();
        Box::new(spaces)
    }

    fn measure(&self, scratch: &mut Scratch, ctx: &[f32], query: &[f32], y: f32, row: &mut Vec<f64>) {
        let spaces = scratch_as(scratch, || (0..=self.refs.len()).map(|_| None).collect::<Vec<_>>());
        let (wa, wb) = spaces.split_at_mut(1);
        let y = y as f64;
        let (ya, ga) = self.a.predict_with_sensitivity(ctx, query, &mut wa[0]);
        row.push(0.5 * (ya - y).powi(2));
        for (b, ws) in self.refs.iter().zip(wb.iter_mut()) {
            let (yb, gb) = b.predict_with_sensitivity(ctx, query, ws);
            let nb = gb.iter().map(|x| x * x).sum::<f64>().sqrt();
            let cos = cosine(&ga, &gb).unwrap_or(0.0);
            let diff = ga.iter().zip(&gb).map(|(x, z)| (x - z).powi(2)).sum::<f64>().sqrt();
            let rel = if nb > 0.0 { diff / nb } else { f64::NAN };
            row.extend([0.5 * (yb - y).powi(2), (ya - yb).abs(), cos, diff, rel, yb.abs()]);
        }
    }
}

/// Per task, `y_hat_a * y_hat_b` and `y_hat_b^2`: their means give the factor `c` that brings `c * y_hat_b` closest
/// to `y_hat_a` in mean square ([`fit_scale`]).
pub struct Products<'a> {
    /// The model.
    pub a: Predictor<'a>,
    /// The reference it is scaled onto.
    pub b: Predictor<'a>,
}

impl Metric for Products<'_> {
    fn columns(&self) -> usize {
        2
    }

    fn scratch(&self, n: usize) -> Scratch {
        Box::new(vec![self.a.workspace(n), self.b.workspace(n)])
    }

    fn measure(&self, scratch: &mut Scratch, ctx: &[f32], query: &[f32], _: f32, row: &mut Vec<f64>) {
        let spaces = scratch_as(scratch, || vec![None, None]);
        let (wa, wb) = spaces.split_at_mut(1);
        let (ya, yb) = (self.a.predict(ctx, query, &mut wa[0]), self.b.predict(ctx, query, &mut wb[0]));
        row.extend([ya * yb, yb * yb]);
    }
}

/// The factor `c` minimising the mean of `(y_hat_a - c y_hat_b)^2` over the given tasks (NaN when `b` predicts
/// zero everywhere).
pub fn fit_scale(
    a: Predictor<'_>,
    b: Predictor<'_>,
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> f64 {
    let stats = evaluate(&[&Products { a, b }], sampler, seed, first_stream, count);
    match stats.first().map(Vec::as_slice) {
        Some([ab, bb]) if bb.mean > 0.0 => ab.mean / bb.mean,
        _ => f64::NAN,
    }
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
    let metric = Agreement { a, refs: refs.to_vec() };
    Agreement::comparisons(&evaluate(&[&metric], sampler, seed, first_stream, count)[0])
}

/// `a` against `b` (see [`compare_many`]).
pub fn compare(a: &Net, b: &Net, sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Comparison {
    compare_many(a, &[b], sampler, seed, first_stream, count).remove(0)
}

/// [`Readout`] alone.
pub fn readout_losses<F: Forward>(
    net: &F,
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<Stat> {
    evaluate(&[&Readout(net)], sampler, seed, first_stream, count).remove(0)
}

/// [`Loss`] alone.
pub fn loss<F: Forward>(net: &F, sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Stat {
    evaluate(&[&Loss(net)], sampler, seed, first_stream, count)[0][0]
}

/// [`ZeroLoss`] alone.
pub fn zero_loss(sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Stat {
    evaluate(&[&ZeroLoss], sampler, seed, first_stream, count)[0][0]
}

/// [`OlsLoss`] alone.
pub fn ols_loss(sampler: &TaskSampler, seed: u64, first_stream: u64, count: usize) -> Stat {
    evaluate(&[&OlsLoss(sampler.d)], sampler, seed, first_stream, count)[0][0]
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
