//! [`SoftmaxNet`]: K softmax attention layers applied in order with the residual rule, every token updated by every
//! layer but the last (only the query's output of the last one is read), on the core's run-time softmax kernels
//! ([`dualform::softmax_ref`]: `attention`, `token_update` and their backward), at a token width chosen at run time.

mod run;

pub use run::SoftmaxWorkspace;
pub(in crate::net) use run::{backward_layers, run_layers};

use super::Forward;
use crate::tasks::Group;
use dualform::head_ref::{HeadMut, HeadRef, Vectors, Widths};
use dualform::{Layer, Real};

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

    /// [`run_layers`] on one task. False on a non-finite logit or a token of another width.
    fn run_all(&self, ctx: &[f32], query: &[f32], ws: &mut SoftmaxWorkspace) -> bool {
        let e = self.e;
        if e == 0 || !ctx.len().is_multiple_of(e) || query.len() != e {
            return false;
        }
        let n = ctx.len() / e;
        ws.fit(e, self.layers.len(), n);
        let input = ws.input((n + 1) * e);
        input[..n * e].copy_from_slice(ctx);
        input[n * e..].copy_from_slice(query);
        run_layers(&self.layers, e, n, ws)
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
        SoftmaxWorkspace::new(self.e, self.layers.len(), n)
    }

    /// Training runs [`super::lanes::LANES`] tasks side by side ([`super::lanes`], on the unit
    /// [`super::simd::current`]).
    fn group_size(&self) -> usize {
        super::lanes::LANES
    }

    fn group_gradient(&self, group: &Group, ws: &mut SoftmaxWorkspace, grads: &mut [SoftmaxLayer], loss: &mut f64) {
        let mut lanes = ws.lanes.take().unwrap_or_default();
        let done = self.lanes_gradient(super::simd::current(), group, &mut lanes, grads, loss);
        ws.lanes = Some(lanes);
        if !done {
            super::tasks_gradient_from_zero(self, group, ws, grads, loss);
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
        let y_hat = -ws.last(k, stride);
        let mut spare;
        let grads = match grads {
            Some(g) => g,
            None => {
                spare = self.zero_grads();
                &mut spare[..]
            }
        };
        ws.seed(stride, -seed(y_hat));
        if !backward_layers(&self.layers, e, n, ws, grads) {
            return failed(dh);
        }
        let g = &ws.grads[..stride];
        if let Some(dh) = dh {
            for (d, v) in dh.iter_mut().zip(&g[n * e..]) {
                *d = *v;
            }
        }
        y_hat
    }
}
