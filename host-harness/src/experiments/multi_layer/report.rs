//! The report of `reproduce multi-layer`: the authors' figures, the results and their tables, the checks, the
//! verdict and the files.

use crate::cells;
use crate::experiments::Run;
use crate::fit::references::FittedParams;
use crate::fit::train::{TrainSpec, TrainTiming};
use crate::judge::eval::Comparison;
use crate::judge::stats::Stat;
use crate::output::plot::{Panel, Series};
use crate::output::report::{naming_failures, Check, Table, Tables};
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// The authors' figures on this distribution, for comparison in the tables: `(K, GD low, GD high, GD++)`.
///
/// Source: their released notebook `constructed_token_setup.ipynb` (google-research/self-organising-systems,
/// `transformers_learn_icl_by_gd`), cell "Config" with `recurrent_Transformer = False`, `num_layers = K`,
/// `num_heads = 1`, `config.seed = 0`; the GD figure is what cell "Training" prints as "Best lr found for K steps of
/// gradient descent: ... with loss ..." (`scan_lrs`, one shared rate on a grid, 10 000 tasks of `PRNGKey(5)`, the
/// tasks it also evaluates on), a range where runs differed; GD++ (K = 2 only) is the final held-out loss of the GD++
/// model that cell trains (`pre_train_gd`, `train_gd_whitening`, 30 000 steps). The notebook is published without
/// outputs: these are from running it, not from the paper's text; they are figures of one seed without intervals.
pub const AUTHORS: [(usize, f64, f64, Option<f64>); 4] =
    [(2, 0.157, 0.160, Some(0.110)), (3, 0.132, 0.138, None), (4, 0.122, 0.122, None), (5, 0.113, 0.113, None)];

/// A reference at one depth, fitted, against the trained model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceResult {
    /// The fitted scalars.
    pub params: FittedParams,
    /// The trained model (a) against this reference (b) on the held-out tasks.
    pub vs_trained: Comparison,
    /// Loss after each step.
    pub readout: Vec<Stat>,
    /// Whether the trained model matches it ([`crate::judge::eval::matches`]).
    pub matched: bool,
    /// Cosine over demonstrations of the trained model's attribution and this reference's, both by leaving one
    /// demonstration out ([`crate::judge::attribution`]).
    #[serde(default = "Stat::missing")]
    pub attribution_cos: Stat,
}

/// One depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainedDepth {
    /// K.
    pub layers: usize,
    /// The training run.
    pub training: TrainSpec,
    /// Token clipping after every layer.
    pub token_clip: Option<f32>,
    /// Training time.
    pub timing: TrainTiming,
    /// Loss of the trained model after each layer.
    pub readout: Vec<Stat>,
    /// The references, in the order shared-rate GD, per-step GD, GD++.
    pub references: Vec<ReferenceResult>,
    /// `(step, batch loss, probe loss)` during training.
    pub curve: Vec<(u64, f64, f64)>,
}

impl TrainedDepth {
    /// The trained model's loss on the held-out tasks.
    pub fn trained_loss(&self) -> Stat {
        self.references.first().map_or(Stat { mean: f64::NAN, ci95: f64::NAN, n: 0 }, |r| r.vs_trained.loss_a)
    }
}

