//! [`ZooNet`]: K attention layers of one [`Attention`] kind (LSA, softmax, elu+1, Performer, Efficient Attention),
//! applied in order with the residual rule, every token updated by every layer but the last (only the query's
//! output of the last one is read). [`super::MlpZooNet`] puts a learned feature map in front.
//!
//! Forward and backward run on the core's kernels: [`AssociativeState::update`] and
//! [`linear_attention_backward`](dualform::kernel_backward::linear_attention_backward) (LSA, elu+1, Performer),
//! [`EfficientState::update`](dualform::EfficientState::update) and
//! [`efficient_backward`](dualform::kernel_backward::efficient_backward), and for softmax
//! [`token_update_projected`](dualform::softmax_ref::token_update_projected) and
//! [`token_backward_projected`](dualform::softmax_ref::token_backward_projected) over keys and values projected once
//! per layer ([`project`](dualform::softmax_ref::project); the bits of `softmax_token_update` and
//! `softmax_token_backward`, which project them for every token). The one `match` on the kind is
//! [`Attention::dispatch`]; `visits.rs` holds this net's visits, `lanes.rs` its training in vector lanes.

mod lanes;
mod visits;

use super::{FixedForward, VectorsBuf, Workspace};
use crate::tasks::Group;
use dualform::head_ref::{HeadRef, Widths};
use dualform::{
    AssociativeState, EluPlusOne, Error, FeatureVjp, Identity, Layer, Normalise, PositiveRandomFeatures, Real,
};
pub use lanes::ZooLanes;
use visits::{LayerBackward, Updates};

/// Heads per layer, every kind.
pub const ZOO_HEADS: usize = 2;
/// Random features per head of the Performer kind.
pub const PERFORMER_FEATURES: usize = 32;
/// The seed of the Performer's fixed projection.
pub const PERFORMER_SEED: u64 = 0x9e37_79b9;

/// One layer: [`ZOO_HEADS`] heads with key and value size E (`W_Q, W_K, W_V, P` per head).
pub type ZooLayer<const E: usize> = Layer<f32, E, E, E, ZOO_HEADS>;

/// The attention of a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum Attention {
    /// `sum_j (q . k_j) v_j`, no normaliser (von Oswald et al.'s layer).
    Lsa,
    /// `softmax_j(q . k_j / sqrt(E)) v_j`.
    Softmax,
    /// elu+1 features with the sum normaliser (Katharopoulos et al.).
    #[value(name = "elu+1")]
    EluPlusOne,
    /// Positive random features estimating the softmax kernel, sum normaliser (Choromanski et al.);
    /// [`PERFORMER_FEATURES`] features from a fixed projection.
    Performer,
    /// Softmax over each query's features and over positions per key feature (Shen et al.).
    Efficient,
}

/// What is done with one kind of attention, given its kernel. The kinds come in three shapes, and
/// [`Attention::dispatch`] is the one `match` that maps a kind to its shape.
pub trait KindVisitor<T: Real, const E: usize> {
    /// What the visit returns.
    type Output;
    /// Kernelised linear attention with feature map `phi` and normaliser `norm` (LSA, elu+1, Performer).
    fn linear<M: FeatureVjp<T, E, F>, const F: usize>(self, phi: &M, norm: Normalise) -> Self::Output;
    /// Efficient Attention.
    fn efficient(self) -> Self::Output;
    /// Softmax attention.
    fn softmax(self) -> Self::Output;
}

impl Attention {
    /// Every kind, in report order.
    pub const ALL: [Attention; 5] =
        [Attention::Lsa, Attention::Softmax, Attention::EluPlusOne, Attention::Performer, Attention::Efficient];

    /// Short name (file names, flags).
    pub fn name(self) -> &'static str {
        match self {
            Attention::Lsa => "lsa",
            Attention::Softmax => "softmax",
            Attention::EluPlusOne => "elu+1",
            Attention::Performer => "performer",
            Attention::Efficient => "efficient",
        }
    }

    /// Visits this kind's shape with its kernel: LSA is identity features with no normaliser, elu+1 and the
    /// Performer (its fixed projection `performer`) are feature maps with the sum normaliser.
    #[inline(always)]
    pub fn dispatch<T: Real, const E: usize, V: KindVisitor<T, E>>(
        self,
        performer: &PositiveRandomFeatures<T, E, PERFORMER_FEATURES>,
        visitor: V,
    ) -> V::Output {
        match self {
            Attention::Lsa => visitor.linear(&Identity, Normalise::None),
            Attention::EluPlusOne => visitor.linear(&EluPlusOne, Normalise::Sum),
            Attention::Performer => visitor.linear(performer, Normalise::Sum),
            Attention::Efficient => visitor.efficient(),
            Attention::Softmax => visitor.softmax(),
        }
    }
}

