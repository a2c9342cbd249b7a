//! [`MlpLsaNet`]: a learned feature map in front of one LSA layer, for tasks whose target is not linear in the input
//! (`mlp-sine`). Raw tokens `(x, y)` (width 2) become `(phi(x), y)` (width `W = F + 1`) through the core's
//! [`ScalarMlp`]; one LSA head (the core's unmerged [`LsaLayer`]) then updates the query, whose last entry is
//! minus the prediction. Forward and backward run on the core's kernels (`context_state`, `query_forward`,
//! `lsa_query_backward`, `ScalarMlp::forward` / `backward`).

use super::{FixedForward, Workspace};
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
    pub(crate) fn new(mlp: &ScalarMlp<f32, F, M>, ctx: &[[f32; 2]], query: &[f32; 2]) -> Self {
        let (ctx, ctx_caches) = ctx.iter().map(|t| embed_cached(mlp, t)).unzip();
        let (query, query_cache) = embed_cached(mlp, query);
        Self { ctx, ctx_caches, query, query_cache }
    }

    /// Adds the feature map's gradients for the context tokens' gradients `g_ctx` (their first F entries) into
    /// `grad`, token by token.
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
fn head<const F: usize, const W: usize>(t: &[f32; W]) -> [f32; F] {
    core::array::from_fn(|i| t[i])
}

/// [`embed`] with the feature map's cache.
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
