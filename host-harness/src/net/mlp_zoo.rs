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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::zoo::tests::random_layers;
    use crate::net::Attention;
    use dualform::rng::SplitMix64;

    /// The feature map's gradient reaches every token: against central differences through the front.
    #[test]
    fn mlp_zoo_net_gradients_match_finite_differences() {
        let mut s = SplitMix64::new(3);
        for kind in [Attention::Softmax, Attention::Performer] {
            let mut net = MlpZooNet::<3, 4, 4>::new(ZooNet::new(kind, random_layers(4, 1, 0.5)));
            let mut fill = |v: &mut f32| *v = (s.next_normal() * 0.5) as f32;
            net.mlp.w_e.iter_mut().chain(net.mlp.b_e.iter_mut()).chain(net.mlp.b_1.iter_mut()).for_each(&mut fill);
            net.mlp.w_1.iter_mut().chain(net.mlp.w_2.iter_mut()).chain(net.mlp.b_2.iter_mut()).for_each(&mut fill);
            let ctx = [[0.5f32, 1.0], [-1.2, 0.3], [2.0, -0.7], [0.1, 0.9]];
            let query = [0.8f32, 0.0];
            let mut grads = net.zero_grads();
            let (_, dq) = net.forward_backward(&ctx, &query, &mut Workspace::default(), |_| 1.0, Some(&mut grads));
            let f =
                |n: &MlpZooNet<3, 4, 4>, x: f32| f64::from(n.predict(&ctx, &[x, 0.0], &mut Workspace::default(), None));
            let h = 1e-2f32;
            let num = (f(&net, query[0] + h) - f(&net, query[0] - h)) / (2.0 * f64::from(h));
            assert!((num - f64::from(dq[0])).abs() < 3e-3 * (1.0 + num.abs()), "{kind:?}: {} vs {num}", dq[0]);
            for (r, c) in [(0usize, 0usize), (2, 1), (3, 2)] {
                let (mut p, mut m) = (net.clone(), net.clone());
                p.mlp.w_1[(r, c)] += h;
                m.mlp.w_1[(r, c)] -= h;
                let num = (f(&p, query[0]) - f(&m, query[0])) / (2.0 * f64::from(h));
                let ana = f64::from(grads[0].mlp.w_1[(r, c)]);
                assert!((num - ana).abs() < 3e-3 * (1.0 + num.abs()), "{kind:?} w_1[{r},{c}]: {ana} vs {num}");
            }
        }
    }
}
