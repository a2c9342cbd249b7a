//! `dualform reproduce interpolate`: the straight path between the trained single layer and the GD construction,
//! in the merged weights the reference interpolates (its notebook's `interpolate_weights`).
//!
//! A head acts only through `A = W_K^T W_Q` and `B = P W_V`, which are defined up to a scale (`A / a`, `a B`); the
//! trained head is normalised first by `a` = the mean of the diagonal of `A`'s `x` block (as the reference does),
//! so that its `A` is comparable with the construction's `A = [[I, 0], [0, 0]]`. Along
//! `A(alpha) = (1 - alpha) A_trained / a + alpha A_GD`, `B(alpha) = (1 - alpha) a B_trained + alpha B_GD`, the loss
//! and the agreement with GD (Preds diff, Model cos) on the held-out tasks. The reference reports the midpoint,
//! `alpha = 0.5`.
//!
//! Files: `report.json`, `interpolate.csv`, `interpolate.png`.

use super::trained::{trained_layer, QUICK_LAYER, LayerSpec};
use super::{Experiment, Groups, QuickSet, Run};
use crate::cells;
use crate::experiments::settings::{Shared, TaskArgs};
use crate::judge::eval::{compare_many, gd_net, matches, tune_gd_rate, Comparison};
use crate::judge::verdict::{loss_gap, LOSS_TOLERANCE, MODEL_COS_BOUND};
use crate::model::Model;
use crate::net::{Merged, Net};
use crate::output::plot::{Panel, Series};
use crate::output::report::{Check, Table, Tables};
use crate::tasks::streams;
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// The experiment.
pub struct Interpolate;

/// Settings of `reproduce interpolate`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub shared: Shared,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Points on the path from the trained layer (0) to GD (1), both ends included.
    #[arg(long, default_value_t = 21, allow_negative_numbers = true)]
    pub points: usize,
}

impl super::Settings for Settings {
    const QUICK: &'static [QuickSet] = &[QUICK_LAYER, &[("points", "11")]];

    fn groups(&self) -> Groups<'_> {
        Groups::with_task(&self.shared, &self.task)
    }

    fn check(&self) -> Result<(), HarnessError> {
        if !(3..=1001).contains(&self.points) || self.points.is_multiple_of(2) {
            return Err(HarnessError::Usage(format!(
                "--points must be odd (so the midpoint is on the path) and between 3 and 1001 (got {})",
                self.points
            )));
        }
        Ok(())
    }
}

/// One point of the path.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathPoint {
    /// 0 = the trained layer, 1 = GD.
    pub alpha: f64,
    /// The interpolated layer (a) against GD (b).
    pub vs_gd: Comparison,
}

/// What `reproduce interpolate` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The tuned rate of the GD end.
    pub gd_eta: f64,
    /// The scale `a` taken out of the trained `A`.
    pub scale: f64,
    /// The path.
    pub path: Vec<PathPoint>,
}

impl Results {
    /// The point at `alpha = 0.5`.
    pub fn midpoint(&self) -> Option<&PathPoint> {
        self.path.iter().find(|p| (p.alpha - 0.5).abs() < 1e-9)
    }
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!(
                "from the trained layer (alpha 0, A normalised by a = {:.4}) to one GD step (alpha 1, eta = {:.3}), held-out tasks",
                self.scale, self.gd_eta
            ),
            &["alpha", "loss", "GD loss", "preds diff vs GD", "model cos vs GD"],
        );
        let every = (self.path.len() / 10).max(1);
        for (i, p) in self.path.iter().enumerate() {
            if i % every == 0 || i + 1 == self.path.len() || (p.alpha - 0.5).abs() < 1e-9 {
                let c = &p.vs_gd;
                t.row(vec![
                    format!(
                        "{:.2}{}",
                        p.alpha,
                        if (p.alpha - 0.5).abs() < 1e-9 { " (reference's midpoint)" } else { "" }
                    ),
                    c.loss_a.show(),
                    format!("{:.4}", c.loss_b.mean),
                    format!("{:.4}", c.preds_diff.mean),
                    format!("{:.4}", c.model_cos.mean),
                ]);
            }
        }
        vec![t]
    }
}

/// The path stays as good as its ends (its highest loss within 3% of the worse end) and the midpoint matches GD (loss
/// within 3%, Model cos lower bound at least 0.99).
pub fn checks(r: &Results) -> Vec<Check> {
    let ends = match (r.path.first(), r.path.last()) {
        (Some(a), Some(b)) => a.vs_gd.loss_a.mean.max(b.vs_gd.loss_a.mean),
        _ => f64::NAN,
    };
    let top = r.path.iter().map(|p| p.vs_gd.loss_a.mean).fold(f64::NEG_INFINITY, f64::max);
    let mut c =
        vec![Check::at_most("path_no_barrier", "highest loss on the path / worse end's loss", top / ends, 1.0 + LOSS_TOLERANCE)];
    if let Some(m) = r.midpoint() {
        let v = &m.vs_gd;
        c.push(Check::at_most(
            "midpoint_loss_vs_gd",
            "midpoint: |loss - GD loss| / GD loss",
            loss_gap(v.loss_a.mean, v.loss_b.mean),
            LOSS_TOLERANCE,
        ));
        c.push(Check::at_least(
            "midpoint_model_cos",
            "midpoint: model cos vs GD, lower 95% bound",
            v.model_cos.lo(),
            MODEL_COS_BOUND,
        ));
    }
    c
}

