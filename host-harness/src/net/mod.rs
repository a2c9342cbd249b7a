//! The forward structures the harness trains and compares, behind one interface ([`Forward`]): a prediction and
//! its exact backward per task on the core's kernels.
//!
//! - [`Net`] ([`merged`]): merged LSA heads in a schedule with an update rule (every LSA model and every GD
//!   reference);
//! - [`SoftmaxNet`] ([`softmax`]): softmax attention layers, each with [`SOFTMAX_HEADS`] heads;
//! - [`MlpLsaNet`] ([`mlp`]): a learned feature map of scalar inputs, then one LSA layer;
//! - [`ZooNet`] ([`zoo`]), [`MlpZooNet`] ([`mlp_zoo`]): layers of one attention kind (LSA, softmax, elu+1, Performer, Efficient
//!   Attention), with or without that feature map in front.
//!
//! The prediction is `y_hat = -h_query[last]` for both; [`Forward::forward_backward`] also returns `dL/dh_query`
//! for a seed `dL/dy_hat`, so the sensitivity `d y_hat / d x_q` of the reference's metrics is its first d entries for
//! seed 1.

pub mod merged;
pub mod mlp;
pub mod mlp_zoo;
pub mod softmax;
pub mod zoo;

pub use merged::{Net, NetError};
pub use mlp::{MlpLsaGrad, MlpLsaNet};
pub use mlp_zoo::{MlpZooGrad, MlpZooNet};
pub use softmax::{SoftmaxLayer, SoftmaxNet, SOFTMAX_HEADS};
pub use zoo::{Attention, ZooLayer, ZooNet, ZOO_HEADS};

use dualform::{Layer, LayerCache, MergedHead, Real};

/// `into += from`, head by head (the gradient of a layer of unmerged heads).
pub(crate) fn add_layer<T: Real, const E: usize, const H: usize>(
    into: &mut Layer<T, E, E, E, H>,
    from: &Layer<T, E, E, E, H>,
) {
    for (a, b) in into.heads.iter_mut().zip(from.heads.iter()) {
        a.w_q += b.w_q;
        a.w_k += b.w_k;
        a.w_v += b.w_v;
        a.p += b.p;
    }
}

/// A model's forward and backward per task.
pub trait Forward<const E: usize>: Clone + Send + Sync {
    /// The gradient of one parameter group (a head of a [`Net`], a layer of a [`SoftmaxNet`]).
    type Grad: Clone + Send + Sync;
    /// Zero gradients, one per parameter group.
    fn zero_grads(&self) -> Vec<Self::Grad>;
    /// `into += from`.
    fn add_grad(into: &mut Self::Grad, from: &Self::Grad);
    /// Number of layer applications (the length of a readout).
    fn applications(&self) -> usize;
    /// A workspace for contexts of `n` pairs.
    fn workspace(&self, n: usize) -> Workspace<E>;
    /// The prediction for one task; when `readout` is given, it receives the prediction after each application
    /// (its first `applications()` entries).
    fn predict(&self, ctx: &[[f32; E]], query: &[f32; E], ws: &mut Workspace<E>, readout: Option<&mut [f32]>) -> f32;
    /// Forward and backward for one task: computes `y_hat`, takes `dl = seed(y_hat)` as `dL/dy_hat`, adds the
    /// parameter gradients into `grads` (one entry per group) when given, and returns `(y_hat, dL/dh_query)`.
    fn forward_backward(
        &self,
        ctx: &[[f32; E]],
        query: &[f32; E],
        ws: &mut Workspace<E>,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [Self::Grad]>,
    ) -> (f32, [f32; E]);
}

/// Per-task scratch for a [`Forward`]: the tokens after every application, the caches of the backward, token
/// gradients. Make one per thread or chunk with [`Forward::workspace`]; it grows to any context length it meets.
#[derive(Clone, Debug, Default)]
pub struct Workspace<const E: usize> {
    tokens: Vec<[f32; E]>,
    caches: Vec<LayerCache<f32, E>>,
    grads: Vec<[f32; E]>,
    /// Projected keys, values and their gradients of a softmax layer (`heads * n` each).
    keys: Vec<[f32; E]>,
    values: Vec<[f32; E]>,
    g_keys: Vec<[f32; E]>,
    g_values: Vec<[f32; E]>,
    /// Head gradients nobody asked for (a forward-backward for the sensitivity only).
    spare: Vec<MergedHead<f32, E>>,
}

impl<const E: usize> Workspace<E> {
    /// After a run of `k` applications over contexts of `n` pairs (tokens of application `a` at
    /// `(a + 1) * (n + 1)..`): the prediction `-h_query[last]` after each application into `readout` (its first `k`
    /// entries, when given), and the final prediction.
    fn predictions(&self, n: usize, k: usize, readout: Option<&mut [f32]>) -> f32 {
        let stride = n + 1;
        let at = |app: usize| self.tokens.get((app + 2) * stride - 1).map_or(f32::NAN, |t| -t[E - 1]);
        if let Some(r) = readout {
            for (app, slot) in r.iter_mut().take(k).enumerate() {
                *slot = at(app);
            }
        }
        k.checked_sub(1).map_or(f32::NAN, at)
    }
}
