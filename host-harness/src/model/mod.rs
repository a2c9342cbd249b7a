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
