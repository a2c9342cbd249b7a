//! [`SoftmaxNet`]: K softmax attention layers applied in order with the residual rule, every token updated by every
//! layer but the last (only the query's output of the last one is read), on the core's run-time softmax kernels
//! ([`dualform::softmax_ref`]: `attention`, `token_update` and their backward), at a token width chosen at run time.

use super::Forward;
use dualform::head_ref::{HeadMut, HeadRef, Vectors, Widths};
use dualform::softmax_ref::{self, Projection, Work};
use dualform::{Layer, Mask, Real, Update};

/// Heads per softmax layer.
pub const SOFTMAX_HEADS: usize = 2;

/// One softmax attention layer of [`SOFTMAX_HEADS`] heads with key and value width E (chosen at run time): per
/// head `W_Q, W_K, W_V, P`, each `E x E` column-major, head after head in one vector (the order of every parameter
/// list, weight file and gradient).
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxLayer<T = f32> {
    e: usize,
    params: Vec<T>,
}

impl<T: Real> SoftmaxLayer<T> {
    /// A layer of width `e` whose matrices are zero (the identity).
    pub fn zeros(e: usize) -> Self {
        Self { e, params: vec![T::ZERO; SOFTMAX_HEADS * 4 * e * e] }
    }

    /// The token width E.
    pub fn width(&self) -> usize {
        self.e
    }

    /// The head widths (keys and values of width E).
    pub fn widths(&self) -> Widths {
        Widths { e: self.e, dk: self.e, dv: self.e }
    }

    /// Every parameter: head by head, `W_Q, W_K, W_V, P` column-major.
    pub fn params(&self) -> &[T] {
        &self.params
    }

    /// Every parameter, mutable.
    pub fn params_mut(&mut self) -> &mut [T] {
        &mut self.params
    }

    /// Matrix `which` (0 `W_Q`, 1 `W_K`, 2 `W_V`, 3 `P`) of head `head`, column-major (empty when out of range).
    pub fn matrix(&self, head: usize, which: usize) -> &[T] {
        let ee = self.e * self.e;
        let at = (head * 4 + which) * ee;
        self.params.get(at..at + ee).unwrap_or_default()
    }

    /// Mutable [`SoftmaxLayer::matrix`].
    pub fn matrix_mut(&mut self, head: usize, which: usize) -> &mut [T] {
        let ee = self.e * self.e;
        let at = (head * 4 + which) * ee;
        self.params.get_mut(at..at + ee).unwrap_or_default()
    }

    /// The heads as the core's kernels borrow them.
    pub fn heads(&self) -> [HeadRef<'_, T>; SOFTMAX_HEADS] {
        let ee = self.e * self.e;
        let mut it = self.params.chunks_exact(4 * ee.max(1)).map(|h| {
            let (w_q, rest) = h.split_at(ee);
            let (w_k, rest) = rest.split_at(ee);
            let (w_v, p) = rest.split_at(ee);
            HeadRef { w_q, w_k, w_v, p }
        });
        core::array::from_fn(|_| it.next().unwrap_or(HeadRef { w_q: &[], w_k: &[], w_v: &[], p: &[] }))
    }

    /// The heads as gradients to accumulate into.
    pub fn heads_mut(&mut self) -> [HeadMut<'_, T>; SOFTMAX_HEADS] {
        let ee = self.e * self.e;
        let mut it = self.params.chunks_exact_mut(4 * ee.max(1)).map(|h| {
            let (w_q, rest) = h.split_at_mut(ee);
            let (w_k, rest) = rest.split_at_mut(ee);
            let (w_v, p) = rest.split_at_mut(ee);
            HeadMut { w_q, w_k, w_v, p }
        });
        core::array::from_fn(|_| it.next().unwrap_or(HeadMut { w_q: &mut [], w_k: &mut [], w_v: &mut [], p: &mut [] }))
    }

    /// The same weights in another precision.
    pub fn cast<U: Real>(&self) -> SoftmaxLayer<U> {
        SoftmaxLayer { e: self.e, params: self.params.iter().map(|v| U::from_f64(v.to_f64())).collect() }
    }

    /// The layer of a fixed-width core [`Layer`].
    pub fn from_fixed<const E: usize>(layer: &Layer<T, E, E, E, SOFTMAX_HEADS>) -> Self {
        let params = layer
            .heads
            .iter()
            .flat_map(|h| [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()])
            .flatten()
            .copied()
            .collect();
        Self { e: E, params }
    }
}

/// Softmax attention layers applied once each, in order, at one token width.
#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxNet {
    e: usize,
    layers: Vec<SoftmaxLayer>,
}

/// Owned [`Vectors`]: the small vectors the core's run-time attention kernels need for heads of widths `w`.
#[derive(Clone, Debug, Default)]
pub struct VectorsBuf<T> {
    key: Vec<T>,
    value: Vec<T>,
    token: Vec<T>,
    heads: Vec<T>,
}

