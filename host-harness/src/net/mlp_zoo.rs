//! [`MlpZooNet`]: layers of one attention kind ([`ZooNet`]) behind a learned feature map of scalar inputs (the
//! core's [`ScalarMlp`]), for the `sine+mlp` task of `attention-zoo`. The feature map's backward reaches every token
//! through the input gradients [`ZooNet`] leaves in its workspace. Training runs the attention layers on tasks in
//! vector lanes ([`ZooNet::lanes_gradient_inputs`]) and the feature map task by task, each task's gradient from zero
//! (the order of [`super::tasks_gradient_from_zero`], which gives the same bits and is the fallback).

use super::lanes::LANES;
use super::mlp::{add_mlp, embed, Embedded};
use super::zoo::{ZooLanes, ZooLayer, ZooNet};
use super::{FixedForward, Workspace};
use crate::tasks::Group;
use dualform::mlp::ScalarMlp;

/// A learned feature map of width F (hidden width M) in front of a [`ZooNet`] on tokens of width `W = F + 1`: raw
/// tokens `(x, y)` become `(phi(x), y)`.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpZooNet<const F: usize, const M: usize, const W: usize> {
    /// The feature map.
    pub mlp: ScalarMlp<f32, F, M>,
    /// The attention layers.
    pub net: ZooNet<W>,
}

/// The gradient of an [`MlpZooNet`]: one group, the feature map's and every layer's.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpZooGrad<const F: usize, const M: usize, const W: usize> {
    /// The feature map's.
    pub mlp: ScalarMlp<f32, F, M>,
    /// Every layer's.
    pub layers: Vec<ZooLayer<W>>,
}

impl<const F: usize, const M: usize, const W: usize> MlpZooNet<F, M, W> {
    /// A zero feature map in front of `net`.
    pub fn new(net: ZooNet<W>) -> Self {
        const { assert!(W == F + 1, "the token width W must be F + 1") };
        Self { mlp: ScalarMlp::zeros(), net }
    }

    fn tokens(&self, ctx: &[[f32; 2]], query: &[f32; 2]) -> (Vec<[f32; W]>, [f32; W]) {
        (ctx.iter().map(|t| embed(&self.mlp, t)).collect(), embed(&self.mlp, query))
    }

    /// [`FixedForward::group_gradient`] with the attention layers in lanes: every task embedded, the layers' gradients
    /// and each task's input-token gradients from the lanes, then each task's feature-map gradient from zero, added
    /// task by task. False, having added nothing, when the group does not fit or the lanes refuse it. The feature
    /// map runs in a function compiled for the chosen vector unit ([`super::simd`]; the same bits on every unit).
    fn lanes_gradient(&self, group: &Group, grad: &mut MlpZooGrad<F, M, W>, loss: &mut f64) -> bool {
        super::simd::run_any_width(super::simd::current(), MlpZooGroup { net: self, group, grad, loss })
    }

    /// [`MlpZooNet::lanes_gradient`], inlined into the caller.
    #[inline(always)]
    fn lanes_gradient_in(&self, group: &Group, grad: &mut MlpZooGrad<F, M, W>, loss: &mut f64) -> bool {
        let (n, e) = group.shape();
        if e != 2 || group.count == 0 || group.count > LANES || grad.layers.len() != self.net.layers().len() {
            return false;
        }
        let raw = |t| {
            let (ctx, query, y) = group.task(t);
            Some((ctx.as_chunks::<2>().0, <&[f32; 2]>::try_from(query).ok()?, y))
        };
        let mut tokens = Group::zeros(n, W, LANES);
        let mut embedded = Vec::with_capacity(group.count);
        for t in 0..group.count {
            let Some((ctx, query, y)) = raw(t) else { return false };
            let emb = Embedded::<F, M, W>::new(&self.mlp, ctx, query);
            tokens.ctx[t * n * W..(t + 1) * n * W].copy_from_slice(emb.ctx.as_flattened());
            tokens.query[t * W..(t + 1) * W].copy_from_slice(&emb.query);
            tokens.y[t] = y;
            embedded.push((ctx, query, emb));
        }
        tokens.count = group.count;
        let (simd, mut inputs) = (super::simd::current(), Vec::new());
        let mut lanes = ZooLanes::default();
        if !self.net.lanes_gradient_inputs(simd, &tokens, &mut lanes, &mut grad.layers, loss, &mut inputs) {
            return false;
        }
        for ((ctx, query, emb), g) in embedded.iter().zip(inputs.chunks_exact(n + 1)) {
            let mut one = ScalarMlp::zeros();
            emb.backward_ctx(&self.mlp, ctx, &g[..n], &mut one);
            emb.backward_query(&self.mlp, query, &g[n], &mut one);
            add_mlp(&mut grad.mlp, &one);
        }
        true
    }
}

