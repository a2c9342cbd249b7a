//! A deliberate panic, to check the panic path: an index out of range reports its location over defmt and exits
//! QEMU with code 101 (`panic at src/bin/fault-index.rs:LINE`). Built and run by the host's tests.
#![no_std]
#![no_main]

use core::hint::black_box;
use dualform_firmware::entry;
use dualform_firmware::exit;

#[entry]
fn main() -> ! {
    dualform_firmware::guard_stack();
    let table = [1u32, 2, 3, 4];
    defmt::info!("indexing out of range");
    let i = black_box(7usize);
    defmt::info!("read {=u32}", table[i]); // the panic's line
    exit(0)
}
