//! Training any [`Model`] on fresh tasks with the core's forward and backward kernels: AdamW with global-norm
//! clipping, parallel over the batch.
//!
//! Each step runs [`Forward::group_gradient`] on groups of consecutive tasks, which sums the parameter-group
//! gradients (merged heads `(dA, dB)`, or softmax layers) task by task per chunk; chunks are summed in order, the sum
//! is mapped to the model's parameters once ([`Model::pullback`]) and divided by the batch size. The single layer
//! takes the core's query-only kernel one task at a time; deep and recurrent models the full-layer kernel with eight
//! tasks in the lanes of a vector ([`crate::net::lanes`], the same bits as one at a time); per-task work is
//! allocation-free (one workspace per block of chunks, kept from step to step).
//!
//! Determinism: the batch of step `s` is chunks `streams::batch(s) + c` of the training seed
//! ([`crate::tasks`]); each chunk sums its tasks in task order, chunks are summed in chunk order, so the weights
//! after any step are a function of the seed alone, whatever the number of threads.

use crate::fit::optim::{clip_global_norm, AdamState, AdamW};
use crate::model::Model;
use crate::net::Forward;
use crate::tasks::{streams, Pool, TaskSampler};
use crate::HarnessError;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// Everything a training run depends on besides the model and the task distribution.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSpec {
    /// Training steps.
    pub steps: u64,
    /// Tasks per step.
    pub batch: usize,
    /// Training seed (batches).
    pub seed: u64,
    /// The optimiser.
    pub adam: AdamW,
    /// Global-norm gradient clip.
    pub clip: f64,
}

/// The reference training rules by depth (docs/conventions.md; the reference notebook's settings).
pub mod reference {
    /// Adam learning rate: 1e-3 up to 3 layers, 5e-4 beyond.
    pub fn lr(layers: usize) -> f64 {
        if layers > 3 {
            5e-4
        } else {
            1e-3
        }
    }

    /// Global-norm gradient clip: 1e-3 up to 2 layers, 10 beyond.
    pub fn grad_clip(layers: usize) -> f64 {
        if layers > 2 {
            10.0
        } else {
            1e-3
        }
    }

    /// Token clipping after every layer: 10 beyond 3 layers, none up to 3.
    pub fn token_clip(layers: usize) -> Option<f32> {
        (layers > 3).then_some(10.0)
    }
}

/// The workspaces of a model's net, kept from one training step to the next.
pub type Workspaces<M> = Pool<<<M as Model>::Net as Forward>::Workspace>;

/// The mean parameter gradient and mean loss `0.5 (y_hat - y)^2` of the batch of `step`; the net's workspaces come
/// from `pool` (one per block of chunks) and go back to it.
pub fn batch_gradient<M: Model>(
    model: &M,
    sampler: &TaskSampler,
    seed: u64,
    step: u64,
    batch: usize,
    pool: &Workspaces<M>,
) -> (Vec<f32>, f64) {
    let net = model.net();
    let zero = net.zero_grads();
    type Part<M> = (Vec<<<M as Model>::Net as Forward>::Grad>, f64);
    let parts = sampler.par_groups_in::<Part<M>, _>(
        seed,
        streams::batch(step, batch),
        batch,
        net.group_size(),
        (pool, || net.workspace(sampler.n)),
        || (zero.clone(), 0.0),
        |(g, loss), ws, group| net.group_gradient(group, ws, g, loss),
    );
    let mut merged = zero;
    let mut loss = 0.0f64;
    for (g, l) in &parts {
        for (m, p) in merged.iter_mut().zip(g) {
            <M::Net as Forward>::add_grad(m, p);
        }
        loss += l;
    }
    let mut grad = vec![0.0f32; model.params().len()];
    model.pullback(&merged, &mut grad);
    let inv = 1.0 / batch as f32;
    for v in grad.iter_mut() {
        *v *= inv;
    }
    (grad, loss / batch as f64)
}

