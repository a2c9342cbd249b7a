//! `dualform reproduce attention-zoo`: linear against softmax attention on tasks where the answer is known. Models
//! of 1 and 2 layers ([`ZOO_HEADS`] heads each) of five kinds ([`Attention`]: the reference LSA, softmax, elu+1,
//! Performer, Efficient Attention) are trained with the same budget and a small learning-rate sweep each, on four
//! tasks:
//! - `linear`: the reference regression task (d = 10, N = 10);
//! - `sine`: `y = a sin(x + b)`, `x ~ U(-5, 5)` (the `mlp-sine` task) on raw tokens `(x, y)`;
//! - `sine+mlp`: the same task behind a learned feature map ([`MlpZoo`], the `mlp-sine` widths);
//! - `recall`: associative recall, N pairs of a unit key in R^10 and a value `y ~ N(0, 1)`, then one of the keys;
//!   the target is its value ([`Family::Recall`]). Softmax's sharp selection can solve it; a linear kernel mixes in
//!   every other value in proportion to the keys' overlap.
//!
//! Per model and task: the held-out loss over seeds (95% interval), the loss against steps, and where one GD step
//! applies (`linear`, `sine` as a linear regression on x, `recall` as one on the keys) its tuned loss and the
//! model's Preds diff to it. Per kind, the cost of one full layer at several N ([`cost`]).
//!
//! Learning rate: every configuration trains the first seed at each rate of `--lrs` for `--sweep-steps` steps and
//! keeps the rate with the lowest loss on tuning tasks (a diverged run scores infinity); its seeds then train for
//! `--steps`. When a seed diverges there, every seed trains again at the next rate in that order, and the attempt
//! with the most trained seeds is kept (the report lists every attempt and how many seeds diverged in it). Files: `report.json`, `losses.csv`, `cost.csv`, `curves.csv`, `attention-zoo.png`.

pub mod cost;
mod report;

use super::{Experiment, Groups, QuickSet, Run};
use crate::output::report::Check;
use crate::experiments::settings::{all_in_range, in_range, Shared};
use crate::fit::optim::AdamW;
use crate::judge::eval::{evaluate, gd_net, loss, tune_gd_rate, zero_loss, Loss, Metric, PredsDiff};
use crate::judge::stats::Stat;
use crate::judge::verdict::over_seeds;
use crate::model::{MlpZoo, Model, Zoo};
use crate::net::{Attention, Net, ZOO_HEADS};
use crate::tasks::{stream_rng, streams, Family, TaskSampler};
use crate::HarnessError;
pub use report::{Results, Row, TaskSummary};
use serde::{Deserialize, Serialize};

/// Width of the feature map of `sine+mlp`.
pub const FEATURES: usize = 16;
/// Hidden width of its residual block.
pub const HIDDEN: usize = 32;
const W: usize = FEATURES + 1;
/// Input dimension of `linear` and `recall`.
const D: usize = 10;
const E: usize = D + 1;
/// Width of the sine tasks' input interval.
const SINE_RANGE: f32 = 10.0;

/// The tasks, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Task {
    /// The reference linear regression task.
    Linear,
    /// Sine regression on raw tokens.
    Sine,
    /// Sine regression behind a learned feature map.
    #[value(name = "sine+mlp")]
    #[serde(rename = "sine+mlp")]
    SineMlp,
    /// Associative recall.
    Recall,
}

impl Task {
    /// The name in tables and flags.
    pub fn name(self) -> &'static str {
        match self {
            Task::Linear => "linear",
            Task::Sine => "sine",
            Task::SineMlp => "sine+mlp",
            Task::Recall => "recall",
        }
    }
}

/// The experiment.
pub struct AttentionZoo;

