//! [`SoftmaxNet`]: K softmax attention layers applied in order with the residual rule, every token updated by every
//! layer but the last (only the query's output of the last one is read), on the core's slice kernels
//! ([`softmax_attention_slices`], [`softmax_token_update`] and their backward).

use super::{FixedForward, Workspace};
use dualform::backward::{softmax_backward_slices, softmax_token_backward};
use dualform::{softmax_attention_slices, softmax_token_update, Layer, Mask, SoftmaxWork, Update};

/// Heads per softmax layer.
pub const SOFTMAX_HEADS: usize = 2;

/// One softmax attention layer of the harness: [`SOFTMAX_HEADS`] heads with key and value size E.
pub type SoftmaxLayer<const E: usize> = Layer<f32, E, E, E, SOFTMAX_HEADS>;

/// Softmax attention layers applied once each, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxNet<const E: usize> {
    layers: Vec<SoftmaxLayer<E>>,
}

impl<const E: usize> SoftmaxNet<E> {
    /// The layers, applied in order (at least one: an empty list gets one zero layer, which predicts 0).
    pub fn new(mut layers: Vec<SoftmaxLayer<E>>) -> Self {
        if layers.is_empty() {
            layers.push(Layer::zeros());
        }
        Self { layers }
    }

    /// The layers.
    pub fn layers(&self) -> &[SoftmaxLayer<E>] {
        &self.layers
    }

    /// Mutable layers.
    pub fn layers_mut(&mut self) -> &mut [SoftmaxLayer<E>] {
        &mut self.layers
    }

    /// Every layer's input tokens for one task, layer after layer (`(n + 1)` tokens each: context, then query), or
    /// `None` on a non-finite logit.
    pub fn layer_inputs<'w>(
        &self,
        ctx: &[[f32; E]],
        query: &[f32; E],
        ws: &'w mut Workspace<E>,
    ) -> Option<&'w [[f32; E]]> {
        let len = self.layers.len() * (ctx.len() + 1);
        if self.run_all(ctx, query, ws) {
            ws.tokens.get(..len)
        } else {
            None
        }
    }

    /// Runs every layer but the last on all tokens and the last on the query; afterwards layer `k`'s output tokens
    /// are `ws.tokens[(k + 1) * (n + 1)..][..n + 1]` (for the last, only the query). False on a non-finite logit.
    fn run_all(&self, ctx: &[[f32; E]], query: &[f32; E], ws: &mut Workspace<E>) -> bool {
        let (n, k) = (ctx.len(), self.layers.len());
        let stride = n + 1;
        if ws.tokens.len() < (k + 1) * stride || ws.grads.len() < stride || ws.keys.len() != SOFTMAX_HEADS * n {
            *ws = self.workspace(n);
        }
        ws.tokens[..n].copy_from_slice(ctx);
        ws.tokens[n] = *query;
        for (app, layer) in self.layers.iter().enumerate() {
            let (done, rest) = ws.tokens.split_at_mut((app + 1) * stride);
            let input = &done[app * stride..];
            let (Some((q_in, c_in)), Some((q_out, c_out))) = (input.split_last(), rest[..stride].split_last_mut())
            else {
                return false;
            };
            let ok = if app + 1 == k {
                softmax_token_update(layer, c_in, q_in).map(|u| {
                    *q_out = *q_in;
                    Update::residual().apply(q_out, &u);
                })
            } else {
                let mut work =
                    SoftmaxWork { keys: &mut ws.keys, values: &mut ws.values, g_keys: &mut [], g_values: &mut [] };
                softmax_attention_slices(layer, Mask::Full, &Update::residual(), c_in, q_in, c_out, q_out, &mut work)
            };
            if ok.is_err() {
                return false;
            }
        }
        true
    }
}

impl<const E: usize> FixedForward<E> for SoftmaxNet<E> {
    type Grad = SoftmaxLayer<E>;

    fn zero_grads(&self) -> Vec<SoftmaxLayer<E>> {
        vec![Layer::zeros(); self.layers.len()]
    }

