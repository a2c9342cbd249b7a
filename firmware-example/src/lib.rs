//! Shared by the firmware binaries: the embedded weights and golden tasks, the exit path, fault handlers, and stack
//! painting for the peak-stack measurement.
#![no_std]

#[cfg(all(feature = "qemu", feature = "board"))]
compile_error!("choose one of the features `qemu` (default) and `board` (use --no-default-features)");

#[cfg(feature = "qemu")]
use defmt_semihosting as _;

#[cfg(feature = "board")]
use defmt_rtt as _;

use dualform::{Layer, MergedHead, Update};

// One module per golden model (`trained`, `gd`, `stack`, `looped`: the names of `dualform_protocol::Model`) and
// `tasks` (golden tasks), written by build.rs with the build-time helper `dualform-embed`.
include!(concat!(env!("OUT_DIR"), "/data.rs"));

// `BOARD` and `RAM_ORIGIN`, written by build.rs from the board's entry in `dualform_protocol::BOARDS`.
include!(concat!(env!("OUT_DIR"), "/board.rs"));

pub use tasks::{CTX, CTX0, E, N, QUERY, QUERY0, TASKS, Y};

/// The single-layer model type: one LSA head with key and value size E.
pub type Model = Layer<f32, E, E, E, 1>;

/// The golden models, one per entry of `dualform_protocol::Model::ALL`.
pub const MODEL_COUNT: usize = dualform_protocol::Model::ALL.len();

/// One embedded golden model: what its module holds, by reference.
pub struct Embedded {
    /// Which model of the list.
    pub model: dualform_protocol::Model,
    /// Its layers as trained (`W_Q, W_K, W_V, P`), for a single layer (empty for a scheduled model, which runs its
    /// merged heads only).
    pub weights: &'static [Model],
    /// Its layers merged at build time.
    pub heads: &'static [MergedHead<f32, E>],
    /// The layer of each application.
    pub schedule: &'static [usize],
    /// Its update rule.
    pub update: Update<f32>,
    /// SHA-256 of its weight file.
    pub sha256: &'static str,
}

// `MODELS`, the table of every embedded model, written by build.rs.
include!(concat!(env!("OUT_DIR"), "/models.rs"));

/// The golden program's per-task work (see `main.rs`); in the library so the measurement binary can call it too.
pub mod golden {
    use super::{gd, CTX, E, MODELS, MODEL_COUNT, N, QUERY, Y};
    use dualform::{lsa_associative, prediction, LayerCache, Mask, MergedHead, StreamingContext, Update};
    use dualform_protocol::{Kernel, Kind, Line};

    fn report(task: usize, kind: Kind, v: f32) {
        Line::Pred { task, kind, bits: v.to_bits() }.emit();
    }

    /// The full layer's prediction for the query (all tokens updated, as the layer defines).
    #[inline(never)]
    fn full(model: &super::Model, task: usize) -> Result<f32, dualform::Error> {
        let mut ctx = CTX[task];
        let mut query = QUERY[task];
        lsa_associative(model, Mask::Full, &Update::residual(), &mut ctx, &mut query)?;
        Ok(prediction::<f32, E, 1>(&query)[0])
    }

    /// Merged heads applied to every token in `schedule` order with rule `upd` (`C = B G A` per application, from
    /// heads merged at build time): the query's prediction. One head applied once is the full single layer.
    #[inline(never)]
    pub fn scheduled(
        heads: &[MergedHead<f32, E>],
        schedule: &[usize],
        upd: &Update<f32>,
        task: usize,
    ) -> Result<f32, dualform::Error> {
        let mut ctx = CTX[task];
        let mut query = QUERY[task];
        let mut cache = LayerCache::zeros();
        MergedHead::run_schedule(heads, schedule, upd, &mut ctx, &mut query, &mut cache)
    }

    /// The streaming learner (the GD layer over a window of N pairs) fed one pair at a time.
    #[inline(never)]
    fn stream(task: usize) -> Result<(), dualform::Error> {
        let mut stream = StreamingContext::<f32, E, E, E, 1, N>::new(&gd::WEIGHTS[0], 0);
        let mut x = [0.0f32; { E - 1 }];
        x.copy_from_slice(&QUERY[task][..E - 1]);
        for (k, token) in CTX[task].iter().enumerate() {
            stream.push(*token)?;
            let p = stream.predict::<{ E - 1 }, 1>(&x)[0];
            Line::Stream { task, pairs: k + 1, bits: p.to_bits() }.emit();
        }
        Ok(())
    }

