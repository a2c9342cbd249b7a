//! The trained models several experiments share, each trained (or fitted) once per command through
//! [`Run::cached`]: the single layer (`single-layer`, `recurrent`, `interpolate`, `ood`), the deep stacks and their
//! fitted GD references (`multi-layer`, `gd-plus-plus`). The cache key spells everything a model depends on, so an
//! experiment run with other settings trains its own.

use super::{QuickSet, Run};
use crate::experiments::settings::{Common, CurveArgs, EvalArgs, TaskArgs, TrainArgs};
use crate::fit::references::{fit_all, FitSpec, Fitted};
use crate::fit::train::{reference, TrainSpec, TrainTiming};
use crate::judge::eval::{compare, gd_net, tune_gd_rate};
use crate::model::{Lsa, Model, Softmax};
use crate::tasks::{stream_rng, streams, TaskSampler};
use crate::HarnessError;
use dualform::Update;
use serde::{Deserialize, Serialize};

/// One logged point of training.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Training step (1-based).
    pub step: u64,
    /// Mean loss of that step's batch.
    pub train_loss: f64,
    /// Loss of the model on the probe tasks.
    pub probe_loss: f64,
    /// Loss of the tuned GD step on the probe tasks.
    pub gd_probe_loss: f64,
    /// Model cos against GD on the probe tasks.
    pub model_cos: f64,
    /// Preds diff against GD on the probe tasks.
    pub preds_diff: f64,
}

/// How the single layer is trained and logged: what [`trained_layer`] depends on besides the seed.
#[derive(Clone, Copy, Debug)]
pub struct LayerSpec<'a> {
    /// The task distribution.
    pub task: &'a TaskArgs,
    /// The training budget.
    pub train: &'a TrainArgs,
    /// The evaluation seed (tuning and probe tasks).
    pub eval_seed: u64,
    /// Tuning tasks for the curves' GD reference.
    pub eval_tasks: usize,
    /// Curve logging.
    pub curves: &'a CurveArgs,
}

impl<'a> LayerSpec<'a> {
    /// The spec of an experiment's settings groups.
    pub fn of(
        common: &Common,
        task: &'a TaskArgs,
        train: &'a TrainArgs,
        eval: &EvalArgs,
        curves: &'a CurveArgs,
    ) -> Self {
        Self { task, train, eval_seed: common.eval_seed, eval_tasks: eval.eval_tasks, curves }
    }
}

/// A trained single layer and how it was trained.
#[derive(Clone, Debug)]
pub struct TrainedLayer {
    /// The model.
    pub model: Lsa,
    /// The training run.
    pub training: TrainSpec,
    /// Training time.
    pub timing: TrainTiming,
    /// The training curves against the tuned GD step.
    pub curves: Vec<CurvePoint>,
}

/// The trained single layer of `spec` from seed `seed`, with its training curves against the tuned GD step;
/// trained once per command and shared by the experiments that use it (`recurrent`, `interpolate`, `ood`).
pub fn trained_layer(run: &mut Run<'_>, spec: LayerSpec<'_>, seed: u64) -> Result<TrainedLayer, HarnessError> {
    let LayerSpec { task, train: train_args, eval_seed, eval_tasks, curves } = spec;
    let CurveArgs { log_every, probe_tasks } = *curves;
    let spec = train_args.spec(1, seed);
    let key = format!("single-layer|{task:?}|{spec:?}|{eval_seed} {eval_tasks} {log_every} {probe_tasks}");
    run.cached(&key, |run| {
        let sampler = task.sampler();
        let eta = tune_gd_rate(&sampler, eval_seed, streams::TUNE, eval_tasks)?;
        let gd = gd_net(task.d, eta as f32, task.n)?;
        let mut model = Lsa::init(&mut stream_rng(seed, streams::INIT), task.d + 1, 1, vec![0], Update::residual())?;
        let mut curves = Vec::new();
        let label = format!("single layer, seed {seed}");
        let timing = run.train(&label, &mut model, &sampler, &spec, Some(log_every), |step, m, loss| {
            let c = compare(m.net(), &gd, &sampler, eval_seed, streams::PROBE, probe_tasks);
            curves.push(CurvePoint {
                step,
                train_loss: loss,
                probe_loss: c.loss_a.mean,
                gd_probe_loss: c.loss_b.mean,
                model_cos: c.model_cos.mean,
                preds_diff: c.preds_diff.mean,
            });
        })?;
        Ok(TrainedLayer { model, training: spec, timing, curves })
    })
}

/// The `--quick` defaults of the single layer that `single-layer`, `preconditioned`, `ood`, `interpolate` and
/// `recurrent` share (one training within `reproduce all --quick`: the cache key spells these settings).
pub const QUICK_LAYER: QuickSet =
    &[("steps", "600"), ("eval_tasks", "2000"), ("probe_tasks", "512"), ("log_every", "50")];

