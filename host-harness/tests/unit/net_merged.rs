//! Unit tests of `net::merged` (`src/net/merged.rs`).

use dualform::{gd_layer, lsa_associative, run_stack, Layer, Mask};
use dualform::{MergedHead, Update};
use dualform_harness::net::merged::*;
use dualform_harness::net::Forward;

fn tokens(seed: u64) -> ([[f32; 4]; 5], [f32; 4]) {
    let mut s = dualform::rng::SplitMix64::new(seed);
    let mut u = || (s.next_open01() as f32) - 0.5;
    let ctx = core::array::from_fn(|_| [u(), u(), u(), u()]);
    (ctx, [u(), u(), u(), 0.0])
}

fn random_layer(seed: u64) -> Layer<f32, 4, 4, 4, 1> {
    let mut s = dualform::rng::SplitMix64::new(seed);
    let mut l = Layer::<f32, 4, 4, 4, 1>::zeros();
    let h = &mut l.heads[0];
    for m in [&mut h.w_q, &mut h.w_k, &mut h.w_v, &mut h.p] {
        for v in m.iter_mut() {
            *v = (s.next_normal() * 0.5) as f32;
        }
    }
    l
}

fn merged(l: &Layer<f32, 4, 4, 4, 1>) -> Merged {
    Merged::from_fixed(&MergedHead::from_head(&l.heads[0]))
}

#[test]
fn a_net_predicts_what_the_core_stack_predicts() {
    let layers = [random_layer(1), random_layer(2)];
    let (ctx, query) = tokens(3);
    for upd in [Update::residual(), Update { scale: 0.75, first: 3, clip: None }] {
        let net = Net::new(layers.iter().map(merged).collect(), vec![0, 1, 0], upd).unwrap();
        let mut ws = net.workspace(5);
        let mut readout = [0.0f32; 3];
        let y = net.predict(ctx.as_flattened(), &query, &mut ws, Some(&mut readout));
        // The core's stack with the associative kernel: equal up to rounding (the kernels sum differently).
        let (mut c, mut q) = (ctx, query);
        let mut want = [[0.0f32; 1]; 3];
        let mut blocks = [&layers[0], &layers[1], &layers[0]];
        run_stack(&mut blocks, 1, &upd, &mut c, &mut q, Some(&mut want)).unwrap();
        for (got, w) in readout.iter().zip(want.iter()) {
            assert!((got - w[0]).abs() < 1e-5 * (1.0 + w[0].abs()), "{readout:?} vs {want:?}");
        }
        assert_eq!(y, readout[2]);
        // The fixed-width kernel a firmware runs gives the same bits.
        let heads: Vec<MergedHead<f32, 4>> = layers.iter().map(|l| MergedHead::from_head(&l.heads[0])).collect();
        let (mut c, mut q) = (ctx, query);
        let mut cache = dualform::LayerCache::zeros();
        let fixed = MergedHead::run_schedule(&heads, &[0, 1, 0], &upd, &mut c, &mut q, &mut cache).unwrap();
        assert_eq!(fixed.to_bits(), y.to_bits());
    }
}

#[test]
fn the_single_layer_path_is_the_query_output_of_the_full_layer() {
    let layer = random_layer(4);
    let (ctx, query) = tokens(5);
    let net = Net::single(merged(&layer)).unwrap();
    let y = net.predict(ctx.as_flattened(), &query, &mut net.workspace(5), None);
    let (mut c, mut q) = (ctx, query);
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    assert!((y + q[3]).abs() < 1e-5);
    // Tokens of another width are refused (NaN), not read past.
    assert!(net.predict(&ctx.as_flattened()[1..], &query, &mut net.workspace(5), None).is_nan());
    assert!(net.predict(ctx.as_flattened(), &query[1..], &mut net.workspace(5), None).is_nan());
}