impl<T: Real> VectorsBuf<T> {
    /// Vectors for `heads` heads of widths `w`.
    pub fn new(w: Widths, heads: usize) -> Self {
        Self {
            key: vec![T::ZERO; Vectors::<T>::KEY * w.dk],
            value: vec![T::ZERO; Vectors::<T>::VALUE * w.dv],
            token: vec![T::ZERO; Vectors::<T>::TOKEN * w.e],
            heads: vec![T::ZERO; 2 * heads],
        }
    }

    /// Borrowed, as the kernels take them.
    pub fn vectors(&mut self) -> Vectors<'_, T> {
        Vectors { key: &mut self.key, value: &mut self.value, token: &mut self.token, heads: &mut self.heads }
    }
}

/// Per-task scratch of a [`SoftmaxNet`]: the tokens after every application, token gradients, every head's projected
/// keys and values and their gradients, and the kernels' small vectors. It grows to any context length it meets.
#[derive(Clone, Debug, Default)]
pub struct SoftmaxWorkspace {
    tokens: Vec<f32>,
    grads: Vec<f32>,
    keys: Vec<f32>,
    values: Vec<f32>,
    g_keys: Vec<f32>,
    g_values: Vec<f32>,
    /// One token's softmax weights (kept between the backward's passes).
    weights: Vec<f32>,
    vecs: VectorsBuf<f32>,
    u: Vec<f32>,
}

impl SoftmaxNet {
    /// The layers, applied in order, every one of width `e` (at least one: an empty list gets one zero layer,
    /// which predicts 0). A layer of another width makes every prediction NaN.
    pub fn new(e: usize, mut layers: Vec<SoftmaxLayer>) -> Self {
        if layers.is_empty() {
            layers.push(SoftmaxLayer::zeros(e));
        }
        Self { e, layers }
    }

    /// The layers.
    pub fn layers(&self) -> &[SoftmaxLayer] {
        &self.layers
    }

    /// Mutable layers.
    pub fn layers_mut(&mut self) -> &mut [SoftmaxLayer] {
        &mut self.layers
    }

    /// Every layer's input tokens for one task, layer after layer (`(n + 1) * e` values each: context, then query),
    /// or `None` on a non-finite logit.
    pub fn layer_inputs<'w>(&self, ctx: &[f32], query: &[f32], ws: &'w mut SoftmaxWorkspace) -> Option<&'w [f32]> {
        let len = self.layers.len() * (ctx.len() + self.e);
        if self.run_all(ctx, query, ws) {
            ws.tokens.get(..len)
        } else {
            None
        }
    }

    /// Runs every layer but the last on all tokens and the last on the query; afterwards layer `k`'s output tokens
    /// are `ws.tokens[(k + 1) * stride..][..stride]` with `stride = (n + 1) * e` (for the last, only the query).
    /// False on a non-finite logit or a token of another width.
    fn run_all(&self, ctx: &[f32], query: &[f32], ws: &mut SoftmaxWorkspace) -> bool {
        let e = self.e;
        if e == 0 || !ctx.len().is_multiple_of(e) || query.len() != e {
            return false;
        }
        let (n, k) = (ctx.len() / e, self.layers.len());
        let stride = (n + 1) * e;
        if ws.tokens.len() < (k + 1) * stride || ws.grads.len() < stride || ws.keys.len() != SOFTMAX_HEADS * n * e {
            *ws = self.workspace(n);
        }
        let SoftmaxWorkspace { tokens, keys, values, vecs, u, .. } = ws;
        tokens[..n * e].copy_from_slice(ctx);
        tokens[n * e..stride].copy_from_slice(query);
        for (app, layer) in self.layers.iter().enumerate() {
            let (done, rest) = tokens.split_at_mut((app + 1) * stride);
            let (c_in, q_in) = done[app * stride..].split_at(n * e);
            let (c_out, q_out) = rest[..stride].split_at_mut(n * e);
            let hs = layer.heads();
            let ok = if app + 1 == k {
                // The last layer updates the query only; its keys and values stay in `keys` and `values` for the
                // backward.
                softmax_ref::project(layer.widths(), &hs, c_in, keys, values)
                    .and_then(|p| {
                        softmax_ref::token_update_projected(layer.widths(), &hs, &p, q_in, u, &mut vecs.vectors())
                    })
                    .map(|()| {
                        q_out.copy_from_slice(q_in);
                        Update::residual().apply_slice(q_out, u);
                    })
            } else {
                let mut work = Work { keys, values, g_keys: &mut [], g_values: &mut [], weights: &mut [] };
                let upd = Update::residual();
                softmax_ref::attention(
                    layer.widths(),
                    &hs,
                    Mask::Full,
                    &upd,
                    c_in,
                    q_in,
                    c_out,
                    q_out,
                    &mut work,
                    &mut vecs.vectors(),
                )
            };
            if ok.is_err() {
                return false;
            }
        }
        true
    }

    /// The prediction `-h_query[last]` after each of `k` applications into `readout` (its first `k` entries, when
    /// given), and the final one.
    fn predictions(&self, ws: &SoftmaxWorkspace, n: usize, readout: Option<&mut [f32]>) -> f32 {
        let (stride, k) = ((n + 1) * self.e, self.layers.len());
        let at = |app: usize| ws.tokens.get((app + 2) * stride - 1).map_or(f32::NAN, |t| -t);
        if let Some(r) = readout {
            for (app, slot) in r.iter_mut().take(k).enumerate() {
                *slot = at(app);
            }
        }
        k.checked_sub(1).map_or(f32::NAN, at)
    }
}

