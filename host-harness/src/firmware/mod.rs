//! The host side of the firmware example, one concern per file: [`cargo`] builds it, [`qemu`] runs it under QEMU
//! (the board's machine, semihosting) and decodes its defmt stream, [`golden_check`] recomputes every golden value with the
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

pub use dualform_protocol::{Board, StackGuard, BOARDS};

/// The board the firmware builds for when none is named: QEMU's Cortex-M4F (`mps2-an386`).
pub fn default_board() -> &'static Board {
    // The list has this entry (a unit test of the protocol crate checks it).
    Board::named(dualform_protocol::boards::DEFAULT).unwrap_or(&BOARDS[0])
}

/// The emulated boards named in `list` (comma-separated names, or `all`), in the order of [`BOARDS`]; an unknown
/// or real-only board is a usage error naming the boards there are.
pub fn emulated_boards(list: &str) -> Result<Vec<&'static Board>, crate::HarnessError> {
    let known = || Board::emulated().map(|b| b.name).collect::<Vec<_>>().join(", ");
    if list == "all" {
        return Ok(Board::emulated().collect());
    }
    let mut boards = Vec::new();
    for name in list.split(',').map(str::trim) {
        match Board::named(name) {
            Some(b) if b.qemu.is_some() => boards.push(b),
            Some(_) => {
                return Err(crate::HarnessError::Usage(format!(
                    "board {name} is not emulated (QEMU boards: {}, or all)",
                    known()
                )))
            }
            None => {
                return Err(crate::HarnessError::Usage(format!(
                    "unknown board {name} (QEMU boards: {}, or all)",
                    known()
                )))
            }
        }
    }
    boards.sort_by_key(|b| BOARDS.iter().position(|x| x == *b));
    boards.dedup();
    Ok(boards)
}