impl<const F: usize, const M: usize, const W: usize> FixedForward<2> for MlpZooNet<F, M, W> {
    type Grad = MlpZooGrad<F, M, W>;

    fn zero_grads(&self) -> Vec<Self::Grad> {
        vec![MlpZooGrad { mlp: ScalarMlp::zeros(), layers: self.net.zero_grads() }]
    }

    fn add_grad(into: &mut Self::Grad, from: &Self::Grad) {
        add_mlp(&mut into.mlp, &from.mlp);
        for (a, b) in into.layers.iter_mut().zip(from.layers.iter()) {
            ZooNet::<W>::add_grad(a, b);
        }
    }

    fn applications(&self) -> usize {
        self.net.applications()
    }

    fn workspace(&self, _n: usize) -> Workspace<2> {
        Workspace::default()
    }

    /// Training runs [`LANES`] tasks side by side (the attention layers; the feature map task by task).
    fn group_size(&self) -> usize {
        LANES
    }

    fn group_gradient(&self, group: &Group, ws: &mut Workspace<2>, grads: &mut [Self::Grad], loss: &mut f64) -> bool {
        let done = match grads {
            [grad] => self.lanes_gradient(group, grad, loss),
            _ => false,
        };
        if !done {
            super::tasks_gradient_from_zero(self, group, ws, grads, loss);
        }
        true
    }

    fn predict(&self, ctx: &[[f32; 2]], query: &[f32; 2], _ws: &mut Workspace<2>, readout: Option<&mut [f32]>) -> f32 {
        let (tokens, q) = self.tokens(ctx, query);
        self.net.predict(&tokens, &q, &mut self.net.workspace(ctx.len()), readout)
    }

    fn forward_backward(
        &self,
        ctx: &[[f32; 2]],
        query: &[f32; 2],
        _ws: &mut Workspace<2>,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [Self::Grad]>,
    ) -> (f32, [f32; 2]) {
        let emb = Embedded::<F, M, W>::new(&self.mlp, ctx, query);
        let mut spare;
        let grad = match grads.and_then(|g| g.first_mut()) {
            Some(g) => g,
            None => {
                spare = self.zero_grads();
                &mut spare[0]
            }
        };
        let mut ws = self.net.workspace(ctx.len());
        let Some(y_hat) = self.net.backward_all(&emb.ctx, &emb.query, &mut ws, seed, &mut grad.layers) else {
            return (f32::NAN, [f32::NAN; 2]);
        };
        let (g_ctx, dq) = (&ws.grads[..ctx.len()], ws.grads[ctx.len()]);
        emb.backward_ctx(&self.mlp, ctx, g_ctx, &mut grad.mlp);
        let dx = emb.backward_query(&self.mlp, query, &dq, &mut grad.mlp);
        (y_hat, [dx, dq[W - 1]])
    }
}

super::forward_from_fixed!([const F: usize, const M: usize, const W: usize] MlpZooNet<F, M, W>, 2);

/// One group's gradient of an [`MlpZooNet`] as work for [`super::simd::run_any_width`].
struct MlpZooGroup<'a, const F: usize, const M: usize, const W: usize> {
    net: &'a MlpZooNet<F, M, W>,
    group: &'a Group,
    grad: &'a mut MlpZooGrad<F, M, W>,
    loss: &'a mut f64,
}

impl<const F: usize, const M: usize, const W: usize> super::simd::InLanes for MlpZooGroup<'_, F, M, W> {
    type Out = bool;
    #[inline(always)]
    fn run<const X: usize>(self) -> bool {
        self.net.lanes_gradient_in(self.group, self.grad, self.loss)
    }
}
