//! Models the harness trains, fits and compares: a parameterisation of a forward structure
//! ([`Forward`]: an LSA [`Net`](crate::net::Net) or a [`SoftmaxNet`](crate::net::SoftmaxNet)).
//!
//! A [`Model`] exposes its parameters as one flat `f32` vector (what Adam, clipping and the least-squares fitter
//! work on), maps the gradients of its net's parameter groups (merged heads `(dL/dA, dL/dB)`, or softmax layers) back
//! to that vector ([`Model::pullback`], the chain rule written once per parameterisation), and lists its tensors for
//! saving. The parameterisations:
//! - [`Lsa`]: full LSA weights `W_Q, W_K, W_V, P` per distinct layer (the trained models: one layer, K distinct
//!   layers, or one layer applied K times);
//! - [`Softmax`]: softmax attention layers (the `softmax` experiment);
//! - [`Zoo`], [`MlpZoo`]: layers of one attention kind, alone or behind a learned feature map (`attention-zoo`);
//! - [`GdFamily`]: the core's GD / GD++ constructions with a few free scalars (one shared rate, a rate per step,
//!   or a rate and an input-transformation `gamma` per step), the references the trained models are compared with.

mod gd_family;
mod lsa;
mod mlp_lsa;
mod softmax;
mod zoo;

pub use gd_family::{GdFamily, GdKind};
pub use lsa::{load_head, Lsa, LsaHead, LSA_FORMAT, LSA_NAMES};
pub use mlp_lsa::{MlpLsa, MLP_LSA_FORMAT};
pub use softmax::{Softmax, SOFTMAX_FORMAT};
pub use zoo::{MlpZoo, Zoo, MLP_ZOO_FORMAT, ZOO_FORMAT};

use crate::net::Forward;
use crate::HarnessError;
use dualform_tensors::Tensor;
use std::collections::BTreeMap;

/// A trainable or fittable parameterisation of a forward structure ([`Forward`]).
pub trait Model: Clone + Send + Sync + 'static {
    /// The forward structure it parameterises.
    type Net: Forward;
    /// The forward structure with the current parameters.
    fn net(&self) -> &Self::Net;
    /// The parameters, flat, in the model's fixed order.
    fn params(&self) -> Vec<f32>;
    /// Sets the parameters (a slice as long as [`Model::params`]; extra values are ignored, missing ones keep
    /// their value) and rebuilds the net.
    fn set_params(&mut self, p: &[f32]);
    /// Adds into `out` (as long as [`Model::params`]) the gradient of the parameters given the gradients of the
    /// net's parameter groups (merged heads of a [`Net`](crate::net::Net), layers of a softmax net).
    fn pullback(&self, grads: &[<Self::Net as Forward>::Grad], out: &mut [f32]);
    /// The tensors that describe the model, for saving.
    fn tensors(&self) -> Vec<Tensor>;
    /// Facts a reader of the saved file needs (merged into the file's metadata).
    fn meta(&self) -> BTreeMap<String, String>;
}

