//! `dualform reproduce recurrent`: one layer applied many times.
//!
//! 1. As the reference does: the trained single layer (not retrained) applied 50 times, each application updating
//!    only the `y` coordinate and damped by 0.75, the loss after every application beside GD at 0.75 x the tuned
//!    one-step rate (the GD construction applied the same way, undamped).
//! 2. A layer trained *with* the recurrence in the loop: one layer applied K times (every token and coordinate
//!    updated: the reference's looped model) and trained on the loss after the K-th application; against repeated
//!    GD (one rate, fitted for K steps) and repeated GD++ (one rate and one gamma, fitted for K steps), with the
//!    loss after every application up to 2K to see what it does beyond the depth it was trained at. It trains for
//!    the authors' 50 000 steps (`--loop-steps`), like the deep models of `multi-layer`.
//!
//! Files: `report.json`, `iterated.csv`, `looped.csv`, `recurrent.png`, `looped.safetensors`.

use super::single_layer::FamilyFit;
use super::trained::{trained_layer, QUICK_LAYER, LayerSpec};
use super::{Experiment, Groups, QuickSet, Run};
use crate::output::report::Check;
use crate::experiments::settings::{in_range, Shared, TaskArgs};
use crate::fit::references::{fit_looped, FitSpec, FittedParams};
use crate::fit::train::{reference, TrainSpec};
use crate::judge::baselines::Predictor;
use crate::judge::eval::{compare_many, evaluate, gd_net, matches, readout_losses, tune_gd_rate, Agreement, Metric, Readout};
use crate::judge::stats::Stat;
use crate::model::{Lsa, Model};
use crate::tasks::{stream_rng, streams};
use crate::HarnessError;
use dualform::Update;
use serde::{Deserialize, Serialize};

mod report;
use report::write_files;
pub use report::{checks, verdict, Iterated, Looped, Results, AUTHORS};

/// The experiment.
pub struct Recurrent;

/// Settings of `reproduce recurrent`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub shared: Shared,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Applications of the trained single layer (part 1).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    pub iterations: usize,
    /// Damping of each application in part 1 (the GD reference runs at this fraction of the tuned rate).
    #[arg(long, default_value_t = 0.75, allow_negative_numbers = true)]
    pub damping: f32,
    /// Applications K of the layer trained with the recurrence in the loop (part 2).
    #[arg(long, default_value_t = 4, allow_negative_numbers = true)]
    pub loop_applications: usize,
    /// Training steps of the layer trained with the recurrence in the loop (part 2): the authors' 50 000, as for the
    /// deep models of `multi-layer`. Part 1's layer is `single-layer`'s, trained for `--steps`.
    #[arg(long, default_value_t = 50_000, allow_negative_numbers = true)]
    pub loop_steps: u64,
    /// Gauss-Newton iterations per reference fit.
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    pub fit_iters: usize,
}

impl super::Settings for Settings {
    const QUICK: &'static [QuickSet] = &[QUICK_LAYER, &[("loop_applications", "3"), ("loop_steps", "600"), ("fit_iters", "10")]];

    fn groups(&self) -> Groups<'_> {
        Groups::with_task(&self.shared, &self.task)
    }

    fn check(&self) -> Result<(), HarnessError> {
        in_range("--iterations", self.iterations, 1..=1000)?;
        if !(self.damping.is_finite() && self.damping > 0.0 && self.damping <= 1.0) {
            return Err(HarnessError::Usage(format!("--damping must be in (0, 1] (got {})", self.damping)));
        }
        in_range("--loop-applications", self.loop_applications, 2..=16)?;
        in_range("--loop-steps", self.loop_steps, 1..=10_000_000)?;
        in_range("--fit-iters", self.fit_iters, 1..=1000)?;
        Ok(())
    }
}

impl Experiment for Recurrent {
    const NAME: &'static str = "recurrent";
    const ABOUT: &'static str =
        "One layer applied many times: the trained layer iterated against GD, and a layer trained with the recurrence in the loop";
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
        // Part 1.
        let spec = LayerSpec::of(&s.shared.common, &s.task, &s.shared.train, &s.shared.eval, &s.shared.curves);
        let layer = trained_layer(run, spec, s.shared.common.seed)?.model;
        let eta = tune_gd_rate(&sampler, seed, streams::TUNE, count)?;
        let y_only = Update { scale: 1.0, first: s.task.d, clip: None };
        let iterated = layer.net().repeated(s.iterations, Update { scale: s.damping, ..y_only })?;
        let gd = gd_net(s.task.d, s.damping * eta as f32, s.task.n)?.repeated(s.iterations, y_only)?;
        let agreement = Agreement { a: Predictor::Net(&iterated), refs: vec![Predictor::Net(&gd)] };
        let metrics: [&dyn Metric; 3] = [&Readout(&iterated), &Readout(&gd), &agreement];
        let [trained, gd, final_vs_gd] = match <[Vec<Stat>; 3]>::try_from(evaluate(&metrics, &sampler, seed, streams::EVAL, count)) {
            Ok(stats) => stats,
            Err(_) => return Err(HarnessError::Io("evaluation: missing metrics".into())),
        };
        let final_vs_gd = Agreement::comparisons(&final_vs_gd).into_iter().next();
        let final_vs_gd = final_vs_gd.ok_or_else(|| HarnessError::Io("evaluation: no comparison".into()))?;
        let iterated = Iterated { eta, damping: s.damping, trained, gd, final_vs_gd };
        // Part 2.
        let k = s.loop_applications;
        let training = TrainSpec { steps: s.loop_steps, ..s.shared.train.spec(k, s.shared.common.seed) };
        let token_clip = reference::token_clip(k);
        let key = format!("looped|{k}|{:?}|{training:?}|{token_clip:?}", s.task);
        let (looped, timing) = run.cached(&key, |run| {
            let update = Update { clip: token_clip, ..Update::residual() };
            let mut m = Lsa::init(&mut stream_rng(s.shared.common.seed, streams::INIT), s.task.d + 1, 1, vec![0; k], update)?;
            let timing = run.train(&format!("one layer looped {k} times"), &mut m, &sampler, &training, None, |_, _, _| {})?;
            Ok((m, timing))
        })?;
        let fit_spec = FitSpec { sampler: &sampler, eval_seed: seed, tasks: count, iters: s.fit_iters };
        let refs = fit_looped(k, fit_spec)?;
        let nets: Vec<_> = refs.iter().map(|r| r.model.net()).collect();
        let vs_references = compare_many(looped.net(), &nets, &sampler, seed, streams::EVAL, count);
        let long = |net: &crate::net::Net| -> Result<Vec<Stat>, HarnessError> {
            Ok(readout_losses(&net.repeated(2 * k, *net.update())?, &sampler, seed, streams::EVAL, count))
        };
        let fit = FamilyFit::of(&looped.layers()[0], s.task.d, s.task.n)?;
        let looped_result = Looped {
            applications: k,
            training,
            token_clip,
            timing,
            readout: long(looped.net())?,
            references: refs.iter().map(FittedParams::from).collect(),
            reference_readouts: refs.iter().map(|r| long(r.model.net())).collect::<Result<_, _>>()?,
            matched: vs_references.iter().map(matches).collect(),
            vs_references,
            gd_family_residual: fit.residual,
        };
        let results = Results { iterated, looped: looped_result };
        write_files(s, run, &looped, &results)?;
        Ok(results)
    }
}
