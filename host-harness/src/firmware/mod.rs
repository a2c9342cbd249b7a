//! The host side of the firmware example, one concern per file: [`cargo`] builds it, [`qemu`] runs it under QEMU
//! (`mps2-an386`, semihosting) and decodes its defmt stream, [`golden_check`] recomputes every golden value with the
//! core on the host and compares the f32 bits, [`measure`] counts executed instructions and estimates cycles, and
//! [`report`] is `dualform firmware-report`. The lines the device prints are defined once, in the
//! `dualform-protocol` crate that the firmware also uses.

pub mod cargo;
pub mod golden;
pub mod golden_check;
pub mod measure;
pub mod qemu;
pub mod report;

/// The token width (`d + 1`, d = 10) of the models the firmware embeds (`firmware-example/data`): the host side
/// of the golden check runs the core's fixed-size kernels at this width.
pub const DEVICE_E: usize = 11;

/// The target of the firmware.
pub const TARGET: &str = "thumbv7em-none-eabihf";