/// Writes `model` to `path` with its own metadata plus `extra` (for example `d`, `n`, what the model is).
pub fn save<M: Model>(model: &M, extra: &[(&str, String)], path: &std::path::Path) -> Result<(), HarnessError> {
    let mut meta = model.meta();
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    dualform_tensors::TensorFile::write(path, &model.tensors(), &meta)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{stream_rng, TaskSampler};
    use dualform::Update;

    /// The pullback of every model against central differences of the mean loss over a few tasks (f32, so a loose
    /// bound, but a wrong chain rule is off by far more).
    fn check_pullback<M: Model>(mut m: M, label: &str) {
        let sampler = TaskSampler::new(m.net().width() - 1, 6, 1.0);
        let tasks = sampler.par_chunks::<Vec<(Vec<f32>, Vec<f32>, f32)>>(9, 0, 16, Vec::new, |acc, c, q, y| {
            acc.push((c.to_vec(), q.to_vec(), y))
        });
        let tasks: Vec<_> = tasks.into_iter().flatten().collect();
        let loss = |m: &M| -> f64 {
            let mut ws = m.net().workspace(6);
            tasks.iter().map(|(c, q, y)| 0.5 * ((m.net().predict(c, q, &mut ws, None) - y) as f64).powi(2)).sum()
        };
        let mut merged = m.net().zero_grads();
        let mut ws = m.net().workspace(6);
        for (c, q, y) in &tasks {
            m.net().forward_backward(c, q, &mut ws, |yh| yh - y, Some(&mut merged), None);
        }
        let p = m.params();
        let mut grad = vec![0.0f32; p.len()];
        m.pullback(&merged, &mut grad);
        let step = 1e-2f32;
        for i in (0..p.len()).step_by((p.len() / 12).max(1)) {
            let (mut plus, mut minus) = (p.clone(), p.clone());
            plus[i] += step;
            minus[i] -= step;
            m.set_params(&plus);
            let lp = loss(&m);
            m.set_params(&minus);
            let lm = loss(&m);
            let num = (lp - lm) / (2.0 * step as f64);
            assert!(
                (num - grad[i] as f64).abs() <= 0.02 * num.abs().max(1e-2),
                "{label}: parameter {i}: {} vs {num}",
                grad[i]
            );
        }
        m.set_params(&p);
    }

    #[test]
    fn every_pullback_matches_central_differences() {
        let mut rng = stream_rng(5, 0);
        let scale = |m: &mut Lsa| {
            let p: Vec<f32> = m.params().iter().map(|v| v * 30.0).collect();
            m.set_params(&p);
        };
        let mut single = Lsa::init(&mut rng, 5, 1, vec![0], Update::residual()).unwrap();
        scale(&mut single);
        check_pullback(single, "single layer");
        let mut stack = Lsa::init(&mut rng, 5, 2, vec![0, 1], Update::residual()).unwrap();
        scale(&mut stack);
        check_pullback(stack, "two layers");
        let mut rec = Lsa::init(&mut rng, 5, 1, vec![0, 0, 0], Update { scale: 0.75, first: 4, clip: None }).unwrap();
        scale(&mut rec);
        check_pullback(rec, "recurrent, y only, damped");
        for layers in [1, 2] {
            let mut m = Softmax::init(&mut rng, 5, layers);
            let p: Vec<f32> = m.params().iter().map(|v| v * 40.0).collect();
            m.set_params(&p);
            check_pullback(m, &format!("softmax, {layers} layers"));
        }
        let mut mlp = MlpLsa::<3, 4, 4>::init(&mut rng, 0.3);
        let n = mlp.params().len();
        // The LSA head (the last 64 parameters) scaled up from its near-zero start so every path carries gradient.
        let p: Vec<f32> =
            mlp.params().iter().enumerate().map(|(i, v)| if i + 64 >= n { v * 20.0 } else { *v }).collect();
        mlp.set_params(&p);
        check_pullback(mlp, "feature map and LSA layer");
        for kind in crate::net::Attention::ALL {
            let mut m = Zoo::<5>::init(&mut rng, kind, 2);
            let p: Vec<f32> = m.params().iter().map(|v| v * 40.0).collect();
            m.set_params(&p);
            check_pullback(m, &format!("{} x 2", kind.name()));
        }
        let mut mz = MlpZoo::<3, 4, 4>::init(&mut rng, crate::net::Attention::EluPlusOne, 1, 0.3);
        let n = mz.params().len();
        let p: Vec<f32> =
            mz.params().iter().enumerate().map(|(i, v)| if i + 128 >= n { v * 30.0 } else { *v }).collect();
        mz.set_params(&p);
        check_pullback(mz, "feature map and elu+1 layer");
        for kind in [GdKind::SharedRate, GdKind::PerStep, GdKind::PlusPlus, GdKind::PlusPlusShared] {
            let mut m = GdFamily::new(4, kind, 3, 6, 2.0).unwrap();
            let p: Vec<f32> =
                m.params().iter().enumerate().map(|(i, v)| if i < 3 { *v + i as f32 * 0.5 } else { 0.3 }).collect();
            m.set_params(&p);
            check_pullback(m, &format!("{kind:?}"));
        }
    }
}