/// The verdict sentence.
pub fn verdict(r: &Results, checks: &[Check]) -> String {
    let top = r.path.iter().map(|p| p.vs_gd.loss_a.mean).fold(f64::NEG_INFINITY, f64::max);
    let end = |p: Option<&PathPoint>| p.map_or(f64::NAN, |p| p.vs_gd.loss_a.mean);
    let barrier = if checks.first().is_some_and(|c| c.passed) { "has no barrier" } else { "HAS a barrier" };
    let mid = match r.midpoint() {
        Some(m) => format!(
            "; at the midpoint the loss is {:.4} against GD's {:.4}, model cos {:.4}: it {} GD",
            m.vs_gd.loss_a.mean,
            m.vs_gd.loss_b.mean,
            m.vs_gd.model_cos.mean,
            if matches(&m.vs_gd) { "matches" } else { "does not match" }
        ),
        None => String::new(),
    };
    format!(
        "the path from the trained layer to GD {barrier} (highest loss {top:.4}, ends {:.4} and {:.4}){mid}",
        end(r.path.first()),
        end(r.path.last())
    )
}

/// The path between the normalised trained head and the GD head, `points` evenly spaced.
pub fn path(trained: &Merged, gd: &Merged, points: usize) -> (f32, Vec<(f64, Net)>) {
    let e = trained.width();
    let d = e - 1;
    let scale = (0..d).map(|i| trained.a[i * e + i]).sum::<f32>() / d as f32;
    let a0: Vec<f32> = trained.a.iter().map(|v| v / scale).collect();
    let b0: Vec<f32> = trained.b.iter().map(|v| v * scale).collect();
    let mix = |x: &[f32], y: &[f32], t: f32| x.iter().zip(y).map(|(x, y)| x * (1.0 - t) + y * t).collect::<Vec<_>>();
    let nets = (0..points)
        .map(|i| {
            let alpha = i as f64 / (points - 1) as f64;
            let t = alpha as f32;
            let mut head = Merged::zeros(e);
            head.a = mix(&a0, &gd.a, t);
            head.b = mix(&b0, &gd.b, t);
            (alpha, Net::single(head).unwrap_or_else(|_| unreachable!("a head of width d + 1 >= 2")))
        })
        .collect();
    (scale, nets)
}

/// The path from `trained` to the end `gd_end`, every point compared with `gd_end` on `count` held-out tasks.
pub fn evaluate(
    trained: &Merged,
    gd_end: &Net,
    gd_eta: f64,
    points: usize,
    sampler: &crate::tasks::TaskSampler,
    seed: u64,
    count: usize,
) -> Results {
    let (scale, nets) = path(trained, &gd_end.heads()[0], points);
    let path = nets
        .iter()
        .map(|(alpha, net)| PathPoint {
            alpha: *alpha,
            vs_gd: compare_many(net, &[gd_end], sampler, seed, streams::EVAL, count).remove(0),
        })
        .collect();
    Results { gd_eta, scale: scale as f64, path }
}

impl Experiment for Interpolate {
    const NAME: &'static str = "interpolate";
    const ABOUT: &'static str =
        "The straight path in merged weights from the trained single layer to the GD construction";
    type Settings = Settings;
    type Results = Results;

    fn checks(_: &Settings, r: &Results) -> Vec<Check> {
        checks(r)
    }

    fn verdict(_: &Settings, r: &Results, checks: &[Check]) -> String {
        verdict(r, checks)
    }

    fn run(s: &Settings, run: &mut Run<'_>) -> Result<Results, HarnessError> {
        let sampler = s.task.sampler();
        let (seed, count) = (s.shared.common.eval_seed, s.shared.eval.eval_tasks);
        let spec = LayerSpec::of(&s.shared.common, &s.task, &s.shared.train, &s.shared.eval, &s.shared.curves);
        let layer = trained_layer(run, spec, s.shared.common.seed)?.model;
        let eta = tune_gd_rate(&sampler, seed, streams::TUNE, count)?;
        let gd = gd_net(s.task.d, eta as f32, s.task.n)?;
        let results = evaluate(&layer.net().heads()[0], &gd, eta, s.points, &sampler, seed, count);
        let mut csv = Table::new("csv", &["alpha", "loss", "gd_loss", "preds_diff", "model_cos", "model_diff"]);
        for p in &results.path {
            let c = &p.vs_gd;
            csv.row(cells![p.alpha, c.loss_a.mean, c.loss_b.mean, c.preds_diff.mean, c.model_cos.mean, c.model_diff.mean]);
        }
        run.csv("interpolate.csv", &csv)?;
        let pts = |f: fn(&Comparison) -> f64| results.path.iter().map(|p| (p.alpha, f(&p.vs_gd))).collect::<Vec<_>>();
        run.plot(
            "interpolate.png",
            "The straight path in merged weights from the trained layer (alpha 0) to one GD step (alpha 1): loss, and \
             agreement with GD",
            &[
                Panel::new("Loss along the path", "alpha (0 = trained, 1 = GD)", "loss")
                    .with(Series::line("interpolated layer", pts(|c| c.loss_a.mean)).with_markers())
                    .with(Series::dashed("one GD step", pts(|c| c.loss_b.mean))),
                Panel::new("Agreement with GD", "alpha", "")
                    .with(Series::line("model cos", pts(|c| c.model_cos.mean)).with_markers())
                    .with(Series::line("preds diff", pts(|c| c.preds_diff.mean)).with_markers()),
            ],
        );
        Ok(results)
    }
}
