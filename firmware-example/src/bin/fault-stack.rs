//! A deliberate stack overflow, to check that it faults instead of corrupting memory: flip-link puts the stack below
//! static RAM, so the overflow runs off the RAM origin into the MPU guard (`guard_stack`), and the hard fault handler
//! reports it over defmt and exits QEMU with code 102 (`hard fault: stack overflow ...`). Built and run by the host's
//! tests.
#![no_std]
#![no_main]

use core::hint::black_box;
use dualform_firmware::entry;
use dualform_firmware::exit;

/// Recurses `depth` times with a frame of more than 256 bytes that the optimiser cannot remove.
#[inline(never)]
fn deep(depth: u32) -> u32 {
    let frame = black_box([depth; 64]);
    if depth == 0 {
        return frame[0];
    }
    deep(depth - 1).wrapping_add(black_box(frame)[(depth % 64) as usize])
}

#[entry]
fn main() -> ! {
    dualform_firmware::guard_stack();
    defmt::info!("overflowing the stack");
    let v = deep(black_box(1_000_000));
    defmt::info!("returned {=u32}", v);
    exit(0)
}