/// Settings of `reproduce attention-zoo`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub shared: Shared,
    /// Context pairs N of every task.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub n: usize,
    /// Tasks, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "linear,sine,sine+mlp,recall")]
    pub tasks: Vec<Task>,
    /// Attention kinds, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "lsa,softmax,elu+1,performer,efficient")]
    pub kinds: Vec<Attention>,
    /// Depths, comma-separated (each 1 to 3).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub layers: Vec<usize>,
    /// Adam learning rates of the sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "0.003,0.01,0.03")]
    pub lrs: Vec<f64>,
    /// Steps of each sweep run.
    #[arg(long, default_value_t = 300, allow_negative_numbers = true)]
    pub sweep_steps: u64,
    /// Models per configuration at the chosen rate, from seeds seed, seed + 1, ... (intervals over seeds).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub seeds: usize,
    /// Context lengths at which the cost of one layer is measured, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,64,256")]
    pub cost_n: Vec<usize>,
}

impl super::Settings for Settings {
    const QUICK: &'static [QuickSet] = &[ &[
        ("steps", "60"),
        ("sweep_steps", "30"),
        ("batch", "64"),
        ("lrs", "0.01"),
        ("eval_tasks", "256"),
        ("seeds", "2"),
        ("cost_n", "10,32"),
        ("log_every", "20"),
        ("probe_tasks", "128"),
    ]];

    fn groups(&self) -> Groups<'_> {
        Groups::new(&self.shared)
    }

    fn check(&self) -> Result<(), HarnessError> {
        let usage = |m: String| Err(HarnessError::Usage(m));
        in_range("--n", self.n, 2..=256)?;
        if self.tasks.is_empty() {
            return usage("--tasks must list at least one task".into());
        }
        if self.kinds.is_empty() {
            return usage("--kinds must list at least one attention kind".into());
        }
        all_in_range("--layers", "depths", &self.layers, 1..=3)?;
        if self.lrs.is_empty() || self.lrs.iter().any(|lr| !(lr.is_finite() && *lr > 0.0 && *lr < 1.0)) {
            return usage(format!("--lrs must list rates in (0, 1) (got {:?})", self.lrs));
        }
        if self.shared.train.lr.is_some() {
            return usage("attention-zoo sweeps its rates: use --lrs instead of --lr".into());
        }
        // The sweep is at most the training run (the message names --steps's value as the upper end).
        in_range("--sweep-steps", self.sweep_steps, 1..=self.shared.train.steps)?;
        in_range("--seeds", self.seeds, 1..=16)?;
        all_in_range("--cost-n", "context lengths", &self.cost_n, 1..=4096)?;
        Ok(())
    }
}

/// The samplers of a task.
fn sampler(task: Task, n: usize) -> TaskSampler {
    match task {
        Task::Linear => TaskSampler::new(D, n, 1.0),
        Task::Sine | Task::SineMlp => TaskSampler { family: Family::Sine, ..TaskSampler::new(1, n, SINE_RANGE) },
        Task::Recall => TaskSampler { family: Family::Recall, ..TaskSampler::new(D, n, 1.0) },
    }
}


