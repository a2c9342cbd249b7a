//! Unit tests of `tasks` (`src/tasks/mod.rs`, `src/tasks/closed_form.rs`).

use dualform_harness::net::simd::{self, Simd};
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

/// Four generators stepped together give each stream exactly the numbers of its own generator, whether all four
/// step at once or one lane draws alone (words, half words, bytes of odd lengths, normals).
#[test]
fn four_streams_side_by_side_give_each_stream_its_own_numbers() {
    use rand::RngExt;
    use rand_distr::{Distribution, StandardNormal};
    let mut alone: [_; STREAMS] = std::array::from_fn(|l| stream_rng(3, 10 + l as u64));
    let mut together = Xoshiro4::new(&alone);
    for round in 0..200usize {
        let both = together.next_u64s();
        for (l, rng) in alone.iter_mut().enumerate() {
            assert_eq!(both[l], rng.next_u64(), "round {round}, stream {l}");
        }
        let l = round % STREAMS;
        let mut lane = together.lane(l);
        match round % 4 {
            0 => assert_eq!(lane.next_u32(), alone[l].next_u32()),
            1 => {
                let (mut a, mut b) = ([0u8; 13], [0u8; 13]);
                lane.fill_bytes(&mut a);
                alone[l].fill_bytes(&mut b);
                assert_eq!(a, b);
            }
            2 => {
                let (a, b): (f32, f32) = (StandardNormal.sample(&mut lane), StandardNormal.sample(&mut alone[l]));
                assert_eq!(a.to_bits(), b.to_bits());
            }
            _ => assert_eq!(lane.random::<u64>(), alone[l].random::<u64>()),
        }
    }
    for (l, rng) in alone.iter().enumerate() {
        assert_eq!(&together.stream(l), rng, "stream {l}");
    }
    // Many steps at once, on every vector unit this CPU has.
    for unit in Simd::on_this_cpu() {
        let mut alone: [_; STREAMS] = std::array::from_fn(|l| stream_rng(8, l as u64));
        let mut together = Xoshiro4::new(&alone);
        for len in [0, 1, 2, 7, 55, 300] {
            let mut out = vec![[0u64; STREAMS]; len];
            together.fill(unit, &mut out);
            for (i, step) in out.iter().enumerate() {
                for (l, rng) in alone.iter_mut().enumerate() {
                    assert_eq!(step[l], rng.next_u64(), "{}, {len} steps, step {i}, stream {l}", unit.name());
                }
            }
        }
    }
}

