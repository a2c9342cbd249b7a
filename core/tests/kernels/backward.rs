//! The backward kernels against central finite differences in f64, for every parameter and every input.

use crate::common::*;
use dualform::attention::{context_state, query_forward};
use dualform::backward::{
    lsa_backward, lsa_query_backward, softmax_backward, softmax_backward_slices, softmax_token_backward, LayerGrad,
};
use dualform::*;

/// Relative tolerance of analytic vs central-difference gradients (step 1e-6, f64).
const FD_REL: f64 = 1e-7;
const STEP: f64 = 1e-6;

/// `L = sum_t R_t . h'_t` after one LSA layer (a linear read-out, so dL/dh' = R).
fn objective<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<f64, E, DK, DV, H>,
    ctx: &[[f64; E]; N],
    query: &[f64; E],
    r_ctx: &[[f64; E]; N],
    r_q: &[f64; E],
) -> f64 {
    let (mut c, mut q) = (*ctx, *query);
    lsa_associative(layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    read_out(&c, &q, r_ctx, r_q)
}

/// `sum_t R_t . h_t` over the context tokens and the query.
fn read_out<const E: usize, const N: usize>(
    c: &[[f64; E]; N],
    q: &[f64; E],
    r_ctx: &[[f64; E]; N],
    r_q: &[f64; E],
) -> f64 {
    let mut l: f64 = q.iter().zip(r_q).map(|(a, b)| a * b).sum();
    for (t, r) in c.iter().zip(r_ctx) {
        l += t.iter().zip(r).map(|(a, b)| a * b).sum::<f64>();
    }
    l
}

/// Every parameter's analytic gradient against its central difference.
fn check_params<const E: usize, const DK: usize, const DV: usize, const H: usize>(
    label: &str,
    layer: &Layer<f64, E, DK, DV, H>,
    grad: &LayerGrad<f64, E, DK, DV, H>,
    f: impl Fn(&Layer<f64, E, DK, DV, H>) -> f64,
) {
    let mut analytic = Vec::new();
    let mut numeric = Vec::new();
    for h in 0..H {
        for which in 0..4 {
            let len = match which {
                0 | 1 => DK * E,
                2 => DV * E,
                _ => E * DV,
            };
            for i in 0..len {
                let (mut lp, mut lm) = (layer.clone(), layer.clone());
                *param(&mut lp, h, which, i) += STEP;
                *param(&mut lm, h, which, i) -= STEP;
                numeric.push((f(&lp) - f(&lm)) / (2.0 * STEP));
                analytic.push(*param(&mut grad.clone(), h, which, i));
            }
        }
    }
    assert_close(&format!("{label}: parameter gradients"), &analytic, &numeric, FD_REL);
}

/// Entry `i` (column-major) of matrix `which` (0 W_Q, 1 W_K, 2 W_V, 3 P) of head `h`.
fn param<const E: usize, const DK: usize, const DV: usize, const H: usize>(
    l: &mut Layer<f64, E, DK, DV, H>,
    h: usize,
    which: usize,
    i: usize,
) -> &mut f64 {
    let hd = &mut l.heads[h];
    match which {
        0 => &mut hd.w_q.as_mut_slice()[i],
        1 => &mut hd.w_k.as_mut_slice()[i],
        2 => &mut hd.w_v.as_mut_slice()[i],
        _ => &mut hd.p.as_mut_slice()[i],
    }
}

/// The inputs of one layer and the read-out `R` of the objective.
type Case<const E: usize, const N: usize> = ([[f64; E]; N], [f64; E], [[f64; E]; N], [f64; E]);

/// A random layer, inputs and read-out `R` from `seed`; `backward` turns `R` into the gradients of the parameters
/// and inputs, which are checked against central differences of `objective(layer, ctx, query, R_ctx, R_q)`.
fn check_vjp<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    seed: u64,
    label: &str,
    objective: impl Fn(&Layer<f64, E, DK, DV, H>, &[[f64; E]; N], &[f64; E], &[[f64; E]; N], &[f64; E]) -> f64,
    backward: impl Fn(
        &Layer<f64, E, DK, DV, H>,
        &Case<E, N>,
        &mut [[f64; E]; N],
        &mut [f64; E],
        &mut LayerGrad<f64, E, DK, DV, H>,
    ),
) {
    let mut g = Gen::new(seed);
    let layer = g.layer::<E, DK, DV, H>();
    let case: Case<E, N> = (g.tokens::<E, N>(), g.array::<E>(-1.0, 1.0), g.tokens::<E, N>(), g.array::<E>(-1.0, 1.0));
    let (ctx, query, r_ctx, r_q) = case;
    let mut grad = LayerGrad::<f64, E, DK, DV, H>::zeros();
    let (mut g_ctx, mut g_q) = (r_ctx, r_q);
    backward(&layer, &case, &mut g_ctx, &mut g_q, &mut grad);
    let label = format!("{label} E={E} DK={DK} DV={DV} H={H} N={N}");
    check_params(&label, &layer, &grad, |l| objective(l, &ctx, &query, &r_ctx, &r_q));
    check_inputs(&label, &ctx, &query, &g_ctx, &g_q, |c, q| objective(&layer, c, q, &r_ctx, &r_q));
}

