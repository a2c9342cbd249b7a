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

/// One head at one query: `(cosine, residual)` of Dai's form (`None` when there is no direction to compare), the
/// normalised expansion's error (`None` when undefined), and the logit standard deviation.
pub fn at_query<const E: usize>(
    head: &Head<f64, E, E, E>,
    ctx: &[[f64; E]],
    query: &[f64; E],
) -> (Option<(f64, f64)>, Option<f64>, f64) {
    let qv = matvec(&head.w_q, query);
    let logits: Vec<f64> = ctx.iter().map(|e| dot(&qv, &matvec(&head.w_k, e)) / (E as f64).sqrt()).collect();
    let dai = dai_demo_effect(head, ctx, &[], query).ok().map(|e| (e.cosine, e.residual));
    (dai, softmax_relaxation_error(head, ctx, &[], query).ok(), std_dev(&logits))
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
    let parts = sampler.par_chunks_fixed::<E, Acc<E>>(
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
                    let (dai, normalised, spread) = at_query(head, c, q);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn random_head(seed: u64, q_scale: f64) -> Head<f64, 4, 4, 4> {
        let mut s = dualform::rng::SplitMix64::new(seed);
        let mut h = Head::<f64, 4, 4, 4>::zeros();
        for m in [&mut h.w_q, &mut h.w_k, &mut h.w_v, &mut h.p] {
            for v in m.iter_mut() {
                *v = s.next_normal();
            }
        }
        h.w_q *= q_scale;
        h
    }

    /// Positive control: with values summing to zero over the context (tokens in +- pairs), softmax attention at
    /// small logits is `(c / N) dW_ICL q` to first order, so Dai's form is exact in direction as the logits
    /// vanish and degrades as they grow; with keys all zero (uniform attention) there is no `dW_ICL q` to compare.
    #[test]
    fn dai_form_is_exact_in_the_limit_where_it_should_be() {
        let mut s = dualform::rng::SplitMix64::new(3);
        let half: Vec<[f64; 4]> = (0..5).map(|_| core::array::from_fn(|_| s.next_normal())).collect();
        let ctx: Vec<[f64; 4]> = half.iter().flat_map(|x| [*x, x.map(|v| -v)]).collect();
        let query = [0.3, -0.7, 0.5, 0.0];
        let mut cosines = Vec::new();
        for scale in [1e-4, 1e-2, 1.0] {
            let (dai, normalised, spread) = at_query(&random_head(7, scale), &ctx, &query);
            let (cosine, residual) = dai.unwrap();
            cosines.push(cosine);
            assert!(spread > 0.0 && normalised.unwrap() >= 0.0);
            if scale == 1e-4 {
                assert!(cosine > 1.0 - 1e-6 && residual < 1e-3, "{cosine} {residual}");
            }
        }
        assert!(cosines[2] < cosines[1] && cosines[1] <= cosines[0], "{cosines:?}");
        // The same head on unpaired tokens: the mean value dominates the change, and Dai's form misses it.
        let (dai, ..) = at_query(&random_head(7, 1e-4), &half, &query);
        assert!(dai.unwrap().0 < 0.9, "{dai:?}");
        // Keys all zero: logits 0, uniform weights; dW_ICL q = 0 gives no direction, the normalised expansion is exact.
        let mut flat = random_head(7, 1.0);
        flat.w_k *= 0.0;
        let (dai, normalised, spread) = at_query(&flat, &half, &query);
        assert_eq!((dai, spread), (None, 0.0));
        assert!(normalised.unwrap() < 1e-12);
    }
}
