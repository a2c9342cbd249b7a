//! Unit tests of `net::lanes` (`src/net/lanes.rs`).

use dualform::Update;
use dualform_harness::model::{Lsa, Model};
use dualform_harness::net::lanes::*;
use dualform_harness::net::merged::Merged;
use dualform_harness::net::simd::Simd;
use dualform_harness::net::zoo::ZooLanes;
use dualform_harness::net::{tasks_gradient, tasks_gradient_from_zero, tasks_prediction_grads, Forward};
use dualform_harness::tasks::{stream_rng, Group, TaskSampler};

/// Lanes against task by task, on the same groups (a full one and a partial one): the same gradient bits, the
/// same loss, the same predictions (`lanes_predict` against `predict`) and each task's own gradient of its
/// prediction (`lanes_prediction_grads`, what the fits use), for distinct clipped layers, for one damped layer looped
/// three times and for the single layer (the query-only kernel), on every vector unit
/// this CPU has (the portable build and AVX2), at token widths compiled as constants (6, 11) and at one past them
/// (21, the run-time width).
#[test]
fn a_group_in_lanes_adds_the_bits_of_its_tasks_one_by_one_on_every_unit() {
    let units = Simd::on_this_cpu();
    assert!(units.contains(&Simd::Portable));
    for simd in units {
        for (d, n) in [(10, 10), (5, 3), (20, 4)] {
            let e = d + 1;
            let mut rng = stream_rng(3, 0);
            let deep = Lsa::init(&mut rng, e, 3, vec![0, 1, 2], Update { scale: 1.0, first: 0, clip: Some(0.7) });
            let looped = Lsa::init(&mut rng, e, 1, vec![0; 3], Update { scale: 0.5, first: e - 1, clip: None });
            let single = Lsa::init(&mut rng, e, 1, vec![0], Update::residual());
            for model in [deep.unwrap(), looped.unwrap(), single.unwrap()] {
                let net = model.net();
                assert_eq!(net.group_size(), LANES);
                let sampler = TaskSampler::new(d, n, 1.0);
                let runs = sampler.par_groups(5, 0, LANES + 5, LANES, Vec::new, |out, group| {
                    let (mut lanes, mut one) = (net.zero_grads(), net.zero_grads());
                    let (mut loss_lanes, mut loss_one) = (0.25, 0.25);
                    let mut ws = net.workspace(n);
                    let mut lane_ws = LaneWorkspace::default();
                    assert!(net.lanes_gradient(simd, group, &mut lane_ws, &mut lanes, &mut loss_lanes));
                    tasks_gradient(net, group, &mut ws, &mut one, &mut loss_one);
                    let mut predicted = vec![f32::NAN; LANES];
                    assert!(net.lanes_predict(simd, group, &mut lane_ws, &mut predicted));
                    let one_by_one = (0..group.count).map(|t| {
                        let (ctx, query, _) = group.task(t);
                        net.predict(ctx, query, &mut ws, None).to_bits()
                    });
                    let predicted: Vec<u32> = predicted.iter().take(group.count).map(|v| v.to_bits()).collect();
                    assert_eq!(predicted, one_by_one.collect::<Vec<_>>(), "{}, d {d}: predictions", simd.name());
                    let heads = net.zero_grads().len();
                    let (mut y_lanes, mut y_one) = (vec![f32::NAN; LANES], vec![f32::NAN; LANES]);
                    let (mut g_lanes, mut g_one) = (vec![net.zero_grads()[0].clone(); LANES * heads], Vec::new());
                    g_one.clone_from(&g_lanes);
                    assert!(net.lanes_prediction_grads(simd, group, &mut lane_ws, &mut y_lanes, &mut g_lanes));
                    tasks_prediction_grads(net, group, &mut ws, &mut y_one, &mut g_one);
                    let k = group.count;
                    assert_eq!(bits_of(&y_lanes[..k]), bits_of(&y_one[..k]), "{}: predictions", simd.name());
                    let (gl, go) = (&g_lanes[..k * heads], &g_one[..k * heads]);
                    assert_eq!(grad_bits(gl), grad_bits(go), "{}, d {d}: each task's gradient", simd.name());
                    assert!(go.iter().all(|m| m.a.iter().any(|&v| v != 0.0)), "every task has a gradient");
                    out.push((group.count, lanes, one, loss_lanes, loss_one));
                });
                let runs: Vec<_> = runs.into_iter().flatten().collect();
                assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [LANES, 5]);
                for (count, lanes, one, loss_lanes, loss_one) in runs {
                    let at = format!("{}, d {d}, {count} tasks", simd.name());
                    assert_eq!(loss_lanes.to_bits(), loss_one.to_bits(), "{at}: loss");
                    let bits = |g: &[Merged]| {
                        g.iter().flat_map(|m| m.a.iter().chain(&m.b)).map(|v| v.to_bits()).collect::<Vec<_>>()
                    };
                    assert_eq!(bits(&lanes), bits(&one), "{at}: gradients");
                    assert!(lanes.iter().any(|m| m.a.iter().any(|&v| v != 0.0)), "a gradient that is not zero");
                }
            }
        }
    }
}