fn check_full<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(seed: u64) {
    check_vjp::<E, DK, DV, H, N>(seed, "full VJP", objective, |layer, (ctx, query, _, _), gc, gq, grad| {
        lsa_backward(layer, ctx, query, gc, gq, grad)
    });
}

/// Every input's analytic gradient (context tokens, then the query) against its central difference.
fn check_inputs<const E: usize, const N: usize>(
    label: &str,
    ctx: &[[f64; E]; N],
    query: &[f64; E],
    g_ctx: &[[f64; E]; N],
    g_q: &[f64; E],
    f: impl Fn(&[[f64; E]; N], &[f64; E]) -> f64,
) {
    let (mut analytic, mut numeric) = (Vec::new(), Vec::new());
    for t in 0..=N {
        for i in 0..E {
            let (mut cp, mut qp, mut cm, mut qm) = (*ctx, *query, *ctx, *query);
            if t < N {
                cp[t][i] += STEP;
                cm[t][i] -= STEP;
                analytic.push(g_ctx[t][i]);
            } else {
                qp[i] += STEP;
                qm[i] -= STEP;
                analytic.push(g_q[i]);
            }
            numeric.push((f(&cp, &qp) - f(&cm, &qm)) / (2.0 * STEP));
        }
    }
    assert_close(&format!("{label}: input gradients"), &analytic, &numeric, FD_REL);
}

fn check_query_only<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(seed: u64) {
    let mut g = Gen::new(seed);
    let layer = g.layer::<E, DK, DV, H>();
    let ctx = g.tokens::<E, N>();
    let query = g.array::<E>(-1.0, 1.0);
    let r_q = g.array::<E>(-1.0, 1.0);
    let zero = [[0.0; E]; N];
    let state = context_state(&layer, &ctx);
    // The forward of the query-only path is the layer's forward for the query.
    let (mut c, mut q) = (ctx, query);
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    assert_eq!(query_forward(&layer, &state, &query), q);
    let mut grad = LayerGrad::<f64, E, DK, DV, H>::zeros();
    let mut g_ctx = [[0.0; E]; N];
    let dq = lsa_query_backward(&layer, &ctx, &state, &query, &r_q, &mut grad, Some(&mut g_ctx)).unwrap();
    let label = format!("query-only VJP E={E} DK={DK} DV={DV} H={H} N={N}");
    check_params(&label, &layer, &grad, |l| objective(l, &ctx, &query, &zero, &r_q));
    // Against the general VJP with zero context gradients.
    let mut grad_full = LayerGrad::<f64, E, DK, DV, H>::zeros();
    let (mut gc, mut gq) = (zero, r_q);
    lsa_backward(&layer, &ctx, &query, &mut gc, &mut gq, &mut grad_full);
    let flat_grad = |l: &LayerGrad<f64, E, DK, DV, H>| -> Vec<f64> {
        l.heads
            .iter()
            .flat_map(|h| [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()].concat())
            .collect()
    };
    assert_close(&format!("{label}: vs full VJP (params)"), &flat_grad(&grad), &flat_grad(&grad_full), 1e-12);
    assert_close(&format!("{label}: vs full VJP (query)"), &dq, &gq, 1e-12);
    assert_close(&format!("{label}: vs full VJP (context)"), &g_ctx.concat(), &gc.concat(), 1e-12);
}

