//! `dualform reproduce gd-plus-plus`: how much of a trained deep model's advantage over plain gradient descent the
//! GD++ construction explains.
//!
//! GD++ (von Oswald et al.) is the GD construction whose layers also transform the inputs,
//! `x <- (I - gamma X X^T) x`; the reference fits it by training only the diagonal scalars of `W_V` and `P` (a scale
//! for the `x` block and one for `y`, per layer). Those enter the layer only as the products `gamma` and
//! `eta / N`, so dualform fits the same function class with one `(eta, gamma)` per layer, by least squares on tuning
//! tasks ([`crate::fit::references`]). For each depth K: the trained K-layer model of `multi-layer` (trained once per
//! `reproduce all`), the fitted plain-GD and GD++ references, the fraction of the trained model's advantage over
//! plain GD (with a tuned rate per step) that GD++ achieves, `(L_GD - L_GD++) / (L_GD - L_trained)`, and whether the
//! trained model is closer to GD++ than to plain GD.
//!
//! Files: `report.json`, `gd-plus-plus.csv`, `gd-plus-plus.png`.

use super::trained::{fitted_references, trained_stack, StackSpec};
use super::{Experiment, Run};
use crate::cells;
use crate::fit::references::{FitSpec, FittedParams};
use crate::judge::eval::{compare_many, matches, Comparison};
use crate::judge::stats::Stat;
use crate::model::Model;
use crate::output::plot::{Panel, Series};
use crate::output::report::{Check, Table, Tables};
use crate::tasks::streams;
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// The experiment.
pub struct GdPlusPlus;

/// Settings of `reproduce gd-plus-plus`: those of `multi-layer`, with its defaults
/// ([`super::multi_layer::DEEP_DEFAULTS`]), whose deep models and fits it uses (within one `reproduce all` they are
/// trained and fitted once).
pub type Settings = super::multi_layer::Settings;

/// One depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FittedDepth {
    /// K.
    pub layers: usize,
    /// Shared-rate GD, per-step GD and GD++, fitted.
    pub references: Vec<FittedParams>,
    /// The trained model (a) against each reference (b) on the held-out tasks.
    pub vs_trained: Vec<Comparison>,
}

impl FittedDepth {
    /// Held-out losses: trained, shared-rate GD, per-step GD, GD++.
    pub fn losses(&self) -> (Stat, Vec<Stat>) {
        let trained = self.vs_trained.first().map_or(Stat { mean: f64::NAN, ci95: f64::NAN, n: 0 }, |c| c.loss_a);
        (trained, self.vs_trained.iter().map(|c| c.loss_b).collect())
    }

    /// `(L_GD - L_GD++) / (L_GD - L_trained)` with `GD` the per-step references (`None` when the trained model's
    /// advantage over plain GD is not resolved: the two losses' intervals overlap, so the ratio's denominator could
    /// be zero or negative).
    pub fn explained(&self) -> Option<f64> {
        let (t, r) = self.losses();
        let gd = r.get(1)?;
        let pp = r.get(2)?.mean;
        (gd.lo() > t.hi()).then(|| (gd.mean - pp) / (gd.mean - t.mean))
    }

    /// The share [`FittedDepth::explained`] in words, or the two gains over plain GD when it is not defined.
    pub fn explained_text(&self) -> String {
        if let Some(e) = self.explained() {
            return format!("{:.0}%", 100.0 * e);
        }
        let (t, r) = self.losses();
        match (r.get(1), r.get(2)) {
            (Some(gd), Some(pp)) => format!(
                "not resolved: the trained model gains {:.4} over plain GD, within the intervals (+-{:.4}, +-{:.4}); \
                 GD++ gains {:.4}",
                gd.mean - t.mean,
                t.ci95,
                gd.ci95,
                gd.mean - pp.mean
            ),
            _ => "-".into(),
        }
    }
}

/// What `reproduce gd-plus-plus` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Every depth.
    pub depths: Vec<FittedDepth>,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "held-out loss and how much of the trained model's advantage over plain GD (rate per step) GD++ explains",
            &["K", "trained", "GD (rate per step)", "GD++", "explained by GD++", "GD (shared rate)"],
        );
        let mut a = Table::new(
            "the trained model against plain GD and GD++: preds diff / model cos",
            &["K", "GD (rate per step)", "GD++", "closer to"],
        );
        let mut p = Table::new("fitted GD++ scalars per layer", &["K", "eta", "gamma", "tuning loss"]);
        for d in &self.depths {
            let (tr, r) = d.losses();
            t.row(vec![
                d.layers.to_string(),
                tr.show(),
                r.get(1).map_or("-".into(), Stat::show),
                r.get(2).map_or("-".into(), Stat::show),
                d.explained_text(),
                r.first().map_or("-".into(), Stat::show),
            ]);
            if let [_, gd, pp] = &d.vs_trained[..] {
                let cell = |c: &Comparison| {
                    format!(
                        "{:.4} / {:.4}{}",
                        c.preds_diff.mean,
                        c.model_cos.mean,
                        if matches(c) { " (match)" } else { "" }
                    )
                };
                let closer = if pp.preds_diff.mean <= gd.preds_diff.mean { "GD++" } else { "GD" };
                a.row(vec![d.layers.to_string(), cell(gd), cell(pp), closer.into()]);
            }
            if let Some(pp) = d.references.get(2) {
                let list = |v: &[f32]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
                p.row(vec![
                    d.layers.to_string(),
                    list(&pp.etas),
                    list(&pp.gammas),
                    format!("{:.4}", pp.fit.final_loss),
                ]);
            }
        }
        vec![t, a, p]
    }
}

