//! Unit tests of `probes::relaxation` (`src/probes/relaxation.rs`).

use dualform::head_ref::Widths;
use dualform_harness::probes::relaxation::*;

use dualform::Head;

fn run(head: &Head<f64, 4, 4, 4>, ctx: &[[f64; 4]], query: &[f64; 4]) -> (Option<(f64, f64)>, Option<f64>, f64) {
    let w = Widths { e: 4, dk: 4, dv: 4 };
    at_query(w, head.into(), ctx.as_flattened(), query, &mut Scratch::new(w))
}

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
        let (dai, normalised, spread) = run(&random_head(7, scale), &ctx, &query);
        let (cosine, residual) = dai.unwrap();
        cosines.push(cosine);
        assert!(spread > 0.0 && normalised.unwrap() >= 0.0);
        if scale == 1e-4 {
            assert!(cosine > 1.0 - 1e-6 && residual < 1e-3, "{cosine} {residual}");
        }
    }
    assert!(cosines[2] < cosines[1] && cosines[1] <= cosines[0], "{cosines:?}");
    // The same head on unpaired tokens: the mean value dominates the change, and Dai's form misses it.
    let (dai, ..) = run(&random_head(7, 1e-4), &half, &query);
    assert!(dai.unwrap().0 < 0.9, "{dai:?}");
    // Keys all zero: logits 0, uniform weights; dW_ICL q = 0 gives no direction, the normalised expansion is exact.
    let mut flat = random_head(7, 1.0);
    flat.w_k *= 0.0;
    let (dai, normalised, spread) = run(&flat, &half, &query);
    assert_eq!((dai, spread), (None, 0.0));
    assert!(normalised.unwrap() < 1e-12);
}