#[test]
fn full_layer_vjp_matches_finite_differences() {
    for seed in 0..4 {
        check_full::<5, 4, 3, 2, 6>(seed);
        check_full::<11, 11, 11, 1, 10>(seed);
        check_full::<3, 3, 3, 1, 1>(seed);
    }
}

#[test]
fn query_only_vjp_matches_finite_differences_and_the_full_vjp() {
    for seed in 0..4 {
        check_query_only::<11, 11, 11, 1, 10>(seed);
        check_query_only::<6, 5, 2, 3, 7>(seed);
    }
}

/// The merged kernel: forward equal to the LSA layer's query output, backward (through the pullback) equal to the
/// unmerged VJP, which is itself checked against finite differences above.
fn check_merged<const E: usize, const DK: usize, const DV: usize, const N: usize>(seed: u64) {
    let mut g = Gen::new(seed);
    let layer = g.layer::<E, DK, DV, 1>();
    let ctx = g.tokens::<E, N>();
    let query = g.array::<E>(-1.0, 1.0);
    let r_q = g.array::<E>(-1.0, 1.0);
    let m = MergedHead::from_head(&layer.heads[0]);
    let label = format!("merged E={E} DK={DK} DV={DV} N={N} seed={seed}");
    let (mut c, mut q) = (ctx, query);
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    assert_close(&format!("{label}: forward"), &m.query_forward(&ctx, &query), &q, 1e-12);
    assert_eq!(m.predict::<1>(&ctx, &query)[0], -m.query_forward(&ctx, &query)[E - 1]);

    let mut dm = MergedHead::zeros();
    let mut gc = [[0.0; E]; N];
    let dh = m.query_backward(&ctx, &query, &r_q, &mut dm, Some(&mut gc)).unwrap();
    let mut grad = LayerGrad::<f64, E, DK, DV, 1>::zeros();
    MergedHead::pullback(&layer.heads[0], &dm, &mut grad.heads[0]);
    let state = context_state(&layer, &ctx);
    let mut want = LayerGrad::<f64, E, DK, DV, 1>::zeros();
    let mut want_gc = [[0.0; E]; N];
    let want_dh = lsa_query_backward(&layer, &ctx, &state, &query, &r_q, &mut want, Some(&mut want_gc)).unwrap();
    let flat = |l: &LayerGrad<f64, E, DK, DV, 1>| -> Vec<f64> {
        let h = &l.heads[0];
        [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()].concat()
    };
    assert_close(&format!("{label}: parameter gradients via pullback"), &flat(&grad), &flat(&want), 1e-12);
    assert_close(&format!("{label}: query gradient"), &dh, &want_dh, 1e-12);
    assert_close(&format!("{label}: context gradients"), &gc.concat(), &want_gc.concat(), 1e-12);
}

#[test]
fn merged_head_equals_the_layer_and_its_vjp() {
    for seed in 0..20 {
        check_merged::<11, 11, 11, 10>(seed);
        check_merged::<6, 4, 3, 9>(seed);
        check_merged::<3, 5, 2, 1>(seed);
    }
    // An empty context gives a zero update.
    let m = MergedHead::from_head(&Gen::new(1).layer::<4, 4, 4, 1>().heads[0]);
    assert_eq!(m.query_update(&[], &[1.0, 2.0, 3.0, 4.0]), [0.0; 4]);
}

