//! Running a firmware ELF under QEMU `mps2-an386` with semihosting, and decoding its defmt stream with
//! `defmt-decoder` (pinned by the workspace's lockfile).

use crate::HarnessError;
use std::path::Path;
use std::process::Command;

/// Runs an ELF under QEMU `mps2-an386` with semihosting, killed after `timeout_s` seconds; `extra` adds QEMU
/// arguments (logging). Returns the program's semihosting output and its exit code.
pub fn run_qemu(elf: &Path, timeout_s: u32, extra: &[&str]) -> Result<(Vec<u8>, i32), HarnessError> {
    let qemu = "qemu-system-arm";
    let out = Command::new("timeout")
        .arg(format!("{timeout_s}"))
        .arg(qemu)
        .args(["-machine", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| HarnessError::Io(format!("cannot run timeout/{qemu}: {e}")))?;
    let code = out.status.code().unwrap_or(-1);
    if code == 127 {
        return Err(HarnessError::Io(format!(
            "{qemu} not found: install it (Debian: apt-get install qemu-system-arm)"
        )));
    }
    if code == 124 {
        return Err(HarnessError::Io(format!("{qemu} did not finish within {timeout_s} s")));
    }
    Ok((out.stdout, code))
}

/// Decodes a defmt byte stream with the table of `elf`; error-level frames are prefixed with `ERROR `.
pub fn decode(elf: &Path, bytes: &[u8]) -> Result<Vec<String>, HarnessError> {
    let elf_bytes = std::fs::read(elf).map_err(|e| HarnessError::Io(format!("reading {}: {e}", elf.display())))?;
    let table = defmt_decoder::Table::parse(&elf_bytes)
        .map_err(|e| HarnessError::Io(format!("defmt table of {}: {e}", elf.display())))?
        .ok_or_else(|| HarnessError::Io(format!("{} has no defmt table", elf.display())))?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let error = frame.level() == Some(defmt_parser::Level::Error);
                let text = frame.display_message().to_string();
                lines.push(if error { format!("ERROR {text}") } else { text });
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                return Err(HarnessError::Io("malformed defmt frame in the firmware output".into()))
            }
        }
    }
    Ok(lines)
}