/// Per depth: the trained model is closer to GD++ than to plain GD by Preds diff (the reference's claim about deep
/// models).
pub fn checks(r: &Results) -> Vec<Check> {
    r.depths
        .iter()
        .filter_map(|d| match &d.vs_trained[..] {
            [_, gd, pp] => Some(Check::at_most(
                &format!("k{}_closer_to_gdpp", d.layers),
                &format!("K = {}: preds diff to GD++ / preds diff to plain GD (rate per step)", d.layers),
                pp.preds_diff.mean / gd.preds_diff.mean,
                1.0,
            )),
            _ => None,
        })
        .collect()
}

/// The verdict sentence.
pub fn verdict(r: &Results) -> String {
    r.depths
        .iter()
        .map(|d| {
            let (t, refs) = d.losses();
            format!(
                "K = {}: trained {:.4}, plain GD {:.4}, GD++ {:.4}: {}",
                d.layers,
                t.mean,
                refs.get(1).map_or(f64::NAN, |s| s.mean),
                refs.get(2).map_or(f64::NAN, |s| s.mean),
                match d.explained() {
                    Some(e) => format!("GD++ achieves {:.0}% of the trained model's advantage", 100.0 * e),
                    None => format!("the share GD++ explains is {}", d.explained_text()),
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl Experiment for GdPlusPlus {
    const NAME: &'static str = "gd-plus-plus";
    const DEFAULTS: &'static [(&'static str, &'static str)] = super::multi_layer::DEEP_DEFAULTS;
    const ABOUT: &'static str =
        "GD++ fitted per layer: how much of a trained deep model's advantage over plain GD it explains";
    type Settings = Settings;
    type Results = Results;

    fn checks(_: &Settings, r: &Results) -> Vec<Check> {
        checks(r)
    }

    fn verdict(_: &Settings, r: &Results, _: &[Check]) -> String {
        verdict(r)
    }

    fn run(s: &Settings, run: &mut Run<'_>) -> Result<Results, HarnessError> {
        let sampler = s.task.sampler();
        let (seed, count) = (s.shared.common.eval_seed, s.shared.eval.eval_tasks);
        let stack: StackSpec<'_> = s.stack_spec();
        let fit_spec = FitSpec { sampler: &sampler, eval_seed: seed, tasks: count, iters: s.fit_iters };
        let mut depths = Vec::new();
        for &k in &s.layers {
            let model = trained_stack(run, k, stack)?.model;
            let refs = fitted_references(run, k, &s.task, fit_spec)?;
            let nets: Vec<_> = refs.iter().map(|r| r.model.net()).collect();
            depths.push(FittedDepth {
                layers: k,
                references: refs.iter().map(FittedParams::from).collect(),
                vs_trained: compare_many(model.net(), &nets, &sampler, seed, streams::EVAL, count),
            });
        }
        let results = Results { depths };
        let mut csv = Table::new("csv", &["layers", "trained", "gd_shared", "gd_per_step", "gdpp", "explained"]);
        for d in &results.depths {
            let (t, r) = d.losses();
            let l = |i: usize| r.get(i).map_or(f64::NAN, |s| s.mean);
            csv.row(cells![d.layers, t.mean, l(0), l(1), l(2), d.explained().unwrap_or(f64::NAN)]);
        }
        run.csv("gd-plus-plus.csv", &csv)?;
        let series = |i: Option<usize>| {
            results
                .depths
                .iter()
                .map(|d| {
                    let (t, r) = d.losses();
                    (d.layers as f64, i.map_or(t.mean, |i| r.get(i).map_or(f64::NAN, |s| s.mean)))
                })
                .collect::<Vec<_>>()
        };
        run.plot(
            "gd-plus-plus.png",
            "Held-out loss by depth: the trained model, plain GD (shared rate, rate per step) and fitted GD++",
            &[Panel::new("Trained deep models against GD and GD++", "layers / steps K", "loss")
                .with(Series::line("trained", series(None)).with_markers())
                .with(Series::dashed("GD, shared rate", series(Some(0))).with_markers())
                .with(Series::dashed("GD, rate per step", series(Some(1))).with_markers())
                .with(Series::dashed("GD++", series(Some(2))).with_markers())],
        );
        Ok(results)
    }
}
