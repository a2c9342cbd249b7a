//! Training one LSA layer on fresh tasks with the core's forward and backward kernels, Adam(W) with global-norm
//! clipping, parallel over the batch.
//!
//! The loss reads only the query's prediction, which depends on the weights through `A = W_K^T W_Q` and
//! `B = P W_V` alone; so each step merges the head once, runs the core's merged query kernel forward and backward per
//! task ([`dualform::MergedHead::query_forward_backward`], O(N E + E^2)), sums `(dA, dB)` over the batch and maps
//! the sum back to `W_Q, W_K, W_V, P` once ([`dualform::MergedHead::pullback`]).
//!
//! Determinism: the batch of step `s` is chunks `s * chunks + c` of the training seed ([`crate::tasks`]); each chunk
//! sums its tasks' gradients in task order, chunks are summed in chunk order, so the weights after any step are a
//! function of the seed alone, whatever the number of threads.

use crate::params::{slices, slices_mut, Lsa};
use crate::tasks::{TaskSampler, CHUNK};
use crate::HarnessError;
use dualform::{Layer, MergedHead};
use std::time::{Duration, Instant};

/// Optimiser and schedule.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct TrainConfig {
    /// Training steps.
    pub steps: u64,
    /// Tasks per step.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Adam beta1.
    pub b1: f64,
    /// Adam beta2.
    pub b2: f64,
    /// Adam epsilon.
    pub eps: f64,
    /// Decoupled weight decay (AdamW); 0 in the reference.
    pub weight_decay: f64,
    /// Global-norm gradient clip.
    pub clip: f64,
    /// Training seed.
    pub seed: u64,
}

/// Adam moments, shaped like the model.
struct Adam<const E: usize> {
    m: Lsa<E>,
    v: Lsa<E>,
    t: i32,
}

impl<const E: usize> Adam<E> {
    fn new() -> Self {
        Self { m: Layer::zeros(), v: Layer::zeros(), t: 0 }
    }

    fn step(&mut self, params: &mut Lsa<E>, grad: &Lsa<E>, cfg: &TrainConfig) {
        self.t += 1;
        let c1 = (1.0 - cfg.b1.powi(self.t)) as f32;
        let c2 = (1.0 - cfg.b2.powi(self.t)) as f32;
        let (b1, b2, lr, eps, wd) =
            (cfg.b1 as f32, cfg.b2 as f32, cfg.lr as f32, cfg.eps as f32, cfg.weight_decay as f32);
        for (((p, g), m), v) in
            slices_mut(params).into_iter().zip(slices(grad)).zip(slices_mut(&mut self.m)).zip(slices_mut(&mut self.v))
        {
            for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                *m = b1 * *m + (1.0 - b1) * g;
                *v = b2 * *v + (1.0 - b2) * g * g;
                let update = (*m / c1) / ((*v / c2).sqrt() + eps) + wd * *p;
                *p -= lr * update;
            }
        }
    }
}

/// The mean gradient and mean loss `0.5 (y_hat - y)^2` of a batch.
pub fn batch_gradient<const E: usize>(
    layer: &Lsa<E>,
    sampler: &TaskSampler,
    seed: u64,
    step: u64,
    batch: usize,
) -> (Lsa<E>, f64) {
    let chunks = batch.div_ceil(CHUNK) as u64;
    let merged = MergedHead::from_head(&layer.heads[0]);
    let parts = sampler.par_chunks::<E, (MergedHead<f32, E>, f64)>(
        seed,
        step * chunks,
        batch,
        || (MergedHead::zeros(), 0.0),
        |(dm, loss), ctx, query, y| {
            merged.query_forward_backward(
                ctx,
                query,
                |out| {
                    let err = -out[E - 1] - y;
                    *loss += 0.5 * (err as f64).powi(2);
                    let mut g = [0.0f32; E];
                    g[E - 1] = -err;
                    g
                },
                dm,
                None,
            );
        },
    );
    let mut dm = MergedHead::<f32, E>::zeros();
    let mut loss = 0.0f64;
    for (part, l) in &parts {
        dm.a += part.a;
        dm.b += part.b;
        loss += l;
    }
    let mut grad = Lsa::<E>::zeros();
    MergedHead::pullback(&layer.heads[0], &dm, &mut grad.heads[0]);
    let inv = 1.0 / batch as f32;
    for s in slices_mut(&mut grad) {
        for v in s.iter_mut() {
            *v *= inv;
        }
    }
    (grad, loss / batch as f64)
}

/// Scales `grad` so that its global Euclidean norm is at most `clip`; returns the norm before clipping.
pub fn clip_global_norm<const E: usize>(grad: &mut Lsa<E>, clip: f64) -> f64 {
    let norm = slices(grad).iter().flat_map(|s| s.iter()).map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    if norm > clip {
        let scale = (clip / norm) as f32;
        for s in slices_mut(grad) {
            for v in s.iter_mut() {
                *v *= scale;
            }
        }
    }
    norm
}

/// What a training run measured.
#[derive(Clone, Copy, Debug, Default)]
pub struct TrainTiming {
    /// Time inside training steps (tasks, forward, backward, clipping, Adam).
    pub step_time: Duration,
    /// Wall time of the whole loop, including the curve probes.
    pub wall: Duration,
}

/// Trains from `init` for `cfg.steps` steps. After every step `on_step(step, &params, loss)` is called (1-based
/// step); it may stop the run by returning an error. A non-finite loss stops the run with
/// [`HarnessError::NonFinite`] naming the step.
pub fn train<const E: usize>(
    init: Lsa<E>,
    sampler: &TaskSampler,
    cfg: &TrainConfig,
    mut on_step: impl FnMut(u64, &Lsa<E>, f64) -> Result<(), HarnessError>,
) -> Result<(Lsa<E>, TrainTiming), HarnessError> {
    let mut params = init;
    let mut adam = Adam::<E>::new();
    let mut timing = TrainTiming::default();
    let start = Instant::now();
    for step in 0..cfg.steps {
        let t0 = Instant::now();
        let (mut grad, loss) = batch_gradient(&params, sampler, cfg.seed, step, cfg.batch);
        if !loss.is_finite() {
            return Err(HarnessError::NonFinite { step: step + 1 });
        }
        clip_global_norm(&mut grad, cfg.clip);
        adam.step(&mut params, &grad, cfg);
        timing.step_time += t0.elapsed();
        on_step(step + 1, &params, loss)?;
    }
    timing.wall = start.elapsed();
    Ok((params, timing))
}
