//! Dai et al.'s comparison of in-context learning (ICL) with fine-tuning (FT), computed as their method computes it,
//! on one attention layer whose mechanism is known ([`Subject`]).
//!
//! A task's context is `m` demonstrations `(x_i, y_i)` followed by the zero-shot prompt: `u` inputs whose labels are
//! not shown ([`TaskSampler::hidden`](crate::tasks::TaskSampler::hidden)). Three runs of the layer at the query `(x_q, 0)`:
//! - zero-shot (ZS): the query attends to the prompt alone;
//! - in-context (ICL): to the demonstrations and the prompt;
//! - fine-tuned (FT): `W_K` and `W_V` of every head trained by SGD with batch 1, one pass over the demonstrations in
//!   order, each presented zero-shot (the prompt, then `(x_i, 0)` as the query; loss `(y_hat - y_i)^2 / 2`), then
//!   zero-shot on the query. The rate is the one of a grid that gives FT the lowest loss on tuning tasks.
//!
//! Per task, then means with 95% intervals over tasks ([`Scores`]):
//! - SimAOU: the attention outputs at the query (after `P`, before the residual), each scaled to unit length;
//!   `cos(ICL - ZS, FT - ZS)`. Their random baseline, `cos(ICL - ZS, r)` with `r` non-centred uniform on `[0, 1)^E`,
//!   and the same with `r` a centred Gaussian (`r` drawn per task from a seed made of the task's numbers);
//! - SimAM: per head, the cosine of the query's pre-softmax scores to the prompt tokens, ICL against FT, and their
//!   baseline ICL against ZS. In one layer the prompt's keys do not depend on the demonstrations, so ICL's scores to
//!   them are ZS's and the baseline is 1 by construction; it is computed, not assumed;
//! - Rec2FTP as Dai et al. count it, `#(ZS wrong, FT right, ICL right) / #(ZS wrong, FT right)`, with "right" for
//!   regression: an error `|y_hat - y|` of at most half the labels' standard deviation over the tasks scored
//!   ([`RIGHT`]; also at a quarter and at one, [`RIGHT_THRESHOLDS`]); beside it `P(ICL right | ZS wrong)`, the rate
//!   to read it against, and the lift (their ratio);
//! - the weight-space comparison Dai et al. did not make: the map the demonstrations add to the query's output in
//!   their relaxation, `M_ICL = sum_h P_h (sum_i (W_V e_i)(W_K e_i)^T) W_Q` over the demonstrations, against the
//!   change FT makes to the zero-shot map, `M_FT = sum_h P_h (sum_z (W_V' z)(W_K' z)^T) W_Q - (the same before FT)`
//!   over the prompt: cosine of the two `E x E` maps; and the linear predictor `M_ICL` implies (minus its `y` row on
//!   the inputs) against minus the gradient at 0 of the in-context least-squares loss, `sum_i y_i x_i`: cosine. The
//!   relaxation drops the softmax, so beside it what the layer actually does: the sensitivity of the
//!   demonstrations' effect on the prediction to the query's input, `d(ICL - ZS)/dx_q` (central differences),
//!   against the same gradient (for one GD step from 0 the two are the same vector);
//! - what the controls compute, checked rather than assumed: how often ICL predicts the label of the context token
//!   most aligned with the query (within a tenth of the labels' standard deviation: [`Scores::retrieves`]);
//! - which demonstrations ICL draws on ([`crate::judge::attribution`]): per demonstration, the prediction with all of
//!   them minus the prediction without it (the prompt kept), against one GD step's terms `y_i (x_i . x_q)`: cosine
//!   over the demonstrations.
//!
//! Shuffled labels: the same with ICL's demonstrations relabelled (labels rotated by one position, so every input
//! has another's label); FT and the reference gradient keep the true labels. Everything runs in f64 on the core's
//! kernels (`softmax_token_update` / `softmax_token_backward`, `query_forward` / `lsa_query_backward`).

use crate::net::{SoftmaxLayer, VectorsBuf, SOFTMAX_HEADS};
use dualform::head_ref::{HeadRef, Vectors, Widths};
use dualform::linalg::slices::{add_outer, dot, matmul, matvec};
use dualform::rng::SplitMix64;
use dualform::{linear_ref, softmax_ref};
use serde::{Deserialize, Serialize};

