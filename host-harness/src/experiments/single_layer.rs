//! `dualform reproduce single-layer`: train one LSA layer on in-context regression and verify it against one step
//! of gradient descent, with the baselines needed to read the match (predict zero, least squares, a second seed).
//!
//! Files: `report.json`, `curves.csv` (every `--log-every` steps on the probe tasks), `curves.png`,
//! `weights.safetensors` (the trained layer), `gd_weights.safetensors` (the GD construction).

use super::trained::{trained_layer, CurvePoint, LayerSpec, TrainedLayer};
use super::{Experiment, Outcome, Run};
use crate::eval::{compare, gd_net, ols_loss, tune_gd_rate, zero_loss, Comparison};
use crate::model::{save, Lsa, LsaHead, Model};
use crate::plot::{Panel, Series};
use crate::report::{fmt_num, Check, Table, Tables};
use crate::settings::{Common, CurveArgs, EvalArgs, TaskArgs, TrainArgs};
use crate::stats::Stat;
use crate::tasks::{streams, ClosedForm, TaskSampler};
use crate::train::{TrainSpec, TrainTiming};
use crate::HarnessError;
use dualform::GdFit;
use serde::{Deserialize, Serialize};

/// The experiment.
pub struct SingleLayer;

/// Settings of `reproduce single-layer` (the reference setting by default).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub task: TaskArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Skip the second model (seed + 1) used for seed-to-seed agreement.
    #[arg(long)]
    pub no_second_seed: bool,
    #[command(flatten)]
    pub curves: CurveArgs,
}

impl super::Settings for Settings {
    const QUICK: &'static [(&'static str, &'static str)] =
        &[("steps", "600"), ("eval_tasks", "2000"), ("probe_tasks", "512"), ("log_every", "50")];

    fn common(&self) -> &Common {
        &self.common
    }

    fn d(&self) -> usize {
        self.task.d
    }

    fn validate(&self) -> Result<(), HarnessError> {
        self.task.validate()?;
        self.train.validate()?;
        self.eval.validate()?;
        self.curves.validate()?;
        Ok(())
    }
}

/// The closest GD step to the trained weights ([`dualform::read_gd`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FamilyFit {
    /// Rate of the closest GD step.
    pub eta: f64,
    /// Scale taken out of `W_K^T W_Q`.
    pub scale: f64,
    /// Relative Frobenius residual of the merged weights against the construction.
    pub residual: f64,
    /// The closest `W0`.
    pub w0: Vec<f64>,
}

impl<const D: usize> From<&GdFit<f32, D, 1>> for FamilyFit {
    fn from(f: &GdFit<f32, D, 1>) -> Self {
        Self {
            eta: f.eta as f64,
            scale: f.scale as f64,
            residual: f.residual as f64,
            w0: f.w0.iter().map(|v| *v as f64).collect(),
        }
    }
}

/// A second model from seed + 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedToSeed {
    /// Its seed.
    pub second_seed: u64,
    /// The first model against the second.
    pub vs_first: Comparison,
    /// The second model against GD.
    pub second_vs_gd: Comparison,
}

/// What `reproduce single-layer` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Closed-form optimum of one GD step on this distribution.
    pub closed_form: ClosedForm,
    /// Rate of the tuned GD step (exact, on separate tuning tasks).
    pub gd_eta: f64,
    /// The trained layer against the tuned GD step on the held-out tasks (losses, preds diff, model cos/diff).
    pub vs_gd: Comparison,
    /// Loss of predicting zero.
    pub zero: Stat,
    /// Loss of least squares on each task's context.
    pub ols: Stat,
    /// The closest GD step to the weights.
    pub gd_family: FamilyFit,
    /// Seed-to-seed agreement (unless `--no-second-seed`).
    pub seed_to_seed: Option<SeedToSeed>,
    /// The optimiser and budget the model was trained with.
    pub training: TrainSpec,
    /// Training time.
    pub timing: TrainTiming,
    /// The training curves.
    pub curves: Vec<CurvePoint>,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            format!("single-layer LSA against one tuned GD step, {} held-out tasks (95% CI)", self.vs_gd.loss_a.n),
            &["quantity", "value", "note"],
        );
        let c = &self.vs_gd;
        t.row(vec!["loss, trained LSA".into(), c.loss_a.show(), String::new()]);
        t.row(vec![
            "loss, one GD step (tuned)".into(),
            c.loss_b.show(),
            format!(
                "eta = {:.3}; closed form {:.4} at eta = {:.3}",
                self.gd_eta, self.closed_form.loss, self.closed_form.eta
            ),
        ]);
        t.row(vec!["loss, predict 0".into(), self.zero.show(), String::new()]);
        t.row(vec!["loss, least squares on the context".into(), self.ols.show(), String::new()]);
        t.row(vec!["preds diff (trained vs GD)".into(), c.preds_diff.show(), String::new()]);
        t.row(vec!["model cos (trained vs GD)".into(), c.model_cos.show(), String::new()]);
        t.row(vec!["model diff (trained vs GD)".into(), c.model_diff.show(), String::new()]);
        t.row(vec![
            "GD-family residual of the weights".into(),
            fmt_num(self.gd_family.residual),
            format!("closest eta {:.3}", self.gd_family.eta),
        ]);
        if let Some(s) = &self.seed_to_seed {
            t.row(vec![
                "model cos (seed vs seed + 1)".into(),
                s.vs_first.model_cos.show(),
                format!("second model vs GD: {:.4}", s.second_vs_gd.model_cos.mean),
            ]);
        }
        t.row(vec![
            "training".into(),
            format!("{:.1} s", self.timing.step_seconds),
            format!(
                "{:.3} ms/step, {} steps x {} tasks",
                self.timing.ms_per_step, self.training.steps, self.training.batch
            ),
        ]);
        vec![t]
    }
}