/// Layers of one attention kind, applied once each, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct ZooNet<const E: usize> {
    kind: Attention,
    layers: Vec<ZooLayer<E>>,
    features: PositiveRandomFeatures<f32, E, PERFORMER_FEATURES>,
}

#[inline(always)]
fn kernel_updates<T: Real, M: FeatureVjp<T, E, F>, const E: usize, const F: usize>(
    layer: &Layer<T, E, E, E, ZOO_HEADS>,
    phi: &M,
    norm: Normalise,
    ctx: &[[T; E]],
    tokens: &[[T; E]],
    out: &mut [[T; E]],
) -> Result<(), Error> {
    let mut state = AssociativeState::<T, F, E, ZOO_HEADS>::new();
    for e in ctx {
        state.add(layer, phi, norm, e);
    }
    for (h, o) in tokens.iter().zip(out.iter_mut()) {
        *o = state.update(layer, phi, norm, h)?;
    }
    Ok(())
}

/// Scratch of the softmax kind: every head's keys and values of one layer's context, one token's softmax weights
/// and the kernels' small vectors. It grows to any context length it meets.
#[derive(Clone, Debug, Default)]
pub(crate) struct SoftmaxScratch<T = f32> {
    keys: Vec<T>,
    values: Vec<T>,
    weights: Vec<T>,
    vecs: Option<VectorsBuf<T>>,
}

impl<T: Real> SoftmaxScratch<T> {
    /// Sized for [`ZOO_HEADS`] heads of widths `w` over `n` context tokens.
    fn fit(&mut self, w: Widths, n: usize) {
        self.keys.resize(ZOO_HEADS * n * w.dk, T::ZERO);
        self.values.resize(ZOO_HEADS * n * w.dv, T::ZERO);
        self.weights.resize(n, T::ZERO);
    }
}

/// The widths and borrowed heads of a zoo layer, as the run-time softmax kernels take them.
#[inline(always)]
fn softmax_heads<T: Real, const E: usize>(
    layer: &Layer<T, E, E, E, ZOO_HEADS>,
) -> (Widths, [HeadRef<'_, T>; ZOO_HEADS]) {
    (Widths { e: E, dk: E, dv: E }, layer.heads.each_ref().map(HeadRef::from))
}

/// What a [`ZooNet`]'s forward and backward read, in scalar `T`: its kind, layers and Performer projection (`f32`,
/// or broadcast to [`super::lanes::LANES`] tasks side by side). One implementation for both.
pub(super) struct Stack<'a, T: Real, const E: usize> {
    pub(super) kind: Attention,
    pub(super) layers: &'a [Layer<T, E, E, E, ZOO_HEADS>],
    pub(super) features: &'a PositiveRandomFeatures<T, E, PERFORMER_FEATURES>,
}