/// One configuration: the sweep, then the seeds at the chosen rate; `gd` is the task's tuned GD step where it
/// applies.
fn configuration<M: Model>(
    s: &Settings,
    run: &mut Run<'_>,
    (task, kind, layers): (Task, Attention, usize),
    sampler: &TaskSampler,
    make: impl Fn(u64) -> M,
    gd: Option<&Net>,
) -> Result<Row, HarnessError> {
    let label = format!("{} / {} x {layers}", task.name(), kind.name());
    let spec_at = |seed: u64, lr: f64, steps: u64| {
        let mut spec = s.shared.train.spec(layers, seed);
        spec.adam = AdamW::reference(lr);
        spec.steps = steps;
        spec
    };
    let mut sweep = Vec::new();
    for &lr in &s.lrs {
        let mut model = make(s.shared.common.seed);
        let spec = spec_at(s.shared.common.seed, lr, s.sweep_steps);
        let trained = run.train(&format!("{label}, sweep lr {lr}"), &mut model, sampler, &spec, None, |_, _, _| {});
        let score = match trained {
            Ok(_) => loss(model.net(), sampler, s.shared.common.eval_seed, streams::TUNE, s.shared.eval.eval_tasks).mean,
            Err(HarnessError::NonFinite { .. }) => f64::INFINITY,
            Err(e) => return Err(e),
        };
        sweep.push((lr, if score.is_finite() { score } else { f64::INFINITY }));
    }
    // The rates in order of their sweep loss; when a seed diverges at a rate, every seed trains again at the next.
    let mut order = sweep.clone();
    order.sort_by(|a, b| a.1.total_cmp(&b.1));
    let mut attempts = Vec::new();
    let mut kept: Option<Attempt> = None;
    for (i, &(lr, _)) in order.iter().enumerate() {
        let mut at = Attempt { lr, per_seed: Vec::new(), diffs: Vec::new(), curve: Vec::new(), ms: 0.0, diverged: 0 };
        for k in 0..s.seeds as u64 {
            let seed = s.shared.common.seed.wrapping_add(k);
            let mut model = make(seed);
            let spec = spec_at(seed, lr, s.shared.train.steps);
            let mut points = Vec::new();
            let (seed_label, every) = (format!("{label}, lr {lr}, seed {seed}"), (k == 0).then_some(s.shared.curves.log_every));
            let trained = run.train(&seed_label, &mut model, sampler, &spec, every, |step, m, _| {
                let probe = loss(m.net(), sampler, s.shared.common.eval_seed, streams::PROBE, s.shared.curves.probe_tasks);
                points.push((step, probe.mean));
            });
            match trained {
                Ok(timing) => {
                    at.ms += timing.ms_per_step / s.seeds as f64;
                    // One pass: the held-out loss and, where the task has one, Preds diff to GD.
                    let (model_loss, diff) = (Loss(model.net()), gd.map(|g| PredsDiff(model.net(), g)));
                    let mut metrics: Vec<&dyn Metric> = vec![&model_loss];
                    metrics.extend(diff.as_ref().map(|d| d as &dyn Metric));
                    let (eval_seed, count) = (s.shared.common.eval_seed, s.shared.eval.eval_tasks);
                    let stats = evaluate(&metrics, sampler, eval_seed, streams::EVAL, count);
                    at.per_seed.extend(stats.first().and_then(|l| l.first()));
                    at.diffs.extend(stats.get(1).and_then(|d| d.first()));
                }
                Err(HarnessError::NonFinite { .. }) => at.diverged += 1,
                Err(e) => return Err(e),
            }
            if k == 0 {
                at.curve = points;
            }
        }
        let done = at.diverged == 0 || i + 1 == order.len();
        attempts.push((lr, at.diverged));
        if kept.as_ref().is_none_or(|x| at.per_seed.len() > x.per_seed.len()) {
            kept = Some(at);
        }
        if done {
            break;
        }
    }
    let at = kept.ok_or_else(|| HarnessError::Usage("--lrs must list at least one rate".into()))?;
    Ok(Row {
        task,
        kind,
        layers,
        lr: at.lr,
        sweep,
        attempts,
        loss: over_seeds(&at.per_seed),
        per_seed: at.per_seed.iter().map(|x| x.mean).collect(),
        diverged: at.diverged,
        preds_diff_gd: gd.map(|_| over_seeds(&at.diffs)),
        ms_per_step: at.ms,
        curve: at.curve,
    })
}

/// The seeds of one configuration trained at one rate.
struct Attempt {
    lr: f64,
    per_seed: Vec<Stat>,
    diffs: Vec<Stat>,
    curve: Vec<(u64, f64)>,
    ms: f64,
    diverged: usize,
}