/// One lane workspace reused across nets of the same width (as a thread reuses it across a batch's groups, and a
/// caller may across steps), deep and single-layer in turn: each call gives its own net's gradient bits, those of
/// a fresh workspace.
#[test]
fn a_lane_workspace_reused_across_nets_gives_each_nets_own_gradient() {
    let (d, n) = (10, 10);
    let mut rng = stream_rng(4, 0);
    let mut models: Vec<Lsa> =
        (0..2).map(|_| Lsa::init(&mut rng, d + 1, 2, vec![0, 1], Update::residual()).unwrap()).collect();
    models.push(Lsa::init(&mut rng, d + 1, 1, vec![0], Update::residual()).unwrap());
    let sampler = TaskSampler::new(d, n, 1.0);
    let checked = sampler.par_groups(6, 0, LANES, LANES, || 0, |checked, group| *checked += reuse(&models, group));
    assert_eq!(checked.iter().sum::<usize>(), 6 * Simd::on_this_cpu().len());
}

/// The gradients of `models` 0, 1, 1, 2, 0, 2 (two deep nets, then a single layer) on `group` through one shared
/// workspace against a fresh one each, on every unit: the number of comparisons.
fn reuse(models: &[Lsa], group: &Group) -> usize {
    let bits = |g: &[Merged]| g.iter().flat_map(|m| m.a.iter().chain(&m.b)).map(|v| v.to_bits()).collect::<Vec<_>>();
    let mut checked = 0;
    for simd in Simd::on_this_cpu() {
        let mut shared = LaneWorkspace::default();
        for i in [0, 1, 1, 2, 0, 2] {
            let net = models[i].net();
            let (mut reused, mut fresh) = (net.zero_grads(), net.zero_grads());
            let (mut loss_reused, mut loss_fresh) = (0.0, 0.0);
            assert!(net.lanes_gradient(simd, group, &mut shared, &mut reused, &mut loss_reused));
            assert!(net.lanes_gradient(simd, group, &mut LaneWorkspace::default(), &mut fresh, &mut loss_fresh));
            assert_eq!(bits(&reused), bits(&fresh), "{}, net {i}", simd.name());
            assert_eq!(loss_reused.to_bits(), loss_fresh.to_bits());
            checked += 1;
        }
    }
    checked
}

/// `DUALFORM_SIMD` names: the units, and a clear refusal of any other name.
#[test]
fn vector_units_are_named_and_other_names_refused() {
    assert_eq!(Simd::parse("portable"), Ok(Simd::Portable));
    let err = Simd::parse("avx9").unwrap_err();
    assert!(err.contains("portable or avx2") && err.contains("avx9"), "{err}");
    assert_eq!(Simd::widest(), *Simd::on_this_cpu().last().unwrap());
    for s in Simd::on_this_cpu() {
        assert_eq!(Simd::parse(s.name()), Ok(s));
    }
}

