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

pub mod lanes;
pub mod merged;
pub mod mlp;
pub mod mlp_zoo;
pub mod simd;
pub mod softmax;
pub mod zoo;

pub use merged::{Merged, Net, NetError, NetWorkspace};
pub use mlp::{MlpLsaGrad, MlpLsaNet};
pub use mlp_zoo::{MlpZooGrad, MlpZooNet};
pub use softmax::{SoftmaxLayer, SoftmaxNet, SoftmaxWorkspace, VectorsBuf, SOFTMAX_HEADS};
pub use zoo::{Attention, ZooLayer, ZooNet, ZOO_HEADS};

use crate::tasks::Group;
use dualform::{Layer, Real};

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

/// A model's forward and backward per task, at a token width chosen at run time: the context is N tokens of width
/// E in one slice (token `j` at `j * E..`), the query E values.
pub trait Forward: Clone + Send + Sync {
    /// The gradient of one parameter group (a head of a [`Net`], a layer of a [`SoftmaxNet`]).
    type Grad: Clone + Send + Sync;
    /// Per-task scratch, made once per thread or chunk by [`Forward::workspace`].
    type Workspace: Clone + Send + 'static;
    /// The token width E.
    fn width(&self) -> usize;
    /// Zero gradients, one per parameter group.
    fn zero_grads(&self) -> Vec<Self::Grad>;
    /// `into += from`.
    fn add_grad(into: &mut Self::Grad, from: &Self::Grad);
    /// Number of layer applications (the length of a readout).
    fn applications(&self) -> usize;
    /// A workspace for contexts of `n` pairs.
    fn workspace(&self, n: usize) -> Self::Workspace;
    /// The prediction for one task; when `readout` is given, it receives the prediction after each application
    /// (its first `applications()` entries).
    fn predict(&self, ctx: &[f32], query: &[f32], ws: &mut Self::Workspace, readout: Option<&mut [f32]>) -> f32;
    /// Forward and backward for one task: computes `y_hat`, takes `dl = seed(y_hat)` as `dL/dy_hat`, adds the
    /// parameter gradients into `grads` (one entry per group) when given, writes `dL/dh_query` into `dh` (E values)
    /// when given, and returns `y_hat` (NaN if the forward failed).
    fn forward_backward(
        &self,
        ctx: &[f32],
        query: &[f32],
        ws: &mut Self::Workspace,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [Self::Grad]>,
        dh: Option<&mut [f32]>,
    ) -> f32;

    /// How many tasks [`Forward::group_gradient`] takes at once; 1 unless the net runs tasks in vector lanes.
    fn group_size(&self) -> usize {
        1
    }

    /// The loss `0.5 (y_hat - y)^2` of each task of `group`, in task order: its parameter gradients added into
    /// `grads` and the loss into `loss`. By default task by task through [`Forward::forward_backward`]; a net that
    /// runs tasks side by side gives the same bits.
    fn group_gradient(&self, group: &Group, ws: &mut Self::Workspace, grads: &mut [Self::Grad], loss: &mut f64) {
        tasks_gradient(self, group, ws, grads, loss);
    }

    /// The prediction of each task of `group` into `out` (its first `group.count` entries), the bits of
    /// [`Forward::predict`]. By default task by task; a net that runs tasks side by side gives the same bits.
    fn group_predict(&self, group: &Group, ws: &mut Self::Workspace, out: &mut [f32]) {
        tasks_predict(self, group, ws, out);
    }

    /// For each task `t` of `group`: its prediction into `y_hat[t]` and the gradient of that prediction alone into
    /// `grads[t * g..][..g]` (`g` parameter groups): what [`Forward::forward_backward`] with seed 1 adds into zero
    /// gradients. By default task by task; a net that runs tasks side by side gives the same bits.
    fn group_prediction_grads(
        &self,
        group: &Group,
        ws: &mut Self::Workspace,
        y_hat: &mut [f32],
        grads: &mut [Self::Grad],
    ) {
        tasks_prediction_grads(self, group, ws, y_hat, grads);
    }
}

