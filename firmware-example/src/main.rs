//! The golden run: for every golden task, every model of the list (`dualform_protocol::Model::ALL`) predicts the
//! query from its context (a single layer, the trained one and the GD construction, with the full layer, the merged
//! query kernel and the merged full layer, heads merged at build time; the stack of K trained layers and the looped
//! layer as merged full layers in their schedule and update rule), the streaming learner predicts it after each new
//! pair, and every prediction is printed with its raw f32 bits for the host to compare; then which demonstrations
//! the trained layer's prediction on the first task draws on (`MergedHead::attribution`, one term per pair), the mean
//! losses, one summary line for people, the peak stack and exit code 0.
#![no_std]
#![no_main]

use dualform_firmware::entry;
use dualform_firmware::{exit, golden, paint_stack, stack_peak, trained, CTX, E, MODELS, MODEL_COUNT, N, QUERY, TASKS};
use dualform_protocol::{Line, Model};

fn run() -> Result<(), dualform::Error> {
    Line::Header { e: E, n: N, tasks: TASKS }.emit();
    for m in &MODELS {
        Line::Weights { model: m.model, sha256: m.sha256 }.emit();
    }
    let mut sums = [0.0f32; MODEL_COUNT];
    for task in 0..TASKS {
        for (sum, loss) in sums.iter_mut().zip(golden::task(task)?) {
            *sum += loss;
        }
    }
    if let Some(m) = MODELS.iter().find(|m| m.model == Model::Trained) {
        let mut terms = [0.0f32; N];
        if let (Some(head), Some(ctx), Some(query)) = (m.heads.first(), CTX.first(), QUERY.first()) {
            head.attribution(ctx, query, &mut terms)?;
            for (pair, t) in terms.iter().enumerate() {
                Line::Attribution { task: 0, pair, bits: t.to_bits() }.emit();
            }
        }
    }
    let means = sums.map(|s| s / TASKS as f32);
    for (m, mean) in MODELS.iter().zip(means) {
        Line::Loss { model: m.model, bits: mean.to_bits() }.emit();
    }
    let mean = |model: Model| MODELS.iter().zip(means).find(|(m, _)| m.model == model).map_or(f32::NAN, |(_, l)| l);
    let weights = trained::SHA256.get(..12).unwrap_or(trained::SHA256);
    Line::Summary { tasks: TASKS, trained: mean(Model::Trained).to_bits(), gd: mean(Model::Gd).to_bits(), weights }
        .emit();
    Ok(())
}

#[entry]
fn main() -> ! {
    dualform_firmware::guard_stack();
    let floor = paint_stack();
    match run() {
        Ok(()) => {
            Line::Stack { bytes: stack_peak(floor) }.emit();
            Line::Done.emit();
            exit(0)
        }
        Err(e) => {
            defmt::error!("core error: {}", e);
            exit(1)
        }
    }
}
