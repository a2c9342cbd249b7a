//! [`MlpLsaNet`]: a learned feature map in front of one LSA layer, for tasks whose target is not linear in the input
//! (`mlp-sine`). Raw tokens `(x, y)` (width 2) become `(phi(x), y)` (width `W = F + 1`) through the core's
//! [`ScalarMlp`]; one LSA head (the core's unmerged [`LsaLayer`]) then updates the query, whose last entry is
//! minus the prediction. Forward and backward run on the core's kernels (`context_state`, `query_forward`,
//! `lsa_query_backward`, `ScalarMlp::forward` / `backward`). Training runs task by task, in a function compiled for
//! the chosen vector unit ([`crate::net::simd`]; the same bits on every unit): the feature map's loops over its
//! units run on the unit's registers, and its exponentials eight at a time.

use super::simd::{self, InLanes};
use super::{FixedForward, Workspace};
use crate::tasks::Group;
use dualform::attention::{context_state, query_forward};
use dualform::backward::lsa_query_backward;
use dualform::mlp::{MlpCache, ScalarMlp};
use dualform::LsaLayer;

/// A feature map of width F (hidden width M) and one LSA layer on tokens of width `W = F + 1`.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpLsaNet<const F: usize, const M: usize, const W: usize> {
    /// The feature map.
    pub mlp: ScalarMlp<f32, F, M>,
    /// The attention layer.
    pub layer: LsaLayer<f32, W>,
}

/// The gradient of an [`MlpLsaNet`]: one group, the same shape as the net.
pub type MlpLsaGrad<const F: usize, const M: usize, const W: usize> = MlpLsaNet<F, M, W>;

impl<const F: usize, const M: usize, const W: usize> MlpLsaNet<F, M, W> {
    /// Every weight zero.
    pub fn zeros() -> Self {
        const { assert!(W == F + 1, "the token width W must be F + 1") };
        Self { mlp: ScalarMlp::zeros(), layer: LsaLayer::zeros() }
    }

    /// The embedded token `(phi(x), y)` of a raw `(x, y)`.
    pub fn embed(&self, raw: &[f32; 2]) -> [f32; W] {
        embed(&self.mlp, raw)
    }

    /// The prediction at `query` over `ctx` and its gradient with respect to the raw query `(x, y)`: the bits of
    /// [`FixedForward::forward_backward`] seeded with 1 and no parameter gradients, compiled for the chosen vector
    /// unit ([`crate::net::simd`]).
    pub fn prediction_and_slope(&self, ctx: &[[f32; 2]], query: &[f32; 2], ws: &mut Workspace<2>) -> (f32, [f32; 2]) {
        simd::run_any_width(simd::current(), Slope { net: self, ctx, query, ws })
    }

    fn tokens(&self, ctx: &[[f32; 2]], query: &[f32; 2]) -> (Vec<[f32; W]>, [f32; W]) {
        (ctx.iter().map(|t| self.embed(t)).collect(), self.embed(query))
    }
}

/// Embedded tokens of a context and its query ([`embed`]), with the feature map's caches for the backward.
pub(crate) struct Embedded<const F: usize, const M: usize, const W: usize> {
    pub(crate) ctx: Vec<[f32; W]>,
    pub(crate) ctx_caches: Vec<MlpCache<f32, F, M>>,
    pub(crate) query: [f32; W],
    pub(crate) query_cache: MlpCache<f32, F, M>,
}

impl<const F: usize, const M: usize, const W: usize> Embedded<F, M, W> {
    /// Every token through `mlp` (the bits of [`embed`]).
    #[inline(always)]
    pub(crate) fn new(mlp: &ScalarMlp<f32, F, M>, ctx: &[[f32; 2]], query: &[f32; 2]) -> Self {
        // A loop, not `map(..).unzip()`: the closure was left out of line, compiled for the baseline unit.
        let (mut tokens, mut ctx_caches) = (Vec::with_capacity(ctx.len()), Vec::with_capacity(ctx.len()));
        for t in ctx {
            let (token, cache) = embed_cached(mlp, t);
            tokens.push(token);
            ctx_caches.push(cache);
        }
        let (query, query_cache) = embed_cached(mlp, query);
        Self { ctx: tokens, ctx_caches, query, query_cache }
    }