impl<T: Real, const E: usize> Stack<'_, T, E> {
    /// The updates `u_t` of `tokens` attending over `ctx` through `layer` (the residual is the caller's).
    #[inline(always)]
    fn updates(
        &self,
        layer: &Layer<T, E, E, E, ZOO_HEADS>,
        ctx: &[[T; E]],
        tokens: &[[T; E]],
        out: &mut [[T; E]],
        scratch: &mut SoftmaxScratch<T>,
    ) -> Result<(), Error> {
        self.kind.dispatch(self.features, Updates { layer, ctx, tokens, out, scratch })
    }

    /// `g_tokens[t] = dL/dh_t` through the residual and the query path, for `g[t] = dL/dh'_t`; the key and value
    /// paths are added into `g_ctx`.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn layer_backward(
        &self,
        layer: &Layer<T, E, E, E, ZOO_HEADS>,
        ctx: &[[T; E]],
        tokens: &[[T; E]],
        g: &[[T; E]],
        grad: &mut Layer<T, E, E, E, ZOO_HEADS>,
        g_ctx: &mut [[T; E]],
        g_tokens: &mut [[T; E]],
        scratch: &mut SoftmaxScratch<T>,
    ) -> Result<(), Error> {
        self.kind.dispatch(self.features, LayerBackward { layer, ctx, tokens, g, grad, g_ctx, g_tokens, scratch })
    }

    /// `ws` sized for contexts of `n` pairs, its input tokens (context, then query: `n + 1`) to be written.
    pub(super) fn input<'w>(&self, n: usize, ws: &'w mut Workspace<E, T>) -> &'w mut [[T; E]] {
        let (k, stride) = (self.layers.len(), n + 1);
        if ws.tokens.len() < (k + 1) * stride || ws.grads.len() < stride || ws.keys.len() < stride {
            let lanes = ws.lanes.take();
            *ws = Workspace::new(k, n);
            ws.lanes = lanes;
        }
        &mut ws.tokens[..stride]
    }

    /// Runs every layer but the last on all tokens and the last on the query, from the input written through
    /// [`Stack::input`]; layer `k`'s output tokens are then `ws.tokens[(k + 1) * (n + 1)..][..n + 1]` (for the last,
    /// only the query). False on a kernel error (a non-finite logit, a zero normaliser).
    #[inline(always)]
    pub(super) fn forward(&self, n: usize, ws: &mut Workspace<E, T>) -> bool {
        let stride = n + 1;
        let k = self.layers.len();
        for (app, layer) in self.layers.iter().enumerate() {
            let (done, rest) = ws.tokens.split_at_mut((app + 1) * stride);
            let input = &done[app * stride..];
            let last = app + 1 == k;
            let (c_in, tokens) = if last { (&input[..n], &input[n..]) } else { (&input[..n], input) };
            let first = if last { n } else { 0 };
            let u = &mut ws.keys[first..stride];
            if self.updates(layer, c_in, tokens, u, &mut ws.softmax).is_err() {
                return false;
            }
            for ((o, h), ut) in rest[first..stride].iter_mut().zip(tokens).zip(u.iter()) {
                for ((oi, hi), ui) in o.iter_mut().zip(h).zip(ut) {
                    *oi = *hi + *ui;
                }
            }
        }
        true
    }

    /// The final query's last coordinate (`-y_hat`) after [`Stack::forward`].
    #[inline(always)]
    pub(super) fn last(&self, n: usize, ws: &Workspace<E, T>) -> T {
        ws.tokens[(self.layers.len() + 1) * (n + 1) - 1][E - 1]
    }

    /// The backward of [`Stack::forward`] (which ran last on `ws`) for the output gradient `g` of the final query's
    /// last coordinate: each layer's parameter gradients added into `grads`; afterwards `ws.grads[..n + 1]` holds
    /// `dL/d(input token)` (context, then query). `None` on a kernel error.
    #[inline(always)]
    pub(super) fn backward(
        &self,
        n: usize,
        ws: &mut Workspace<E, T>,
        g_last: T,
        grads: &mut [Layer<T, E, E, E, ZOO_HEADS>],
    ) -> Option<()> {
        let (k, stride) = (self.layers.len(), n + 1);
        let Workspace { tokens, grads: g, values: g_in, g_values: g_ctx, softmax, .. } = ws;
        let (g, g_in, g_ctx) = (&mut g[..stride], &mut g_in[..stride], &mut g_ctx[..n]);
        g.fill([T::ZERO; E]);
        g[n][E - 1] = g_last;
        for app in (0..k).rev() {
            let input = &tokens[app * stride..(app + 1) * stride];
            let first = if app + 1 == k { n } else { 0 };
            g_ctx.fill([T::ZERO; E]);
            let (layer, grad) = (&self.layers[app], grads.get_mut(app)?);
            let g_tokens = &mut g_in[first..];
            self.layer_backward(layer, &input[..n], &input[first..], &g[first..], grad, g_ctx, g_tokens, softmax)
                .ok()?;
            g_in[..first].fill([T::ZERO; E]);
            for (gi, gc) in g_in.iter_mut().zip(g_ctx.iter()) {
                for (a, b) in gi.iter_mut().zip(gc) {
                    *a += *b;
                }
            }
            g.copy_from_slice(g_in);
        }
        Some(())
    }
}

