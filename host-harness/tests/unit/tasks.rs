//! Unit tests of `tasks` (`src/tasks/mod.rs`, `src/tasks/closed_form.rs`).

use dualform_harness::tasks::*;
use rand::Rng;

#[test]
fn closed_form_matches_the_reference_anchors() {
    let cf = ClosedForm::new(10, 10, 1.0);
    assert!((cf.eta - 6.06).abs() < 0.01, "{cf:?}");
    assert!((cf.loss - 0.2062).abs() < 1e-4, "{cf:?}");
    assert!((cf.zero_loss - 0.4167).abs() < 1e-4, "{cf:?}");
}

/// Hidden labels are drawn and then zeroed (the task is otherwise the same); a pool repeats its vectors.
#[test]
fn hidden_labels_and_task_pools() {
    let plain = TaskSampler::new(3, 5, 1.0);
    let hidden = TaskSampler { hidden: 2, ..plain };
    let (mut a, mut b) = ([[0.0f32; 4]; 5], [[0.0f32; 4]; 5]);
    let qa = plain.sample(&mut stream_rng(4, 0), &mut a);
    let qb = hidden.sample(&mut stream_rng(4, 0), &mut b);
    assert_eq!(qa, qb);
    for (j, (ea, eb)) in a.iter().zip(&b).enumerate() {
        assert_eq!(ea[..3], eb[..3]);
        assert_eq!(eb[3], if j < 3 { ea[3] } else { 0.0 }, "token {j}");
        assert_ne!(ea[3], 0.0);
    }
    let pool = TaskSampler { pool: 3, pool_seed: 9, ..plain };
    let mut rng = stream_rng(5, 0);
    let mut seen: Vec<[f32; 4]> = Vec::new();
    for _ in 0..200 {
        let mut w = [0.0f32; 4];
        pool.task_vector(&mut rng, &mut w);
        if !seen.contains(&w) {
            seen.push(w);
        }
    }
    assert_eq!(seen.len(), 3);
    let mut other = [0.0f32; 4];
    TaskSampler { pool_seed: 10, ..pool }.task_vector(&mut rng, &mut other);
    assert!(!seen.contains(&other));
}

/// Sine tasks: amplitude and phase in their ranges and uncorrelated; inputs in (-5, 5); targets bounded by the
/// amplitude.
#[test]
fn sine_tasks_draw_amplitude_and_phase_independently() {
    let mut rng = stream_rng(6, 0);
    let draws: Vec<(f64, f64)> =
        (0..20_000).map(|_| sine_parameters(rng.next_u64())).map(|(a, b)| (f64::from(a), f64::from(b))).collect();
    let n = draws.len() as f64;
    let (ma, mb) = (draws.iter().map(|d| d.0).sum::<f64>() / n, draws.iter().map(|d| d.1).sum::<f64>() / n);
    let cov = draws.iter().map(|d| (d.0 - ma) * (d.1 - mb)).sum::<f64>() / n;
    let (va, vb) = (4.9f64.powi(2) / 12.0, std::f64::consts::PI.powi(2) / 12.0);
    assert!((cov / (va * vb).sqrt()).abs() < 0.03, "correlation {}", cov / (va * vb).sqrt());
    assert!((ma - 2.55).abs() < 0.05 && (mb - std::f64::consts::FRAC_PI_2).abs() < 0.05);
    assert!(draws.iter().all(|d| (0.1..5.0).contains(&d.0) && (0.0..std::f64::consts::PI).contains(&d.1)));
    let sampler = TaskSampler { family: Family::Sine, ..TaskSampler::new(1, 10, 10.0) };
    let mut ctx = [[0.0f32; 2]; 10];
    let mut spread = 0.0f32;
    for _ in 0..200 {
        let (q, y) = sampler.sample(&mut rng, &mut ctx);
        for e in ctx.iter().chain([&[q[0], y]]) {
            assert!(e[0].abs() <= 5.0 && e[1].abs() <= 5.0, "{e:?}");
            spread = spread.max(e[0].abs());
        }
    }
    assert!(spread > 4.9);
}

#[test]
fn recall_tasks_query_one_of_their_unit_keys() {
    let s = TaskSampler { family: Family::Recall, ..TaskSampler::new(4, 6, 1.0) };
    let mut rng = stream_rng(2, 0);
    let mut ctx = [[0.0f32; 5]; 6];
    let mut hits = [0usize; 6];
    for _ in 0..3000 {
        let (q, y) = s.sample(&mut rng, &mut ctx);
        for e in &ctx {
            let norm: f32 = e[..4].iter().map(|v| v * v).sum();
            assert!((norm - 1.0).abs() < 1e-5, "{e:?}");
        }
        assert_eq!(q[4], 0.0);
        let matches: Vec<usize> = (0..6).filter(|&j| ctx[j][..4] == q[..4]).collect();
        assert_eq!(matches.len(), 1, "{q:?}");
        assert_eq!(ctx[matches[0]][4], y);
        hits[matches[0]] += 1;
    }
    // Uniform over the 6 pairs: 500 each, sd about 20.
    assert!(hits.iter().all(|&h| (400..600).contains(&h)), "{hits:?}");
}

#[test]
fn tasks_follow_the_distribution() {
    let s = TaskSampler::new(3, 4, 2.0);
    let mut rng = stream_rng(1, 0);
    let mut ctx = [[0.0f32; 4]; 4];
    let (mut sum_x2, mut count) = (0.0f64, 0);
    for _ in 0..2000 {
        let (q, _) = s.sample(&mut rng, &mut ctx);
        assert_eq!(q[3], 0.0);
        for e in &ctx {
            for &x in &e[..3] {
                assert!(x.abs() <= 1.0);
                sum_x2 += (x as f64).powi(2);
                count += 1;
            }
        }
    }
    // Var of U(-1, 1) is 1/3.
    assert_eq!(uniform_pair(0), (-0.5, -0.5));
    assert_eq!(uniform_pair(u64::MAX), (0.5 - f32::EPSILON, 0.5 - f32::EPSILON));
    assert!((sum_x2 / count as f64 - 1.0 / 3.0).abs() < 0.01);
    // Same seed and stream, same tasks; another stream, other tasks.
    let (q1, y1) = s.sample(&mut stream_rng(5, 7), &mut ctx);
    let (q2, y2) = s.sample(&mut stream_rng(5, 7), &mut ctx);
    let (q3, _) = s.sample(&mut stream_rng(5, 8), &mut ctx);
    assert_eq!((q1, y1), (q2, y2));
    assert_ne!(q1, q3);
}