    /// Runs one golden task: every model of [`MODELS`](super::MODELS) predicts the query (a single layer with each of
    /// its kernels), every prediction is printed, then the streaming learner's; returns each model's squared error
    /// / 2 (a single layer's from its full-layer prediction).
    #[inline(never)]
    pub fn task(task: usize) -> Result<[f32; MODEL_COUNT], dualform::Error> {
        let mut losses = [0.0f32; MODEL_COUNT];
        for (m, loss) in MODELS.iter().zip(losses.iter_mut()) {
            let mut first = None;
            for &kernel in m.model.kernels() {
                let p = match kernel {
                    Kernel::Full => full(&m.weights[0], task)?,
                    Kernel::Merged => m.heads[0].predict_scalar(&CTX[task], &QUERY[task]),
                    Kernel::Layer => scheduled(m.heads, &[0], &Update::residual(), task)?,
                    Kernel::Scheduled => scheduled(m.heads, m.schedule, &m.update, task)?,
                };
                report(task, Kind { model: m.model, kernel }, p);
                first.get_or_insert(p);
            }
            let p = first.unwrap_or(f32::NAN);
            *loss = 0.5 * (p - Y[task]) * (p - Y[task]);
        }
        stream(task)?;
        Ok(losses)
    }
}

/// Ends the program with `code` (QEMU: through semihosting; a board: a breakpoint, then a halt).
pub fn exit(code: i32) -> ! {
    #[cfg(feature = "qemu")]
    semihosting::process::exit(code);
    #[cfg(not(feature = "qemu"))]
    {
        let _ = code;
        arch::halt()
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // The location only: formatting the message would pull `core::fmt` (several KiB) into flash.
    match info.location() {
        Some(l) => defmt::error!("panic at {=str}:{=u32}", l.file(), l.line()),
        None => defmt::error!("panic"),
    }
    exit(101)
}

/// A fault with the stack pointer this close to the floor (or below it) is reported as a stack overflow.
const OVERFLOW_MARGIN: usize = 256;

// The core's architecture: its fault entry and handler, the stack guard, the stack pointer, the entry attribute.
#[cfg(target_arch = "arm")]
#[path = "arm.rs"]
mod arch;
#[cfg(target_arch = "riscv32")]
#[path = "riscv.rs"]
mod arch;
pub use arch::{entry, guard_stack};

const PAINT: u32 = 0x5AA5_C33C;

unsafe extern "C" {
    /// Top of the stack (the runtime's symbol; the stack runs from here down to the RAM origin: flip-link's layout
    /// on Cortex-M, the memory map's on RISC-V).
    static _stack_start: u32;
}

fn stack_top() -> usize {
    // Only the address of the linker symbol is taken, never its contents.
    core::ptr::addr_of!(_stack_start) as usize
}

/// How far below the stack pointer [`paint_stack`] paints: far more than any workload here uses.
const PAINT_SPAN: usize = 16 * 1024;

/// Fills the 16 KiB of unused stack below the current stack pointer (less a 256-byte margin for the current frame)
/// with a pattern and returns the lowest painted address; [`stack_peak`] later finds how far down the stack reached.
#[inline(never)]
pub fn paint_stack() -> usize {
    let sp = arch::sp();
    let floor = sp.saturating_sub(PAINT_SPAN).max(RAM_ORIGIN);
    let mut p = floor;
    while p + 4 <= sp.saturating_sub(256) {
        // SAFETY: [floor, sp - 256) is stack memory below every live frame (flip-link places the stack at the bottom
        // of RAM, so nothing but the stack lives between the RAM origin and the stack pointer), word aligned, unused.
        unsafe { core::ptr::write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
    floor
}

/// The current depth of the stack (top of the stack minus the stack pointer), in bytes.
pub fn stack_depth() -> usize {
    stack_top() - arch::sp()
}

/// The deepest stack use, in bytes from the top of the stack, since [`paint_stack`] returned `floor`.
pub fn stack_peak(floor: usize) -> usize {
    let mut p = floor;
    // SAFETY: reads words of the region painted by `paint_stack`, word aligned, below the current frame.
    while p < stack_top() && unsafe { core::ptr::read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    stack_top() - p
}