/// A softmax net's group in lanes against the same group task by task (a full group and a partial one, two layers,
/// two context lengths), on every vector unit this CPU has: the same gradient bits and loss; and a lane with a
/// non-finite input refuses the group.
#[test]
fn a_softmax_group_in_lanes_adds_the_bits_of_its_tasks_one_by_one_on_every_unit() {
    use dualform_harness::model::Softmax;
    use dualform_harness::net::SoftmaxLayer;
    for (simd, (d, n)) in Simd::on_this_cpu().into_iter().flat_map(|s| [(s, (10, 10)), (s, (4, 2))]) {
        let e = d + 1;
        let model = Softmax::init(&mut stream_rng(4, 0), e, 2);
        let net = model.net();
        assert_eq!(net.group_size(), LANES);
        let sampler = TaskSampler::new(d, n, 1.0);
        let runs = sampler.par_groups(6, 0, LANES + 3, LANES, Vec::new, |out, group| {
            let (mut lanes, mut one) = (net.zero_grads(), net.zero_grads());
            let (mut loss_lanes, mut loss_one) = (0.5, 0.5);
            let mut ws = net.workspace(n);
            assert!(net.lanes_gradient(simd, group, &mut SoftmaxLanes::default(), &mut lanes, &mut loss_lanes));
            tasks_gradient_from_zero(net, group, &mut ws, &mut one, &mut loss_one);
            // Through the trait, twice on one workspace: the second run reuses the lanes the first one kept.
            let (mut again, mut loss_again) = (net.zero_grads(), 0.5);
            net.group_gradient(group, &mut ws, &mut net.zero_grads(), &mut 0.0);
            net.group_gradient(group, &mut ws, &mut again, &mut loss_again);
            let mut bad = group.clone();
            bad.ctx[(bad.count - 1) * n * e] = f32::NAN;
            let refused =
                !net.lanes_gradient(simd, &bad, &mut SoftmaxLanes::default(), &mut net.zero_grads(), &mut 0.0);
            out.push((group.count, lanes, one, again, [loss_lanes, loss_one, loss_again], refused));
        });
        let runs: Vec<_> = runs.into_iter().flatten().collect();
        assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [LANES, 3]);
        let bits = |g: &[SoftmaxLayer]| g.iter().flat_map(|l| l.params()).map(|v| v.to_bits()).collect::<Vec<_>>();
        for (count, lanes, one, again, losses, refused) in runs {
            let at = format!("{}, d {d}, {count} tasks", simd.name());
            assert_eq!(losses.map(f64::to_bits), [losses[1].to_bits(); 3], "{at}: loss");
            assert_eq!(bits(&lanes), bits(&one), "{at}: gradients");
            assert_eq!(bits(&again), bits(&one), "{at}: gradients through the trait");
            assert!(lanes.iter().all(|l| l.params().iter().any(|&v| v != 0.0)), "{at}: a layer without gradient");
            assert!(refused, "{at}: a NaN in the last task's context");
        }
    }
}