    fn add_grad(into: &mut SoftmaxLayer<E>, from: &SoftmaxLayer<E>) {
        super::add_layer(into, from);
    }

    fn applications(&self) -> usize {
        self.layers.len()
    }

    fn workspace(&self, n: usize) -> Workspace<E> {
        Workspace {
            tokens: vec![[0.0; E]; (self.layers.len() + 1) * (n + 1)],
            grads: vec![[0.0; E]; n + 1],
            keys: vec![[0.0; E]; SOFTMAX_HEADS * n],
            values: vec![[0.0; E]; SOFTMAX_HEADS * n],
            g_keys: vec![[0.0; E]; SOFTMAX_HEADS * n],
            g_values: vec![[0.0; E]; SOFTMAX_HEADS * n],
        }
    }

    fn predict(&self, ctx: &[[f32; E]], query: &[f32; E], ws: &mut Workspace<E>, readout: Option<&mut [f32]>) -> f32 {
        if !self.run_all(ctx, query, ws) {
            return f32::NAN;
        }
        ws.predictions(ctx.len(), self.layers.len(), readout)
    }

    fn forward_backward(
        &self,
        ctx: &[[f32; E]],
        query: &[f32; E],
        ws: &mut Workspace<E>,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [SoftmaxLayer<E>]>,
    ) -> (f32, [f32; E]) {
        const FAILED: f32 = f32::NAN;
        if !self.run_all(ctx, query, ws) {
            return (FAILED, [FAILED; E]);
        }
        let (n, k) = (ctx.len(), self.layers.len());
        let stride = n + 1;
        let y_hat = -ws.tokens[(k + 1) * stride - 1][E - 1];
        let mut spare;
        let grads = match grads {
            Some(g) => g,
            None => {
                spare = self.zero_grads();
                &mut spare[..]
            }
        };
        let Workspace { tokens, grads: g, keys, values, g_keys, g_values, .. } = ws;
        let mut work = SoftmaxWork { keys, values, g_keys, g_values };
        let g = &mut g[..stride];
        g.fill([0.0; E]);
        g[n][E - 1] = -seed(y_hat);
        for app in (0..k).rev() {
            let input = &tokens[app * stride..(app + 1) * stride];
            let (Some((q_in, c_in)), Some((gq, gc)), Some(grad)) =
                (input.split_last(), g.split_last_mut(), grads.get_mut(app))
            else {
                return (FAILED, [FAILED; E]);
            };
            let layer = &self.layers[app];
            let ok = if app + 1 == k {
                // Only the query's output carries a gradient: the context's comes through keys and values alone.
                gc.fill([0.0; E]);
                softmax_token_backward(layer, c_in, q_in, gq, grad, Some(gc)).map(|dq| *gq = dq)
            } else {
                softmax_backward_slices(layer, Mask::Full, c_in, q_in, gc, gq, grad, &mut work)
            };
            if ok.is_err() {
                return (FAILED, [FAILED; E]);
            }
        }
        (y_hat, g[n])
    }
}

super::forward_from_fixed!([const E: usize] SoftmaxNet<E>, E);

#[cfg(test)]
mod tests {
    use super::*;
    use dualform::{softmax_attention, LinearScratch};

    fn random_layer(seed: u64, scale: f64) -> SoftmaxLayer<4> {
        let mut s = dualform::rng::SplitMix64::new(seed);
        let mut l = SoftmaxLayer::<4>::zeros();
        for h in l.heads.iter_mut() {
            for m in [&mut h.w_q, &mut h.w_k, &mut h.w_v, &mut h.p] {
                for v in m.iter_mut() {
                    *v = (s.next_normal() * scale) as f32;
                }
            }
        }
        l
    }

    fn tokens(seed: u64) -> ([[f32; 4]; 5], [f32; 4]) {
        let mut s = dualform::rng::SplitMix64::new(seed);
        let mut u = || (s.next_open01() as f32) * 2.0 - 1.0;
        let ctx = core::array::from_fn(|_| [u(), u(), u(), u()]);
        (ctx, [u(), u(), u(), 0.0])
    }

