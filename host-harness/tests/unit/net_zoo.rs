//! Unit tests of `net::zoo` (`src/net/zoo.rs`).

use dualform::rng::SplitMix64;
use dualform_harness::net::zoo::*;
use dualform_harness::net::FixedForward;

pub(crate) fn random_layers(seed: u64, count: usize, scale: f64) -> Vec<ZooLayer<4>> {
    let mut s = SplitMix64::new(seed);
    (0..count)
        .map(|_| {
            let mut l = ZooLayer::<4>::zeros();
            for h in l.heads.iter_mut() {
                for v in h.w_q.iter_mut().chain(h.w_k.iter_mut()).chain(h.w_v.iter_mut()).chain(h.p.iter_mut()) {
                    *v = (s.next_normal() * scale) as f32;
                }
            }
            l
        })
        .collect()
}

fn tokens(seed: u64) -> ([[f32; 4]; 5], [f32; 4]) {
    let mut s = SplitMix64::new(seed);
    let mut u = || (s.next_open01() as f32) * 2.0 - 1.0;
    let ctx = core::array::from_fn(|_| [u(), u(), u(), u()]);
    (ctx, [u(), u(), u(), 0.0])
}

fn entry(n: &mut ZooNet<4>, layer: usize, head: usize, which: usize, i: usize) -> &mut f32 {
    let h = &mut n.layers_mut()[layer].heads[head];
    let m = [&mut h.w_q, &mut h.w_k, &mut h.w_v, &mut h.p];
    let [a, b, c, d] = m;
    &mut [a, b, c, d][which.min(3)].as_mut_slice()[i]
}

/// Every kind, two layers: parameter and query gradients against central differences in f64 of the f32 forward
/// (a loose bound; a wrong backward is off by far more), and the softmax kind predicts what `SoftmaxNet` does.
#[test]
fn zoo_net_gradients_match_finite_differences() {
    for kind in Attention::ALL {
        let net = ZooNet::new(kind, random_layers(5, 2, 0.6));
        let (ctx, query) = tokens(7);
        let mut grads = net.zero_grads();
        let (y, dh) = net.forward_backward(&ctx, &query, &mut net.workspace(5), |_| 1.0, Some(&mut grads));
        let f = |n: &ZooNet<4>, q: &[f32; 4]| f64::from(n.predict(&ctx, q, &mut n.workspace(5), None));
        assert_eq!(f64::from(y), f(&net, &query), "{kind:?}");
        let step = 1e-2f32;
        for (layer, lg) in grads.iter().enumerate() {
            for (head, g) in lg.heads.iter().enumerate() {
                for (which, i) in [(0usize, 1usize), (1, 6), (2, 11), (3, 15)] {
                    let (mut p, mut m) = (net.clone(), net.clone());
                    *entry(&mut p, layer, head, which, i) += step;
                    *entry(&mut m, layer, head, which, i) -= step;
                    let num = (f(&p, &query) - f(&m, &query)) / (2.0 * f64::from(step));
                    let ana = f64::from([&g.w_q, &g.w_k, &g.w_v, &g.p][which].as_slice()[i]);
                    let tol = 3e-3 * (1.0 + ana.abs());
                    assert!((num - ana).abs() < tol, "{kind:?} layer {layer} head {head} {which}/{i}: {ana} vs {num}");
                }
            }
        }
        for i in 0..3 {
            let (mut p, mut m) = (query, query);
            p[i] += step;
            m[i] -= step;
            let num = (f(&net, &p) - f(&net, &m)) / (2.0 * f64::from(step));
            assert!((num - f64::from(dh[i])).abs() < 3e-3 * (1.0 + num.abs()), "{kind:?} dh[{i}]: {} vs {num}", dh[i]);
        }
    }
    let layers = random_layers(8, 2, 0.6);
    let (ctx, query) = tokens(9);
    let zoo = ZooNet::new(Attention::Softmax, layers.clone());
    let soft = dualform_harness::net::SoftmaxNet::new(
        4,
        layers.iter().map(dualform_harness::net::SoftmaxLayer::from_fixed).collect(),
    );
    let (a, b) = (
        zoo.predict(&ctx, &query, &mut zoo.workspace(5), None),
        dualform_harness::net::Forward::predict(
            &soft,
            ctx.as_flattened(),
            &query,
            &mut dualform_harness::net::Forward::workspace(&soft, 5),
            None,
        ),
    );
    assert_eq!(a.to_bits(), b.to_bits());
}
