//! Linear and kernelised attention: both evaluation orders against each other and against the naive reference,
//! full and causal, over several shapes, in f64 (1e-12 relative) and f32 (stated bound).

use crate::common::*;
use dualform::*;
use proptest::prelude::*;

/// f64 identities that are exact in real arithmetic: 1e-12 relative to the largest output.
const F64_REL: f64 = 1e-12;
/// f32 against the f64 reference: outputs are sums of N (F + DV) rounded products of order-one terms; the worst
/// relative error measured over 100 cases (E = 11, N = 10 and E = 16, N = 64) was 4.2e-7; the bound leaves ~20x.
const F32_REL: f64 = 1e-5;

/// The shared routine of the LSA family: quadratic, associative and naive reference agree, full and causal.
fn check_lsa<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(seed: u64) -> f64 {
    let mut g = Gen::new(seed);
    let layer = g.layer::<E, DK, DV, H>();
    let ctx0 = g.tokens::<E, N>();
    let q0 = g.array::<E>(-1.0, 1.0);
    let mut worst32 = 0.0f64;
    for (mask, causal) in [(Mask::Full, false), (Mask::Causal, true)] {
        let label = format!("E={E} DK={DK} DV={DV} H={H} N={N} {mask:?} seed={seed}");
        let want =
            reference_layer(&layer, RefKind::Linear { phi: &phi_identity, normalise: false }, causal, &ctx0, &q0);

        let (mut c, mut q) = (ctx0, q0);
        lsa_associative(&layer, mask, &Update::residual(), &mut c, &mut q).unwrap();
        let assoc = flat(&c, &q);
        assert_close(&format!("{label} associative f64 vs reference"), &assoc, &want, F64_REL);

        let (mut c, mut q) = (ctx0, q0);
        let mut scratch = Box::new(LinearScratch::<f64, N, DK, DV, H>::new());
        lsa_quadratic(&layer, mask, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
        let quad = flat(&c, &q);
        assert_close(&format!("{label} quadratic f64 vs reference"), &quad, &want, F64_REL);
        assert_close(&format!("{label} quadratic vs associative f64"), &quad, &assoc, F64_REL);

        let l32 = cast_layer::<f32, E, DK, DV, H>(&layer);
        let (mut c, mut q) = (cast_tokens::<f32, E, N>(&ctx0), cast::<f32, E>(&q0));
        lsa_associative(&l32, mask, &Update::residual(), &mut c, &mut q).unwrap();
        worst32 = worst32.max(assert_close(&format!("{label} associative f32"), &flat(&c, &q), &want, F32_REL));
        let (mut c, mut q) = (cast_tokens::<f32, E, N>(&ctx0), cast::<f32, E>(&q0));
        let mut scratch = Box::new(LinearScratch::<f32, N, DK, DV, H>::new());
        lsa_quadratic(&l32, mask, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
        worst32 = worst32.max(assert_close(&format!("{label} quadratic f32"), &flat(&c, &q), &want, F32_REL));
    }
    worst32
}

/// The shared routine of kernelised attention with elu+1 features and the normaliser: the causal recurrent form
/// equals the masked quadratic form, and both equal the reference.
fn check_elu<const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>(seed: u64) {
    let mut g = Gen::new(seed);
    let layer = g.layer::<E, DK, DV, H>();
    let ctx0 = g.tokens::<E, N>();
    let q0 = g.array::<E>(-1.0, 1.0);
    for (mask, causal) in [(Mask::Full, false), (Mask::Causal, true)] {
        let label = format!("elu+1 E={E} DK={DK} DV={DV} H={H} N={N} {mask:?} seed={seed}");
        let want = reference_layer(&layer, RefKind::Linear { phi: &phi_elu1, normalise: true }, causal, &ctx0, &q0);
        let (mut c, mut q) = (ctx0, q0);
        linear_attention_associative(&layer, &EluPlusOne, Normalise::Sum, mask, &Update::residual(), &mut c, &mut q)
            .unwrap();
        let rec = flat(&c, &q);
        let (mut c, mut q) = (ctx0, q0);
        let mut scratch = Box::new(LinearScratch::<f64, N, DK, DV, H>::new());
        linear_attention_quadratic(
            &layer,
            &EluPlusOne,
            Normalise::Sum,
            mask,
            &Update::residual(),
            &mut c,
            &mut q,
            &mut scratch,
        )
        .unwrap();
        let quad = flat(&c, &q);
        assert_close(&format!("{label} recurrent vs masked quadratic"), &rec, &quad, F64_REL);
        assert_close(&format!("{label} quadratic vs reference"), &quad, &want, F64_REL);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn lsa_orders_agree_over_shapes(seed in any::<u64>()) {
        check_lsa::<11, 11, 11, 1, 10>(seed);
        check_lsa::<5, 3, 4, 2, 7>(seed);
        check_lsa::<9, 8, 1, 3, 1>(seed);
        check_lsa::<4, 6, 5, 1, 33>(seed);
    }

    #[test]
    fn elu_recurrent_equals_masked_quadratic(seed in any::<u64>()) {
        check_elu::<11, 11, 11, 1, 10>(seed);
        check_elu::<6, 4, 3, 2, 17>(seed);
    }
}

#[test]
fn f32_error_of_lsa_is_within_stated_bound() {
    let mut worst = 0.0f64;
    for seed in 0..50 {
        worst = worst.max(check_lsa::<11, 11, 11, 1, 10>(seed));
        worst = worst.max(check_lsa::<16, 16, 16, 2, 64>(seed));
    }
    eprintln!("worst f32 relative error of LSA over 100 cases: {worst:e} (bound {F32_REL:e})");
    assert!(worst > 0.0, "f32 results identical to f64 would mean the f32 path was not exercised");
}

#[test]
fn large_n_quadratic_equals_associative() {
    check_lsa::<8, 8, 8, 1, 300>(7);
}

#[test]
fn zero_length_context_gives_zero_update() {
    let mut g = Gen::new(1);
    let layer = g.layer::<5, 5, 5, 2>();
    let mut ctx: [[f64; 5]; 0] = [];
    let q0 = g.array::<5>(-1.0, 1.0);
    let mut q = q0;
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q).unwrap();
    assert_eq!(q, q0);
    let mut scratch = LinearScratch::<f64, 0, 5, 5, 2>::new();
    lsa_quadratic(&layer, Mask::Causal, &Update::residual(), &mut ctx, &mut q, &mut scratch).unwrap();
    assert_eq!(q, q0);
    // The normalised form has an empty sum too: zero update, not 0/0.
    linear_attention_associative(
        &layer,
        &EluPlusOne,
        Normalise::Sum,
        Mask::Full,
        &Update::residual(),
        &mut ctx,
        &mut q,
    )
    .unwrap();
    assert_eq!(q, q0);
}

#[test]
fn single_context_token_matches_reference() {
    check_lsa::<7, 7, 7, 1, 1>(3);
    check_elu::<7, 7, 7, 1, 1>(3);
}

#[test]
fn zero_vectors_give_zero_update_and_zero_normaliser_is_an_error() {
    let mut g = Gen::new(2);
    let layer = g.layer::<4, 4, 4, 1>();
    let mut ctx = [[0.0; 4]; 3];
    let mut q = [0.0; 4];
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q).unwrap();
    assert_eq!((ctx, q), ([[0.0; 4]; 3], [0.0; 4]));
    // Identity features with a normaliser over zero keys: the sum of weights is 0, which is reported.
    let r = linear_attention_associative(
        &layer,
        &Identity,
        Normalise::Sum,
        Mask::Full,
        &Update::residual(),
        &mut ctx,
        &mut q,
    );
    assert_eq!(r, Err(Error::ZeroNormaliser));
    let mut scratch = LinearScratch::<f64, 3, 4, 4, 1>::new();
    let r = linear_attention_quadratic(
        &layer,
        &Identity,
        Normalise::Sum,
        Mask::Full,
        &Update::residual(),
        &mut ctx,
        &mut q,
        &mut scratch,
    );
    assert_eq!(r, Err(Error::ZeroNormaliser));
}

#[test]
fn nan_input_propagates_as_nan_in_lsa() {
    let mut g = Gen::new(4);
    let layer = g.layer::<4, 4, 4, 1>();
    let mut ctx = g.tokens::<4, 3>();
    ctx[1][2] = f64::NAN;
    let mut q = g.array::<4>(-1.0, 1.0);
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q).unwrap();
    assert!(q.iter().any(|v| v.is_nan()));
}