    /// Adds the feature map's gradients for the context tokens' gradients `g_ctx` (their first F entries) into
    /// `grad`, token by token.
    #[inline(always)]
    pub(crate) fn backward_ctx(
        &self,
        mlp: &ScalarMlp<f32, F, M>,
        raw_ctx: &[[f32; 2]],
        g_ctx: &[[f32; W]],
        grad: &mut ScalarMlp<f32, F, M>,
    ) {
        for ((raw, c), gt) in raw_ctx.iter().zip(&self.ctx_caches).zip(g_ctx) {
            mlp.backward_cached(raw[0], c, &head(gt), grad);
        }
    }

    /// Adds the feature map's gradient for the query's gradient `g_query` into `grad`; returns `dL/dx` of the query.
    #[inline(always)]
    pub(crate) fn backward_query(
        &self,
        mlp: &ScalarMlp<f32, F, M>,
        raw_query: &[f32; 2],
        g_query: &[f32; W],
        grad: &mut ScalarMlp<f32, F, M>,
    ) -> f32 {
        mlp.backward_cached(raw_query[0], &self.query_cache, &head(g_query), grad)
    }
}

/// The first F entries of a token (its features).
#[inline(always)]
fn head<const F: usize, const W: usize>(t: &[f32; W]) -> [f32; F] {
    core::array::from_fn(|i| t[i])
}

/// [`embed`] with the feature map's cache.
#[inline(always)]
fn embed_cached<const F: usize, const M: usize, const W: usize>(
    mlp: &ScalarMlp<f32, F, M>,
    raw: &[f32; 2],
) -> ([f32; W], MlpCache<f32, F, M>) {
    let (phi, cache) = mlp.forward_cached(raw[0]);
    let mut t = [0.0; W];
    t[..F].copy_from_slice(&phi);
    t[W - 1] = raw[1];
    (t, cache)
}

/// The token `(phi(x), y)` of width W of a raw `(x, y)` (`W = F + 1`).
pub(crate) fn embed<const F: usize, const M: usize, const W: usize>(
    mlp: &ScalarMlp<f32, F, M>,
    raw: &[f32; 2],
) -> [f32; W] {
    let phi = mlp.forward(raw[0]);
    let mut t = [0.0; W];
    t[..F].copy_from_slice(&phi);
    t[W - 1] = raw[1];
    t
}

/// `into += from` for a feature map's gradient.
pub(crate) fn add_mlp<const F: usize, const M: usize>(into: &mut ScalarMlp<f32, F, M>, from: &ScalarMlp<f32, F, M>) {
    for (a, b) in into.w_e.iter_mut().zip(from.w_e.iter()).chain(into.b_e.iter_mut().zip(from.b_e.iter())) {
        *a += *b;
    }
    for (a, b) in into.b_1.iter_mut().zip(from.b_1.iter()) {
        *a += *b;
    }
    for (a, b) in into.b_2.iter_mut().zip(from.b_2.iter()) {
        *a += *b;
    }
    into.w_1 += from.w_1;
    into.w_2 += from.w_2;
}

impl<const F: usize, const M: usize, const W: usize> FixedForward<2> for MlpLsaNet<F, M, W> {
    type Grad = MlpLsaGrad<F, M, W>;

    fn zero_grads(&self) -> Vec<Self::Grad> {
        vec![Self::zeros()]
    }

    fn add_grad(into: &mut Self::Grad, from: &Self::Grad) {
        add_mlp(&mut into.mlp, &from.mlp);
        for (a, b) in into.layer.heads.iter_mut().zip(from.layer.heads.iter()) {
            a.w_q += b.w_q;
            a.w_k += b.w_k;
            a.w_v += b.w_v;
            a.p += b.p;
        }
    }

    fn applications(&self) -> usize {
        1
    }

    fn workspace(&self, _n: usize) -> Workspace<2> {
        Workspace::default()
    }

    fn predict(&self, ctx: &[[f32; 2]], query: &[f32; 2], _ws: &mut Workspace<2>, readout: Option<&mut [f32]>) -> f32 {
        let (tokens, q) = self.tokens(ctx, query);
        let h = query_forward(&self.layer, &context_state(&self.layer, &tokens), &q);
        let y = -h[W - 1];
        if let Some(slot) = readout.and_then(|r| r.first_mut()) {
            *slot = y;
        }
        y
    }

