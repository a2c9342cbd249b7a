//! `dualform reproduce single-layer`: train one LSA layer on in-context regression (one model per seed) and ask
//! which algorithm it implements: one step of GD, one step of preconditioned GD, or neither, by the written rules of
//! [`crate::judge::verdict`] against every alternative ([`crate::judge::assess`]: the class optimum, least squares, ridge, two GD
//! steps), with intervals over seeds and tasks. On the reference distribution (isotropic) GD is itself the optimum
//! of its class and the verdict says so; `--variance-ratio` (or `reproduce preconditioned`) gives tasks where it is
//! not.
//!
//! Files: `report.json`, `curves.csv` (first seed, every `--log-every` steps on the probe tasks), `curves.png`,
//! `weights.safetensors` (the first seed's trained layer), `gd_weights.safetensors` (the GD construction),
//! `optimum_weights.safetensors` (the fitted class optimum as an LSA layer).

use super::trained::{trained_layer, QUICK_LAYER, CurvePoint, LayerSpec, TrainedLayer};
use super::{Experiment, Groups, QuickSet, Run};
use crate::cells;
use crate::experiments::settings::{in_range, Shared, TaskArgs};
use crate::fit::train::{TrainSpec, TrainTiming};
use crate::judge::assess::{assess, Assessment, Held, ReferenceSummary, References};
use crate::judge::baselines::Predictor;
use crate::judge::eval::{evaluate, Agreement, Comparison, Metric, OlsLoss, ZeroLoss};
use crate::judge::stats::Stat;
use crate::model::{save, Lsa, LsaHead, Model};
use crate::output::plot::{Panel, Series};
use crate::output::report::{fmt_num, Check, Table, Tables};
use crate::tasks::{streams, ClosedForm, TaskSampler};
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// The experiment.
pub struct SingleLayer;

/// Settings of `reproduce single-layer` (the reference setting by default).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub shared: Shared,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Models trained from seeds seed, seed + 1, ...: intervals over seeds and seed-to-seed agreement (at least 3
    /// for a verdict over seeds; 1 skips both).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub seeds: usize,
}

impl super::Settings for Settings {
    const QUICK: &'static [QuickSet] = &[QUICK_LAYER, &[("seeds", "2")]];

    fn groups(&self) -> Groups<'_> {
        Groups::with_task(&self.shared, &self.task)
    }

    fn check(&self) -> Result<(), HarnessError> {
        in_range("--seeds", self.seeds, 1..=64)?;
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
    /// The residual over the blocks that reach the prediction.
    pub functional: f64,
    /// The norm of the blocks that never reach it (relative like the residual).
    pub dead: f64,
    /// The closest `W0`.
    pub w0: Vec<f64>,
}