impl Forward for SoftmaxNet {
    type Grad = SoftmaxLayer;
    type Workspace = SoftmaxWorkspace;

    fn width(&self) -> usize {
        self.e
    }

    fn zero_grads(&self) -> Vec<SoftmaxLayer> {
        vec![SoftmaxLayer::zeros(self.e); self.layers.len()]
    }

    fn add_grad(into: &mut SoftmaxLayer, from: &SoftmaxLayer) {
        for (a, b) in into.params.iter_mut().zip(&from.params) {
            *a += *b;
        }
    }

    fn applications(&self) -> usize {
        self.layers.len()
    }

    fn workspace(&self, n: usize) -> SoftmaxWorkspace {
        let e = self.e;
        let entries = SOFTMAX_HEADS * n * e;
        SoftmaxWorkspace {
            tokens: vec![0.0; (self.layers.len() + 1) * (n + 1) * e],
            grads: vec![0.0; (n + 1) * e],
            keys: vec![0.0; entries],
            values: vec![0.0; entries],
            g_keys: vec![0.0; entries],
            g_values: vec![0.0; entries],
            weights: vec![0.0; n],
            vecs: VectorsBuf::new(Widths { e, dk: e, dv: e }, SOFTMAX_HEADS),
            u: vec![0.0; e],
        }
    }

    fn predict(&self, ctx: &[f32], query: &[f32], ws: &mut SoftmaxWorkspace, readout: Option<&mut [f32]>) -> f32 {
        if !self.run_all(ctx, query, ws) {
            return f32::NAN;
        }
        self.predictions(ws, ctx.len() / self.e, readout)
    }

    fn forward_backward(
        &self,
        ctx: &[f32],
        query: &[f32],
        ws: &mut SoftmaxWorkspace,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [SoftmaxLayer]>,
        dh: Option<&mut [f32]>,
    ) -> f32 {
        let failed = |dh: Option<&mut [f32]>| {
            if let Some(dh) = dh {
                dh.fill(f32::NAN);
            }
            f32::NAN
        };
        if !self.run_all(ctx, query, ws) {
            return failed(dh);
        }
        let e = self.e;
        let (n, k) = (ctx.len() / e, self.layers.len());
        let stride = (n + 1) * e;
        let y_hat = -ws.tokens[(k + 1) * stride - 1];
        let mut spare;
        let grads = match grads {
            Some(g) => g,
            None => {
                spare = self.zero_grads();
                &mut spare[..]
            }
        };
        let SoftmaxWorkspace { tokens, grads: g, keys, values, g_keys, g_values, weights, vecs, u } = ws;
        let g = &mut g[..stride];
        g.fill(0.0);
        g[stride - 1] = -seed(y_hat);
        for app in (0..k).rev() {
            let (c_in, q_in) = tokens[app * stride..(app + 1) * stride].split_at(n * e);
            let (gc, gq) = g.split_at_mut(n * e);
            let (Some(grad), Some(layer)) = (grads.get_mut(app), self.layers.get(app)) else {
                return failed(dh);
            };
            let (hs, mut gh) = (layer.heads(), grad.heads_mut());
            let mut vecs = vecs.vectors();
            let ok = if app + 1 == k {
                // Only the query's output carries a gradient: the context's comes through keys and values alone
                // (projected by the forward, which ran this layer last).
                gc.fill(0.0);
                Projection::written(layer.widths(), SOFTMAX_HEADS, n, keys, values)
                    .and_then(|p| {
                        softmax_ref::token_backward_projected(
                            layer.widths(),
                            &hs,
                            &p,
                            c_in,
                            q_in,
                            gq,
                            &mut gh,
                            u,
                            Some(gc),
                            weights,
                            &mut vecs,
                        )
                    })
                    .map(|()| gq.copy_from_slice(u))
            } else {
                let mut work = Work { keys, values, g_keys, g_values, weights };
                softmax_ref::backward(
                    layer.widths(),
                    &hs,
                    Mask::Full,
                    c_in,
                    q_in,
                    gc,
                    gq,
                    &mut gh,
                    &mut work,
                    &mut vecs,
                )
            };
            if ok.is_err() {
                return failed(dh);
            }
        }
        if let Some(dh) = dh {
            for (d, v) in dh.iter_mut().zip(&g[n * e..]) {
                *d = *v;
            }
        }
        y_hat
    }
}
