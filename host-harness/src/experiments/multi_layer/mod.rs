//! `dualform reproduce multi-layer`: K = 2..5 distinct LSA layers (every token updated in every layer), each trained
//! on in-context regression, against K steps of GD with one tuned rate, K steps with a tuned rate per step, and K
//! layers of GD++ with tuned (eta, gamma) per layer; losses, Preds diff and Model cos against each, and the
//! per-layer readout (the query's prediction after each layer) beside the loss after each GD / GD++ step.
//!
//! Training follows the reference rules by depth (docs/conventions.md): the authors' 50 000 steps of 2048 tasks
//! ([`DEEP_DEFAULTS`]), AdamW lr 1e-3 (5e-4 beyond 3 layers), global norm clip 1e-3 up to 2 layers and 10 beyond,
//! tokens clipped to +-10 after every layer beyond 3 layers, initialisation variance 0.002 / K. The references are
//! fitted on tuning tasks ([`crate::fit::references`]).
//!
//! Files: `report.json`, `depths.csv` (one row per depth and model), `readout.csv` (loss after each layer),
//! `curves.csv` (probe loss during training), `multi-layer.png`, `stack-K.safetensors` (trained weights),
//! `references-K.safetensors` (fitted scalars).

use super::trained::{fitted_references, trained_stack, StackSpec, TrainedStack};
use super::{Experiment, Groups, QuickSet, Run};
use crate::output::report::Check;
use crate::experiments::settings::{all_in_range, in_range, Shared, TaskArgs};
use crate::fit::references::{FitSpec, FittedParams};
use crate::judge::attribution::{AttributionAgreement, Attributor};
use crate::judge::baselines::Predictor;
use crate::judge::stats::Stat;
use crate::judge::eval::{evaluate, matches, Agreement, Metric, OlsLoss, Readout, ZeroLoss};
use crate::model::{save, Model};
use crate::tasks::streams;
use crate::HarnessError;
use serde::{Deserialize, Serialize};

mod report;
use report::write_files;
pub use report::{checks, verdict, TrainedDepth, ReferenceResult, Results, AUTHORS};

/// The experiment.
pub struct MultiLayer;

/// The defaults `multi-layer` and `gd-plus-plus` set over their settings type's: the authors train the deep models
/// for 50 000 steps. Both experiments share them, so that `reproduce all` trains each deep model once.
pub const DEEP_DEFAULTS: &[(&str, &str)] = &[("steps", "50000")];

/// Settings of `reproduce multi-layer`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub shared: Shared,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Depths K to train, comma-separated (each 2 to 8).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,5")]
    pub layers: Vec<usize>,
    /// Gauss-Newton iterations per reference fit.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    pub fit_iters: usize,
}

impl super::Settings for Settings {
    const QUICK: &'static [QuickSet] = &[ &[
        ("layers", "2,3"),
        ("steps", "300"),
        ("batch", "1024"),
        ("eval_tasks", "2000"),
        ("fit_iters", "10"),
        ("log_every", "100"),
        ("probe_tasks", "512"),
    ]];

    fn groups(&self) -> Groups<'_> {
        Groups::with_task(&self.shared, &self.task)
    }

    fn check(&self) -> Result<(), HarnessError> {
        all_in_range("--layers", "depths", &self.layers, 2..=8)?;
        in_range("--fit-iters", self.fit_iters, 1..=1000)?;
        Ok(())
    }
}

impl Settings {
    /// How this run trains its deep models.
    pub fn stack_spec(&self) -> StackSpec<'_> {
        StackSpec::of(&self.shared.common, &self.task, &self.shared.train, &self.shared.curves)
    }
}

impl Experiment for MultiLayer {
    const NAME: &'static str = "multi-layer";
    const DEFAULTS: &'static [(&'static str, &'static str)] = DEEP_DEFAULTS;
    const ABOUT: &'static str =
        "K = 2..5 distinct LSA layers, against K steps of GD (shared rate, rate per step) and K layers of GD++";
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
        let fit_spec = FitSpec { sampler: &sampler, eval_seed: seed, tasks: count, iters: s.fit_iters };
        // Train and fit every depth first (cached within a command), then evaluate them all in one pass.
        let mut trained = Vec::new();
        for &k in &s.layers {
            let stack = trained_stack(run, k, s.stack_spec())?;
            let refs = fitted_references(run, k, &s.task, fit_spec)?;
            let meta = |what: String| vec![("d", s.task.d.to_string()), ("n", s.task.n.to_string()), ("model", what)];
            save(
                &stack.model,
                &meta(format!("{k} trained LSA layers, seed {}", s.shared.common.seed)),
                &run.file(&format!("stack-{k}.safetensors")),
            )?;
            for (i, r) in refs.iter().enumerate() {
                save(
                    &r.model,
                    &meta(format!("{}, {k} steps, fitted", r.name)),
                    &run.file(&format!("reference-{k}-{i}.safetensors")),
                )?;
            }
            trained.push((k, stack, refs));
        }
        let stats = {
            let mut metrics: Vec<Box<dyn Metric + '_>> = Vec::new();
            for (_, stack, refs) in &trained {
                let refs_p = refs.iter().map(|r| Predictor::Net(r.model.net())).collect();
                metrics.push(Box::new(Agreement { a: Predictor::Net(stack.model.net()), refs: refs_p }));
                metrics.push(Box::new(Readout(stack.model.net())));
                // Attributions by leaving one demonstration out, on both sides (docs of `judge::attribution`).
                let loo = |net| Attributor::LeaveOneOut(Predictor::Net(net));
                let refs_a = refs.iter().map(|r| loo(r.model.net())).collect();
                metrics.push(Box::new(AttributionAgreement { a: loo(stack.model.net()), refs: refs_a }));
                metrics.extend(refs.iter().map(|r| Box::new(Readout(r.model.net())) as Box<dyn Metric>));
            }
            metrics.push(Box::new(ZeroLoss));
            metrics.push(Box::new(OlsLoss(s.task.d)));
            let metric_refs: Vec<&dyn Metric> = metrics.iter().map(|m| m.as_ref()).collect();
            evaluate(&metric_refs, &sampler, seed, streams::EVAL, count)
        };
        let mut stats = stats.into_iter();
        let mut next = || stats.next().unwrap_or_default();
        let mut depths = Vec::new();
        for (k, TrainedStack { training, token_clip, timing, curve, .. }, refs) in trained {
            let comparisons = Agreement::comparisons(&next());
            let readout = next();
            let attribution = next();
            let references = refs
                .iter()
                .zip(comparisons)
                .zip(attribution)
                .map(|((r, c), attribution_cos)| ReferenceResult {
                    params: FittedParams::from(r),
                    matched: matches(&c),
                    vs_trained: c,
                    readout: next(),
                    attribution_cos,
                })
                .collect();
            depths.push(TrainedDepth { layers: k, training, token_clip, timing, readout, references, curve });
        }
        let mut one = || next().first().copied().unwrap_or_else(|| Stat::of(std::iter::empty()));
        let results = Results { depths, zero: one(), ols: one() };
        write_files(run, &results)?;
        Ok(results)
    }
}
