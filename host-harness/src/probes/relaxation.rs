//! Dai et al.'s relaxation of softmax attention, measured on a trained softmax net.
//!
//! Dai et al. read softmax attention as `W_ZSL q + dW_ICL q` with `dW_ICL = sum_i (W_V x_i)(W_K x_i)^T` over the
//! demonstrations: no softmax normaliser and no `1/sqrt(d)`. Per layer and head, at the query, this module measures
//! the change the demonstrations cause, `Attn(demos + zero-shot part; q) - Attn(zero-shot part; q)`, against
//! `dW_ICL q` ([`dualform::dai_demo_effect`]): their cosine, and the relative residual after the best scalar fit. In
//! the regression task the query attends to the context only, so the zero-shot part is empty and the change is the
//! whole attention output. Beside it, labelled separately, the error of the *normalised* first-order expansion
//! ([`dualform::softmax_relaxation_error`]), and the logit scale the layer actually uses (the standard deviation of
//! the query's scaled logits over the context). Everything in f64 from the f32 weights and tokens.

use crate::judge::stats::Stat;
use crate::net::{Forward, SoftmaxLayer, SoftmaxNet, SoftmaxWorkspace, VectorsBuf};
use crate::tasks::TaskSampler;
use dualform::dual_form::{demo_effect_at, relaxation_error_at};
use dualform::head_ref::{HeadRef, Widths};
use dualform::linalg::slices::{dot, matvec};
use serde::{Deserialize, Serialize};

/// One layer's relaxation, over tasks and heads.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerRelaxation {
    /// The layer (1-based).
    pub layer: usize,
    /// `cos(change, dW_ICL q)` (Dai's unnormalised form).
    pub cosine: Stat,
    /// `||change - c dW_ICL q|| / ||change||` after the best scalar `c`.
    pub residual: Stat,
    /// The normalised first-order expansion's relative error (the second, labelled number).
    pub normalised_error: Stat,
    /// Standard deviation of the query's scaled logits over the context.
    pub logit_std: Stat,
    /// Head-task pairs with no direction to compare (a zero change or `dW_ICL q`), left out.
    pub skipped: usize,
}

/// The scratch of [`at_query`] for one token width.
#[derive(Clone, Debug, Default)]
pub struct Scratch {
    vecs: VectorsBuf<f64>,
    /// The change, `dW_ICL q`, `dW_ICL`, `W_Q q`, a key.
    change: Vec<f64>,
    predicted: Vec<f64>,
    map: Vec<f64>,
    q: Vec<f64>,
    k: Vec<f64>,
}

impl Scratch {
    /// Scratch for heads of widths `w`.
    pub fn new(w: Widths) -> Self {
        Self {
            vecs: VectorsBuf::new(w, 1),
            change: vec![0.0; w.dv],
            predicted: vec![0.0; w.dv],
            map: vec![0.0; w.dv * w.dk],
            q: vec![0.0; w.dk],
            k: vec![0.0; w.dk],
        }
    }
}

/// Population standard deviation (0 for fewer than two values).
fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// One head at one query: `(cosine, residual)` of Dai's form (`None` when there is no direction to compare), the
/// normalised expansion's error (`None` when undefined), and the logit standard deviation.
pub fn at_query(
    w: Widths,
    head: HeadRef<'_, f64>,
    ctx: &[f64],
    query: &[f64],
    sc: &mut Scratch,
) -> (Option<(f64, f64)>, Option<f64>, f64) {
    matvec(&mut sc.q, head.w_q, query);
    let scale = (w.dk as f64).sqrt();
    let mut logits = Vec::with_capacity(ctx.len() / w.e.max(1));
    for e in ctx.chunks_exact(w.e.max(1)) {
        matvec(&mut sc.k, head.w_k, e);
        logits.push(dot(&sc.q, &sc.k) / scale);
    }
    let Scratch { vecs, change, predicted, map, .. } = sc;
    let mut vecs = vecs.vectors();
    let out = (&mut change[..], &mut predicted[..], &mut map[..]);
    let dai =
        demo_effect_at(w, head, ctx, &[], query, out, &mut vecs).ok().map(|(cosine, _, residual)| (cosine, residual));
    (dai, relaxation_error_at(w, head, ctx, &[], query, &mut vecs).ok(), std_dev(&logits))
}

/// The relaxation of every layer of `net` on `count` tasks of the streams `(seed, first_stream + chunk)`.
pub fn measure(
    net: &SoftmaxNet,
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<LayerRelaxation> {
    let layers: Vec<SoftmaxLayer<f64>> = net.layers().iter().map(SoftmaxLayer::cast).collect();
    let (k, e) = (layers.len(), net.width());
    let w = Widths { e, dk: e, dv: e };
    // Per layer: (cosine, residual, normalised error, logit std) samples and the skipped count.
    type Acc = (Vec<[Vec<f64>; 4]>, Vec<usize>, SoftmaxWorkspace, Scratch);
    let parts = sampler.par_chunks::<Acc>(
        seed,
        first_stream,
        count,
        || (vec![Default::default(); k], vec![0; k], net.workspace(sampler.n), Scratch::new(w)),
        |(acc, skipped, ws, sc), ctx, query, _| {
            let stride = ctx.len() + e;
            let Some(inputs) = net.layer_inputs(ctx, query, ws) else { return };
            for (l, (layer, tokens)) in layers.iter().zip(inputs.chunks_exact(stride)).enumerate() {
                let tokens: Vec<f64> = tokens.iter().map(|&t| f64::from(t)).collect();
                let (c, q) = tokens.split_at(tokens.len() - e);
                for head in layer.heads() {
                    let (dai, normalised, spread) = at_query(w, head, c, q, sc);
                    match dai {
                        Some((cosine, residual)) => {
                            acc[l][0].push(cosine);
                            acc[l][1].push(residual);
                        }
                        None => skipped[l] += 1,
                    }
                    acc[l][2].extend(normalised);
                    acc[l][3].push(spread);
                }
            }
        },
    );
    (0..k)
        .map(|l| {
            let all = |i: usize| Stat::of(parts.iter().flat_map(|p| p.0[l][i].iter().copied()));
            LayerRelaxation {
                layer: l + 1,
                cosine: all(0),
                residual: all(1),
                normalised_error: all(2),
                logit_std: all(3),
                skipped: parts.iter().map(|p| p.1[l]).sum(),
            }
        })
        .collect()
}