impl FamilyFit {
    /// The closest GD step to `head` (`d` inputs, one target, contexts of `n` pairs), read in f32 from its merged
    /// matrices by the core's reader.
    pub fn of(head: &LsaHead, d: usize, n: usize) -> Result<Self, HarnessError> {
        let m = head.merged();
        let mut w0 = vec![0.0f32; d];
        let f = dualform::read_gd_slices(m.width(), d, &m.a, &m.b, n, &mut w0)?;
        Ok(Self {
            eta: f.eta as f64,
            scale: f.scale as f64,
            residual: f.residual as f64,
            functional: f.functional as f64,
            dead: f.dead as f64,
            w0: w0.iter().map(|v| *v as f64).collect(),
        })
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
    /// The task distribution in words.
    pub distribution: String,
    /// The training seeds.
    pub seeds: Vec<u64>,
    /// Closed-form optimum of one GD step and of one preconditioned step on this distribution (`None` with a
    /// non-zero input mean).
    pub closed_form: Option<ClosedForm>,
    /// Rate of the tuned GD step (exact, on separate tuning tasks).
    pub gd_eta: f64,
    /// The first seed's layer against the tuned GD step on the held-out tasks (losses, preds diff, model cos/diff).
    pub vs_gd: Comparison,
    /// Every model against every reference, with the rules' ruling.
    pub assessment: Assessment,
    /// The references' parameters.
    pub references: ReferenceSummary,
    /// Loss of predicting zero.
    pub zero: Stat,
    /// Loss of least squares on each task's context.
    pub ols: Stat,
    /// The closest GD step to the first seed's weights.
    pub gd_family: FamilyFit,
    /// Seed-to-seed agreement (the first two seeds, when `--seeds` is at least 2).
    pub seed_to_seed: Option<SeedToSeed>,
    /// The optimiser and budget the models were trained with.
    pub training: TrainSpec,
    /// The first seed's training time.
    pub timing: TrainTiming,
    /// The first seed's training curves.
    pub curves: Vec<CurvePoint>,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let a = &self.assessment;
        let mut t = Table::new(
            format!(
                "single-layer LSA ({} seeds) against every reference, {} held-out tasks, {} (95% intervals over \
                 seeds and tasks)",
                self.seeds.len(),
                self.vs_gd.loss_a.n,
                self.distribution
            ),
            &["model", "loss", "preds diff", "model cos", "model diff / |g_ref|", "attribution cos", "ref vs GD (preds diff)"],
        );
        let blank = || vec![String::new(); 5];
        t.row([vec!["trained LSA".into(), a.loss.show()], blank()].concat());
        for g in &a.agreements {
            t.row(vec![
                g.reference.clone(),
                g.loss.show(),
                g.preds_diff.show(),
                g.model_cos.show(),
                g.model_diff_rel.show(),
                g.attribution_cos.show(),
                fmt_num(g.ref_to_gd.mean),
            ]);
        }
        t.row([vec!["predict 0".into(), self.zero.show()], blank()].concat());
        let mut w = Table::new(
            "the weights against the GD family (functional: the blocks that reach the prediction)",
            &["weights", "functional residual", "dead blocks", "note"],
        );
        let seeds = |v: &[f64]| v.iter().map(|x| fmt_num(*x)).collect::<Vec<_>>().join(", ");
        w.row(vec![
            "trained, per seed".into(),
            seeds(&a.residual_per_seed),
            seeds(&a.dead_per_seed),
            format!("closest eta {:.3} (first seed)", self.gd_family.eta),
        ]);
        w.row(vec![
            "class optimum (fitted)".into(),
            fmt_num(self.references.optimum_residual),
            "0".into(),
            "yardstick: the best one-layer model".into(),
        ]);
        w.row(vec![
            "preconditioned GD".into(),
            fmt_num(self.references.preconditioned_residual),
            "0".into(),
            format!(
                "gamma {} .. {}",
                fmt_num(self.references.preconditioner.iter().cloned().fold(f64::INFINITY, f64::min)),
                fmt_num(self.references.preconditioner.iter().cloned().fold(0.0, f64::max))
            ),
        ]);
        let mut r = Table::new("training and reference details", &["quantity", "value", "note"]);
        r.row(vec![
            "GD rate".into(),
            format!("{:.3}", self.gd_eta),
            match &self.closed_form {
                Some(cf) => format!(
                    "closed form {:.3} (loss {:.4}); preconditioned loss {:.4}",
                    cf.eta, cf.loss, cf.preconditioned_loss
                ),
                None => "no closed form (non-zero input mean)".into(),
            },
        ]);
        r.row(vec!["least squares on the context".into(), self.ols.show(), String::new()]);
        if let Some(s) = &self.seed_to_seed {
            r.row(vec![
                "model cos (seed vs seed + 1)".into(),
                s.vs_first.model_cos.show(),
                format!(
                    "preds diff {:.4}; second model vs GD: cos {:.4}",
                    s.vs_first.preds_diff.mean, s.second_vs_gd.model_cos.mean
                ),
            ]);
        }
        r.row(vec![
            "training".into(),
            format!("{:.1} s", self.timing.step_seconds),
            format!(
                "{:.3} ms/step, {} steps x {} tasks per seed",
                self.timing.ms_per_step, self.training.steps, self.training.batch
            ),
        ]);
        vec![t, w, r]
    }
}

impl Settings {
    /// How this run trains its layer.
    pub fn layer_spec(&self) -> LayerSpec<'_> {
        LayerSpec::of(&self.shared.common, &self.task, &self.shared.train, &self.shared.eval, &self.shared.curves)
    }
}

