//! Unit tests of `net::lanes` (`src/net/lanes.rs`).

use dualform::Update;
use dualform_harness::model::{Lsa, Model};
use dualform_harness::net::lanes::*;
use dualform_harness::net::merged::Merged;
use dualform_harness::net::{tasks_gradient, Forward};
use dualform_harness::tasks::{stream_rng, TaskSampler};

/// Lanes against task by task, on the same groups (a full one and a partial one): the same gradient bits and
/// the same loss, for distinct clipped layers and for one damped layer looped three times.
#[test]
fn a_group_in_lanes_adds_the_bits_of_its_tasks_one_by_one() {
    for (d, n) in [(10, 10), (5, 3)] {
        let e = d + 1;
        let mut rng = stream_rng(3, 0);
        let deep = Lsa::init(&mut rng, e, 3, vec![0, 1, 2], Update { scale: 1.0, first: 0, clip: Some(0.7) });
        let looped = Lsa::init(&mut rng, e, 1, vec![0; 3], Update { scale: 0.5, first: e - 1, clip: None });
        for model in [deep.unwrap(), looped.unwrap()] {
            let net = model.net();
            assert_eq!(net.group_size(), LANES);
            let sampler = TaskSampler::new(d, n, 1.0);
            let runs = sampler.par_groups(5, 0, LANES + 5, LANES, Vec::new, |out, group| {
                let (mut lanes, mut one) = (net.zero_grads(), net.zero_grads());
                let (mut loss_lanes, mut loss_one) = (0.25, 0.25);
                let mut ws = net.workspace(n);
                assert!(net.lanes_gradient(group, &mut LaneWorkspace::default(), &mut lanes, &mut loss_lanes));
                tasks_gradient(net, group, &mut ws, &mut one, &mut loss_one);
                out.push((group.count, lanes, one, loss_lanes, loss_one));
            });
            let runs: Vec<_> = runs.into_iter().flatten().collect();
            assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [LANES, 5]);
            for (count, lanes, one, loss_lanes, loss_one) in runs {
                assert_eq!(loss_lanes.to_bits(), loss_one.to_bits(), "d {d}, {count} tasks: loss");
                let bits = |g: &[Merged]| {
                    g.iter().flat_map(|m| m.a.iter().chain(&m.b)).map(|v| v.to_bits()).collect::<Vec<_>>()
                };
                assert_eq!(bits(&lanes), bits(&one), "d {d}, {count} tasks: gradients");
                assert!(lanes.iter().any(|m| m.a.iter().any(|&v| v != 0.0)), "a gradient that is not zero");
            }
        }
    }
}
