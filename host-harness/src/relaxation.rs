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

use crate::net::{Forward, SoftmaxNet, Workspace};
use crate::stats::Stat;
use crate::tasks::TaskSampler;
use dualform::linalg::{dot, matvec};
use dualform::{dai_demo_effect, softmax_relaxation_error, Head};
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

fn head64<const E: usize>(h: &Head<f32, E, E, E>) -> Head<f64, E, E, E> {
    Head { w_q: h.w_q.map(f64::from), w_k: h.w_k.map(f64::from), w_v: h.w_v.map(f64::from), p: h.p.map(f64::from) }
}

/// Population standard deviation (0 for fewer than two values).
fn std_dev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / v.len() as f64).sqrt()
}

/// The relaxation of every layer of `net` on `count` tasks of the streams `(seed, first_stream + chunk)`.
pub fn measure<const E: usize>(
    net: &SoftmaxNet<E>,
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<LayerRelaxation> {
    let heads: Vec<Vec<Head<f64, E, E, E>>> =
        net.layers().iter().map(|l| l.heads.iter().map(head64).collect()).collect();
    let k = heads.len();
    // Per layer: (cosine, residual, normalised error, logit std) samples and the skipped count.
    type Acc<const E: usize> = (Vec<[Vec<f64>; 4]>, Vec<usize>, Workspace<E>);
    let parts = sampler.par_chunks::<E, Acc<E>>(
        seed,
        first_stream,
        count,
        || (vec![Default::default(); k], vec![0; k], net.workspace(sampler.n)),
        |(acc, skipped, ws), ctx, query, _| {
            let n = ctx.len();
            let Some(inputs) = net.layer_inputs(ctx, query, ws) else { return };
            for (l, (layer, tokens)) in heads.iter().zip(inputs.chunks_exact(n + 1)).enumerate() {
                let tokens: Vec<[f64; E]> = tokens.iter().map(|t| t.map(f64::from)).collect();
                let Some((q, c)) = tokens.split_last() else { continue };
                for head in layer {
                    let qv = matvec(&head.w_q, q);
                    let logits: Vec<f64> =
                        c.iter().map(|e| dot(&qv, &matvec(&head.w_k, e)) / (E as f64).sqrt()).collect();
                    acc[l][3].push(std_dev(&logits));
                    match dai_demo_effect(head, c, &[], q) {
                        Ok(effect) => {
                            acc[l][0].push(effect.cosine);
                            acc[l][1].push(effect.residual);
                        }
                        Err(_) => skipped[l] += 1,
                    }
                    if let Ok(err) = softmax_relaxation_error(head, c, &[], q) {
                        acc[l][2].push(err);
                    }
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