/// Every attention kind of the zoo, one and two layers, on every vector unit of this CPU: a group in lanes against
/// the same group task by task (a full group and a partial one), the same gradient bits and loss; a lane with a NaN
/// refuses the group.
#[test]
fn a_zoo_group_in_lanes_adds_the_bits_of_its_tasks_one_by_one_on_every_unit() {
    use dualform_harness::model::Zoo;
    use dualform_harness::net::{Attention, ZooLayer};
    fn check<const E: usize>(simd: Simd, n: usize) {
        let sampler = TaskSampler::new(E - 1, n, 1.0);
        for kind in Attention::ALL {
            for layers in [1, 2] {
                let model = Zoo::<E>::init(&mut stream_rng(7, layers as u64), kind, layers);
                let net = model.net();
                assert_eq!(net.group_size(), LANES);
                let runs = sampler.par_groups(8, 0, LANES + 2, LANES, Vec::new, |out, group| {
                    let (mut lanes, mut one, mut again) = (net.zero_grads(), net.zero_grads(), net.zero_grads());
                    let mut losses = [0.5; 3];
                    let mut ws = net.workspace(n);
                    assert!(net.lanes_gradient(simd, group, &mut ZooLanes::default(), &mut lanes, &mut losses[0]));
                    tasks_gradient_from_zero(net, group, &mut ws, &mut one, &mut losses[1]);
                    net.group_gradient(group, &mut ws, &mut net.zero_grads(), &mut 0.0);
                    net.group_gradient(group, &mut ws, &mut again, &mut losses[2]);
                    let mut bad = group.clone();
                    bad.query[0] = f32::NAN;
                    let refused =
                        !net.lanes_gradient(simd, &bad, &mut ZooLanes::default(), &mut net.zero_grads(), &mut 0.0);
                    out.push((group.count, lanes, one, again, losses, refused));
                });
                let runs: Vec<_> = runs.into_iter().flatten().collect();
                assert_eq!(runs.iter().map(|r| r.0).collect::<Vec<_>>(), [LANES, 2]);
                let bits = |g: &[ZooLayer<E>]| {
                    let heads = g.iter().flat_map(|l| l.heads.iter());
                    heads
                        .flat_map(|h| h.w_q.iter().chain(&h.w_k).chain(&h.w_v).chain(&h.p))
                        .map(|v| v.to_bits())
                        .collect::<Vec<_>>()
                };
                for (count, lanes, one, again, losses, refused) in runs {
                    let at = format!("{} x {layers}, E {E}, N {n}, {count} tasks, {}", kind.name(), simd.name());
                    assert_eq!(losses.map(f64::to_bits), [losses[1].to_bits(); 3], "{at}: loss");
                    assert_eq!(bits(&lanes), bits(&one), "{at}: gradients");
                    assert_eq!(bits(&again), bits(&one), "{at}: gradients through the trait");
                    assert!(bits(&lanes).iter().any(|&b| b != 0), "{at}: no gradient");
                    assert!(refused || kind == Attention::Lsa, "{at}: a NaN in the first query");
                }
            }
        }
    }
    for simd in Simd::on_this_cpu() {
        check::<11>(simd, 10);
        check::<5>(simd, 3);
    }
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn grad_bits(g: &[Merged]) -> Vec<u32> {
    g.iter().flat_map(|m| m.a.iter().chain(&m.b)).map(|v| v.to_bits()).collect()
}

/// `load_tasks` on every unit, full and partial groups, widths with and without a remainder of eight: lane `l` of
/// token `i` is value `i` of task `l`'s context, then of its query, and zero in the lanes past the group's tasks.
#[test]
fn a_groups_tasks_load_into_lanes_value_for_value_on_every_unit() {
    use dualform::lanes::Lanes;
    use dualform_harness::net::simd::load_tasks;
    for simd in Simd::on_this_cpu() {
        for (d, n) in [(10, 10), (5, 3), (15, 8)] {
            let sampler = TaskSampler::new(d, n, 1.0);
            let checked = sampler.par_groups(
                7,
                0,
                LANES + 3,
                LANES,
                || 0,
                |checked, group| {
                    let e = d + 1;
                    let mut tokens = vec![Lanes::<8>([f32::NAN; 8]); (n + 1) * e];
                    load_tasks(simd, group, &mut tokens);
                    for l in 0..LANES {
                        let (ctx, query, _) = group.task(l);
                        let expected: Vec<u32> = if l < group.count {
                            ctx.iter().chain(query).map(|v| v.to_bits()).collect()
                        } else {
                            vec![0; (n + 1) * e]
                        };
                        let got: Vec<u32> = tokens.iter().map(|t| t.0[l].to_bits()).collect();
                        assert_eq!(got, expected, "{}, d {d}, n {n}, lane {l} of {}", simd.name(), group.count);
                    }
                    *checked += 1;
                },
            );
            assert_eq!(checked.iter().sum::<usize>(), 2);
        }
    }
}
