//! Optimisers over a model's flat parameters, written once: AdamW with global-norm gradient clipping (training),
//! and damped Gauss-Newton (Levenberg-Marquardt) least squares for models with a few parameters (fitting the GD
//! references on tuning tasks).

use crate::model::Model;
use crate::net::Forward;
use crate::tasks::{Pool, TaskSampler};
use serde::{Deserialize, Serialize};

/// AdamW settings. [`AdamW::reference`] holds the reference constants (docs/conventions.md).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW {
    /// Learning rate.
    pub lr: f64,
    /// First-moment decay.
    pub b1: f64,
    /// Second-moment decay.
    pub b2: f64,
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay.
    pub weight_decay: f64,
}

impl AdamW {
    /// The reference optimiser with learning rate `lr`: b1 0.9, b2 0.98, eps 1e-8, no weight decay.
    pub fn reference(lr: f64) -> Self {
        Self { lr, b1: 0.9, b2: 0.98, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// Adam's moments over a flat parameter vector.
#[derive(Clone, Debug)]
pub struct AdamState {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl AdamState {
    /// Zero moments for `len` parameters.
    pub fn new(len: usize) -> Self {
        Self { m: vec![0.0; len], v: vec![0.0; len], t: 0 }
    }

    /// One AdamW step of `params` along `grad`, element by element in f32 (the bias corrections in f64, rounded
    /// once).
    pub fn step(&mut self, params: &mut [f32], grad: &[f32], cfg: &AdamW) {
        self.t += 1;
        let c1 = (1.0 - cfg.b1.powi(self.t)) as f32;
        let c2 = (1.0 - cfg.b2.powi(self.t)) as f32;
        let (b1, b2, lr, eps, wd) =
            (cfg.b1 as f32, cfg.b2 as f32, cfg.lr as f32, cfg.eps as f32, cfg.weight_decay as f32);
        for (((p, &g), m), v) in params.iter_mut().zip(grad).zip(self.m.iter_mut()).zip(self.v.iter_mut()) {
            *m = b1 * *m + (1.0 - b1) * g;
            *v = b2 * *v + (1.0 - b2) * g * g;
            let update = (*m / c1) / ((*v / c2).sqrt() + eps) + wd * *p;
            *p -= lr * update;
        }
    }
}

/// Scales `grad` so that its Euclidean norm (summed in f64, in order) is at most `clip`; returns the norm before.
pub fn clip_global_norm(grad: &mut [f32], clip: f64) -> f64 {
    let norm = grad.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
    if norm > clip {
        let scale = (clip / norm) as f32;
        for v in grad.iter_mut() {
            *v *= scale;
        }
    }
    norm
}

/// What a least-squares fit did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FitReport {
    /// Mean loss `0.5 (y_hat - y)^2` on the fitting tasks before the fit.
    pub initial_loss: f64,
    /// Mean loss on the fitting tasks at the parameters kept.
    pub final_loss: f64,
    /// Mean loss on the validation tasks at the parameters kept (when validated).
    pub validation_loss: Option<f64>,
    /// Accepted steps taken; the parameters kept are those after `kept_step` of them (fewer when validation stopped
    /// the fit early).
    pub accepted_steps: usize,
    /// See `accepted_steps`.
    pub kept_step: usize,
    /// Gauss-Newton iterations (each one pass over the tasks for the normal equations, and one per tried step).
    pub iterations: usize,
    /// The relative loss change of the last accepted step was below the tolerance.
    pub converged: bool,
}

/// Mean loss of `model` on the tasks `(seed, stream..)`, `count` of them.
pub fn mean_loss<M: Model>(model: &M, sampler: &TaskSampler, seed: u64, stream: u64, count: usize) -> f64 {
    let net = model.net();
    // A group at a time (tasks side by side where the net can), the losses summed task by task in order.
    let size = net.group_size();
    let pool = Pool::new();
    let parts = sampler.par_groups_in::<f64, _>(
        seed,
        stream,
        count,
        size,
        (&pool, || (net.workspace(sampler.n), vec![0.0; size])),
        || 0.0,
        |l, (ws, y_hat), group| {
            net.group_predict(group, ws, y_hat);
            for (&p, &y) in y_hat.iter().zip(&group.y).take(group.count) {
                *l += 0.5 * ((p - y) as f64).powi(2);
            }
        },
    );
    parts.iter().sum::<f64>() / count as f64
}

/// Validation of a fit: `count` tasks from stream `stream` of the same seed, disjoint from the fitting tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// First stream.
    pub stream: u64,
    /// Tasks.
    pub count: usize,
}

/// Fits `model`'s parameters by least squares of its predictions on `count` tasks of `(seed, stream..)`:
/// Levenberg-Marquardt on the normal equations `(J^T J + lambda diag(J^T J)) delta = -J^T r`, where the row of `J`
/// for a task is `d y_hat / d params` from one backward pass. Meant for a few parameters (the GD references);
/// sums run in chunk order, so the result does not depend on the thread count. Stops after `max_iter` passes or when
/// an accepted step changes the loss by less than 1e-9 relative.
///
/// With `validation`, every accepted point of the trajectory (the start included) is evaluated on the validation
/// tasks afterwards and the one with the lowest validation loss is kept: early stopping that protects against fits
/// whose fitting loss keeps falling while rare tasks blow up (deep GD++ with geometrically growing rates does).
pub fn fit_least_squares<M: Model>(
    model: &mut M,
    sampler: &TaskSampler,
    seed: u64,
    stream: u64,
    count: usize,
    max_iter: usize,
    validation: Option<Validation>,
) -> FitReport {
    let p = model.params().len();
    let zero = model.net().zero_grads();
    // The workspaces and per-task buffers, one per block of chunks, kept from one iteration to the next.
    let pool = Pool::new();
    let initial_loss = mean_loss(model, sampler, seed, stream, count);
    let mut loss = initial_loss;
    let mut trajectory = vec![(model.params(), loss)];
    let mut lambda = 1e-3f64;
    let mut iterations = 0;
    let mut converged = false;
    for _ in 0..max_iter {
        iterations += 1;
        // Normal equations in f64, per chunk, summed in chunk order.
        let net = model.net();
        let m = &*model;
        // Per chunk: J^T J, J^T r, and the per-group buffers (no allocation per task): a group of tasks at a time
        // (side by side where the net can), each task's row added in task order.
        let (size, g) = (net.group_size(), zero.len());
        let make = || {
            let grads: Vec<_> = (0..size).flat_map(|_| zero.iter().cloned()).collect();
            (net.workspace(sampler.n), grads, vec![0.0; size], vec![0.0; p])
        };
        let parts = sampler.par_groups_in::<(Vec<f64>, Vec<f64>), _>(
            seed,
            stream,
            count,
            size,
            (&pool, make),
            || (vec![0.0; p * p], vec![0.0; p]),
            |(jtj, jtr), (ws, merged, y_hat, row), group| {
                net.group_prediction_grads(group, ws, y_hat, merged);
                for (t, (&y_hat, &y)) in y_hat.iter().zip(&group.y).take(group.count).enumerate() {
                    row.fill(0.0);
                    m.pullback(&merged[t * g..][..g], row);
                    let r = (y_hat - y) as f64;
                    for i in 0..p {
                        let ri = row[i] as f64;
                        jtr[i] += ri * r;
                        for j in 0..p {
                            jtj[i * p + j] += ri * row[j] as f64;
                        }
                    }
                }
            },
        );
        let (mut jtj, mut jtr) = (vec![0.0; p * p], vec![0.0; p]);
        for (a, b) in &parts {
            jtj.iter_mut().zip(a).for_each(|(x, y)| *x += y);
            jtr.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        }
        let start = model.params();
        // Try steps with growing damping until one lowers the loss.
        let mut accepted = None;
        for _ in 0..16 {
            let mut a = jtj.clone();
            for i in 0..p {
                a[i * p + i] += lambda * jtj[i * p + i].max(1e-12);
            }
            let rhs: Vec<f64> = jtr.iter().map(|v| -v).collect();
            if let Some(delta) = solve(&a, &rhs, p) {
                let trial: Vec<f32> = start.iter().zip(&delta).map(|(x, d)| (*x as f64 + d) as f32).collect();
                model.set_params(&trial);
                let trial_loss = mean_loss(model, sampler, seed, stream, count);
                if trial_loss.is_finite() && trial_loss <= loss {
                    accepted = Some(trial_loss);
                    lambda = (lambda / 10.0).max(1e-12);
                    break;
                }
                model.set_params(&start);
            }
            lambda *= 10.0;
        }
        match accepted {
            Some(new_loss) => {
                let rel = (loss - new_loss) / loss.max(f64::MIN_POSITIVE);
                loss = new_loss;
                trajectory.push((model.params(), loss));
                if rel < 1e-9 {
                    converged = true;
                    break;
                }
            }
            None => {
                // No step lowers the loss: the fit sits at a minimum, to the precision of the f32 model.
                converged = true;
                break;
            }
        }
    }
    let accepted_steps = trajectory.len() - 1;
    let (kept_step, validation_loss) = match validation {
        None => (accepted_steps, None),
        Some(v) => {
            let mut best = (accepted_steps, f64::INFINITY);
            for (i, (p, _)) in trajectory.iter().enumerate() {
                model.set_params(p);
                let l = mean_loss(model, sampler, seed, v.stream, v.count);
                // Ties (and NaN) keep the earlier, smaller step.
                if l < best.1 {
                    best = (i, l);
                }
            }
            (best.0, Some(best.1))
        }
    };
    let (params, final_loss) = &trajectory[kept_step];
    model.set_params(params);
    FitReport {
        initial_loss,
        final_loss: *final_loss,
        validation_loss,
        accepted_steps,
        kept_step,
        iterations,
        converged,
    }
}

/// Solves the symmetric system `a x = b` (`p x p`, row-major) by Gaussian elimination with partial pivoting; `None`
/// when it is singular.
pub fn solve(a: &[f64], b: &[f64], p: usize) -> Option<Vec<f64>> {
    let mut m: Vec<Vec<f64>> = (0..p).map(|i| a[i * p..(i + 1) * p].iter().copied().chain([b[i]]).collect()).collect();
    for col in 0..p {
        let pivot = (col..p).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() < 1e-300 || !m[pivot][col].is_finite() {
            return None;
        }
        m.swap(col, pivot);
        let (top, below) = m.split_at_mut(col + 1);
        let pivot_row = &top[col];
        for row in below.iter_mut() {
            let f = row[col] / pivot_row[col];
            for (r, pv) in row.iter_mut().zip(pivot_row.iter()).skip(col) {
                *r -= f * pv;
            }
        }
    }
    let mut x = vec![0.0; p];
    for i in (0..p).rev() {
        let s: f64 = (i + 1..p).map(|k| m[i][k] * x[k]).sum();
        x[i] = (m[i][p] - s) / m[i][i];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}