/// What a training run measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainTiming {
    /// Seconds inside training steps (tasks, forward, backward, clipping, Adam).
    pub step_seconds: f64,
    /// Wall seconds of the whole loop, including the callbacks (curve probes).
    pub wall_seconds: f64,
    /// Milliseconds per step (`step_seconds` over the steps).
    pub ms_per_step: f64,
    /// How the training loss ended.
    #[serde(default)]
    pub convergence: Convergence,
}

/// How training ended: the mean batch loss over the last tenth of the steps and over the tenth before it. A loss
/// still falling between the two says that training had not converged when it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Convergence {
    /// Steps in a tenth of the run (at least 1).
    pub tenth: u64,
    /// Mean batch loss over the last tenth of the steps.
    pub last_tenth: f64,
    /// Mean batch loss over the tenth before it (NaN when the run was shorter than two steps).
    pub previous_tenth: f64,
}

impl Convergence {
    /// How far the mean batch loss of the last tenth may move from the tenth before's for training to count as
    /// settled: 2%. Each tenth averages thousands of batches of fresh tasks, so batch noise moves it far less.
    pub const SETTLED: f64 = 0.02;

    /// For a verdict, when training had not settled (the change from the tenth before to the last tenth beyond
    /// [`Self::SETTLED`] either way): "training not settled (batch loss over the last tenth +5.9% from the tenth
    /// before)". `None` when it had, or when the run was too short to tell.
    pub fn unsettled(&self) -> Option<String> {
        let c = self.change();
        (c.is_finite() && c.abs() > Self::SETTLED).then(|| {
            format!(
                "training not settled (batch loss over the last tenth {} from the tenth before)",
                self.change_text()
            )
        })
    }

    /// The relative change from the tenth before to the last tenth: negative while the loss still falls.
    pub fn change(&self) -> f64 {
        self.last_tenth / self.previous_tenth - 1.0
    }

    /// The change as a signed percentage, for tables ("-3.1%"), or "-" when there is none.
    pub fn change_text(&self) -> String {
        let c = self.change();
        if c.is_finite() {
            format!("{:+.1}%", 100.0 * c)
        } else {
            "-".into()
        }
    }
}

/// Trains `model` for `spec.steps` steps. After every step `on_step(step, &model, loss)` is called (1-based step);
/// it may stop the run by returning an error. A non-finite loss stops the run with [`HarnessError::NonFinite`]
/// naming the step.
pub fn train<M: Model>(
    model: &mut M,
    sampler: &TaskSampler,
    spec: &TrainSpec,
    mut on_step: impl FnMut(u64, &M, f64) -> Result<(), HarnessError>,
) -> Result<TrainTiming, HarnessError> {
    let mut params = model.params();
    let mut adam = AdamState::new(params.len());
    let pool = Workspaces::<M>::new();
    let mut step_time = Duration::ZERO;
    let start = Instant::now();
    let tenth = (spec.steps / 10).max(1);
    let (mut last, mut previous) = ((0.0f64, 0u64), (0.0f64, 0u64));
    for step in 0..spec.steps {
        let t0 = Instant::now();
        let (mut grad, loss) = batch_gradient(model, sampler, spec.seed, step, spec.batch, &pool);
        if !loss.is_finite() {
            return Err(HarnessError::NonFinite { step: step + 1 });
        }
        let from_end = spec.steps - step;
        let tally = if from_end <= tenth { &mut last } else { &mut previous };
        if from_end <= 2 * tenth {
            tally.0 += loss;
            tally.1 += 1;
        }
        clip_global_norm(&mut grad, spec.clip);
        adam.step(&mut params, &grad, &spec.adam);
        model.set_params(&params);
        step_time += t0.elapsed();
        on_step(step + 1, model, loss)?;
    }
    let step_seconds = step_time.as_secs_f64();
    Ok(TrainTiming {
        step_seconds,
        wall_seconds: start.elapsed().as_secs_f64(),
        ms_per_step: step_seconds * 1e3 / spec.steps.max(1) as f64,
        convergence: Convergence {
            tenth,
            last_tenth: last.0 / last.1 as f64,
            previous_tenth: if previous.1 == 0 { f64::NAN } else { previous.0 / previous.1 as f64 },
        },
    })
}