mod scores;
pub use scores::{
    evaluate, rate_grid, score_task, tune_ft_rate, Scores, TaskScore, Tasks, RETRIEVAL_WITHIN, RIGHT, RIGHT_THRESHOLDS,
};

/// One layer under Dai's method: [`SOFTMAX_HEADS`] heads in f64 (a one-head construction leaves the second zero).
pub type DaiLayer = SoftmaxLayer<f64>;

/// How a layer attends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LayerKind {
    /// Linear self-attention: `sum_j (W_V e_j)(W_K e_j . W_Q h)`, no normaliser.
    Linear,
    /// Softmax attention with logits scaled by `1/sqrt(E)`.
    Softmax,
}

/// A layer and how it attends.
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    /// Linear or softmax.
    pub kind: LayerKind,
    /// The weights.
    pub layer: DaiLayer,
}

fn unit(v: &[f64]) -> Vec<f64> {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// The small vectors and the `E x E` matrix the kernels of one width need.
#[derive(Clone, Debug)]
struct Scratch {
    vecs: VectorsBuf<f64>,
    map: Vec<f64>,
}

impl Scratch {
    fn new(e: usize) -> Self {
        Self { vecs: VectorsBuf::new(Widths { e, dk: e, dv: e }, SOFTMAX_HEADS), map: vec![0.0; e * e] }
    }

    fn vectors(&mut self) -> (Vectors<'_, f64>, &mut [f64]) {
        (self.vecs.vectors(), &mut self.map)
    }
}

impl Subject {
    /// The token width E.
    pub fn width(&self) -> usize {
        self.layer.width()
    }

    /// A trained softmax layer, in f64.
    pub fn softmax(layer: &SoftmaxLayer) -> Self {
        Self { kind: LayerKind::Softmax, layer: layer.cast() }
    }

    /// The positive control: the core's construction of one GD step from `W0 = 0` at rate `eta` over `m`
    /// demonstrations in `d` dimensions, as linear attention (the prompt's values are 0, so it adds nothing).
    pub fn gd(d: usize, eta: f64, m: usize) -> Result<Self, dualform::Error> {
        let mut layer = DaiLayer::zeros(d + 1);
        let [head, _] = layer.heads_mut();
        dualform::gd_head_into(d, 1, &vec![0.0; d], eta, None, m, [head.w_q, head.w_k, head.w_v, head.p])?;
        Ok(Self { kind: LayerKind::Linear, layer })
    }

    /// A sharp retrieval head of width `e`: softmax attention with logits `beta x_q . x_j / sqrt(E)` on the inputs
    /// and value `y_j`, so the prediction is the label of the demonstration whose input is most aligned with the
    /// query's (`beta` large). The prompt's labels are 0, so attending to the prompt predicts 0.
    pub fn retrieval(e: usize, beta: f64) -> Self {
        let mut layer = DaiLayer::zeros(e);
        for i in 0..e - 1 {
            layer.matrix_mut(0, 0)[i * e + i] = beta;
            layer.matrix_mut(0, 1)[i * e + i] = 1.0;
        }
        let last = (e - 1) * e + (e - 1);
        layer.matrix_mut(0, 2)[last] = 1.0;
        layer.matrix_mut(0, 3)[last] = -1.0;
        Self { kind: LayerKind::Softmax, layer }
    }

    /// Softmax attention of width `e` with independent `N(0, 1/E)` weights.
    pub fn random(e: usize, seed: u64) -> Self {
        let mut s = SplitMix64::new(seed);
        let mut layer = DaiLayer::zeros(e);
        let scale = 1.0 / (e as f64).sqrt();
        for v in layer.params_mut() {
            *v = s.next_normal() * scale;
        }
        Self { kind: LayerKind::Softmax, layer }
    }

    /// The attention output at `q` over `ctx` (after `P`, before the residual); `None` on a non-finite logit.
    pub fn output(&self, layer: &DaiLayer, ctx: &[f64], q: &[f64]) -> Option<Vec<f64>> {
        let (w, heads) = (layer.widths(), layer.heads());
        let mut sc = Scratch::new(w.e);
        let (mut vecs, map) = sc.vectors();
        let mut u = vec![0.0; w.e];
        match self.kind {
            LayerKind::Softmax => softmax_ref::token_update(w, &heads, ctx, q, &mut u, &mut vecs).ok()?,
            LayerKind::Linear => linear_ref::token_update(w, &heads, ctx, q, &mut u, &mut vecs, map).ok()?,
        }
        Some(u)
    }

    /// The prediction `-(q + output)[y]`.
    pub fn predict(&self, layer: &DaiLayer, ctx: &[f64], q: &[f64]) -> Option<f64> {
        let y = q.len().checked_sub(1)?;
        self.output(layer, ctx, q).map(|o| -(q[y] + o[y]))
    }

    /// One head's pre-softmax scores of `q` to `ctx` (`W_Q q . W_K e`, scaled by `1/sqrt(E)` for softmax).
    pub fn scores(&self, w: Widths, head: HeadRef<'_, f64>, ctx: &[f64], q: &[f64]) -> Vec<f64> {
        let scale = match self.kind {
            LayerKind::Softmax => 1.0 / (w.e as f64).sqrt(),
            LayerKind::Linear => 1.0,
        };
        let (mut qv, mut k) = (vec![0.0; w.dk], vec![0.0; w.dk]);
        matvec(&mut qv, head.w_q, q);
        ctx.chunks_exact(w.e)
            .map(|e| {
                matvec(&mut k, head.w_k, e);
                dot(&qv, &k) * scale
            })
            .collect()
    }

    /// FT: `W_K` and `W_V` by SGD with batch 1 and rate `lr`, one pass over `demos` in order, each presented
    /// zero-shot after `prompt`. `None` when a step fails or the weights stop being finite.
    pub fn fine_tune(&self, prompt: &[f64], demos: &[f64], lr: f64) -> Option<DaiLayer> {
        let mut layer = self.layer.clone();
        let e = layer.width();
        let w = layer.widths();
        let mut sc = Scratch::new(e);
        let (mut dh, mut grad) = (vec![0.0; e], DaiLayer::zeros(e));
        for demo in demos.chunks_exact(e) {
            let mut q = demo.to_vec();
            q[e - 1] = 0.0;
            let y_hat = self.predict(&layer, prompt, &q)?;
            let mut g = vec![0.0; e];
            g[e - 1] = -(y_hat - demo[e - 1]);
            grad.params_mut().fill(0.0);
            let (heads, mut gh) = (layer.heads(), grad.heads_mut());
            let (mut vecs, map) = sc.vectors();
            let step = match self.kind {
                LayerKind::Softmax => {
                    softmax_ref::token_backward(w, &heads, prompt, &q, &g, &mut gh, &mut dh, None, &mut vecs)
                }
                LayerKind::Linear => {
                    linear_ref::token_backward(w, &heads, prompt, &q, &g, &mut gh, &mut dh, None, &mut vecs, map)
                }
            };
            step.ok()?;
            for h in 0..SOFTMAX_HEADS {
                for which in [1, 2] {
                    for (v, d) in layer.matrix_mut(h, which).iter_mut().zip(grad.matrix(h, which)) {
                        *v -= *d * lr;
                    }
                }
            }
        }
        let finite =
            (0..SOFTMAX_HEADS).all(|h| [1, 2].iter().all(|&m| layer.matrix(h, m).iter().all(|v| v.is_finite())));
        finite.then_some(layer)
    }
}

/// Dai's relaxed map of `tokens` through `layer`: `sum_h P_h (sum_j (W_V e_j)(W_K e_j)^T) W_Q`, `E x E`
/// column-major.
pub fn relaxed_map(layer: &DaiLayer, tokens: &[f64]) -> Vec<f64> {
    let e = layer.width();
    let (mut m, mut s, mut ps, mut t) = (vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e]);
    let (mut k, mut v) = (vec![0.0; e], vec![0.0; e]);
    for h in layer.heads() {
        s.fill(0.0);
        for tok in tokens.chunks_exact(e) {
            matvec(&mut v, h.w_v, tok);
            matvec(&mut k, h.w_k, tok);
            add_outer(&mut s, &v, &k);
        }
        matmul(&mut ps, h.p, &s, e, e);
        matmul(&mut t, &ps, h.w_q, e, e);
        for (a, b) in m.iter_mut().zip(&t) {
            *a += b;
        }
    }
    m
}
