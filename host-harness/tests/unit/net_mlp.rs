//! Unit tests of `net::mlp` (`src/net/mlp.rs`).

use dualform::rng::SplitMix64;
use dualform_harness::net::mlp::*;
use dualform_harness::net::{FixedForward, Workspace};

pub(crate) fn random(seed: u64) -> MlpLsaNet<3, 4, 4> {
    random_net(seed)
}

/// A net of any widths, every weight normal with standard deviation 0.5.
fn random_net<const F: usize, const M: usize, const W: usize>(seed: u64) -> MlpLsaNet<F, M, W> {
    let mut s = SplitMix64::new(seed);
    let mut n = MlpLsaNet::<F, M, W>::zeros();
    let mut fill = |v: &mut f32| *v = (s.next_normal() * 0.5) as f32;
    n.mlp.w_e.iter_mut().chain(n.mlp.b_e.iter_mut()).chain(n.mlp.b_1.iter_mut()).for_each(&mut fill);
    n.mlp.w_1.iter_mut().chain(n.mlp.w_2.iter_mut()).chain(n.mlp.b_2.iter_mut()).for_each(&mut fill);
    let h = &mut n.layer.heads[0];
    h.w_q.iter_mut().chain(h.w_k.iter_mut()).chain(h.w_v.iter_mut()).chain(h.p.iter_mut()).for_each(&mut fill);
    n
}

/// The prediction is the LSA layer on the embedded tokens; the query's sensitivity and a few parameters'
/// gradients match central differences (f64 differences of the f32 forward, so a loose bound).
#[test]
fn mlp_lsa_net_gradients_match_finite_differences() {
    let net = random(1);
    let ctx = [[0.5f32, 1.0], [-1.2, 0.3], [2.0, -0.7], [0.1, 0.9]];
    let query = [0.8f32, 0.0];
    let mut ws = Workspace::default();
    let (y, dq) = net.forward_backward(&ctx, &query, &mut ws, |_| 1.0, None);
    assert_eq!(y, net.predict(&ctx, &query, &mut ws, None));
    let f = |n: &MlpLsaNet<3, 4, 4>, x: f32| f64::from(n.predict(&ctx, &[x, 0.0], &mut Workspace::default(), None));
    let h = 1e-2f32;
    let num = (f(&net, query[0] + h) - f(&net, query[0] - h)) / (2.0 * f64::from(h));
    assert!((num - f64::from(dq[0])).abs() < 2e-3 * (1.0 + num.abs()), "{} vs {num}", dq[0]);
    let mut grads = net.zero_grads();
    net.forward_backward(&ctx, &query, &mut ws, |_| 1.0, Some(&mut grads));
    let g = &grads[0];
    type Entry = fn(&mut MlpLsaNet<3, 4, 4>) -> &mut f32;
    let probes: [(Entry, f32); 4] = [
        (|n| &mut n.mlp.w_e[1], g.mlp.w_e[1]),
        (|n| &mut n.mlp.w_1[(2, 0)], g.mlp.w_1[(2, 0)]),
        (|n| &mut n.layer.heads[0].w_k[(1, 2)], g.layer.heads[0].w_k[(1, 2)]),
        (|n| &mut n.layer.heads[0].p[(3, 3)], g.layer.heads[0].p[(3, 3)]),
    ];
    for (i, (entry, analytic)) in probes.into_iter().enumerate() {
        let (mut p, mut m) = (net.clone(), net.clone());
        *entry(&mut p) += h;
        *entry(&mut m) -= h;
        let num = (f(&p, query[0]) - f(&m, query[0])) / (2.0 * f64::from(h));
        assert!((num - f64::from(analytic)).abs() < 2e-3 * (1.0 + num.abs()), "probe {i}: {analytic} vs {num}");
    }
}

/// A group's gradient (compiled for each vector unit this CPU has) adds the bits of the tasks one by one through
/// `Forward` (the portable build), loss included, at a hidden width of 12 (the feature map's exponentials eight at
/// once and four one by one); the prediction and slope of `prediction_and_slope` are those of `forward_backward`.
#[test]
fn a_group_on_every_unit_adds_the_bits_of_its_tasks_one_by_one() {
    use dualform_harness::net::simd::{self, Simd};
    use dualform_harness::net::{tasks_gradient, Forward};
    use dualform_harness::tasks::{Family, TaskSampler};
    let net = random_net::<4, 12, 5>(5);
    let sampler = TaskSampler { family: Family::Sine, ..TaskSampler::new(1, 7, 5.0) };
    let bits = |g: &[MlpLsaGrad<4, 12, 5>]| {
        let m = &g[0].mlp;
        let mlp = m.w_e.iter().chain(&m.b_e).chain(m.w_1.iter()).chain(&m.b_1).chain(m.w_2.iter()).chain(&m.b_2);
        let l = &g[0].layer.heads[0];
        let layer = l.w_q.iter().chain(l.w_k.iter()).chain(l.w_v.iter()).chain(l.p.iter());
        mlp.chain(layer).map(|v| v.to_bits()).collect::<Vec<_>>()
    };
    for unit in Simd::on_this_cpu() {
        simd::choose(unit).unwrap();
        let runs = sampler.par_groups(3, 0, 5, 5, Vec::new, |out, group| {
            let (mut fast, mut one) = (Forward::zero_grads(&net), Forward::zero_grads(&net));
            let mut losses = [0.25; 2];
            let mut ws = Forward::workspace(&net, 7);
            Forward::group_gradient(&net, group, &mut ws, &mut fast, &mut losses[0]);
            tasks_gradient(&net, group, &mut ws, &mut one, &mut losses[1]);
            let (ctx, query, _) = group.task(2);
            let (ctx, query) = (ctx.as_chunks::<2>().0, <&[f32; 2]>::try_from(query).unwrap());
            let slope = net.prediction_and_slope(ctx, query, &mut ws);
            let plain = FixedForward::forward_backward(&net, ctx, query, &mut ws, |_| 1.0, None);
            out.push((fast, one, losses, slope, plain));
        });
        let runs: Vec<_> = runs.into_iter().flatten().collect();
        assert_eq!(runs.len(), 1, "one group of five tasks");
        for (fast, one, losses, slope, plain) in runs {
            assert_eq!(losses[0].to_bits(), losses[1].to_bits(), "{}: loss", unit.name());
            assert_eq!(bits(&fast), bits(&one), "{}: gradients", unit.name());
            assert!(bits(&fast).iter().any(|&b| b != 0), "{}: no gradient", unit.name());
            let b = |(y, g): (f32, [f32; 2])| (y.to_bits(), g.map(f32::to_bits));
            assert_eq!(b(slope), b(plain), "{}: prediction and slope", unit.name());
        }
    }
    simd::choose(Simd::widest()).unwrap();
}