#[test]
fn update_rule_damping_y_only_and_clip() {
    let mut g = Gen::new(5);
    let layer = g.layer::<6, 6, 6, 1>();
    let ctx0 = g.tokens::<6, 4>();
    let q0 = g.array::<6>(-1.0, 1.0);
    let (mut c, mut q) = (ctx0, q0);
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    let full = flat(&c, &q);
    let before = flat(&ctx0, &q0);

    // Damping 0.25 moves every coordinate a quarter of the way.
    let (mut c, mut q) = (ctx0, q0);
    let upd = Update { scale: 0.25, first: 0, clip: None };
    lsa_associative(&layer, Mask::Full, &upd, &mut c, &mut q).unwrap();
    let want: Vec<f64> = before.iter().zip(&full).map(|(b, f)| b + 0.25 * (f - b)).collect();
    assert_close("damping", &flat(&c, &q), &want, 1e-14);

    // Only the last coordinate (y) is written.
    let (mut c, mut q) = (ctx0, q0);
    let upd = Update { scale: 1.0, first: 5, clip: None };
    lsa_associative(&layer, Mask::Full, &upd, &mut c, &mut q).unwrap();
    for (i, (got, (b, f))) in flat(&c, &q).iter().zip(before.iter().zip(&full)).enumerate() {
        let want = if i % 6 == 5 { *f } else { *b };
        assert_eq!(*got, want, "y-only update, element {i}");
    }

    // Clipping bounds every coordinate.
    let (mut c, mut q) = (ctx0, q0);
    let upd = Update { scale: 1.0, first: 0, clip: Some(0.1) };
    lsa_associative(&layer, Mask::Full, &upd, &mut c, &mut q).unwrap();
    for (got, f) in flat(&c, &q).iter().zip(&full) {
        assert_eq!(*got, f.clamp(-0.1, 0.1));
    }

    // Bad rules are errors, not panics.
    let (mut c, mut q) = (ctx0, q0);
    for bad in [
        Update { scale: 1.0, first: 7, clip: None },
        Update { scale: f64::NAN, first: 0, clip: None },
        Update { scale: 1.0, first: 0, clip: Some(-1.0) },
    ] {
        assert!(matches!(lsa_associative(&layer, Mask::Full, &bad, &mut c, &mut q), Err(Error::InvalidParameter(_))));
    }
    assert_eq!((c, q), (ctx0, q0), "a rejected rule leaves the tokens untouched");
}

