//! Criterion benches of the core kernels beside naive baselines (`cargo bench -p dualform-benches`).
//!
//! Throughput is each algorithm's own floating-point operation count (a multiply-add counts 2), so criterion's
//! "elem/s" reads as FLOP/s. Groups:
//! - `lsa`: LSA layer, quadratic vs associative order vs a naive dynamic-matrix version, N in {16 .. 4096},
//!   E in {11, 16, 32, 64};
//! - `softmax`: online-softmax attention vs a naive two-pass version with an N x (N + 1) score buffer;
//! - `stream`: one streaming update (add a pair, evict the oldest) vs recomputing the window's sums, N in {16, 64, 256};
//! - `gd`: one primal GD step vs one dual (data-space) step vs one constructed LSA layer, d = 10;
//! - `train`: one training step of the harness (tasks, forward, backward, Adam) at batch 2048, d = N = 10: LSA models
//!   of 1 to 5 layers and the 2-layer softmax model.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dualform::gd::{dual_step, gd_step};
use dualform::nalgebra::SMatrix;
use dualform::{
    gd_layer, lsa_associative, lsa_quadratic, softmax_attention, LinearScratch, Mask, StreamingContext, Update,
};
use dualform_benches::{dynamic, naive_lsa, naive_softmax, Inputs};
use std::hint::black_box;
use std::time::Duration;

fn assoc_flops(e: u64, n: u64) -> u64 {
    2 * (2 * n * e * e + n * e * e + 3 * (n + 1) * e * e)
}
fn quad_flops(e: u64, n: u64) -> u64 {
    2 * (2 * n * e * e + (n + 1) * (2 * e * e + 2 * n * e))
}

fn lsa_case<const E: usize, const N: usize>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("lsa/E={E}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let mut inp = Inputs::new(1);
    let layer = inp.layer::<E>();
    let ctx0 = inp.tokens::<E, N>();
    let q0 = inp.tokens::<E, 1>()[0];
    let (e, n) = (E as u64, N as u64);
    group.throughput(Throughput::Elements(assoc_flops(e, n)));
    group.bench_function(BenchmarkId::new("associative", N), |b| {
        let mut ctx = ctx0.clone();
        b.iter(|| {
            ctx.copy_from_slice(&*ctx0);
            let mut q = q0;
            lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q).ok();
            black_box(q)
        })
    });
    group.throughput(Throughput::Elements(quad_flops(e, n)));
    group.bench_function(BenchmarkId::new("quadratic", N), |b| {
        let mut ctx = ctx0.clone();
        let mut scratch: Box<LinearScratch<f32, N, E, E, 1>> = Box::default();
        b.iter(|| {
            ctx.copy_from_slice(&*ctx0);
            let mut q = q0;
            lsa_quadratic(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q, &mut scratch).ok();
            black_box(q)
        })
    });
    let w = dynamic(&layer);
    let flat: Vec<f32> = ctx0.iter().flatten().copied().collect();
    group.bench_function(BenchmarkId::new("naive_dmatrix", N), |b| b.iter(|| black_box(naive_lsa(&w, &flat, &q0, E))));
    group.finish();
}

fn softmax_case<const E: usize, const N: usize>(c: &mut Criterion) {
    let mut group = c.benchmark_group(format!("softmax/E={E}"));
    group.sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    let mut inp = Inputs::new(2);
    let layer = inp.layer::<E>();
    let ctx0 = inp.tokens::<E, N>();
    let q0 = inp.tokens::<E, 1>()[0];
    group.throughput(Throughput::Elements(quad_flops(E as u64, N as u64)));
    group.bench_function(BenchmarkId::new("online", N), |b| {
        let mut ctx = ctx0.clone();
        let mut scratch: Box<LinearScratch<f32, N, E, E, 1>> = Box::default();
        b.iter(|| {
            ctx.copy_from_slice(&*ctx0);
            let mut q = q0;
            softmax_attention(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q, &mut scratch).ok();
            black_box(q)
        })
    });
    let w = dynamic(&layer);
    let flat: Vec<f32> = ctx0.iter().flatten().copied().collect();
    group.bench_function(BenchmarkId::new("naive_two_pass", N), |b| {
        b.iter(|| black_box(naive_softmax(&w, &flat, &q0, E)))
    });
    group.finish();
}

macro_rules! grid {
    ($f:ident, $c:expr, $($e:literal),*) => {
        $( $f::<$e, 16>($c); $f::<$e, 64>($c); $f::<$e, 256>($c); $f::<$e, 1024>($c); $f::<$e, 4096>($c); )*
    };
}

fn lsa(c: &mut Criterion) {
    grid!(lsa_case, c, 11, 16, 32, 64);
}

fn softmax(c: &mut Criterion) {
    grid!(softmax_case, c, 11, 16, 32, 64);
}