/// Every task `par_groups` hands out, chunk by chunk and group by group, is the task `sample_into` draws from the
/// chunk's stream one task after another, to the bit: for every family and option that changes what is drawn, and
/// for counts, group sizes and thread counts that leave the last chunk, the last group and the last block of chunks
/// short, in blocks of one to four chunks.
#[test]
fn par_groups_hands_out_the_tasks_of_sample_into_to_the_bit() {
    let linear = TaskSampler::new(10, 10, 1.0);
    let mut shaped = TaskSampler { mean: 0.25, noise: 0.1, hidden: 2, ..TaskSampler::new(3, 6, 2.0) };
    shaped.scales[..3].copy_from_slice(&[0.5, 1.0, 2.0]);
    let samplers = [
        linear,
        // Token width 11 (the width whose drawing is compiled apart): hidden labels and another input range on the
        // plain linear path; a shifted mean and label noise on the general one.
        TaskSampler { hidden: 3, ..TaskSampler::new(10, 7, 2.0) },
        TaskSampler { mean: 0.5, ..TaskSampler::new(10, 4, 1.0) },
        TaskSampler { noise: 0.1, ..TaskSampler::new(10, 5, 1.0) },
        // Task vectors scaled (drawn four tasks at a time, as every plain linear task's without a pool).
        TaskSampler { weight_scale: 0.5, ..TaskSampler::new(10, 6, 1.0) },
        // An odd d without noise (a last input alone, the whole task drawn at once), and tokens of width 4 (no
        // entries past the last block of four).
        TaskSampler::new(7, 5, 1.0),
        TaskSampler::new(3, 4, 1.5),
        shaped,
        TaskSampler { pool: 4, pool_seed: 7, weight_scale: 0.5, ..TaskSampler::new(1, 4, 1.0) },
        TaskSampler { family: Family::Sine, noise: 0.2, ..TaskSampler::new(1, 10, 10.0) },
        TaskSampler { family: Family::Recall, ..TaskSampler::new(4, 5, 1.0) },
    ];
    type Task = (Vec<u32>, Vec<u32>, u32);
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
    let units = Simd::on_this_cpu();
    for ((i, sampler), unit) in samplers.iter().enumerate().flat_map(|s| units.iter().map(move |&u| (s, u))) {
        simd::choose(unit).unwrap();
        let e = sampler.width();
        for (count, size) in [(1, 1), (64, 8), (65, 3), (300, 8), (520, 1), (700, 8)] {
            // Blocks of 1 to 4 chunks, with 1 and 3 threads.
            let threads = 1 + (count + size) % 3;
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            let chunks = pool.install(|| {
                sampler.par_groups(11, 40, count, size, Vec::<(usize, Vec<Task>)>::new, |acc, group| {
                    let tasks =
                        (0..group.count).map(|t| group.task(t)).map(|(c, q, y)| (bits(c), bits(q), y.to_bits()));
                    acc.push((group.count, tasks.collect()));
                })
            });
            assert_eq!(chunks.len(), count.div_ceil(CHUNK), "sampler {i}, count {count}");
            for (c, groups) in chunks.iter().enumerate() {
                let in_chunk = CHUNK.min(count - c * CHUNK);
                let counts: Vec<usize> = groups.iter().map(|g| g.0).collect();
                let expected: Vec<usize> =
                    (0..in_chunk.div_ceil(size)).map(|g| size.min(in_chunk - g * size)).collect();
                assert_eq!(counts, expected, "sampler {i}, count {count}, chunk {c}");
                let mut rng = stream_rng(11, 40 + c as u64);
                let (mut ctx, mut query, mut w) = (vec![0.0f32; sampler.n * e], vec![0.0f32; e], vec![0.0f32; e]);
                for (t, got) in groups.iter().flat_map(|g| &g.1).enumerate() {
                    let y = sampler.sample_into(&mut rng, &mut ctx, &mut query, &mut w);
                    let want = (bits(&ctx), bits(&query), y.to_bits());
                    assert_eq!(
                        got,
                        &want,
                        "{}, sampler {i}, count {count}, size {size}, chunk {c}, task {t}",
                        unit.name()
                    );
                }
            }
        }
    }
    simd::choose(Simd::widest()).unwrap();
}

/// `par_groups_in` hands every chunk the tasks `par_groups` hands it, with one scratch value per block of chunks from
/// the pool: made only when the pool has none free (at most one per thread), put back afterwards, and taken again by
/// the next call rather than made anew.
#[test]
fn par_groups_in_takes_its_scratch_from_the_pool_and_puts_it_back() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let sampler = TaskSampler::new(3, 5, 1.0);
    let labels = |acc: &mut Vec<u32>, group: &Group| acc.extend(group.y[..group.count].iter().map(|y| y.to_bits()));
    for threads in [1, 2, 3] {
        let rayon = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        rayon.install(|| {
            let want = sampler.par_groups(2, 9, 700, 8, Vec::new, labels);
            let (pool, made) = (Pool::new(), AtomicUsize::new(0));
            for call in 0..3 {
                let make = || made.fetch_add(1, Ordering::Relaxed);
                let got =
                    sampler.par_groups_in(2, 9, 700, 8, (&pool, make), Vec::new, |acc, _, group| labels(acc, group));
                assert_eq!(got, want, "{threads} threads, call {call}");
                let n = made.load(Ordering::Relaxed);
                assert!((1..=threads).contains(&n), "{threads} threads, call {call}: {n} made");
                assert_eq!(pool.len(), n, "{threads} threads, call {call}: every value put back");
            }
        });
    }
}
