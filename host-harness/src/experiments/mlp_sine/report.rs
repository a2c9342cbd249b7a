//! The report of `reproduce mlp-sine`: the results per seed and their tables, the checks, the verdict and the
//! files.

use super::{run_seed, SineNet};
use crate::cells;
use crate::experiments::Run;
use crate::fit::train::TrainTiming;
use crate::judge::stats::Stat;
use crate::judge::verdict::matches;
use crate::net::{FixedForward, Workspace};
use crate::output::plot::{Panel, Series};
use crate::output::report::{naming_failures, Check, Table, Tables};
use crate::tasks::{stream_rng, streams, TaskSampler};
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// The trained model against one tuned GD step on the same features, on the held-out tasks.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct VsGd {
    /// Held-out loss of the trained model.
    pub loss: Stat,
    /// Held-out loss of the same features + one tuned GD step.
    pub gd_loss: Stat,
    /// `|y_hat - y_hat_GD|`.
    pub preds_diff: Stat,
    /// The reference's Model cos with a scalar query: `sign(s * s_GD)` (1 agree, -1 disagree, 0 where one is 0).
    pub sign_agreement: Stat,
    /// Cosine of the sensitivity vectors over the grid of query points (same context).
    pub grid_cos: Stat,
    /// `|f - f_GD| / |f_GD|` of the prediction vectors over the grid.
    pub grid_diff: Stat,
}

impl VsGd {
    /// The six figures, in the order of the fields.
    pub fn figures(&self) -> [Stat; 6] {
        [self.loss, self.gd_loss, self.preds_diff, self.sign_agreement, self.grid_cos, self.grid_diff]
    }

    /// From the six figures in that order.
    pub fn from_figures([loss, gd_loss, preds_diff, sign_agreement, grid_cos, grid_diff]: [Stat; 6]) -> Self {
        Self { loss, gd_loss, preds_diff, sign_agreement, grid_cos, grid_diff }
    }
}

/// The closest GD step to a trained head (the core's reader).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReadGd {
    /// Its rate.
    pub eta: f64,
    /// The norm of its `W0`.
    pub w0_norm: f64,
    /// The relative residual over the blocks that reach the prediction (0: the head is exactly a GD step).
    pub residual: f64,
}

/// One seed's model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    /// The training seed.
    pub seed: u64,
    /// Against GD on its features.
    #[serde(flatten)]
    pub vs_gd: VsGd,
    /// GD's tuned rate on the features.
    pub gd_eta: f64,
    /// The closest GD step to the trained head.
    pub read: ReadGd,
    /// Held-out loss of that closest GD step (from its `W0`, at its rate) on the same features.
    pub read_loss: Stat,
    /// Training time.
    pub timing: TrainTiming,
    /// `(step, batch loss, probe loss)` during training.
    pub curve: Vec<(u64, f64, f64)>,
}

/// What `reproduce mlp-sine` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The task distribution in words.
    pub distribution: String,
    /// Feature width.
    pub features: usize,
    /// Hidden width of the feature map.
    pub hidden: usize,
    /// Every seed.
    pub seeds: Vec<SeedResult>,
    /// Every figure over seeds.
    pub over_seeds: VsGd,
    /// Loss of predicting 0.
    pub zero: Stat,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut main = Table::new(
            format!(
                "trained feature map ({} features, hidden {}) + LSA against the same features + one tuned GD step; {}",
                self.features, self.hidden, self.distribution
            ),
            &[
                "seed",
                "loss",
                "GD loss",
                "GD rate",
                "preds diff",
                "sign agreement",
                "grid sensitivity cos",
                "grid rel. diff",
            ],
        );
        for r in &self.seeds {
            main.row(vec![
                r.seed.to_string(),
                r.vs_gd.loss.show(),
                r.vs_gd.gd_loss.show(),
                format!("{:.3}", r.gd_eta),
                r.vs_gd.preds_diff.show(),
                r.vs_gd.sign_agreement.show(),
                r.vs_gd.grid_cos.show(),
                r.vs_gd.grid_diff.show(),
            ]);
        }
        let o = &self.over_seeds;
        main.row(vec![
            "all".into(),
            o.loss.show(),
            o.gd_loss.show(),
            "-".into(),
            o.preds_diff.show(),
            o.sign_agreement.show(),
            o.grid_cos.show(),
            o.grid_diff.show(),
        ]);
        let mut read = Table::new(
            "the trained head read back as the closest GD step on its features (rate, |W0|, functional residual), and \
             that step's loss",
            &["seed", "rate", "|W0|", "functional residual", "loss of that step"],
        );
        for r in &self.seeds {
            read.row(vec![
                r.seed.to_string(),
                format!("{:.3}", r.read.eta),
                format!("{:.3}", r.read.w0_norm),
                format!("{:.3}", r.read.residual),
                r.read_loss.show(),
            ]);
        }
        let mut time = Table::new("training", &["seed", "ms/step"]);
        for r in &self.seeds {
            time.row(vec![r.seed.to_string(), format!("{:.2}", r.timing.ms_per_step)]);
        }
        let mut base = Table::new("baseline", &["model", "loss"]);
        base.row(vec!["predict 0".into(), self.zero.show()]);
        vec![main, read, time, base]
    }
}

