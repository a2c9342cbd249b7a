//! Unit tests of `net::mlp` (`src/net/mlp.rs`).

use dualform::rng::SplitMix64;
use dualform_harness::net::mlp::*;
use dualform_harness::net::{FixedForward, Workspace};

pub(crate) fn random(seed: u64) -> MlpLsaNet<3, 4, 4> {
    let mut s = SplitMix64::new(seed);
    let mut n = MlpLsaNet::<3, 4, 4>::zeros();
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