/// The verdict's criteria: the loss within 3% of GD's, the lower 95% bound of model cos at least 0.99, the weights
/// within 0.1 of the GD family.
pub fn checks(r: &Results) -> Vec<Check> {
    let c = &r.vs_gd;
    let rel = (c.loss_a.mean - c.loss_b.mean) / c.loss_b.mean;
    vec![
        Check::at_most("loss_vs_gd", "|loss - GD loss| / GD loss", rel.abs(), 0.03),
        Check::at_least("model_cos_lower", "model cos vs GD, lower 95% bound", c.model_cos.lo(), 0.99),
        Check::at_most("gd_family_residual", "GD-family residual of the weights", r.gd_family.residual, 0.1),
    ]
}

/// The verdict sentence from the checks.
pub fn verdict(checks: &[Check]) -> String {
    let failed: Vec<String> = checks.iter().filter(|c| !c.passed).map(Check::line).collect();
    if failed.is_empty() {
        format!("MATCHES one step of GD: {}", checks.iter().map(Check::line).collect::<Vec<_>>().join("; "))
    } else {
        format!("DOES NOT match one step of GD: {}", failed.join("; "))
    }
}

impl Settings {
    /// How this run trains its layer.
    pub fn layer_spec(&self) -> LayerSpec<'_> {
        LayerSpec::of(&self.common, &self.task, &self.train, &self.eval, &self.curves)
    }
}

fn write_files<const D: usize, const E: usize>(
    s: &Settings,
    run: &mut Run<'_>,
    model: &Lsa<E>,
    gd_eta: f64,
    r: &Results,
) -> Result<(), HarnessError> {
    let mut csv = String::from("step,train_loss,probe_loss,gd_probe_loss,model_cos,preds_diff\n");
    for p in &r.curves {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            p.step, p.train_loss, p.probe_loss, p.gd_probe_loss, p.model_cos, p.preds_diff
        ));
    }
    crate::output::write(&run.file("curves.csv"), &csv)?;
    let meta = |what: String| {
        vec![
            ("d", s.task.d.to_string()),
            ("n", s.task.n.to_string()),
            ("input_range", s.task.input_range.to_string()),
            ("model", what),
        ]
    };
    save(model, &meta(format!("trained single-layer LSA, seed {}", s.common.seed)), &run.file("weights.safetensors"))?;
    let gd_layer = dualform::gd_layer::<f32, D, 1, E>(&nalgebra::SMatrix::zeros(), gd_eta as f32, s.task.n)?;
    let gd: LsaHead<E> = gd_layer.heads[0].clone();
    save(
        &Lsa::single(gd),
        &meta(format!("one GD step from W0 = 0, eta = {gd_eta}")),
        &run.file("gd_weights.safetensors"),
    )?;
    let steps = |f: fn(&CurvePoint) -> f64| r.curves.iter().map(|p| (p.step as f64, f(p))).collect::<Vec<_>>();
    let zero = r.closed_form.zero_loss;
    let last = r.curves.last().map_or(1.0, |p| p.step as f64);
    run.plot(
        "curves.png",
        "Training: loss of the trained layer and of one tuned GD step, model cos and preds diff against GD on the probe tasks",
        &[
            Panel::new("Loss", "training step", "loss")
                .with(Series::line("trained LSA", steps(|p| p.probe_loss)))
                .with(Series::dashed("one step of GD", steps(|p| p.gd_probe_loss)))
                .with(Series::dashed("predict 0", vec![(0.0, zero), (last, zero)])),
            Panel::new("Model cos (trained vs GD)", "training step", "cosine").with(Series::line("model cos", steps(|p| p.model_cos))),
            Panel::new("Preds diff (trained vs GD)", "training step", "|y_hat - y_hat_GD|")
                .with(Series::line("preds diff", steps(|p| p.preds_diff))),
        ],
    );
    Ok(())
}