#[test]
fn favor_plus_estimates_softmax_attention() {
    // With many random features the FAVOR+ kernel estimates exp(q.k / sqrt(DK)), so normalised kernelised attention
    // approaches softmax attention; with few features it is visibly worse.
    const E: usize = 4;
    let mut g = Gen::new(11);
    let mut layer = g.layer::<E, E, E, 1>();
    layer.heads[0].w_q *= 0.5;
    layer.heads[0].w_k *= 0.5;
    let ctx0 = g.tokens::<E, 8>();
    let q0 = g.array::<E>(-1.0, 1.0);
    let want = reference_layer(&layer, RefKind::Softmax, false, &ctx0, &q0);
    type Run<'a> = &'a dyn Fn(&mut [[f64; E]; 8], &mut [f64; E]);
    let err = |feats: Run| {
        let (mut c, mut q) = (ctx0, q0);
        feats(&mut c, &mut q);
        flat(&c, &q).iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max)
    };
    let many = PositiveRandomFeatures::<f64, E, 4096>::seeded(42);
    let few = PositiveRandomFeatures::<f64, E, 2>::seeded(42);
    let e_many = err(&|c, q| {
        linear_attention_associative(&layer, &many, Normalise::Sum, Mask::Full, &Update::residual(), c, q).unwrap()
    });
    let e_few = err(&|c, q| {
        linear_attention_associative(&layer, &few, Normalise::Sum, Mask::Full, &Update::residual(), c, q).unwrap()
    });
    assert!(e_many < 0.02, "FAVOR+ with 4096 features: max error {e_many}");
    assert!(e_few > 2.0 * e_many, "2 features ({e_few}) should be clearly worse than 4096 ({e_many})");
    // The projection is a pure function of the seed.
    assert_eq!(PositiveRandomFeatures::<f64, E, 16>::seeded(7), PositiveRandomFeatures::<f64, E, 16>::seeded(7));
    assert_ne!(PositiveRandomFeatures::<f64, E, 16>::seeded(7), PositiveRandomFeatures::<f64, E, 16>::seeded(8));
}

#[test]
fn efficient_attention_matches_reference() {
    const E: usize = 6;
    const N: usize = 9;
    let mut g = Gen::new(21);
    let layer = g.layer::<E, 5, 4, 2>();
    let ctx0 = g.tokens::<E, N>();
    let q0 = g.array::<E>(-1.0, 1.0);
    // Reference: rho_q = softmax over q's features, rho_k = softmax over positions per key feature (two-pass).
    let mut want: Vec<[f64; E]> = ctx0.iter().chain(core::iter::once(&q0)).cloned().collect();
    for head in &layer.heads {
        let keys: Vec<Vec<f64>> =
            ctx0.iter().map(|e| (head.w_k * nalgebra::SVector::from(*e)).iter().cloned().collect()).collect();
        let cols: Vec<Vec<f64>> =
            (0..5).map(|f| softmax_two_pass(&keys.iter().map(|k| k[f]).collect::<Vec<_>>())).collect();
        let tokens: Vec<[f64; E]> = ctx0.iter().chain(core::iter::once(&q0)).cloned().collect();
        for (t, h) in tokens.iter().enumerate() {
            let qv = head.w_q * nalgebra::SVector::from(*h);
            let rq = softmax_two_pass(qv.as_slice());
            let mut a = nalgebra::SVector::<f64, 4>::zeros();
            for (j, e) in ctx0.iter().enumerate() {
                let w: f64 = (0..5).map(|f| rq[f] * cols[f][j]).sum();
                a += w * (head.w_v * nalgebra::SVector::from(*e));
            }
            let u = head.p * a;
            for i in 0..E {
                want[t][i] += u[i];
            }
        }
    }
    let (mut c, mut q) = (ctx0, q0);
    efficient_attention(&layer, &Update::residual(), &mut c, &mut q).unwrap();
    assert_close("efficient attention", &flat(&c, &q), &want.concat(), F64_REL);
}
