//! Measurement runs: each workload runs once between two marker functions, so that the host can count the executed
//! instructions between them under QEMU (`-singlestep -d exec,nochain`), and prints the peak stack it used.
//! Workload 0 is empty (the markers' own cost, subtracted by the host).
#![no_std]
#![no_main]

use core::hint::black_box;
use dualform::linalg::matvec;
use dualform::{lsa_associative, prediction, LayerCache, Mask, MergedHead, Real, StreamingContext, Update};
use dualform_firmware::entry;
use dualform_firmware::{
    exit, looped, paint_stack, stack, stack_depth, stack_peak, trained, Model, CTX0, E, N, QUERY0,
};

/// The trained single layer, read in place from flash.
static TRAINED: &Model = &trained::WEIGHTS[0];
use dualform_protocol::{Line, Workload};

// The markers must survive optimisation: `black_box` keeps the calls (they would otherwise be side-effect free
// and removed), and the two bodies differ (`id` vs `id | 1 << 31`) so the linker cannot fold them into one address.

/// Called right before a workload; the host counts from its first instruction.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn dualform_mark_begin(id: u32) {
    black_box(id);
}

/// Called right after a workload; the host counts up to its first instruction.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn dualform_mark_end(id: u32) {
    black_box(id | 0x8000_0000);
}

/// Runs `f` between the markers and prints the workload's own stack use (the peak below the depth at which it was
/// called) and the program's total peak depth.
#[inline(never)]
fn measure<R>(workload: Workload, f: impl FnOnce() -> R) -> R {
    let floor = paint_stack();
    let depth = stack_depth();
    dualform_mark_begin(workload.id());
    let r = black_box(f());
    dualform_mark_end(workload.id());
    let peak = stack_peak(floor);
    Line::Measure { workload, stack: peak.saturating_sub(depth), total: peak }.emit();
    r
}

#[inline(never)]
fn lsa_forward() -> Result<f32, dualform::Error> {
    let mut ctx = black_box(CTX0);
    let mut query = black_box(QUERY0);
    measure(Workload::LsaForward, || lsa_associative(TRAINED, Mask::Full, &Update::residual(), &mut ctx, &mut query))?;
    Ok(prediction::<f32, E, 1>(&query)[0])
}

#[inline(never)]
fn merge() -> f32 {
    let m = measure(Workload::Merge, || MergedHead::from_head(&TRAINED.heads[0]));
    m.a[(0, 0)]
}

#[inline(never)]
fn merged_predict() -> f32 {
    // Context and merged head are read in place from flash.
    measure(Workload::MergedPredict, || trained::HEADS[0].predict_scalar(black_box(&CTX0), black_box(&QUERY0)))
}

/// Fills a streaming window over the trained layer with the first task's pairs (in reverse order), in place.
fn fill(stream: &mut StreamingContext<'static, f32, E, E, E, 1, N>) -> Result<(), dualform::Error> {
    for token in CTX0.iter().rev() {
        stream.push(*token)?;
    }
    Ok(())
}

#[inline(never)]
fn stream_push() -> Result<usize, dualform::Error> {
    let mut stream = StreamingContext::new(TRAINED, 0);
    fill(&mut stream)?;
    // The window is full: this push evicts the oldest pair and adds the new one.
    measure(Workload::StreamPush, || stream.push(black_box(CTX0[0])))?;
    Ok(stream.len())
}

#[inline(never)]
fn stream_predict() -> Result<f32, dualform::Error> {
    let mut stream = StreamingContext::new(TRAINED, 0);
    fill(&mut stream)?;
    let mut x = [0.0f32; { E - 1 }];
    x.copy_from_slice(&QUERY0[..E - 1]);
    Ok(measure(Workload::StreamPredict, || stream.predict::<{ E - 1 }, 1>(black_box(&x)))[0])
}

/// The full layer (all 11 tokens) in the merged form `C = B G A`, with the head merged at build time.
#[inline(never)]
fn merged_layer() -> Result<f32, dualform::Error> {
    let mut ctx = black_box(CTX0);
    let mut query = black_box(QUERY0);
    let mut cache = LayerCache::zeros();
    measure(Workload::MergedLayer, || {
        trained::HEADS[0].layer_forward(&Update::residual(), &mut ctx, &mut query, &mut cache)
    })?;
    Ok(prediction::<f32, E, 1>(&query)[0])
}

#[inline(never)]
fn plain_matvec() -> f32 {
    measure(Workload::Matvec, || matvec(&TRAINED.heads[0].w_q, black_box(&QUERY0)))[0]
}

/// A trained model of merged heads in its schedule and update rule on the first task (every token, every
/// application), as the golden run computes it.
#[inline(never)]
fn scheduled(
    workload: Workload,
    heads: &[MergedHead<f32, E>],
    schedule: &[usize],
    upd: &Update<f32>,
) -> Result<f32, dualform::Error> {
    let mut ctx = black_box(CTX0);
    let mut query = black_box(QUERY0);
    let mut cache = LayerCache::zeros();
    measure(workload, || MergedHead::run_schedule(heads, schedule, upd, &mut ctx, &mut query, &mut cache))
}

/// `E N` exponentials of the context's entries (the core's `Real::exp`, libm's `expf`), summed.
#[inline(never)]
fn exps() -> f32 {
    measure(Workload::Exp, || {
        let mut s = 0.0f32;
        for &x in black_box(&CTX0).iter().flatten() {
            s += <f32 as Real>::exp(x);
        }
        s
    })
}

fn run() -> Result<(), dualform::Error> {
    Line::Config { e: E, n: N }.emit();
    measure(Workload::Empty, || ());
    black_box(lsa_forward()?);
    black_box(merge());
    black_box(merged_predict());
    black_box(stream_push()?);
    black_box(stream_predict()?);
    black_box(plain_matvec());
    black_box(merged_layer()?);
    black_box(exps());
    black_box(scheduled(Workload::Stack, &stack::HEADS, &stack::SCHEDULE, &stack::UPDATE)?);
    black_box(scheduled(Workload::Looped, &looped::HEADS, &looped::SCHEDULE, &looped::UPDATE)?);
    Line::Done.emit();
    Ok(())
}

#[entry]
fn main() -> ! {
    dualform_firmware::guard_stack();
    match run() {
        Ok(()) => exit(0),
        Err(e) => {
            defmt::error!("core error: {}", e);
            exit(1)
        }
    }
}
