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

/// Every attention kind behind the feature map, one and two layers, on every vector unit of this CPU: a group with
/// the layers in lanes (through the trait) against the same group task by task, each task's gradient from zero
/// (a full group and a partial one), the same gradient bits (feature map and layers) and the same loss; the
/// feature map gets a gradient.
#[test]
fn an_mlp_zoo_group_in_lanes_adds_the_bits_of_its_tasks_one_by_one_on_every_unit() {
    use dualform_harness::model::{MlpZoo, Model};
    use dualform_harness::net::lanes::LANES;
    use dualform_harness::net::simd::{self, Simd};
    use dualform_harness::net::{tasks_gradient_from_zero, Forward};
    use dualform_harness::tasks::{stream_rng, Family, TaskSampler};
    let sampler = TaskSampler { family: Family::Sine, ..TaskSampler::new(1, 6, 5.0) };
    let bits = |g: &[MlpZooGrad<3, 4, 4>]| {
        let mlp = g.iter().flat_map(|g| {
            let m = &g.mlp;
            m.w_e.iter().chain(&m.b_e).chain(m.w_1.iter()).chain(&m.b_1).chain(m.w_2.iter()).chain(&m.b_2).copied()
        });
        let heads = g.iter().flat_map(|g| g.layers.iter().flat_map(|l| l.heads.iter()));
        let layers = heads.flat_map(|h| h.w_q.iter().chain(&h.w_k).chain(&h.w_v).chain(&h.p).copied());
        (mlp.map(f32::to_bits).collect::<Vec<_>>(), layers.map(f32::to_bits).collect::<Vec<_>>())
    };
    for unit in Simd::on_this_cpu() {
        simd::choose(unit).unwrap();
        for kind in Attention::ALL {
            for layers in [1, 2] {
                let model = MlpZoo::<3, 4, 4>::init(&mut stream_rng(9, layers as u64), kind, layers, 3.0);
                let net = model.net();
                assert_eq!(Forward::group_size(net), LANES);
                let runs = sampler.par_groups(4, 0, LANES + 3, LANES, Vec::new, |out, group| {
                    let (mut lanes, mut one) = (Forward::zero_grads(net), Forward::zero_grads(net));
                    let mut losses = [0.5; 2];
                    let mut ws = Forward::workspace(net, 6);
                    Forward::group_gradient(net, group, &mut ws, &mut lanes, &mut losses[0]);
                    tasks_gradient_from_zero(net, group, &mut ws, &mut one, &mut losses[1]);
                    out.push((group.count, lanes, one, losses));
                });
                let runs: Vec<_> = runs.into_iter().flatten().collect();
                assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [LANES, 3]);
                for (count, lanes, one, losses) in runs {
                    let at = format!("{} x {layers}, {count} tasks, {}", kind.name(), unit.name());
                    assert_eq!(losses[0].to_bits(), losses[1].to_bits(), "{at}: loss");
                    assert_eq!(bits(&lanes), bits(&one), "{at}: gradients");
                    assert!(bits(&lanes).0.iter().any(|&b| b != 0), "{at}: no feature-map gradient");
                }
            }
        }
    }
    simd::choose(Simd::widest()).unwrap();
}