/// What `reproduce multi-layer` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Every depth.
    pub depths: Vec<TrainedDepth>,
    /// Loss of predicting zero.
    pub zero: Stat,
    /// Loss of least squares on the context.
    pub ols: Stat,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut losses = Table::new(
            "held-out loss by depth (95% CI); authors' figures from their released code",
            &["K", "trained", "GD (shared rate)", "GD (rate per step)", "GD++", "authors: GD", "authors: GD++"],
        );
        let mut agree = Table::new(
            "trained model against each reference: preds diff / model cos / attribution cos (leaving one demonstration \
             out on both sides)",
            &["K", "GD (shared rate)", "GD (rate per step)", "GD++"],
        );
        let mut params = Table::new(
            "fitted references (fitted on tuning tasks; the trajectory point kept by validation on separate tasks)",
            &["K", "reference", "eta per step", "gamma per step", "tuning loss", "validation loss", "steps kept"],
        );
        for d in &self.depths {
            let authors = AUTHORS.iter().find(|a| a.0 == d.layers);
            let mut row = vec![d.layers.to_string(), d.trained_loss().show()];
            row.extend(d.references.iter().map(|r| r.vs_trained.loss_b.show()));
            row.push(authors.map_or("-".into(), |a| {
                if a.1 == a.2 {
                    format!("{:.3}", a.1)
                } else {
                    format!("{:.3}-{:.3}", a.1, a.2)
                }
            }));
            row.push(authors.and_then(|a| a.3).map_or("-".into(), |v| format!("{v:.3}")));
            losses.row(row);
            let mut row = vec![d.layers.to_string()];
            row.extend(d.references.iter().map(|r| {
                format!(
                    "{:.4} / {:.4} / {:.3}{}",
                    r.vs_trained.preds_diff.mean,
                    r.vs_trained.model_cos.mean,
                    r.attribution_cos.mean,
                    if r.matched { " (match)" } else { "" }
                )
            }));
            agree.row(row);
            for r in &d.references {
                let list = |v: &[f32]| v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
                params.row(vec![
                    d.layers.to_string(),
                    r.params.name.clone(),
                    list(&r.params.etas),
                    if r.params.gammas.is_empty() { "-".into() } else { list(&r.params.gammas) },
                    format!("{:.4}", r.params.fit.final_loss),
                    r.params.fit.validation_loss.map_or("-".into(), |v| format!("{v:.4}")),
                    format!("{} of {}", r.params.fit.kept_step, r.params.fit.accepted_steps),
                ]);
            }
        }
        let mut readout = Table::new(
            "loss after each layer (trained) and after each step (per-step GD, GD++)",
            &["K", "model", "after layer 1, 2, ..."],
        );
        for d in &self.depths {
            let list = |v: &[Stat]| v.iter().map(|s| format!("{:.4}", s.mean)).collect::<Vec<_>>().join("  ");
            readout.row(vec![d.layers.to_string(), "trained".into(), list(&d.readout)]);
            for r in d.references.iter().skip(1) {
                readout.row(vec![d.layers.to_string(), r.params.name.clone(), list(&r.readout)]);
            }
        }
        let mut time = Table::new(
            "training (the batch loss over the last tenth of the steps, and its change from the tenth before: a loss \
             still falling means training stopped before it converged)",
            &[
                "K",
                "steps x batch",
                "lr",
                "grad clip",
                "token clip",
                "loss, last tenth",
                "change from the tenth before",
                "ms/step",
                "seconds",
            ],
        );
        for d in &self.depths {
            let c = d.timing.convergence;
            time.row(vec![
                d.layers.to_string(),
                format!("{} x {}", d.training.steps, d.training.batch),
                format!("{}", d.training.adam.lr),
                format!("{}", d.training.clip),
                d.token_clip.map_or("none".into(), |c| c.to_string()),
                format!("{:.4}", c.last_tenth),
                c.change_text(),
                format!("{:.2}", d.timing.ms_per_step),
                format!("{:.1}", d.timing.step_seconds),
            ]);
        }
        let mut base = Table::new("baselines on the same held-out tasks", &["model", "loss"]);
        base.row(vec!["predict 0".into(), self.zero.show()]);
        base.row(vec!["least squares on the context".into(), self.ols.show()]);
        vec![losses, agree, readout, params, time, base]
    }
}

/// Per depth: the fitted references are consistent on the held-out tasks (GD++ no worse than per-step GD, which is
/// no worse than shared-rate GD, within 1% of the shared-rate loss), and the trained model does at least as well
/// as K steps of GD with a shared rate.
pub fn checks(r: &Results) -> Vec<Check> {
    let mut out = Vec::new();
    for d in &r.depths {
        let l: Vec<f64> = d.references.iter().map(|x| x.vs_trained.loss_b.mean).collect();
        if let [shared, per_step, pp] = l[..] {
            let worst = ((per_step - shared).max(pp - per_step)) / shared;
            out.push(Check::at_most(
                &format!("k{}_references_ordered", d.layers),
                &format!("K = {}: largest loss increase from GD to per-step GD to GD++, relative", d.layers),
                worst,
                0.01,
            ));
            out.push(Check::at_most(
                &format!("k{}_trained_vs_gd", d.layers),
                &format!("K = {}: trained loss / shared-rate GD loss", d.layers),
                d.trained_loss().mean / shared,
                1.0,
            ));
        }
    }
    out
}

