//! Dai et al.'s split of attention into an in-context part and a zero-shot part, against explicit computations.

use crate::common::*;
use crate::gd::F64_REL;
use dualform::*;
use nalgebra::SMatrix;

#[test]
fn dai_split_is_exact_for_linear_attention_and_softmax_error_shrinks_with_logits() {
    const E: usize = 6;
    let mut g = Gen::new(71);
    let layer = g.layer::<E, 4, 3, 1>();
    let head = &layer.heads[0];
    let demos = g.tokens::<E, 8>();
    let zs = g.tokens::<E, 3>();
    let x: [f64; E] = g.array(-1.0, 1.0);
    let split = dai_split(head, &demos, &zs);
    let q = dualform::linalg::matvec(&head.w_q, &x);
    assert_close(
        "Dai split vs relaxed attention",
        &split.apply(&q),
        &relaxed_attention(head, &demos, &zs, &x),
        F64_REL,
    );
    // No demonstrations: dW_ICL = 0 and the output is the zero-shot part alone.
    let empty: [[f64; E]; 0] = [];
    assert_eq!(dai_split(head, &empty, &zs).dw_icl, SMatrix::<f64, 3, 4>::zeros());
    // Softmax: the relaxation error is positive and falls like the square of the logit scale.
    let mut errs = Vec::new();
    for s in [3.0, 1.0, 0.1, 0.01] {
        let mut h = head.clone();
        h.w_q *= s;
        errs.push(softmax_relaxation_error(&h, &demos, &zs, &x).unwrap());
    }
    eprintln!("softmax relaxation error at logit scales 3, 1, 0.1, 0.01: {errs:?}");
    assert!(errs.iter().all(|&e| e > 0.0));
    assert!(errs.windows(2).all(|w| w[1] < w[0]), "must shrink: {errs:?}");
    assert!(errs[3] < errs[2] / 50.0, "second order: 10x smaller logits, >50x smaller error: {errs:?}");
    assert_eq!(softmax_relaxation_error(head, &empty, &[[0.0; E]; 0], &x), Err(Error::Empty));
}

/// Dai's comparison as they wrote it, against an explicit f64 computation (softmax with `exp` and sums written out,
/// `dW_ICL q` as a plain double sum): the change the demonstrations cause, its cosine with `dW_ICL q`, the best
/// scale and the residual. And what it shows: at small logits the change is the shift toward the demonstrations'
/// mean value, which does not depend on the query, while `dW_ICL q` does.
#[test]
fn dai_demo_effect_matches_an_explicit_computation() {
    const E: usize = 5;
    let mut g = Gen::new(17);
    let layer = g.layer::<E, 3, 4, 1>();
    let demos = g.tokens::<E, 6>();
    let zs = g.tokens::<E, 2>();
    let x: [f64; E] = g.array(-1.0, 1.0);
    for s in [2.0, 0.5, 0.01] {
        let mut head = layer.heads[0].clone();
        head.w_q *= s;
        let effect = dai_demo_effect(&head, &demos, &zs, &x).unwrap();
        let (change, predicted) = (effect.change, effect.predicted);
        // Explicit: q, keys, values, softmax over all tokens and over the zero-shot part.
        let mv = |m: &dyn Fn(usize, usize) -> f64, rows: usize, v: &[f64]| -> Vec<f64> {
            (0..rows).map(|i| (0..v.len()).map(|j| m(i, j) * v[j]).sum()).collect()
        };
        let q = mv(&|i, j| head.w_q[(i, j)], 3, &x);
        let kv: Vec<(Vec<f64>, Vec<f64>)> = demos
            .iter()
            .chain(zs.iter())
            .map(|e| (mv(&|i, j| head.w_k[(i, j)], 3, e), mv(&|i, j| head.w_v[(i, j)], 4, e)))
            .collect();
        let attn = |items: &[(Vec<f64>, Vec<f64>)]| -> Vec<f64> {
            let w: Vec<f64> = items
                .iter()
                .map(|(k, _)| (k.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>() / 3f64.sqrt()).exp())
                .collect();
            let total: f64 = w.iter().sum();
            (0..4).map(|d| items.iter().zip(&w).map(|((_, v), wj)| wj * v[d]).sum::<f64>() / total).collect()
        };
        let (all, zero_shot) = (attn(&kv), attn(&kv[6..]));
        let want_change: Vec<f64> = all.iter().zip(&zero_shot).map(|(a, b)| a - b).collect();
        let want_pred: Vec<f64> = (0..4)
            .map(|d| kv[..6].iter().map(|(k, v)| v[d] * k.iter().zip(&q).map(|(a, b)| a * b).sum::<f64>()).sum())
            .collect();
        assert_close("change", &change, &want_change, 1e-12);
        assert_close("dW_ICL q", &predicted, &want_pred, 1e-12);
        let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
        let cos =
            dot(&want_change, &want_pred) / (dot(&want_change, &want_change) * dot(&want_pred, &want_pred)).sqrt();
        let c = dot(&want_change, &want_pred) / dot(&want_pred, &want_pred);
        let rest: Vec<f64> = want_change.iter().zip(&want_pred).map(|(a, p)| a - c * p).collect();
        assert!((effect.cosine - cos).abs() < 1e-12 && (effect.scale - c).abs() < 1e-9 * c.abs().max(1.0));
        assert!((effect.residual - (dot(&rest, &rest) / dot(&want_change, &want_change)).sqrt()).abs() < 1e-12);
        assert!((effect.cosine.powi(2) + effect.residual.powi(2) - 1.0).abs() < 1e-12, "cos^2 + residual^2 = 1");
        if s == 0.01 {
            // Near-zero logits: the change is (almost) the mean shift, (6/8)(mean(demo values) - mean(zs values)).
            let mean = |items: &[(Vec<f64>, Vec<f64>)]| -> Vec<f64> {
                (0..4).map(|d| items.iter().map(|(_, v)| v[d]).sum::<f64>() / items.len() as f64).collect()
            };
            let shift: Vec<f64> = mean(&kv).iter().zip(mean(&kv[6..])).map(|(a, b)| a - b).collect();
            assert_close("mean shift", &change, &shift, 0.05);
            eprintln!("logit scale 0.01: cos(change, dW_ICL q) = {:.3}", effect.cosine);
        }
    }
    // No demonstrations change nothing: no direction to compare.
    let empty: [[f64; E]; 0] = [];
    assert_eq!(dai_demo_effect(&layer.heads[0], &empty, &zs, &x).map(|r| r.cosine), Err(Error::ZeroNormaliser));
    let mut nan = x;
    nan[0] = f64::NAN;
    assert_eq!(dai_demo_effect(&layer.heads[0], &demos, &zs, &nan).map(|r| r.cosine), Err(Error::NonFinite));
}