/// [`Forward::group_prediction_grads`] task by task.
pub fn tasks_prediction_grads<F: Forward>(
    net: &F,
    group: &Group,
    ws: &mut F::Workspace,
    y_hat: &mut [f32],
    grads: &mut [F::Grad],
) {
    let zero = net.zero_grads();
    let tasks = grads.chunks_exact_mut(zero.len().max(1)).zip(y_hat.iter_mut());
    for (t, (one, y)) in tasks.take(group.count).enumerate() {
        let (ctx, query, _) = group.task(t);
        one.clone_from_slice(&zero);
        *y = net.forward_backward(ctx, query, ws, |_| 1.0, Some(one), None);
    }
}

/// [`Forward::group_predict`] task by task.
pub fn tasks_predict<F: Forward>(net: &F, group: &Group, ws: &mut F::Workspace, out: &mut [f32]) {
    for (t, o) in out.iter_mut().enumerate().take(group.count) {
        let (ctx, query, _) = group.task(t);
        *o = net.predict(ctx, query, ws, None);
    }
}

/// [`Forward::group_gradient`] task by task.
pub fn tasks_gradient<F: Forward>(
    net: &F,
    group: &Group,
    ws: &mut F::Workspace,
    grads: &mut [F::Grad],
    loss: &mut f64,
) {
    for t in 0..group.count {
        let (ctx, query, y) = group.task(t);
        let y_hat = net.forward_backward(ctx, query, ws, |y_hat| y_hat - y, Some(&mut *grads), None);
        *loss += 0.5 * ((y_hat - y) as f64).powi(2);
    }
}

/// [`Forward::group_gradient`] task by task in the order of the nets that run tasks in lanes ([`lanes`]): each task's
/// gradient from zero, then added into `grads` (the fallback of [`SoftmaxNet`] and [`ZooNet`], which give the same
/// bits in lanes or one by one).
pub fn tasks_gradient_from_zero<F: Forward>(
    net: &F,
    group: &Group,
    ws: &mut F::Workspace,
    grads: &mut [F::Grad],
    loss: &mut f64,
) {
    let zero = net.zero_grads();
    let mut one = zero.clone();
    for t in 0..group.count {
        let (ctx, query, y) = group.task(t);
        one.clone_from(&zero);
        let y_hat = net.forward_backward(ctx, query, ws, |y_hat| y_hat - y, Some(&mut one), None);
        for (into, from) in grads.iter_mut().zip(&one) {
            F::add_grad(into, from);
        }
        *loss += 0.5 * ((y_hat - y) as f64).powi(2);
    }
}

/// The forward of a net whose token width is fixed at compile time (the softmax, attention-zoo and feature-map
/// nets); [`Forward`] is implemented for each of them on top of it.
pub trait FixedForward<const E: usize>: Clone + Send + Sync {
    /// See [`Forward::Grad`].
    type Grad: Clone + Send + Sync;
    /// Zero gradients, one per parameter group.
    fn zero_grads(&self) -> Vec<Self::Grad>;
    /// `into += from`.
    fn add_grad(into: &mut Self::Grad, from: &Self::Grad);
    /// Number of layer applications (the length of a readout).
    fn applications(&self) -> usize;
    /// A workspace for contexts of `n` pairs.
    fn workspace(&self, n: usize) -> Workspace<E>;
    /// See [`Forward::predict`].
    fn predict(&self, ctx: &[[f32; E]], query: &[f32; E], ws: &mut Workspace<E>, readout: Option<&mut [f32]>) -> f32;
    /// See [`Forward::forward_backward`]; returns `(y_hat, dL/dh_query)`.
    fn forward_backward(
        &self,
        ctx: &[[f32; E]],
        query: &[f32; E],
        ws: &mut Workspace<E>,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [Self::Grad]>,
    ) -> (f32, [f32; E]);
    /// See [`Forward::group_size`].
    fn group_size(&self) -> usize {
        1
    }
    /// [`Forward::group_gradient`] when the net has its own; false, having added nothing, to go task by task
    /// ([`tasks_gradient`]).
    fn group_gradient(
        &self,
        _group: &Group,
        _ws: &mut Workspace<E>,
        _grads: &mut [Self::Grad],
        _loss: &mut f64,
    ) -> bool {
        false
    }
}