/// How a deep model is trained: what [`trained_stack`] depends on besides the depth.
#[derive(Clone, Copy, Debug)]
pub struct StackSpec<'a> {
    /// The task distribution.
    pub task: &'a TaskArgs,
    /// The training budget.
    pub train: &'a TrainArgs,
    /// The training seed.
    pub seed: u64,
    /// The evaluation seed (probe tasks).
    pub eval_seed: u64,
    /// Curve logging.
    pub curves: &'a CurveArgs,
}

impl<'a> StackSpec<'a> {
    /// The spec of an experiment's settings groups.
    pub fn of(common: &Common, task: &'a TaskArgs, train: &'a TrainArgs, curves: &'a CurveArgs) -> Self {
        Self { task, train, seed: common.seed, eval_seed: common.eval_seed, curves }
    }
}

/// A trained deep model and how it was trained.
#[derive(Clone, Debug)]
pub struct TrainedStack {
    /// The model.
    pub model: Lsa,
    /// The training run.
    pub training: TrainSpec,
    /// Token clipping after every layer.
    pub token_clip: Option<f32>,
    /// Training time.
    pub timing: TrainTiming,
    /// `(step, batch loss, probe loss)` during training.
    pub curve: Vec<(u64, f64, f64)>,
}

/// The K-layer model of `spec`, trained once per command (shared with `gd-plus-plus`).
pub fn trained_stack(run: &mut Run<'_>, layers: usize, spec: StackSpec<'_>) -> Result<TrainedStack, HarnessError> {
    let train_spec = spec.train.spec(layers, spec.seed);
    let clip = reference::token_clip(layers);
    let key = format!(
        "stack|{layers}|{:?}|{train_spec:?}|{clip:?}|{} {} {}",
        spec.task, spec.eval_seed, spec.curves.log_every, spec.curves.probe_tasks
    );
    run.cached(&key, |run| {
        let sampler = spec.task.sampler();
        let update = Update { clip, ..Update::residual() };
        let mut model =
            Lsa::init(&mut stream_rng(spec.seed, streams::INIT), sampler.d + 1, layers, (0..layers).collect(), update)?;
        let mut curve = Vec::new();
        let (every, label) = (Some(spec.curves.log_every), format!("{layers} layers"));
        let timing = run.train(&label, &mut model, &sampler, &train_spec, every, |step, m, loss| {
            let probe =
                crate::judge::eval::loss(m.net(), &sampler, spec.eval_seed, streams::PROBE, spec.curves.probe_tasks);
            curve.push((step, loss, probe.mean));
        })?;
        Ok(TrainedStack { model, training: train_spec, token_clip: clip, timing, curve })
    })
}

/// The references of depth `k`, fitted once per command (shared with `gd-plus-plus`).
pub fn fitted_references(
    run: &mut Run<'_>,
    k: usize,
    task: &TaskArgs,
    spec: FitSpec<'_>,
) -> Result<Vec<Fitted>, HarnessError> {
    let key = format!("references|{k}|{task:?}|{} {} {}", spec.eval_seed, spec.tasks, spec.iters);
    run.cached(&key, |_| fit_all(k, spec))
}

/// A trained softmax model, how it was trained, and its curve `(step, batch loss, probe loss)`.
#[derive(Clone, Debug)]
pub struct TrainedSoftmax {
    /// The model.
    pub model: Softmax,
    /// The training run.
    pub spec: TrainSpec,
    /// Training time.
    pub timing: TrainTiming,
    /// `(step, batch loss, probe loss)` during training.
    pub curve: Vec<(u64, f64, f64)>,
}

/// The K-layer softmax model trained by `spec` on `sampler`'s tasks, once per command (`softmax`, `dai`).
pub fn trained_softmax(
    run: &mut Run<'_>,
    sampler: &TaskSampler,
    layers: usize,
    spec: TrainSpec,
    curves: &CurveArgs,
    eval_seed: u64,
) -> Result<TrainedSoftmax, HarnessError> {
    let key = format!("softmax|{layers}|{sampler:?}|{spec:?}|{eval_seed} {curves:?}");
    run.cached(&key, |run| {
        let mut model = Softmax::init(&mut stream_rng(spec.seed, streams::INIT), sampler.width(), layers);
        let mut curve = Vec::new();
        let label = format!("softmax, {layers} layer(s), seed {}", spec.seed);
        let timing = run.train(&label, &mut model, sampler, &spec, Some(curves.log_every), |step, m, batch_loss| {
            let probe = crate::judge::eval::loss(m.net(), sampler, eval_seed, streams::PROBE, curves.probe_tasks);
            curve.push((step, batch_loss, probe.mean));
        })?;
        Ok(TrainedSoftmax { model, spec, timing, curve })
    })
}
