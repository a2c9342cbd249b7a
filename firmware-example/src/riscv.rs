//! RISC-V (32-bit, machine mode): the trap entry and handler, the stack guard, the stack pointer and riscv-rt's entry
//! attribute.

use super::{exit, OVERFLOW_MARGIN, RAM_ORIGIN};

pub use riscv_rt::entry;

/// The stack pointer.
pub fn sp() -> usize {
    let sp: usize;
    // SAFETY: reads a register, touches no memory.
    unsafe { core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Stops a board's program: wait for interrupts, forever.
#[cfg(not(feature = "qemu"))]
pub fn halt() -> ! {
    loop {
        riscv::asm::wfi();
    }
}

/// Nothing to set: the memory map (the build script's `memory.x`) puts the stack at the bottom of RAM, growing
/// down to the RAM origin, below which the addresses are unmapped and an access faults. (Physical memory protection
/// could guard a floor inside RAM; it is not needed here.)
pub fn guard_stack() {}

// The trap entry, replacing riscv-rt's (which saves registers on the current stack, and so traps again forever when
// the stack has overflowed): it passes the stack pointer at the trap to `trap` and gives that a fresh stack from the
// top of the stack region. Every trap here is a fault (no interrupts are enabled), so it never returns.
core::arch::global_asm!(
    ".section .trap.start, \"ax\"",
    ".global _start_trap",
    ".balign 4",
    "_start_trap:",
    "    mv a0, sp",
    "    la sp, {top}",
    "    j {handler}",
    top = sym super::_stack_start,
    handler = sym trap,
);

/// Reports a trap and exits (code 102): a stack overflow when the stack pointer is at or below the stack's floor
/// (within [`OVERFLOW_MARGIN`] of the RAM origin, or under it), otherwise the cause (`mcause`), the faulting
/// instruction (`mepc`) and the faulting address (`mtval`).
extern "C" fn trap(sp: u32) -> ! {
    let cause = riscv::register::mcause::read().bits() as u32;
    if (sp as usize) < RAM_ORIGIN + OVERFLOW_MARGIN {
        defmt::error!(
            "hard fault: stack overflow (stack pointer {=u32:#x}, at or below the stack's floor; mcause {=u32})",
            sp,
            cause
        );
    } else {
        let pc = riscv::register::mepc::read() as u32;
        let addr = riscv::register::mtval::read() as u32;
        defmt::error!("hard fault at pc {=u32:#x} (mcause {=u32}, mtval {=u32:#x})", pc, cause, addr);
    }
    exit(102)
}