/// Implements [`Forward`] for a [`FixedForward`] net: the context slice is read as tokens of width E, the query as
/// one (a query of another width predicts NaN).
macro_rules! forward_from_fixed {
    ([$($g:tt)*] $t:ty, $e:expr) => {
        impl<$($g)*> $crate::net::Forward for $t {
            type Grad = <$t as $crate::net::FixedForward<{ $e }>>::Grad;
            type Workspace = $crate::net::Workspace<{ $e }>;
            fn width(&self) -> usize {
                $e
            }
            fn zero_grads(&self) -> Vec<Self::Grad> {
                $crate::net::FixedForward::<{ $e }>::zero_grads(self)
            }
            fn add_grad(into: &mut Self::Grad, from: &Self::Grad) {
                <$t as $crate::net::FixedForward<{ $e }>>::add_grad(into, from)
            }
            fn applications(&self) -> usize {
                $crate::net::FixedForward::<{ $e }>::applications(self)
            }
            fn workspace(&self, n: usize) -> Self::Workspace {
                $crate::net::FixedForward::<{ $e }>::workspace(self, n)
            }
            fn group_size(&self) -> usize {
                $crate::net::FixedForward::<{ $e }>::group_size(self)
            }
            fn group_gradient(
                &self,
                group: &$crate::tasks::Group,
                ws: &mut Self::Workspace,
                grads: &mut [Self::Grad],
                loss: &mut f64,
            ) {
                if !$crate::net::FixedForward::<{ $e }>::group_gradient(self, group, ws, grads, loss) {
                    $crate::net::tasks_gradient(self, group, ws, grads, loss);
                }
            }
            fn predict(
                &self,
                ctx: &[f32],
                query: &[f32],
                ws: &mut Self::Workspace,
                readout: Option<&mut [f32]>,
            ) -> f32 {
                match <&[f32; $e]>::try_from(query) {
                    Ok(q) => $crate::net::FixedForward::<{ $e }>::predict(self, ctx.as_chunks().0, q, ws, readout),
                    Err(_) => f32::NAN,
                }
            }
            fn forward_backward(
                &self,
                ctx: &[f32],
                query: &[f32],
                ws: &mut Self::Workspace,
                seed: impl FnOnce(f32) -> f32,
                grads: Option<&mut [Self::Grad]>,
                dh: Option<&mut [f32]>,
            ) -> f32 {
                let Ok(q) = <&[f32; $e]>::try_from(query) else { return f32::NAN };
                let (y, g) =
                    $crate::net::FixedForward::<{ $e }>::forward_backward(self, ctx.as_chunks().0, q, ws, seed, grads);
                if let Some(dh) = dh {
                    for (d, v) in dh.iter_mut().zip(g) {
                        *d = v;
                    }
                }
                y
            }
        }
    };
}
pub(crate) use forward_from_fixed;

/// Per-task scratch for a [`FixedForward`]: the tokens after every application, the caches of the backward, token
/// gradients. Make one per thread or chunk with [`FixedForward::workspace`]; it grows to any context length it meets.
/// `T = Lanes<8>` is the scratch of eight tasks side by side ([`lanes`]), kept inside the `f32` one.
#[derive(Clone, Debug, Default)]
pub struct Workspace<const E: usize, T = f32> {
    tokens: Vec<[T; E]>,
    grads: Vec<[T; E]>,
    /// Per-token scratch of the attention-zoo layers (`n + 1` each).
    keys: Vec<[T; E]>,
    values: Vec<[T; E]>,
    g_values: Vec<[T; E]>,
    /// The softmax kind's projected keys and values.
    softmax: zoo::SoftmaxScratch<T>,
    /// A [`ZooNet`]'s training scratch for tasks in lanes, made on first use.
    lanes: Option<Box<zoo::ZooLanes<E>>>,
}

impl<const E: usize, T: Real> Workspace<E, T> {
    /// Scratch for `k` applications over contexts of `n` pairs.
    fn new(k: usize, n: usize) -> Self {
        let stride = n + 1;
        let zero = || vec![[T::ZERO; E]; stride];
        Self {
            tokens: vec![[T::ZERO; E]; (k + 1) * stride],
            grads: zero(),
            keys: zero(),
            values: zero(),
            g_values: zero(),
            softmax: zoo::SoftmaxScratch::default(),
            lanes: None,
        }
    }
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