    /// Task by task ([`super::tasks_gradient`]'s order and bits), compiled for the chosen vector unit.
    fn group_gradient(&self, group: &Group, ws: &mut Workspace<2>, grads: &mut [Self::Grad], loss: &mut f64) -> bool {
        simd::run_any_width(simd::current(), Tasks { net: self, group, ws, grads, loss })
    }

    #[inline(always)]
    fn forward_backward(
        &self,
        ctx: &[[f32; 2]],
        query: &[f32; 2],
        _ws: &mut Workspace<2>,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [Self::Grad]>,
    ) -> (f32, [f32; 2]) {
        let emb = Embedded::<F, M, W>::new(&self.mlp, ctx, query);
        let (tokens, q) = (&emb.ctx, emb.query);
        let state = context_state(&self.layer, tokens);
        let y_hat = -query_forward(&self.layer, &state, &q)[W - 1];
        let mut g = [0.0; W];
        g[W - 1] = -seed(y_hat);
        let mut spare;
        let grad = match grads.and_then(|g| g.first_mut()) {
            Some(g) => g,
            None => {
                spare = Self::zeros();
                &mut spare
            }
        };
        let mut g_ctx = vec![[0.0f32; W]; tokens.len()];
        let Ok(dq) = lsa_query_backward(&self.layer, tokens, &state, &q, &g, &mut grad.layer, Some(&mut g_ctx)) else {
            return (f32::NAN, [f32::NAN; 2]);
        };
        let dx = emb.backward_query(&self.mlp, query, &dq, &mut grad.mlp);
        emb.backward_ctx(&self.mlp, ctx, &g_ctx, &mut grad.mlp);
        (y_hat, [dx, dq[W - 1]])
    }
}

super::forward_from_fixed!([const F: usize, const M: usize, const W: usize] MlpLsaNet<F, M, W>, 2);

/// A group's gradient of an [`MlpLsaNet`], task by task, as work for [`simd::run_any_width`]: the loop of
/// [`super::tasks_gradient`] (each task's gradient added into `grads`, its loss into `loss`, in task order) with the
/// net's forward and backward inlined into it.
struct Tasks<'a, const F: usize, const M: usize, const W: usize> {
    net: &'a MlpLsaNet<F, M, W>,
    group: &'a Group,
    ws: &'a mut Workspace<2>,
    grads: &'a mut [MlpLsaGrad<F, M, W>],
    loss: &'a mut f64,
}

impl<const F: usize, const M: usize, const W: usize> InLanes for Tasks<'_, F, M, W> {
    type Out = bool;
    #[inline(always)]
    fn run<const X: usize>(self) -> bool {
        if self.group.shape().1 != 2 {
            // Raw tokens of another width: task by task through `Forward`, which predicts NaN for them.
            return false;
        }
        for t in 0..self.group.count {
            let (ctx, query, y) = self.group.task(t);
            let Ok(q) = <&[f32; 2]>::try_from(query) else { break };
            let seed = |y_hat: f32| y_hat - y;
            let grads = Some(&mut *self.grads);
            let (y_hat, _) = FixedForward::forward_backward(self.net, ctx.as_chunks().0, q, self.ws, seed, grads);
            *self.loss += 0.5 * ((y_hat - y) as f64).powi(2);
        }
        true
    }
}

/// [`MlpLsaNet::prediction_and_slope`] as work for [`simd::run_any_width`].
struct Slope<'a, const F: usize, const M: usize, const W: usize> {
    net: &'a MlpLsaNet<F, M, W>,
    ctx: &'a [[f32; 2]],
    query: &'a [f32; 2],
    ws: &'a mut Workspace<2>,
}

impl<const F: usize, const M: usize, const W: usize> InLanes for Slope<'_, F, M, W> {
    type Out = (f32, [f32; 2]);
    #[inline(always)]
    fn run<const X: usize>(self) -> (f32, [f32; 2]) {
        FixedForward::forward_backward(self.net, self.ctx, self.query, self.ws, |_| 1.0, None)
    }
}