/// A single application of the second of two heads runs that head (task by task and in lanes, on every unit): the
/// predictions and gradient bits of the net of that head alone, its gradient in the second slot, none in the first.
#[test]
fn a_single_application_of_another_head_runs_that_head() {
    use dualform_harness::net::lanes::LaneWorkspace;
    use dualform_harness::net::simd::Simd;
    use dualform_harness::tasks::TaskSampler;
    let (h0, h1) = (merged(&random_layer(6)), merged(&random_layer(7)));
    let two = Net::new(vec![h0, h1.clone()], vec![1], Update::residual()).unwrap();
    let one = Net::single(h1).unwrap();
    let bits = |m: &Merged| m.a.iter().chain(&m.b).map(|v| v.to_bits()).collect::<Vec<_>>();
    let (ctx, query) = tokens(8);
    let (ctx, query) = (ctx.as_flattened(), &query[..]);
    let (mut g_two, mut g_one) = (two.zero_grads(), one.zero_grads());
    let y_two = two.forward_backward(ctx, query, &mut two.workspace(5), |y| y - 0.5, Some(&mut g_two), None);
    let y_one = one.forward_backward(ctx, query, &mut one.workspace(5), |y| y - 0.5, Some(&mut g_one), None);
    assert_eq!(y_two.to_bits(), y_one.to_bits());
    assert_eq!(bits(&g_two[1]), bits(&g_one[0]));
    assert!(g_two[0].a.iter().chain(&g_two[0].b).all(|&v| v == 0.0));
    let sampler = TaskSampler::new(3, 5, 1.0);
    for simd in Simd::on_this_cpu() {
        let checked = sampler.par_groups(
            2,
            0,
            8,
            8,
            || 0,
            |checked, group| {
                let (mut g_two, mut g_one) = (two.zero_grads(), one.zero_grads());
                let (mut l_two, mut l_one) = (0.0, 0.0);
                assert!(two.lanes_gradient(simd, group, &mut LaneWorkspace::default(), &mut g_two, &mut l_two));
                assert!(one.lanes_gradient(simd, group, &mut LaneWorkspace::default(), &mut g_one, &mut l_one));
                assert_eq!(l_two.to_bits(), l_one.to_bits(), "{}", simd.name());
                assert_eq!(bits(&g_two[1]), bits(&g_one[0]), "{}", simd.name());
                assert!(g_two[0].a.iter().chain(&g_two[0].b).all(|&v| v == 0.0), "{}", simd.name());
                *checked += 1;
            },
        );
        assert_eq!(checked.iter().sum::<usize>(), 1);
    }
}

#[test]
fn gradients_of_shared_heads_add_up_and_match_finite_differences() {
    // Two applications of one head: dL/dB must be the sum over both applications, checked numerically.
    let head = merged(&random_layer(6));
    let (ctx, query) = tokens(7);
    let ctx = ctx.as_flattened();
    let upd = Update { scale: 0.8, first: 0, clip: None };
    let net = Net::new(vec![head.clone()], vec![0, 0], upd).unwrap();
    let mut ws = net.workspace(5);
    let mut g = vec![Merged::zeros(4)];
    let mut dh = [0.0f32; 4];
    net.forward_backward(ctx, &query, &mut ws, |_| 1.0, Some(&mut g), Some(&mut dh));
    let f = |h: &Merged, q: &[f32; 4]| {
        let n = Net::new(vec![h.clone()], vec![0, 0], upd).unwrap();
        n.predict(ctx, q, &mut n.workspace(5), None) as f64
    };
    let step = 1e-2f32;
    for i in [0usize, 5, 10, 15] {
        let (mut p, mut m) = (head.clone(), head.clone());
        p.b[i] += step;
        m.b[i] -= step;
        let num = (f(&p, &query) - f(&m, &query)) / (2.0 * step as f64);
        let ana = g[0].b[i] as f64;
        assert!((num - ana).abs() < 2e-3 * (1.0 + ana.abs()), "dB[{i}]: {ana} vs {num}");
    }
    for i in 0..3 {
        let (mut p, mut m) = (query, query);
        p[i] += step;
        m[i] -= step;
        let num = (f(&head, &p) - f(&head, &m)) / (2.0 * step as f64);
        assert!((num - dh[i] as f64).abs() < 2e-3 * (1.0 + num.abs()), "dh[{i}]: {} vs {num}", dh[i]);
    }
}

#[test]
fn a_schedule_naming_a_missing_head_a_bad_rule_or_mixed_widths_is_refused() {
    let h = Merged::zeros(4);
    assert!(Net::new(vec![h.clone()], vec![], Update::residual()).is_err());
    assert!(Net::new(vec![h.clone()], vec![0, 1], Update::residual()).is_err());
    assert!(Net::new(vec![h.clone()], vec![0], Update { scale: f32::NAN, first: 0, clip: None }).is_err());
    assert!(Net::new(vec![h.clone(), Merged::zeros(5)], vec![0, 1], Update::residual()).is_err());
    assert!(Net::single(Merged::zeros(0)).is_err());
    let gd = gd_layer::<f32, 3, 1, 4>(&nalgebra::SMatrix::zeros(), 1.0, 5).unwrap();
    let net = Net::single(merged(&gd)).unwrap();
    assert_eq!(net.repeated(4, Update::residual()).unwrap().applications(), 4);
}
