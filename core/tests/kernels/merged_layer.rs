//! The merged full-layer kernel (`MergedHead::layer_forward` / `layer_backward`): against the associative LSA layer
//! and a naive f64 reference (forward), against central finite differences and the unmerged backward (backward),
//! with every update rule the stacks use (plain residual, damping, "update only y", clipping).

use crate::common::*;
use dualform::backward::lsa_backward;
use dualform::*;

/// Relative tolerance of an identity exact in real arithmetic, in f64.
const F64_REL: f64 = 1e-12;
/// f32 against f64 on order-one tokens and weights.
const F32_REL: f64 = 1e-5;
/// Analytic against central-difference gradients (step 1e-6, f64).
const FD_REL: f64 = 1e-7;
const STEP: f64 = 1e-6;

fn rules() -> [(&'static str, Update<f64>); 4] {
    [
        ("residual", Update::residual()),
        ("damped 0.75, y only", Update { scale: 0.75, first: 10, clip: None }),
        ("damped 0.5, all", Update { scale: 0.5, first: 0, clip: None }),
        ("clipped at 0.9", Update { scale: 1.0, first: 0, clip: Some(0.9) }),
    ]
}

fn merged<const E: usize>(layer: &Layer<f64, E, E, E, 1>) -> MergedHead<f64, E> {
    MergedHead::from_head(&layer.heads[0])
}

#[test]
fn forward_equals_the_associative_layer_and_the_naive_reference() {
    for seed in 0..20 {
        let mut g = Gen::new(seed);
        let layer = g.layer::<11, 11, 11, 1>();
        let ctx = g.tokens::<11, 10>();
        let query = g.array::<11>(-1.0, 1.0);
        // Plain residual: the naive reference of the layer's definition.
        let want =
            reference_layer(&layer, RefKind::Linear { phi: &phi_identity, normalise: false }, false, &ctx, &query);
        let (mut c, mut q) = (ctx, query);
        merged(&layer).layer_forward(&Update::residual(), &mut c, &mut q, &mut LayerCache::zeros()).unwrap();
        assert_close(&format!("seed {seed}: merged vs naive"), &flat(&c, &q), &want, F64_REL);
        // Every rule: the same as the associative LSA layer with that rule.
        for (name, upd) in rules() {
            let (mut c1, mut q1) = (ctx, query);
            let (mut c2, mut q2) = (ctx, query);
            merged(&layer).layer_forward(&upd, &mut c1, &mut q1, &mut LayerCache::zeros()).unwrap();
            lsa_associative(&layer, Mask::Full, &upd, &mut c2, &mut q2).unwrap();
            assert_close(
                &format!("seed {seed}, {name}: merged vs associative"),
                &flat(&c1, &q1),
                &flat(&c2, &q2),
                F64_REL,
            );
        }
    }
}

#[test]
fn forward_in_f32_stays_within_its_bound_of_f64() {
    let mut worst = 0.0f64;
    for seed in 0..50 {
        let mut g = Gen::new(100 + seed);
        let layer = g.layer::<11, 11, 11, 1>();
        let ctx = g.tokens::<11, 10>();
        let query = g.array::<11>(-1.0, 1.0);
        let (mut c64, mut q64) = (ctx, query);
        merged(&layer).layer_forward(&Update::residual(), &mut c64, &mut q64, &mut LayerCache::zeros()).unwrap();
        let m32 = MergedHead::from_head(&cast_layer::<f32, 11, 11, 11, 1>(&layer).heads[0]);
        let (mut c32, mut q32) = (cast_tokens::<f32, 11, 10>(&ctx), cast::<f32, 11>(&query));
        m32.layer_forward(&Update::residual(), &mut c32, &mut q32, &mut LayerCache::zeros()).unwrap();
        worst = worst.max(assert_close("f32 vs f64", &flat(&c32, &q32), &flat(&c64, &q64), F32_REL));
    }
    eprintln!("merged layer, f32 vs f64: worst relative error {worst:.2e} (bound {F32_REL:e})");
}

#[test]
fn an_empty_context_leaves_every_token_alone_and_a_bad_rule_is_refused() {
    let mut g = Gen::new(7);
    let m = merged(&g.layer::<5, 5, 5, 1>());
    let mut query = g.array::<5>(-1.0, 1.0);
    let before = query;
    m.layer_forward(&Update::residual(), &mut [], &mut query, &mut LayerCache::zeros()).unwrap();
    assert_eq!(query, before);
    let mut ctx = g.tokens::<5, 3>();
    let ctx_before = ctx;
    let bad = Update { scale: f64::NAN, first: 0, clip: None };
    assert!(m.layer_forward(&bad, &mut ctx, &mut query, &mut LayerCache::zeros()).is_err());
    assert_eq!(ctx, ctx_before, "a refused rule must not touch the tokens");
}

/// `L = sum_t R_t . h'_t` after the merged layer with rule `upd`.
fn objective<const E: usize, const N: usize>(
    m: &MergedHead<f64, E>,
    upd: &Update<f64>,
    ctx: &[[f64; E]; N],
    query: &[f64; E],
    r: &[[f64; E]],
) -> f64 {
    let (mut c, mut q) = (*ctx, *query);
    m.layer_forward(upd, &mut c, &mut q, &mut LayerCache::zeros()).unwrap();
    c.iter().chain(core::iter::once(&q)).zip(r).map(|(t, w)| t.iter().zip(w).map(|(a, b)| a * b).sum::<f64>()).sum()
}

fn check_backward<const E: usize, const N: usize>(seed: u64, upd: Update<f64>, label: &str) {
    let mut g = Gen::new(seed);
    let layer = g.layer::<E, E, E, 1>();
    let m = merged(&layer);
    let ctx = g.tokens::<E, N>();
    let query = g.array::<E>(-1.0, 1.0);
    let r: Vec<[f64; E]> = (0..=N).map(|_| g.array::<E>(-1.0, 1.0)).collect();
    let mut cache = LayerCache::zeros();
    let (mut c, mut q) = (ctx, query);
    m.layer_forward(&upd, &mut c, &mut q, &mut cache).unwrap();
    let mut g_ctx: [[f64; E]; N] = core::array::from_fn(|j| r[j]);
    let mut g_q = r[N];
    let mut grad = MergedHead::<f64, E>::zeros();
    m.layer_backward(&upd, &cache, &ctx, &query, &mut g_ctx, &mut g_q, &mut grad).unwrap();

    let f = |m: &MergedHead<f64, E>, c: &[[f64; E]; N], q: &[f64; E]| objective(m, &upd, c, q, &r);
    let (mut analytic, mut numeric) = (Vec::new(), Vec::new());
    for which in 0..2 {
        for i in 0..E * E {
            let (mut mp, mut mm) = (m.clone(), m.clone());
            let (p, mi) = if which == 0 { (&mut mp.a, &mut mm.a) } else { (&mut mp.b, &mut mm.b) };
            p.as_mut_slice()[i] += STEP;
            mi.as_mut_slice()[i] -= STEP;
            numeric.push((f(&mp, &ctx, &query) - f(&mm, &ctx, &query)) / (2.0 * STEP));
            analytic.push(if which == 0 { grad.a.as_slice()[i] } else { grad.b.as_slice()[i] });
        }
    }
    assert_close(&format!("{label}: dA, dB"), &analytic, &numeric, FD_REL);
    let (mut analytic, mut numeric) = (Vec::new(), Vec::new());
    for t in 0..=N {
        for i in 0..E {
            let (mut cp, mut qp, mut cm, mut qm) = (ctx, query, ctx, query);
            if t < N {
                cp[t][i] += STEP;
                cm[t][i] -= STEP;
            } else {
                qp[i] += STEP;
                qm[i] -= STEP;
            }
            numeric.push((f(&m, &cp, &qp) - f(&m, &cm, &qm)) / (2.0 * STEP));
            analytic.push(if t < N { g_ctx[t][i] } else { g_q[i] });
        }
    }
    assert_close(&format!("{label}: token gradients"), &analytic, &numeric, FD_REL);
}

#[test]
fn backward_matches_central_differences_under_every_rule() {
    for (k, (name, upd)) in rules().into_iter().enumerate() {
        let upd11 = Update { first: upd.first.min(10), ..upd };
        check_backward::<11, 10>(40 + k as u64, upd11, &format!("E 11 N 10 {name}"));
        let upd4 = Update { first: upd.first.min(3), ..upd };
        check_backward::<4, 3>(50 + k as u64, upd4, &format!("E 4 N 3 {name}"));
    }
}

#[test]
fn clipping_actually_cuts_gradients_in_the_checked_case() {
    // The clipped rule above must clamp something, or its finite-difference check proves nothing about clipping.
    let mut g = Gen::new(43);
    let m = merged(&g.layer::<11, 11, 11, 1>());
    let (mut c, mut q) = (g.tokens::<11, 10>(), g.array::<11>(-1.0, 1.0));
    m.layer_forward(&Update { scale: 1.0, first: 0, clip: Some(0.9) }, &mut c, &mut q, &mut LayerCache::zeros())
        .unwrap();
    let clamped = c.iter().chain(core::iter::once(&q)).flatten().filter(|v| v.abs() == 0.9).count();
    assert!(clamped > 0, "no coordinate reached the clip");
}

#[test]
fn pulled_back_merged_gradients_equal_the_unmerged_backward() {
    for seed in 0..5 {
        let mut g = Gen::new(200 + seed);
        let layer = g.layer::<11, 11, 11, 1>();
        let ctx = g.tokens::<11, 10>();
        let query = g.array::<11>(-1.0, 1.0);
        let r = g.tokens::<11, 11>();
        let m = merged(&layer);
        let mut cache = LayerCache::zeros();
        let (mut c, mut q) = (ctx, query);
        m.layer_forward(&Update::residual(), &mut c, &mut q, &mut cache).unwrap();
        let (mut gc1, mut gq1): ([[f64; 11]; 10], [f64; 11]) = (core::array::from_fn(|j| r[j]), r[10]);
        let mut dm = MergedHead::zeros();
        m.layer_backward(&Update::residual(), &cache, &ctx, &query, &mut gc1, &mut gq1, &mut dm).unwrap();
        let mut from_merged = Layer::<f64, 11, 11, 11, 1>::zeros();
        MergedHead::pullback(&layer.heads[0], &dm, &mut from_merged.heads[0]);
        let (mut gc2, mut gq2) = (gc1.map(|_| [0.0; 11]), [0.0; 11]);
        gc2.iter_mut().zip(r.iter()).for_each(|(a, b)| *a = *b);
        gq2.copy_from_slice(&r[10]);
        let mut direct = Layer::<f64, 11, 11, 11, 1>::zeros();
        lsa_backward(&layer, &ctx, &query, &mut gc2, &mut gq2, &mut direct);
        let h = |l: &Layer<f64, 11, 11, 11, 1>| -> Vec<f64> {
            let h = &l.heads[0];
            [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()].concat()
        };
        assert_close(&format!("seed {seed}: weight gradients"), &h(&from_merged), &h(&direct), F64_REL * 10.0);
        assert_close(&format!("seed {seed}: token gradients"), &flat(&gc1, &gq1), &flat(&gc2, &gq2), F64_REL * 10.0);
    }
}

/// The scalar prediction kernel computes only the prediction's row: equal to `predict::<1>` in f64 (1e-12
/// relative), close in f32, `-h_y` for an empty context; and `dot2` is two `dot`s bit for bit.
#[test]
fn the_scalar_prediction_equals_the_full_prediction() {
    let mut g = Gen::new(5);
    let mut worst_f32 = 0.0f64;
    for _ in 0..50 {
        let head = MergedHead::<f64, 11> { a: g.matrix::<11, 11>(0.3), b: g.matrix::<11, 11>(0.3) };
        let ctx = g.tokens::<11, 10>();
        let h = g.array::<11>(-1.0, 1.0);
        let full = head.predict::<1>(&ctx, &h)[0];
        let scalar = head.predict_scalar(&ctx, &h);
        assert!((full - scalar).abs() <= 1e-12 * full.abs().max(1.0), "{full} vs {scalar}");
        let head32 = MergedHead::<f32, 11> { a: head.a.map(|v| v as f32), b: head.b.map(|v| v as f32) };
        let ctx32 = ctx.map(|e| e.map(|v| v as f32));
        let s32 = head32.predict_scalar(&ctx32, &h.map(|v| v as f32)) as f64;
        worst_f32 = worst_f32.max((s32 - full).abs() / full.abs().max(1.0));
        assert_eq!(head.predict_scalar(&[], &h), -h[10]);
        for e in &ctx {
            let (x, y) = dualform::linalg::dot2(e, &h, &ctx[0]);
            assert_eq!(
                (x.to_bits(), y.to_bits()),
                (dualform::linalg::dot(e, &h).to_bits(), dualform::linalg::dot(e, &ctx[0]).to_bits())
            );
        }
    }
    eprintln!("f32 scalar prediction vs f64 full prediction: worst relative error {worst_f32:.1e}");
    assert!(worst_f32 < 1e-4);
}

/// The Gram matrix from its upper triangle is the rank-one updates' matrix bit for bit (f32, random tokens of
/// mixed magnitudes), also for no tokens and one coordinate.
#[test]
fn the_triangular_gram_is_the_full_one_bit_for_bit() {
    let mut g = Gen::new(9);
    for n in [0usize, 1, 5, 12] {
        let ctx: Vec<[f32; 11]> =
            (0..n).map(|_| g.array::<11>(-1.0, 1.0).map(|v| (v * 10f64.powf(v * 3.0)) as f32)).collect();
        let mut full = nalgebra::SMatrix::<f32, 11, 11>::zeros();
        for e in &ctx {
            dualform::linalg::add_outer(&mut full, e, e);
        }
        let tri = dualform::merged_layer::gram(&ctx);
        assert_eq!(tri.map(f32::to_bits), full.map(f32::to_bits), "n = {n}");
    }
    let one = dualform::merged_layer::gram(&[[3.0f32], [-2.0]]);
    assert_eq!(one[(0, 0)], 13.0);
}

/// `run_schedule` is the stack a device runs: three distinct layers, and one layer looped three times, each against
/// `run_stack` over the associative LSA layers (an independent kernel) in f64 under every rule; schedules that name
/// a missing head, or none, are refused before any token changes.
#[test]
fn a_schedule_of_merged_heads_is_the_stack_of_associative_layers() {
    let mut g = Gen::new(41);
    let layers = [g.layer::<11, 11, 11, 1>(), g.layer::<11, 11, 11, 1>(), g.layer::<11, 11, 11, 1>()];
    let heads: Vec<MergedHead<f64, 11>> = layers.iter().map(merged).collect();
    let ctx = g.tokens::<11, 10>();
    let query = g.array::<11>(-1.0, 1.0);
    for (name, upd) in rules() {
        for (schedule, blocks) in [
            (vec![0, 1, 2], vec![&layers[0], &layers[1], &layers[2]]),
            (vec![1, 1, 1], vec![&layers[1], &layers[1], &layers[1]]),
        ] {
            let (mut c1, mut q1) = (ctx, query);
            let y =
                MergedHead::run_schedule(&heads, &schedule, &upd, &mut c1, &mut q1, &mut LayerCache::zeros()).unwrap();
            let (mut c2, mut q2) = (ctx, query);
            let mut blocks = blocks;
            let want = run_stack::<f64, _, 11, 10, 1>(&mut blocks, 1, &upd, &mut c2, &mut q2, None).unwrap();
            let label = format!("{name}, schedule {schedule:?}");
            assert_close(&label, &flat(&c1, &q1), &flat(&c2, &q2), F64_REL);
            assert_close(&label, &[y], &want, F64_REL);
            assert_eq!(y, -q1[10]);
        }
    }
    let (mut c, mut q) = (ctx, query);
    for bad in [&[0, 3][..], &[]] {
        let r = MergedHead::run_schedule(&heads, bad, &Update::residual(), &mut c, &mut q, &mut LayerCache::zeros());
        assert!(matches!(r, Err(Error::InvalidParameter(_))), "{bad:?}: {r:?}");
        assert_eq!(flat(&c, &q), flat(&ctx, &query), "{bad:?}: tokens changed");
    }
}