fn stream_case<const N: usize>(c: &mut Criterion) {
    const E: usize = 11;
    let mut group = c.benchmark_group("stream");
    let mut inp = Inputs::new(3);
    let layer = inp.layer::<E>();
    let tokens = inp.tokens::<E, 512>();
    let mut stream = StreamingContext::<f32, E, E, E, 1, N>::new(&layer, 0);
    for t in tokens.iter().take(N) {
        stream.push(*t).ok();
    }
    group.throughput(Throughput::Elements(2 * 4 * (E * E) as u64));
    let mut i = 0;
    group.bench_function(BenchmarkId::new("push_evict", N), |b| {
        b.iter(|| {
            i = (i + 1) % tokens.len();
            black_box(stream.push(tokens[i]).ok())
        })
    });
    group.throughput(Throughput::Elements(2 * 3 * (N * E * E) as u64));
    group.bench_function(BenchmarkId::new("recompute", N), |b| {
        b.iter(|| {
            stream.resync();
            black_box(stream.len())
        })
    });
    group.finish();
}

fn stream(c: &mut Criterion) {
    stream_case::<16>(c);
    stream_case::<64>(c);
    stream_case::<256>(c);
}

fn gd_case<const N: usize>(c: &mut Criterion) {
    const D: usize = 10;
    const E: usize = 11;
    let mut group = c.benchmark_group("gd");
    let mut inp = Inputs::new(4);
    let tok = inp.tokens::<E, N>();
    let xs: [[f32; D]; N] = core::array::from_fn(|i| core::array::from_fn(|j| tok[i][j]));
    let ys: [[f32; 1]; N] = core::array::from_fn(|i| [tok[i][D]]);
    let xq: [f32; D] = core::array::from_fn(|j| tok[0][j] * 0.5);
    let w0 = SMatrix::<f32, 1, D>::from_fn(|_, j| 0.1 * j as f32);
    group
        .bench_function(BenchmarkId::new("primal_step", N), |b| b.iter(|| black_box(gd_step(&w0, &xs, &ys, 0.5).ok())));
    group.bench_function(BenchmarkId::new("dual_step", N), |b| {
        b.iter(|| {
            let mut y = ys;
            let mut yq = [0.0f32];
            dual_step(&w0, &xs, &mut y, &xq, &mut yq, 0.5).ok();
            black_box(yq)
        })
    });
    let layer = gd_layer::<f32, D, 1, E>(&w0, 0.5, N).unwrap_or_else(|_| unreachable!());
    group.bench_function(BenchmarkId::new("lsa_layer", N), |b| {
        b.iter(|| {
            let mut ctx = *tok;
            let mut q = tok[0];
            lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q).ok();
            black_box(q)
        })
    });
    group.finish();
}

fn gd(c: &mut Criterion) {
    gd_case::<10>(c);
    gd_case::<64>(c);
}

fn train(c: &mut Criterion) {
    use dualform::Update;
    use dualform_harness::fit::train::{reference, train, TrainSpec};
    use dualform_harness::model::Lsa;
    use dualform_harness::net::Attention;
    use dualform_harness::tasks::{stream_rng, streams, TaskSampler};
    let mut group = c.benchmark_group("train");
    group.sample_size(20);
    let sampler = TaskSampler::new(10, 10, 1.0);
    group.throughput(Throughput::Elements(2048));
    // One training step (tasks, forward, backward, Adam) at batch 2048, d = N = 10, on the rayon pool (all cores).
    // K = 1 is the single layer (query-only kernel); K >= 2 distinct layers update every token (full-layer kernel).
    for layers in 1..=5usize {
        let update = Update { clip: reference::token_clip(layers), ..Update::residual() };
        let init = Lsa::init(&mut stream_rng(0, streams::INIT), 11, layers, (0..layers).collect(), update)
            .expect("a valid model");
        let spec = TrainSpec {
            steps: 1,
            batch: 2048,
            seed: 0,
            adam: dualform_harness::fit::optim::AdamW::reference(reference::lr(layers)),
            clip: reference::grad_clip(layers),
        };
        group.bench_function(format!("step_batch_2048_d10_n10_layers_{layers}"), |b| {
            b.iter(|| {
                let mut m = init.clone();
                black_box(train(&mut m, &sampler, &spec, |_, _, _| Ok(())).ok())
            })
        });
    }
    // The 2-layer softmax model of the `softmax` experiment (two heads of width E per layer, every token updated by
    // the first layer, the query by the second), its learning rate 0.01.
    let init = dualform_harness::model::Softmax::init(&mut stream_rng(0, streams::INIT), 11, 2);
    let spec = TrainSpec {
        steps: 1,
        batch: 2048,
        seed: 0,
        adam: dualform_harness::fit::optim::AdamW::reference(0.01),
        clip: reference::grad_clip(2),
    };
    group.bench_function("step_batch_2048_d10_n10_softmax_layers_2", |b| {
        b.iter(|| {
            let mut m = init.clone();
            black_box(train(&mut m, &sampler, &spec, |_, _, _| Ok(())).ok())
        })
    });
    // The attention zoo's 2-layer models of the kinds that are not LSA or softmax (two heads per layer, every token
    // updated by the first layer, the query by the second), on the zoo's linear task, learning rate 0.01.
    for kind in [Attention::EluPlusOne, Attention::Performer, Attention::Efficient] {
        let init = dualform_harness::model::Zoo::<11>::init(&mut stream_rng(0, streams::INIT), kind, 2);
        group.bench_function(format!("step_batch_2048_d10_n10_zoo_{}_layers_2", kind.name()), |b| {
            b.iter(|| {
                let mut m = init.clone();
                black_box(train(&mut m, &sampler, &spec, |_, _, _| Ok(())).ok())
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lsa, softmax, stream, gd, train);
criterion_main!(benches);