/// `L = sum_t R_t . h'_t` after one softmax attention layer with `mask`.
fn softmax_objective<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    layer: &Layer<f64, E, DK, DV, H>,
    mask: Mask,
    ctx: &[[f64; E]; N],
    query: &[f64; E],
    r_ctx: &[[f64; E]; N],
    r_q: &[f64; E],
) -> f64 {
    let (mut c, mut q) = (*ctx, *query);
    let mut scratch = LinearScratch::new();
    softmax_attention(layer, mask, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
    read_out(&c, &q, r_ctx, r_q)
}

fn check_softmax<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(
    seed: u64,
    mask: Mask,
) {
    let objective =
        |l: &Layer<f64, E, DK, DV, H>, c: &[[f64; E]; N], q: &[f64; E], rc: &[[f64; E]; N], rq: &[f64; E]| {
            softmax_objective(l, mask, c, q, rc, rq)
        };
    check_vjp::<E, DK, DV, H, N>(
        seed,
        &format!("softmax VJP {mask:?}"),
        objective,
        |layer, (ctx, query, _, _), gc, gq, grad| softmax_backward(layer, mask, ctx, query, gc, gq, grad).unwrap(),
    );
}

#[test]
fn softmax_layer_vjp_matches_finite_differences() {
    for seed in 0..4 {
        for mask in [Mask::Full, Mask::Causal] {
            check_softmax::<5, 4, 3, 2, 6>(seed, mask);
            check_softmax::<11, 11, 11, 1, 10>(seed, mask);
            check_softmax::<3, 3, 3, 1, 1>(seed, mask);
            check_softmax::<4, 0, 2, 1, 3>(seed, mask); // key width 0: uniform weights
        }
    }
}

/// The one-token VJP refuses a context-gradient slice of another length, and an empty context passes the
/// gradient through unchanged and adds nothing.
#[test]
fn softmax_token_vjp_checks_lengths_and_handles_an_empty_context() {
    let mut g = Gen::new(3);
    let layer = g.layer::<4, 3, 3, 2>();
    let ctx = g.tokens::<4, 3>();
    let (h, r) = (g.array::<4>(-1.0, 1.0), g.array::<4>(-1.0, 1.0));
    let mut grad = LayerGrad::<f64, 4, 3, 3, 2>::zeros();
    let mut short = [[0.0; 4]; 2];
    let err = softmax_token_backward(&layer, &ctx, &h, &r, &mut grad, Some(&mut short));
    assert_eq!(err, Err(Error::LengthMismatch { expected: 3, found: 2 }));
    assert_eq!(grad, LayerGrad::zeros(), "nothing accumulated before the check");
    assert_eq!(softmax_token_backward(&layer, &[], &h, &r, &mut grad, None), Ok(r));
    assert_eq!(grad, LayerGrad::zeros());
    // The layer's slice form refuses output gradients or scratch of another length, before accumulating.
    let (mut gq, mut g3) = (r, [[0.5; 4]; 3]);
    let mut run = |gc: &mut [[f64; 4]], entries: usize, grad: &mut LayerGrad<f64, 4, 3, 3, 2>| {
        let (mut k, mut v, mut gk, mut gv) = ([[0.0; 3]; 6], [[0.0; 3]; 6], [[0.0; 3]; 6], [[0.0; 3]; 6]);
        let mut work = SoftmaxWork { keys: &mut k, values: &mut v, g_keys: &mut gk[..entries], g_values: &mut gv };
        softmax_backward_slices(&layer, Mask::Full, &ctx, &h, gc, &mut gq, grad, &mut work)
    };
    assert_eq!(run(&mut short, 6, &mut grad), Err(Error::LengthMismatch { expected: 3, found: 2 }));
    assert_eq!(run(&mut g3, 5, &mut grad), Err(Error::LengthMismatch { expected: 6, found: 5 }));
    assert_eq!(grad, LayerGrad::zeros());
    assert_eq!(run(&mut g3, 6, &mut grad), Ok(()));
    assert_ne!(grad, LayerGrad::zeros());
}
