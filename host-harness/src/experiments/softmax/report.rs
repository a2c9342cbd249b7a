//! The report of `reproduce softmax`: the results by depth and their tables, the checks, the verdict and the
//! files.

use crate::cells;
use crate::experiments::Run;
use crate::fit::train::{TrainSpec, TrainTiming};
use crate::judge::assess::Assessment;
use crate::judge::stats::Stat;
use crate::output::plot::{Panel, Series};
use crate::output::report::{naming_failures, Check, Table, Tables};
use crate::probes::relaxation::LayerRelaxation;
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// A trained model against one reference (over seeds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Against {
    /// The reference.
    pub reference: String,
    /// Its loss on the held-out tasks.
    pub loss: Stat,
    /// Preds diff, over seeds and tasks.
    pub preds_diff: Stat,
    /// Model cos of the sensitivities, over seeds and tasks.
    pub model_cos: Stat,
    /// Cosine over demonstrations of the attributions (both by leaving one demonstration out), over seeds and tasks.
    #[serde(default = "Stat::missing")]
    pub attribution_cos: Stat,
}

/// One depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SoftmaxDepth {
    /// K.
    pub layers: usize,
    /// The training run of the first seed (the others differ in the seed only).
    pub training: TrainSpec,
    /// Training time per seed.
    pub timing: Vec<TrainTiming>,
    /// Held-out loss over seeds and tasks.
    pub loss: Stat,
    /// Held-out loss per seed.
    pub loss_per_seed: Vec<Stat>,
    /// Loss after each layer (first seed).
    pub readout: Vec<Stat>,
    /// One layer: the verdict rules' assessment against every one-layer alternative.
    pub assessment: Option<Assessment>,
    /// The references of this depth with the model's agreement (one layer: the trained LSA layer too).
    pub against: Vec<Against>,
    /// Dai's relaxation per layer (first seed).
    pub relaxation: Vec<LayerRelaxation>,
    /// `(step, batch loss, probe loss)` during training (first seed).
    pub curve: Vec<(u64, f64, f64)>,
}

/// What `reproduce softmax` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The task distribution in words.
    pub distribution: String,
    /// Heads per layer.
    pub heads: usize,
    /// The training seeds.
    pub seeds: Vec<u64>,
    /// Every depth.
    pub depths: Vec<SoftmaxDepth>,
    /// Loss of predicting zero.
    pub zero: Stat,
    /// Loss of least squares on the context.
    pub ols: Stat,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut models = Table::new(
            format!(
                "softmax attention ({} heads per layer) against the references: held-out loss (95% CI over seeds and \
                 tasks), preds diff, model cos, attribution cos",
                self.heads
            ),
            &["K", "model", "loss", "preds diff", "model cos", "attribution cos"],
        );
        for d in &self.depths {
            let dash = || "-".to_string();
            models.row(vec![d.layers.to_string(), "softmax (trained)".into(), d.loss.show(), dash(), dash(), dash()]);
            for a in &d.against {
                models.row(vec![
                    d.layers.to_string(),
                    a.reference.clone(),
                    a.loss.show(),
                    a.preds_diff.show(),
                    a.model_cos.show(),
                    a.attribution_cos.show(),
                ]);
            }
        }
        let mut dai = Table::new(
            "Dai's relaxation at the query, per layer (first seed): cos(change, dW_ICL q), residual after the best \
             scalar fit; the normalised expansion's error; the logit scale in use",
            &["K", "layer", "cosine", "residual", "normalised expansion error", "logit std", "skipped"],
        );
        for d in &self.depths {
            for r in &d.relaxation {
                dai.row(vec![
                    d.layers.to_string(),
                    r.layer.to_string(),
                    r.cosine.show(),
                    r.residual.show(),
                    r.normalised_error.show(),
                    format!("{:.3}", r.logit_std.mean),
                    r.skipped.to_string(),
                ]);
            }
        }
        let mut time = Table::new("training", &["K", "steps x batch", "lr", "grad clip", "ms/step (per seed)"]);
        for d in &self.depths {
            let ms: Vec<String> = d.timing.iter().map(|t| format!("{:.2}", t.ms_per_step)).collect();
            time.row(vec![
                d.layers.to_string(),
                format!("{} x {}", d.training.steps, d.training.batch),
                format!("{}", d.training.adam.lr),
                format!("{}", d.training.clip),
                ms.join(", "),
            ]);
        }
        let mut base = Table::new("baselines on the same held-out tasks", &["model", "loss"]);
        base.row(vec!["predict 0".into(), self.zero.show()]);
        base.row(vec!["least squares on the context".into(), self.ols.show()]);
        vec![models, dai, time, base]
    }
}