/// Sound when every seed learned (loss at most 0.5 of predicting 0) and GD on the features helps (its loss below
/// predicting 0).
pub fn checks(r: &Results) -> Vec<Check> {
    let worst = r.seeds.iter().map(|x| x.vs_gd.loss.mean).fold(f64::NAN, f64::max);
    let worst_gd = r.seeds.iter().map(|x| x.vs_gd.gd_loss.mean).fold(f64::NAN, f64::max);
    vec![
        Check::at_most("learns", "worst seed: loss / loss of predicting 0", worst / r.zero.mean, 0.5),
        Check::at_most(
            "gd_helps",
            "worst seed: GD on the features, loss / loss of predicting 0",
            worst_gd / r.zero.mean,
            1.0,
        ),
    ]
}

/// Whether the trained layer matches GD on its own features ([`matches`](fn@matches): loss within 3%, here the grid sensitivity
/// cosine's lower bound at least 0.99), with the figures.
pub fn verdict(r: &Results, checks: &[Check]) -> String {
    let o = &r.over_seeds;
    let gap = (o.loss.mean - o.gd_loss.mean) / o.gd_loss.mean;
    let head = if matches(o.loss.mean, o.gd_loss.mean, o.grid_cos.lo()) {
        "matches one GD step on its own features"
    } else {
        "DOES NOT MATCH one GD step on its own features"
    };
    let sentence = format!(
        "{head}: loss {:.4} against {:.4} ({:+.1}%), preds diff {:.4}, sensitivity cosine over the grid {:.4} (the \
         scalar Model cos is a sign agreement: {:.4})",
        o.loss.mean,
        o.gd_loss.mean,
        100.0 * gap,
        o.preds_diff.mean,
        o.grid_cos.mean,
        o.sign_agreement.mean
    );
    naming_failures(sentence, checks)
}

pub(super) fn write_files(
    run: &mut Run<'_>,
    r: &Results,
    first: &SineNet,
    sampler: &TaskSampler,
    gd: &SineNet,
) -> Result<(), HarnessError> {
    let mut curves = Table::new("curves", &["seed", "step", "batch_loss", "probe_loss"]);
    for sr in &r.seeds {
        for (step, b, p) in &sr.curve {
            curves.row(cells![sr.seed, step, b, p]);
        }
    }
    run.csv("curves.csv", &curves)?;
    let mut training = Panel::new("Training (probe loss)", "training step", "loss").log_y();
    for sr in &r.seeds {
        training = training
            .with(Series::line(format!("seed {}", sr.seed), sr.curve.iter().map(|c| (c.0 as f64, c.2)).collect()));
    }
    // One held-out task: the truth is unknown to the plot, so it shows the context and both predictors.
    let mut rng = stream_rng(run_seed(r), streams::EVAL);
    let mut ctx = vec![[0.0f32; 2]; sampler.n];
    sampler.sample(&mut rng, &mut ctx);
    let xs: Vec<f32> = (0..101).map(|k| -5.0 + 0.1 * k as f32).collect();
    let mut ws = Workspace::default();
    let curve = |net: &SineNet, ws: &mut Workspace<2>| -> Vec<(f64, f64)> {
        xs.iter()
            .map(|&x| (f64::from(x), f64::from(FixedForward::<2>::predict(net, &ctx, &[x, 0.0], ws, None))))
            .collect()
    };
    let function = Panel::new("One held-out task", "x", "prediction")
        .with(Series::line("trained (first seed)", curve(first, &mut ws)))
        .with(Series::dashed("its features + one GD step", curve(gd, &mut ws)))
        .with(Series::points("context", ctx.iter().map(|t| (f64::from(t[0]), f64::from(t[1]))).collect()));
    run.plot("mlp-sine.png", "Sine regression in context: training, and one task's predictions", &[training, function]);
    Ok(())
}
