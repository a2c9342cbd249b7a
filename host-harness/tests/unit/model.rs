//! Unit tests of `model` (`src/model/mod.rs`).

use dualform::Update;
use dualform_harness::model::*;
use dualform_harness::net::Forward;
use dualform_harness::tasks::{stream_rng, TaskSampler};

/// The pullback of every model against central differences of the mean loss over a few tasks (f32, so a loose
/// bound, but a wrong chain rule is off by far more).
fn check_pullback<M: Model>(mut m: M, label: &str) {
    let sampler = TaskSampler::new(m.net().width() - 1, 6, 1.0);
    let tasks = sampler.par_chunks::<Vec<(Vec<f32>, Vec<f32>, f32)>>(9, 0, 16, Vec::new, |acc, c, q, y| {
        acc.push((c.to_vec(), q.to_vec(), y))
    });
    let tasks: Vec<_> = tasks.into_iter().flatten().collect();
    let loss = |m: &M| -> f64 {
        let mut ws = m.net().workspace(6);
        tasks.iter().map(|(c, q, y)| 0.5 * ((m.net().predict(c, q, &mut ws, None) - y) as f64).powi(2)).sum()
    };
    let mut merged = m.net().zero_grads();
    let mut ws = m.net().workspace(6);
    for (c, q, y) in &tasks {
        m.net().forward_backward(c, q, &mut ws, |yh| yh - y, Some(&mut merged), None);
    }
    let p = m.params();
    let mut grad = vec![0.0f32; p.len()];
    m.pullback(&merged, &mut grad);
    let step = 1e-2f32;
    for i in (0..p.len()).step_by((p.len() / 12).max(1)) {
        let (mut plus, mut minus) = (p.clone(), p.clone());
        plus[i] += step;
        minus[i] -= step;
        m.set_params(&plus);
        let lp = loss(&m);
        m.set_params(&minus);
        let lm = loss(&m);
        let num = (lp - lm) / (2.0 * step as f64);
        assert!(
            (num - grad[i] as f64).abs() <= 0.02 * num.abs().max(1e-2),
            "{label}: parameter {i}: {} vs {num}",
            grad[i]
        );
    }
    m.set_params(&p);
}

#[test]
fn every_pullback_matches_central_differences() {
    let mut rng = stream_rng(5, 0);
    let scale = |m: &mut Lsa| {
        let p: Vec<f32> = m.params().iter().map(|v| v * 30.0).collect();
        m.set_params(&p);
    };
    let mut single = Lsa::init(&mut rng, 5, 1, vec![0], Update::residual()).unwrap();
    scale(&mut single);
    check_pullback(single, "single layer");
    let mut stack = Lsa::init(&mut rng, 5, 2, vec![0, 1], Update::residual()).unwrap();
    scale(&mut stack);
    check_pullback(stack, "two layers");
    let mut rec = Lsa::init(&mut rng, 5, 1, vec![0, 0, 0], Update { scale: 0.75, first: 4, clip: None }).unwrap();
    scale(&mut rec);
    check_pullback(rec, "recurrent, y only, damped");
    for layers in [1, 2] {
        let mut m = Softmax::init(&mut rng, 5, layers);
        let p: Vec<f32> = m.params().iter().map(|v| v * 40.0).collect();
        m.set_params(&p);
        check_pullback(m, &format!("softmax, {layers} layers"));
    }
    let mut mlp = MlpLsa::<3, 4, 4>::init(&mut rng, 0.3);
    let n = mlp.params().len();
    // The LSA head (the last 64 parameters) scaled up from its near-zero start so every path carries gradient.
    let p: Vec<f32> = mlp.params().iter().enumerate().map(|(i, v)| if i + 64 >= n { v * 20.0 } else { *v }).collect();
    mlp.set_params(&p);
    check_pullback(mlp, "feature map and LSA layer");
    for kind in dualform_harness::net::Attention::ALL {
        let mut m = Zoo::<5>::init(&mut rng, kind, 2);
        let p: Vec<f32> = m.params().iter().map(|v| v * 40.0).collect();
        m.set_params(&p);
        check_pullback(m, &format!("{} x 2", kind.name()));
    }
    let mut mz = MlpZoo::<3, 4, 4>::init(&mut rng, dualform_harness::net::Attention::EluPlusOne, 1, 0.3);
    let n = mz.params().len();
    let p: Vec<f32> = mz.params().iter().enumerate().map(|(i, v)| if i + 128 >= n { v * 30.0 } else { *v }).collect();
    mz.set_params(&p);
    check_pullback(mz, "feature map and elu+1 layer");
    for kind in [GdKind::SharedRate, GdKind::PerStep, GdKind::PlusPlus, GdKind::PlusPlusShared] {
        let mut m = GdFamily::new(4, kind, 3, 6, 2.0).unwrap();
        let p: Vec<f32> =
            m.params().iter().enumerate().map(|(i, v)| if i < 3 { *v + i as f32 * 0.5 } else { 0.3 }).collect();
        m.set_params(&p);
        check_pullback(m, &format!("{kind:?}"));
    }
}
