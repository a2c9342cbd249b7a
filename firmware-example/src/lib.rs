//! Shared by the firmware binaries: the embedded weights and golden tasks, the exit path, fault handlers, and stack
//! painting for the peak-stack measurement.
#![no_std]

#[cfg(all(feature = "qemu", feature = "board"))]
compile_error!("choose one of the features `qemu` (default) and `board` (use --no-default-features)");

#[cfg(feature = "qemu")]
use defmt_semihosting as _;

#[cfg(feature = "board")]
use defmt_rtt as _;

use cortex_m_rt::exception;
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
        loop {
            cortex_m::asm::bkpt();
        }
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

// The HardFault entry, in assembly because it may run with the stack pointer outside RAM (a stack overflow under
// flip-link): it passes the faulting stack pointer to `hard_fault` and gives that a fresh stack from the top of the
// stack region. (cortex-m-rt's own entry would run the Rust handler on the broken stack.) A register branch rather
// than `b`, whose 16-bit form on ARMv6-M reaches only 2 KiB.
core::arch::global_asm!(
    ".section .HardFault.user, \"ax\"",
    ".global HardFault",
    ".type HardFault, %function",
    ".thumb_func",
    "HardFault:",
    "    mrs r0, MSP",
    "    ldr r1, ={top}",
    "    msr MSP, r1",
    "    ldr r1, ={handler}",
    "    bx r1",
    top = sym _stack_start,
    handler = sym hard_fault,
);

/// Reports a hard fault and exits (code 102). `sp` is the stack pointer at the fault: at or below the stack's floor
/// (within [`OVERFLOW_MARGIN`] of the RAM origin, or under it) it was a stack overflow, and the exception frame may
/// never have been written, so only `sp` is reported; otherwise the faulting instruction's address is read from the
/// frame.
extern "C" fn hard_fault(sp: u32) -> ! {
    if (sp as usize) < RAM_ORIGIN + OVERFLOW_MARGIN {
        defmt::error!("hard fault: stack overflow (stack pointer {=u32:#x}, at or below the stack's floor)", sp);
    } else {
        // The frame's sixth word is the return address (the faulting pc); it is inside RAM here.
        let pc = unsafe { core::ptr::read_volatile((sp as usize + 24) as *const u32) };
        defmt::error!("hard fault at pc {=u32:#x}", pc);
    }
    exit(102)
}

/// A fault with the stack pointer this close to the floor (or below it) is reported as a stack overflow.
const OVERFLOW_MARGIN: usize = 256;

/// Bytes below the RAM origin that the MPU guard covers: 1 MiB, more than any stack frame, because a frame's stores
/// need not touch every address (a function that reserves 512 bytes and writes only the lowest 256 steps over a
/// 32-byte guard; found with the `fault-stack` binary).
#[cfg(dualform_guard = "mpu")]
const STACK_GUARD: usize = 1 << 20;

/// Makes the stack's floor fault, with the board's mechanism (`dualform_protocol::StackGuard`). flip-link places
/// the stack below static RAM, growing down to the RAM origin, so an overflow leaves RAM instead of overwriting data;
/// on a microcontroller the addresses below RAM usually fault, but QEMU's MPS2 boards map them to a reserved region
/// that ignores writes.
///
/// ARMv7-M (M3, M4F, M7): one MPU region (no access, never executed) over the 1 MiB below the RAM origin; the rest
/// of memory keeps its default map (PRIVDEFENA). (On the STM32F411 that range holds the system memory and option
/// bytes, which this program never reads.) ARMv8-M (M33, M55): the main stack limit register at the RAM origin, so a
/// push below it faults before it is written. ARMv6-M (M0): no MPU on the nRF51 and no stack limit register:
/// nothing to set; the micro:bit's addresses below RAM are unmapped and fault on their own.
pub fn guard_stack() {
    #[cfg(dualform_guard = "mpu")]
    {
        // SAFETY: only this function configures the MPU, once at start-up, before anything relies on the memory map.
        let mpu = unsafe { &*cortex_m::peripheral::MPU::PTR };
        let (base, size_log2) = ((RAM_ORIGIN - STACK_GUARD) as u32, STACK_GUARD.trailing_zeros());
        // RASR: XN (bit 28), AP = 000 (no access, bits 24..26), SIZE = log2(bytes) - 1 (bits 1..5), ENABLE (bit 0).
        let rasr = (1 << 28) | ((size_log2 - 1) << 1) | 1;
        unsafe {
            mpu.rnr.write(0);
            mpu.rbar.write(base);
            mpu.rasr.write(rasr);
            // CTRL: PRIVDEFENA (bit 2) | ENABLE (bit 0).
            mpu.ctrl.write(0b101);
        }
    }
    // SAFETY: the limit is the floor of the stack region, below every frame; only this function sets it, at start-up.
    #[cfg(dualform_guard = "msplim")]
    unsafe {
        cortex_m::register::msplim::write(RAM_ORIGIN as u32)
    };
    cortex_m::asm::dsb();
    cortex_m::asm::isb();
}

#[exception]
unsafe fn DefaultHandler(irq: i16) {
    defmt::error!("unexpected exception {=i16}", irq);
    exit(103)
}

const PAINT: u32 = 0x5AA5_C33C;

unsafe extern "C" {
    /// Top of the stack (cortex-m-rt's symbol; with flip-link the stack runs from here down to the RAM origin).
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
    let sp = cortex_m::register::msp::read() as usize;
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
    stack_top() - cortex_m::register::msp::read() as usize
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
