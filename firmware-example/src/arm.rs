//! Cortex-M: the hard fault entry and handler, the stack guard (`dualform_protocol::StackGuard`), the stack pointer
//! and cortex-m-rt's entry attribute.

use super::{exit, OVERFLOW_MARGIN, RAM_ORIGIN};
use cortex_m_rt::exception;

pub use cortex_m_rt::entry;

/// The main stack pointer.
pub fn sp() -> usize {
    cortex_m::register::msp::read() as usize
}

/// Stops a board's program: a breakpoint, then a halt.
#[cfg(not(feature = "qemu"))]
pub fn halt() -> ! {
    loop {
        cortex_m::asm::bkpt();
    }
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
    top = sym super::_stack_start,
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