fn write_files(
    s: &Settings,
    run: &mut Run<'_>,
    model: &Lsa,
    refs: &References,
    r: &Results,
) -> Result<(), HarnessError> {
    let gd_eta = refs.summary.gd_eta;
    let mut csv = Table::new("csv", &["step", "train_loss", "probe_loss", "gd_probe_loss", "model_cos", "preds_diff"]);
    for p in &r.curves {
        csv.row(cells![p.step, p.train_loss, p.probe_loss, p.gd_probe_loss, p.model_cos, p.preds_diff]);
    }
    run.csv("curves.csv", &csv)?;
    let meta = |what: String| {
        vec![
            ("d", s.task.d.to_string()),
            ("n", s.task.n.to_string()),
            ("input_range", s.task.input_range.to_string()),
            ("distribution", s.task.describe()),
            ("model", what),
        ]
    };
    save(model, &meta(format!("trained single-layer LSA, seed {}", s.shared.common.seed)), &run.file("weights.safetensors"))?;
    let gd = crate::judge::eval::gd_head(s.task.d, gd_eta as f32, s.task.n)?;
    save(
        &Lsa::single(gd)?,
        &meta(format!("one GD step from W0 = 0, eta = {gd_eta}")),
        &run.file("gd_weights.safetensors"),
    )?;
    save(
        &Lsa::single(LsaHead::from_merged(&refs.optimum().heads()[0]))?,
        &meta("the fitted one-layer class optimum (W_K = I, W_Q = M, P W_V = the y row)".into()),
        &run.file("optimum_weights.safetensors"),
    )?;
    let steps = |f: fn(&CurvePoint) -> f64| r.curves.iter().map(|p| (p.step as f64, f(p))).collect::<Vec<_>>();
    let zero = r.zero.mean;
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
    const ABOUT: &'static str =
        "One LSA layer trained on in-context regression: does it implement GD, preconditioned GD, or neither?";
    type Settings = Settings;
    type Results = Results;

    /// The rules' checks of the first seed's ruling, and (but in a quick run) at least three seeds: a verdict over
    /// seeds needs them.
    fn checks(s: &Settings, r: &Results) -> Vec<Check> {
        let mut checks = r.assessment.ruling.checks.clone();
        if !s.shared.common.quick {
            checks.push(Check::at_least("training_seeds", "training seeds", s.seeds as f64, 3.0));
        }
        checks
    }

    /// The ruling's sentence; a quick run with fewer than three seeds says that its intervals are not a verdict.
    fn verdict(s: &Settings, r: &Results, _: &[Check]) -> String {
        let mut verdict = r.assessment.ruling.sentence.clone();
        if s.shared.common.quick && s.seeds < 3 {
            verdict.push_str(&format!(" (quick run: {} seed(s), intervals are not a verdict)", s.seeds));
        }
        verdict
    }

    fn run(s: &Settings, run: &mut Run<'_>) -> Result<Results, HarnessError> {
        let sampler: TaskSampler = s.task.sampler();
        let refs = References::build(&sampler, s.shared.common.eval_seed, s.shared.eval.eval_tasks)?;
        let gd_eta = refs.summary.gd_eta;
        let seeds: Vec<u64> = (0..s.seeds as u64).map(|k| s.shared.common.seed.wrapping_add(k)).collect();
        let mut layers = Vec::with_capacity(seeds.len());
        for &seed in &seeds {
            layers.push(trained_layer(run, s.layer_spec(), seed)?);
        }
        let TrainedLayer { model, training, timing, curves } = layers[0].clone();
        let (smp, seed, stream, count) = (&sampler, s.shared.common.eval_seed, streams::EVAL, s.shared.eval.eval_tasks);
        let nets: Vec<&crate::net::Net> = layers.iter().map(|l| l.model.net()).collect();
        let assessment = assess(&nets, &refs, Held { sampler: smp, seed, count })?;
        // One pass over the held-out tasks: the first seed against GD (and the second seed), the second seed
        // against GD, the baselines.
        let gd = Predictor::Net(refs.gd());
        let mut first_refs = vec![gd];
        first_refs.extend(nets.get(1).map(|n| Predictor::Net(*n)));
        let first = Agreement { a: Predictor::Net(nets[0]), refs: first_refs };
        let second = nets.get(1).map(|n| Agreement { a: Predictor::Net(*n), refs: vec![gd] });
        let ols = OlsLoss(s.task.d);
        let mut metrics: Vec<&dyn Metric> = vec![&first, &ZeroLoss, &ols];
        metrics.extend(second.as_ref().map(|m| m as &dyn Metric));
        let stats = evaluate(&metrics, smp, seed, stream, count);
        let (first, second) = (Agreement::comparisons(&stats[0]), stats.get(3).map(|c| Agreement::comparisons(c)));
        let fit = FamilyFit::of(&model.layers()[0], s.task.d, s.task.n)?;
        let seed_to_seed = match (&first[..], second.as_deref()) {
            ([_, vs_first], Some([second_vs_gd])) => {
                Some(SeedToSeed { second_seed: seeds[1], vs_first: *vs_first, second_vs_gd: *second_vs_gd })
            }
            _ => None,
        };
        let vs_gd = first[0];
        let baseline = |i: usize| stats[i][0];
        let results = Results {
            distribution: s.task.describe(),
            seeds,
            closed_form: refs.summary.closed_form.clone(),
            gd_eta,
            vs_gd,
            assessment,
            references: refs.summary.clone(),
            zero: baseline(1),
            ols: baseline(2),
            gd_family: fit,
            seed_to_seed,
            training,
            timing,
            curves,
        };
        write_files(s, run, &model, &refs, &results)?;
        Ok(results)
    }
}
