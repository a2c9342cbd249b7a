//! Unit tests of `net::mlp_zoo` (`src/net/mlp_zoo.rs`).

use crate::net_zoo::random_layers;
use dualform::rng::SplitMix64;
use dualform_harness::net::mlp_zoo::*;
use dualform_harness::net::zoo::ZooNet;
use dualform_harness::net::Attention;
use dualform_harness::net::{FixedForward, Workspace};

/// The feature map's gradient reaches every token: against central differences through the front.
#[test]
fn mlp_zoo_net_gradients_match_finite_differences() {
    let mut s = SplitMix64::new(3);
    for kind in [Attention::Softmax, Attention::Performer] {
        let mut net = MlpZooNet::<3, 4, 4>::new(ZooNet::new(kind, random_layers(4, 1, 0.5)));
        let mut fill = |v: &mut f32| *v = (s.next_normal() * 0.5) as f32;
        net.mlp.w_e.iter_mut().chain(net.mlp.b_e.iter_mut()).chain(net.mlp.b_1.iter_mut()).for_each(&mut fill);
        net.mlp.w_1.iter_mut().chain(net.mlp.w_2.iter_mut()).chain(net.mlp.b_2.iter_mut()).for_each(&mut fill);
        let ctx = [[0.5f32, 1.0], [-1.2, 0.3], [2.0, -0.7], [0.1, 0.9]];
        let query = [0.8f32, 0.0];
        let mut grads = net.zero_grads();
        let (_, dq) = net.forward_backward(&ctx, &query, &mut Workspace::default(), |_| 1.0, Some(&mut grads));
        let f = |n: &MlpZooNet<3, 4, 4>, x: f32| f64::from(n.predict(&ctx, &[x, 0.0], &mut Workspace::default(), None));
        let h = 1e-2f32;
        let num = (f(&net, query[0] + h) - f(&net, query[0] - h)) / (2.0 * f64::from(h));
        assert!((num - f64::from(dq[0])).abs() < 3e-3 * (1.0 + num.abs()), "{kind:?}: {} vs {num}", dq[0]);
        for (r, c) in [(0usize, 0usize), (2, 1), (3, 2)] {
            let (mut p, mut m) = (net.clone(), net.clone());
            p.mlp.w_1[(r, c)] += h;
            m.mlp.w_1[(r, c)] -= h;
            let num = (f(&p, query[0]) - f(&m, query[0])) / (2.0 * f64::from(h));
            let ana = f64::from(grads[0].mlp.w_1[(r, c)]);
            assert!((num - ana).abs() < 3e-3 * (1.0 + num.abs()), "{kind:?} w_1[{r},{c}]: {ana} vs {num}");
        }
    }
}