    /// The net's readout after every layer is the core's full softmax layer applied layer after layer, bit for bit.
    #[test]
    fn a_softmax_net_predicts_what_the_core_layers_predict() {
        let layers = vec![random_layer(1, 0.8), random_layer(2, 0.8), random_layer(3, 0.8)];
        let net = SoftmaxNet::new(layers.clone());
        let (ctx, query) = tokens(4);
        let mut readout = [0.0f32; 3];
        let y = net.predict(&ctx, &query, &mut net.workspace(5), Some(&mut readout));
        let (mut c, mut q) = (ctx, query);
        let mut scratch = LinearScratch::<f32, 5, 4, 4, SOFTMAX_HEADS>::new();
        for (l, r) in layers.iter().zip(readout) {
            softmax_attention(l, Mask::Full, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
            assert_eq!((-q[3]).to_bits(), r.to_bits());
        }
        assert_eq!(y, readout[2]);
    }

    fn entry(n: &mut SoftmaxNet<4>, layer: usize, head: usize, which: usize, i: usize) -> &mut f32 {
        let h = &mut n.layers_mut()[layer].heads[head];
        let m = match which {
            0 => &mut h.w_q,
            1 => &mut h.w_k,
            2 => &mut h.w_v,
            _ => &mut h.p,
        };
        &mut m.as_mut_slice()[i]
    }

    /// Parameter and query gradients of a two-layer net against central differences in f64 of the f32 forward (so
    /// a loose bound; a wrong backward is off by far more).
    #[test]
    fn softmax_net_gradients_match_finite_differences() {
        let net = SoftmaxNet::new(vec![random_layer(5, 0.7), random_layer(6, 0.7)]);
        let (ctx, query) = tokens(7);
        let mut grads = net.zero_grads();
        let (_, dh) = net.forward_backward(&ctx, &query, &mut net.workspace(5), |_| 1.0, Some(&mut grads));
        let f = |n: &SoftmaxNet<4>, q: &[f32; 4]| n.predict(&ctx, q, &mut n.workspace(5), None) as f64;
        let step = 1e-2f32;
        let mut checked = 0;
        for (layer, lg) in grads.iter().enumerate() {
            for (head, g) in lg.heads.iter().enumerate() {
                for (which, i) in [(0usize, 1usize), (1, 6), (2, 11), (3, 15)] {
                    let (mut p, mut m) = (net.clone(), net.clone());
                    *entry(&mut p, layer, head, which, i) += step;
                    *entry(&mut m, layer, head, which, i) -= step;
                    let num = (f(&p, &query) - f(&m, &query)) / (2.0 * step as f64);
                    let ana = [&g.w_q, &g.w_k, &g.w_v, &g.p][which].as_slice()[i] as f64;
                    let tol = 3e-3 * (1.0 + ana.abs());
                    assert!((num - ana).abs() < tol, "layer {layer} head {head} {which}/{i}: {ana} vs {num}");
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 16);
        for i in 0..3 {
            let (mut p, mut m) = (query, query);
            p[i] += step;
            m[i] -= step;
            let num = (f(&net, &p) - f(&net, &m)) / (2.0 * step as f64);
            assert!((num - dh[i] as f64).abs() < 3e-3 * (1.0 + num.abs()), "dh[{i}]: {} vs {num}", dh[i]);
        }
    }

    /// A non-finite logit gives NaN, not a panic.
    #[test]
    fn an_overflowing_logit_gives_nan() {
        let mut l = random_layer(8, 1.0);
        l.heads[0].w_q[(0, 0)] = 1e30;
        l.heads[0].w_k[(0, 0)] = 1e30;
        let net = SoftmaxNet::new(vec![l]);
        let (ctx, query) = tokens(9);
        assert!(net.predict(&ctx, &query, &mut net.workspace(5), None).is_nan());
        let (y, dh) = net.forward_backward(&ctx, &query, &mut net.workspace(5), |_| 1.0, None);
        assert!(y.is_nan() && dh.iter().all(|v| v.is_nan()));
    }
}
