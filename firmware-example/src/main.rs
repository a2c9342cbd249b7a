//! The golden run: for every golden task, the trained LSA layer and the GD construction predict the query from its
//! context (the full layer, the merged query kernel and the merged full layer, with heads merged at build time),
//! the stack of K trained layers and the looped layer predict it (merged full layers in their schedule and update
//! rule), the streaming learner predicts it after each new pair, and every prediction is printed with its raw f32
//! bits for the host to compare; then the mean losses, one summary line for people, the peak stack and exit code 0.
#![no_std]
#![no_main]

use cortex_m_rt::entry;
use dualform_firmware::{exit, gd, golden, looped, paint_stack, stack, stack_peak, trained, E, N, TASKS};
use dualform_protocol::{Line, Model};

fn run() -> Result<(), dualform::Error> {
    Line::Header { e: E, n: N, tasks: TASKS }.emit();
    Line::Weights { trained: trained::SHA256, gd: gd::SHA256 }.emit();
    Line::Models { stack: stack::SHA256, looped: looped::SHA256 }.emit();
    let mut sums = [0.0f32; 4];
    for task in 0..TASKS {
        for (sum, loss) in sums.iter_mut().zip(golden::task(task)?) {
            *sum += loss;
        }
    }
    let means = sums.map(|s| s / TASKS as f32);
    for (model, mean) in [Model::Trained, Model::Gd, Model::Stack, Model::Looped].into_iter().zip(means) {
        Line::Loss { model, bits: mean.to_bits() }.emit();
    }
    let [mean_trained, mean_gd, ..] = means;
    let weights = trained::SHA256.get(..12).unwrap_or(trained::SHA256);
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
