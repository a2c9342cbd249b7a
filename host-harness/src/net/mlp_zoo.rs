//! [`MlpZooNet`]: layers of one attention kind ([`ZooNet`]) behind a learned feature map of scalar inputs (the
//! core's [`ScalarMlp`]), for the `sine+mlp` task of `attention-zoo`. The feature map's backward reaches every token
//! through the input gradients [`ZooNet`] leaves in its workspace.

use super::mlp::{add_mlp, embed, Embedded};
use super::zoo::{ZooLayer, ZooNet};
use super::{FixedForward, Workspace};
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