/// The verdict sentence: per depth, which references the trained model matches.
pub fn verdict(r: &Results, checks: &[Check]) -> String {
    let parts: Vec<String> = r
        .depths
        .iter()
        .map(|d| {
            let matched: Vec<&str> =
                d.references.iter().filter(|x| x.matched).map(|x| x.params.name.as_str()).collect();
            let best = d
                .references
                .iter()
                .min_by(|a, b| a.vs_trained.preds_diff.mean.total_cmp(&b.vs_trained.preds_diff.mean))
                .map_or("-", |x| x.params.name.as_str());
            let unsettled = d.timing.convergence.unsettled().map_or(String::new(), |u| format!("; {u}"));
            format!(
                "K = {}: trained {:.4}, {}; closest by preds diff: {best}{unsettled}",
                d.layers,
                d.trained_loss().mean,
                if matched.is_empty() {
                    "matches no reference".to_string()
                } else {
                    format!("matches {}", matched.join(" and "))
                }
            )
        })
        .collect();
    naming_failures(parts.join("; "), checks)
}
pub(super) fn write_files(run: &mut Run<'_>, r: &Results) -> Result<(), HarnessError> {
    let mut csv = Table::new(
        "csv",
        &["layers", "model", "loss", "loss_ci95", "preds_diff", "model_cos", "model_diff", "attribution_cos"],
    );
    let mut readout = Table::new("readout", &["layers", "model", "after_layer", "loss"]);
    let mut curves = Table::new("curves", &["layers", "step", "batch_loss", "probe_loss"]);
    for d in &r.depths {
        let t = d.trained_loss();
        csv.row(cells![d.layers, "trained", t.mean, t.ci95, "", "", "", ""]);
        for x in &d.references {
            let c = &x.vs_trained;
            csv.row(cells![
                d.layers,
                x.params.name,
                c.loss_b.mean,
                c.loss_b.ci95,
                c.preds_diff.mean,
                c.model_cos.mean,
                c.model_diff.mean,
                x.attribution_cos.mean
            ]);
        }
        for (i, s) in d.readout.iter().enumerate() {
            readout.row(cells![d.layers, "trained", i + 1, s.mean]);
        }
        for x in &d.references {
            for (i, s) in x.readout.iter().enumerate() {
                readout.row(cells![d.layers, x.params.name, i + 1, s.mean]);
            }
        }
        for (step, b, p) in &d.curve {
            curves.row(cells![d.layers, step, b, p]);
        }
    }
    run.csv("depths.csv", &csv)?;
    run.csv("readout.csv", &readout)?;
    run.csv("curves.csv", &curves)?;
    let by_k = |f: &dyn Fn(&TrainedDepth) -> f64| r.depths.iter().map(|d| (d.layers as f64, f(d))).collect::<Vec<_>>();
    let reference = |i: usize| by_k(&|d| d.references.get(i).map_or(f64::NAN, |x| x.vs_trained.loss_b.mean));
    let mut losses = Panel::new("Held-out loss by depth", "layers / steps K", "loss")
        .with(Series::line("trained", by_k(&|d| d.trained_loss().mean)).with_markers())
        .with(Series::dashed("GD, shared rate", reference(0)).with_markers())
        .with(Series::dashed("GD, rate per step", reference(1)).with_markers())
        .with(Series::dashed("GD++", reference(2)).with_markers());
    losses =
        losses.with(Series::points("authors: GD", AUTHORS.iter().map(|a| (a.0 as f64, (a.1 + a.2) / 2.0)).collect()));
    losses = losses
        .with(Series::points("authors: GD++", AUTHORS.iter().filter_map(|a| a.3.map(|v| (a.0 as f64, v))).collect()));
    let mut readout_panel = Panel::new("Loss after each layer / step", "layer", "loss").log_y();
    for d in &r.depths {
        let pts = |v: &[Stat]| v.iter().enumerate().map(|(i, s)| ((i + 1) as f64, s.mean)).collect::<Vec<_>>();
        readout_panel =
            readout_panel.with(Series::line(format!("trained, K = {}", d.layers), pts(&d.readout)).with_markers());
        if let Some(pp) = d.references.get(2) {
            readout_panel = readout_panel.with(Series::dashed(format!("GD++, K = {}", d.layers), pts(&pp.readout)));
        }
    }
    let mut training = Panel::new("Training (probe loss)", "training step", "loss").log_y();
    for d in &r.depths {
        training = training
            .with(Series::line(format!("K = {}", d.layers), d.curve.iter().map(|c| (c.0 as f64, c.2)).collect()));
    }
    run.plot(
        "multi-layer.png",
        "Deep models: held-out loss by depth against the fitted GD references, the loss after each layer, and training",
        &[losses, readout_panel, training],
    );
    Ok(())
}
