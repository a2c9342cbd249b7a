//! Running a firmware ELF under QEMU (the board's machine) with semihosting, and decoding its defmt stream with
//! `defmt-print` (the decoder of the firmware's own runner).

use super::Board;
use crate::HarnessError;
use std::path::Path;
use std::process::Command;

/// Runs an ELF under QEMU as `board` (its QEMU program and machine) with semihosting, killed after `timeout_s`
/// seconds; `extra` adds QEMU arguments (logging). Returns the program's semihosting output and its exit code.
pub fn run_qemu(board: &Board, elf: &Path, timeout_s: u32, extra: &[&str]) -> Result<(Vec<u8>, i32), HarnessError> {
    let Some(qemu) = board.qemu else {
        return Err(HarnessError::Usage(format!("board {} is not emulated by QEMU", board.name)));
    };
    let out = Command::new("timeout")
        .arg(format!("{timeout_s}"))
        .arg(qemu)
        .args(["-machine", board.name, "-nographic", "-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| HarnessError::Io(format!("cannot run timeout/{qemu}: {e}")))?;
    let code = out.status.code().unwrap_or(-1);
    if code == 127 {
        return Err(HarnessError::Io(format!("{qemu} not found: install it (Debian: apt-get install {qemu})")));
    }
    if code == 124 {
        return Err(HarnessError::Io(format!("{qemu} did not finish within {timeout_s} s")));
    }
    Ok((out.stdout, code))
}

/// Decodes a defmt byte stream with the table of `elf` by `defmt-print --json` (the decoder the firmware's own
/// `cargo run` uses; `cargo install defmt-print --locked`); error-level frames are prefixed with `ERROR `. A skipped
/// (malformed) frame is an error.
pub fn decode(elf: &Path, bytes: &[u8]) -> Result<Vec<String>, HarnessError> {
    use std::io::Write;
    use std::process::Stdio;
    let tool = "defmt-print";
    let mut child = Command::new(tool)
        .args(["--json", "--show-skipped-frames", "-e"])
        .arg(elf)
        .arg("stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                HarnessError::Io(format!("{tool} not found: install it (cargo install {tool} --locked)"))
            }
            _ => HarnessError::Io(format!("cannot run {tool}: {e}")),
        })?;
    // Written from another thread while this one collects the output, so neither pipe can fill up and block.
    let mut stdin = child.stdin.take().ok_or_else(|| HarnessError::Io(format!("{tool}: no stdin")))?;
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| HarnessError::Io(format!("{tool}: {e}")))?;
    writer
        .join()
        .map_err(|_| HarnessError::Io(format!("{tool}: the writer thread panicked")))?
        .map_err(|e| HarnessError::Io(format!("{tool}: writing the firmware output: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(HarnessError::Io(format!("{tool} failed on {}: {}", elf.display(), err.trim())));
    }
    parse_json_frames(&String::from_utf8_lossy(&out.stdout))
}

/// The messages of `defmt-print --json` output (one JSON object per line after the schema header), error-level
/// ones prefixed with `ERROR `; any other line (a skipped frame, a decoder message) is an error.
pub fn parse_json_frames(text: &str) -> Result<Vec<String>, HarnessError> {
    let mut lines = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let frame: serde_json::Value = serde_json::from_str(line)
            .map_err(|_| HarnessError::Io(format!("undecodable defmt output from the firmware: {line}")))?;
        if frame.get("schema_version").is_some() {
            continue;
        }
        let text = frame
            .get("data")
            .and_then(|d| d.as_str())
            .ok_or_else(|| HarnessError::Io(format!("a defmt frame without a message: {line}")))?;
        let error = frame.get("level").and_then(|l| l.as_str()) == Some("ERROR");
        lines.push(if error { format!("ERROR {text}") } else { text.to_string() });
    }
    Ok(lines)
}