impl<const E: usize> ZooNet<E> {
    /// The layers (at least one: an empty list gets one zero layer, which predicts 0).
    pub fn new(kind: Attention, mut layers: Vec<ZooLayer<E>>) -> Self {
        if layers.is_empty() {
            layers.push(Layer::zeros());
        }
        Self { kind, layers, features: PositiveRandomFeatures::seeded(PERFORMER_SEED) }
    }

    /// The attention kind.
    pub fn kind(&self) -> Attention {
        self.kind
    }

    /// The layers.
    pub fn layers(&self) -> &[ZooLayer<E>] {
        &self.layers
    }

    /// Mutable layers.
    pub fn layers_mut(&mut self) -> &mut [ZooLayer<E>] {
        &mut self.layers
    }

    /// The Performer kind's fixed projection.
    pub(super) fn features(&self) -> &PositiveRandomFeatures<f32, E, PERFORMER_FEATURES> {
        &self.features
    }

    fn stack(&self) -> Stack<'_, f32, E> {
        Stack { kind: self.kind, layers: &self.layers, features: &self.features }
    }

    /// [`Stack::forward`] on one task. False on a kernel error.
    fn run_all(&self, ctx: &[[f32; E]], query: &[f32; E], ws: &mut Workspace<E>) -> bool {
        let (stack, n) = (self.stack(), ctx.len());
        let input = stack.input(n, ws);
        input[..n].copy_from_slice(ctx);
        input[n] = *query;
        stack.forward(n, ws)
    }

    /// Forward and backward for one task; afterwards `ws.grads[..n + 1]` holds `dL/d(input token)` (context, then
    /// query). `None` on a kernel error.
    pub(crate) fn backward_all(
        &self,
        ctx: &[[f32; E]],
        query: &[f32; E],
        ws: &mut Workspace<E>,
        seed: impl FnOnce(f32) -> f32,
        grads: &mut [ZooLayer<E>],
    ) -> Option<f32> {
        if !self.run_all(ctx, query, ws) {
            return None;
        }
        let (stack, n) = (self.stack(), ctx.len());
        let y_hat = -stack.last(n, ws);
        stack.backward(n, ws, -seed(y_hat), grads)?;
        Some(y_hat)
    }
}

impl<const E: usize> FixedForward<E> for ZooNet<E> {
    type Grad = ZooLayer<E>;

    fn zero_grads(&self) -> Vec<ZooLayer<E>> {
        vec![Layer::zeros(); self.layers.len()]
    }

    fn add_grad(into: &mut ZooLayer<E>, from: &ZooLayer<E>) {
        super::add_layer(into, from);
    }

    fn applications(&self) -> usize {
        self.layers.len()
    }

    fn workspace(&self, n: usize) -> Workspace<E> {
        Workspace::new(self.layers.len(), n)
    }

    /// Training runs [`super::lanes::LANES`] tasks side by side ([`super::lanes`]).
    fn group_size(&self) -> usize {
        super::lanes::LANES
    }

    fn group_gradient(&self, group: &Group, ws: &mut Workspace<E>, grads: &mut [ZooLayer<E>], loss: &mut f64) -> bool {
        let mut lanes = ws.lanes.take().unwrap_or_default();
        let done = self.lanes_gradient(crate::net::simd::current(), group, &mut lanes, grads, loss);
        ws.lanes = Some(lanes);
        if !done {
            super::tasks_gradient_from_zero(self, group, ws, grads, loss);
        }
        true
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
        grads: Option<&mut [ZooLayer<E>]>,
    ) -> (f32, [f32; E]) {
        let mut spare;
        let grads = match grads {
            Some(g) => g,
            None => {
                spare = self.zero_grads();
                &mut spare[..]
            }
        };
        match self.backward_all(ctx, query, ws, seed, grads) {
            Some(y) => (y, ws.grads[ctx.len()]),
            None => (f32::NAN, [f32::NAN; E]),
        }
    }
}

super::forward_from_fixed!([const E: usize] ZooNet<E>, E);