/// The experiment is sound when every model learned (held-out loss at most 80% of predicting zero) and Dai's
/// relaxation was measured on most head-task pairs (at most 1% skipped). Whether softmax attention implements GD is
/// the ruling in the verdict, not a check.
pub fn checks(r: &Results) -> Vec<Check> {
    let mut out = Vec::new();
    for d in &r.depths {
        out.push(Check::at_most(
            &format!("k{}_learns", d.layers),
            &format!("K = {}: held-out loss / loss of predicting 0", d.layers),
            d.loss.mean / r.zero.mean,
            0.8,
        ));
        let pairs: usize = d.relaxation.iter().map(|x| x.cosine.n + x.skipped).sum();
        let skipped: usize = d.relaxation.iter().map(|x| x.skipped).sum();
        out.push(Check::at_most(
            &format!("k{}_relaxation_measured", d.layers),
            &format!("K = {}: fraction of head-task pairs without a relaxation measurement", d.layers),
            skipped as f64 / pairs.max(1) as f64,
            0.01,
        ));
    }
    out
}

/// The verdict: the one-layer ruling, the closest reference of every deeper model, Dai's cosine per depth.
pub fn verdict(r: &Results, checks: &[Check]) -> String {
    let parts: Vec<String> = r
        .depths
        .iter()
        .map(|d| {
            let dai: Vec<String> = d.relaxation.iter().map(|x| format!("{:.2}", x.cosine.mean)).collect();
            let dai = format!("Dai's cosine per layer {}", dai.join(", "));
            match &d.assessment {
                Some(a) => format!("K = 1: {} ({dai})", a.ruling.sentence),
                None => {
                    let closest = d
                        .against
                        .iter()
                        .min_by(|a, b| a.preds_diff.mean.total_cmp(&b.preds_diff.mean))
                        .map_or("-".to_string(), |a| format!("{} (preds diff {:.4})", a.reference, a.preds_diff.mean));
                    format!("K = {}: loss {:.4}, closest reference {closest} ({dai})", d.layers, d.loss.mean)
                }
            }
        })
        .collect();
    naming_failures(parts.join("; "), checks)
}
pub(super) fn write_files(run: &mut Run<'_>, r: &Results) -> Result<(), HarnessError> {
    let mut csv = Table::new("csv", &["layers", "model", "loss", "loss_ci95", "preds_diff", "model_cos"]);
    let mut relax = Table::new("relax", &["layers", "layer", "cosine", "cosine_ci95", "residual", "normalised_error", "logit_std", "skipped"]);
    let mut curves = Table::new("curves", &["layers", "step", "batch_loss", "probe_loss"]);
    for d in &r.depths {
        csv.row(cells![d.layers, "softmax", d.loss.mean, d.loss.ci95, "", ""]);
        for a in &d.against {
            csv.row(cells![d.layers, a.reference, a.loss.mean, a.loss.ci95, a.preds_diff.mean, a.model_cos.mean]);
        }
        for x in &d.relaxation {
            relax.row(cells![d.layers, x.layer, x.cosine.mean, x.cosine.ci95, x.residual.mean, x.normalised_error.mean, x.logit_std.mean, x.skipped]);
        }
        for (step, b, p) in &d.curve {
            curves.row(cells![d.layers, step, b, p]);
        }
    }
    run.csv("models.csv", &csv)?;
    run.csv("relaxation.csv", &relax)?;
    run.csv("curves.csv", &curves)?;
    let mut training = Panel::new("Training (probe loss)", "training step", "loss").log_y();
    for d in &r.depths {
        training = training.with(Series::line(
            format!("softmax, K = {}", d.layers),
            d.curve.iter().map(|c| (c.0 as f64, c.2)).collect(),
        ));
        if let Some(gd) = d.against.first() {
            let last = d.curve.last().map_or(1.0, |c| c.0 as f64);
            training = training.with(Series::dashed(
                format!("{}, K = {}", gd.reference, d.layers),
                vec![(0.0, gd.loss.mean), (last, gd.loss.mean)],
            ));
        }
    }
    let mut dai = Panel::new("Dai's relaxation: cos(change, dW_ICL q) per layer", "layer", "cosine");
    for d in &r.depths {
        let pts = d.relaxation.iter().map(|x| (x.layer as f64, x.cosine.mean)).collect();
        dai = dai.with(Series::line(format!("K = {}", d.layers), pts).with_markers());
    }
    run.plot(
        "softmax.png",
        "Softmax attention: training against the GD references, and Dai's relaxation",
        &[training, dai],
    );
    Ok(())
}