impl Experiment for SingleLayer {
    const NAME: &'static str = "single-layer";
    const ABOUT: &'static str = "One LSA layer trained on in-context regression, against one tuned step of GD";
    type Settings = Settings;
    type Results = Results;

    fn run_d<const D: usize, const E: usize>(
        s: &Settings,
        run: &mut Run<'_>,
    ) -> Result<Outcome<Results>, HarnessError> {
        let sampler: TaskSampler = s.task.sampler();
        let closed = ClosedForm::new(s.task.d, s.task.n, s.task.input_range);
        let gd_eta = tune_gd_rate::<D, E>(&sampler, s.common.eval_seed, streams::TUNE, s.eval.eval_tasks)?;
        let gd = gd_net::<D, E>(gd_eta as f32, s.task.n)?;
        let TrainedLayer { model, training, timing, curves } =
            trained_layer::<D, E>(run, s.layer_spec(), s.common.seed)?;
        let (net, smp, seed, stream, count) =
            (model.net(), &sampler, s.common.eval_seed, streams::EVAL, s.eval.eval_tasks);
        let vs_gd = compare(net, &gd, smp, seed, stream, count);
        let fit = dualform::read_gd::<f32, E, E, E, D, 1>(&model.layers()[0], s.task.n)?;
        let seed_to_seed = if s.no_second_seed {
            None
        } else {
            let second = s.common.seed.wrapping_add(1);
            let m2 = trained_layer::<D, E>(run, s.layer_spec(), second)?.model;
            Some(SeedToSeed {
                second_seed: second,
                vs_first: compare(net, m2.net(), smp, seed, stream, count),
                second_vs_gd: compare(m2.net(), &gd, smp, seed, stream, count),
            })
        };
        let results = Results {
            closed_form: closed,
            gd_eta,
            vs_gd,
            zero: zero_loss::<E>(smp, seed, stream, count),
            ols: ols_loss::<E>(smp, seed, stream, count),
            gd_family: FamilyFit::from(&fit),
            seed_to_seed,
            training,
            timing,
            curves,
        };
        write_files::<D, E>(s, run, &model, gd_eta, &results)?;
        let checks = checks(&results);
        let verdict = verdict(&checks);
        Ok(Outcome { results, checks, verdict })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::compare;

    /// The comparison must catch a wrong reference: the GD construction itself checked against GD with its rate
    /// doubled fails the loss criterion (model cos alone would not notice: the direction is the same).
    #[test]
    fn a_reference_with_the_rate_off_by_two_is_detected() {
        let sampler = TaskSampler::new(10, 10, 1.0);
        let eta = tune_gd_rate::<10, 11>(&sampler, 3, streams::TUNE, 4000).unwrap();
        let model = gd_net::<10, 11>(eta as f32, 10).unwrap();
        let layer = dualform::gd_layer::<f32, 10, 1, 11>(&nalgebra::SMatrix::zeros(), eta as f32, 10).unwrap();
        let fit = FamilyFit::from(&dualform::read_gd::<f32, 11, 11, 11, 10, 1>(&layer.heads[0], 10).unwrap());
        let results_against = |reference_eta: f64| {
            let reference = gd_net::<10, 11>(reference_eta as f32, 10).unwrap();
            Results {
                closed_form: ClosedForm::new(10, 10, 1.0),
                gd_eta: reference_eta,
                vs_gd: compare(&model, &reference, &sampler, 3, streams::EVAL, 2000),
                zero: Stat { mean: 0.4, ci95: 0.0, n: 1 },
                ols: Stat { mean: 0.0, ci95: 0.0, n: 1 },
                gd_family: fit.clone(),
                seed_to_seed: None,
                training: TrainArgs { steps: 1, batch: 1, lr: None, clip: None }.spec(1, 0),
                timing: TrainTiming::default(),
                curves: vec![],
            }
        };
        let right = checks(&results_against(eta));
        assert!(right.iter().all(|c| c.passed), "{right:?}");
        let wrong = results_against(2.0 * eta);
        let c = checks(&wrong);
        assert!(!c[0].passed, "the loss criterion must fail: {c:?}");
        assert!(c[1].passed, "model cos is blind to the rate: {c:?}");
        assert!(wrong.vs_gd.preds_diff.mean > 0.3, "preds diff sees it: {:?}", wrong.vs_gd.preds_diff);
        assert!(verdict(&c).starts_with("DOES NOT"));
    }
}
