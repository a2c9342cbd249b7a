//! The golden run: for every golden task, the trained LSA layer and the GD construction predict the query from its
//! context (the full layer, and the merged query kernel with heads merged at build time), the streaming learner
//! predicts it after each new pair, and every prediction is printed with its raw f32 bits for the host to compare;
//! then the mean losses, one summary line for people, the peak stack and exit code 0.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use dualform_firmware::{exit, golden, paint_stack, stack_peak, E, GD_SHA256, N, TASKS, TRAINED_SHA256};
use dualform_protocol::{Line, Model};

fn run() -> Result<(), dualform::Error> {
    Line::Header { e: E, n: N, tasks: TASKS }.emit();
    Line::Weights { trained: TRAINED_SHA256, gd: GD_SHA256 }.emit();
    let (mut loss_trained, mut loss_gd) = (0.0f32, 0.0f32);
    for task in 0..TASKS {
        let (t, g) = golden::task(task)?;
        loss_trained += t;
        loss_gd += g;
    }
    let (mean_trained, mean_gd) = (loss_trained / TASKS as f32, loss_gd / TASKS as f32);
    for (model, mean) in [(Model::Trained, mean_trained), (Model::Gd, mean_gd)] {
        Line::Loss { model, bits: mean.to_bits() }.emit();
    }
    let weights = TRAINED_SHA256.get(..12).unwrap_or(TRAINED_SHA256);
    Line::Summary { tasks: TASKS, trained: mean_trained.to_bits(), gd: mean_gd.to_bits(), weights }.emit();
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