/// Every configuration of one task of token width E2 (`D2` inputs), with its baselines.
fn task_rows<const D2: usize, const E2: usize>(
    s: &Settings,
    run: &mut Run<'_>,
    task: Task,
    rows: &mut Vec<Row>,
) -> Result<TaskSummary, HarnessError> {
    let sampler = sampler(task, s.n);
    let eta = tune_gd_rate(&sampler, s.shared.common.eval_seed, streams::TUNE, s.shared.eval.eval_tasks)?;
    let gd = gd_net(sampler.d, eta as f32, s.n)?;
    for &layers in &s.layers {
        for &kind in &s.kinds {
            let make = |seed: u64| Zoo::<E2>::init(&mut stream_rng(seed, streams::INIT), kind, layers);
            rows.push(configuration(s, run, (task, kind, layers), &sampler, make, Some(&gd))?);
        }
    }
    Ok(TaskSummary {
        task,
        zero: zero_loss(&sampler, s.shared.common.eval_seed, streams::EVAL, s.shared.eval.eval_tasks),
        gd: Some((eta, loss(&gd, &sampler, s.shared.common.eval_seed, streams::EVAL, s.shared.eval.eval_tasks))),
    })
}

/// `sine+mlp`: every kind behind the feature map; no GD reference (the features are learned; `mlp-sine` compares
/// them with GD).
fn mlp_rows(s: &Settings, run: &mut Run<'_>, rows: &mut Vec<Row>) -> Result<TaskSummary, HarnessError> {
    let sampler = sampler(Task::SineMlp, s.n);
    let input_std = f64::from(SINE_RANGE) / 12f64.sqrt();
    for &layers in &s.layers {
        for &kind in &s.kinds {
            let make = |seed: u64| {
                MlpZoo::<FEATURES, HIDDEN, W>::init(&mut stream_rng(seed, streams::INIT), kind, layers, input_std)
            };
            rows.push(configuration(s, run, (Task::SineMlp, kind, layers), &sampler, make, None)?);
        }
    }
    Ok(TaskSummary {
        task: Task::SineMlp,
        zero: zero_loss(&sampler, s.shared.common.eval_seed, streams::EVAL, s.shared.eval.eval_tasks),
        gd: None,
    })
}

fn run(s: &Settings, run: &mut Run<'_>) -> Result<Results, HarnessError> {
    let (mut rows, mut tasks) = (Vec::new(), Vec::new());
    for &task in &s.tasks {
        tasks.push(match task {
            Task::Linear | Task::Recall => task_rows::<D, E>(s, run, task, &mut rows)?,
            Task::Sine => task_rows::<1, 2>(s, run, task, &mut rows)?,
            Task::SineMlp => mlp_rows(s, run, &mut rows)?,
        });
    }
    let mut costs = Vec::new();
    for &n in &s.cost_n {
        for &kind in &s.kinds {
            costs.push(cost::measure::<E>(kind, n)?);
        }
    }
    let results = Results {
        budget: format!(
            "{} steps of {} tasks (sweep: {} steps at each of {:?}), {} seeds, {ZOO_HEADS} heads per layer, N = {}",
            s.shared.train.steps, s.shared.train.batch, s.sweep_steps, s.lrs, s.seeds, s.n
        ),
        tasks,
        rows,
        costs,
    };
    report::write_files(run, &results)?;
    Ok(results)
}

impl Experiment for AttentionZoo {
    const NAME: &'static str = "attention-zoo";
    const DEFAULTS: &'static [(&'static str, &'static str)] =
        &[("steps", "1500"), ("batch", "128"), ("eval_tasks", "4000")];
    const ABOUT: &'static str =
        "Linear against softmax attention: five kinds, 1 and 2 layers, on regression, sine waves and recall";
    type Settings = Settings;
    type Results = Results;

    fn checks(s: &Settings, r: &Results) -> Vec<Check> {
        report::checks(r, s.shared.common.quick)
    }

    fn verdict(_: &Settings, r: &Results, checks: &[Check]) -> String {
        report::verdict(r, checks)
    }

    fn run(s: &Settings, r: &mut Run<'_>) -> Result<Results, HarnessError> {
        run(s, r)
    }
}
