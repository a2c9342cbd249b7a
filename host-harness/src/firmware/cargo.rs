//! Building the firmware crate from the host: release builds with other weights or flags, each binary copied to a
//! folder of its own, and the outer cargo's settings kept out.

use super::{default_board, Board};
use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds binary `bin` of the firmware crate in `dir` (release) for `board`; `env` adds variables such as
/// `DUALFORM_WEIGHTS`. Another board than the default builds with `DUALFORM_BOARD`, its target and `RUSTFLAGS="-C
/// target-cpu=..."` (unless `env` sets `RUSTFLAGS` itself). Returns the path of a copy of the ELF that no later build overwrites: `dir/target/builds/KEY/bin`, KEY naming
/// the variables (`default` without any).
///
/// Variables the firmware's build script reads (`DUALFORM_*`: weights, golden tasks) change one crate only, so those
/// builds share `dir/target` with the default build and its compiled dependencies (a new set of weights costs a few
/// seconds, not a build from scratch). Any other variable (`RUSTFLAGS`) changes how every crate is compiled, so each
/// set gets a target folder of its own under `dir/target/flags/`. Builds in one folder take turns through
/// [`lock`], so a build and the copy of its ELF are never interleaved with another build's.
pub fn build(dir: &Path, board: &Board, bin: &str, env: &[(&str, &str)]) -> Result<PathBuf, HarnessError> {
    // Absolute: cargo runs inside `dir` and would resolve a relative target folder against it.
    let dir = &std::path::absolute(dir).map_err(|e| HarnessError::Io(format!("{}: {e}", dir.display())))?;
    if !dir.join("Cargo.toml").is_file() {
        return Err(HarnessError::Usage(format!("{} is not the firmware crate (no Cargo.toml)", dir.display())));
    }
    let cpu = format!("-C target-cpu={}", board.cpu);
    let mut env = env.to_vec();
    if board != default_board() {
        env.push(("DUALFORM_BOARD", board.name));
        if !env.iter().any(|(k, _)| *k == "RUSTFLAGS") {
            env.push(("RUSTFLAGS", &cpu));
        }
    }
    let (inputs, flags): (Vec<_>, Vec<_>) = env.iter().partition(|(k, _)| k.starts_with("DUALFORM_"));
    let target_dir =
        if flags.is_empty() { dir.join("target") } else { dir.join("target").join("flags").join(key(&flags)) };
    let _turn = lock(&target_dir)?;
    let mut cmd = cargo_in(dir);
    cmd.args(["build", "--release", "--target", board.target, "--bin", bin]).env("CARGO_TARGET_DIR", &target_dir);
    for (k, v) in &env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| HarnessError::Io(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let reason = err.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join(" | ");
        return Err(HarnessError::Io(format!("building the firmware ({bin}) failed: {reason}")));
    }
    let built = target_dir.join(board.target).join("release").join(bin);
    let copy_dir = target_dir.join("builds").join(if inputs.is_empty() { "default".into() } else { key(&inputs) });
    let copy = copy_dir.join(bin);
    let io = |e: std::io::Error| HarnessError::Io(format!("{}: {e}", copy.display()));
    std::fs::create_dir_all(&copy_dir).map_err(io)?;
    std::fs::copy(&built, &copy).map_err(io)?;
    Ok(copy)
}

/// Cargo (the one running this process when there is one) in folder `dir`, without the outer cargo's settings: when
/// this runs inside `cargo test`, its flags, target and wrapper must not leak into a firmware build.
pub fn cargo_in(dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir);
    for var in ["RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    cmd
}

/// Waits for, then holds, the turn to build in the firmware target folder `target_dir` (created if missing) until
/// the returned file is dropped: an exclusive lock on `target_dir/dualform-build.lock`, across threads and processes.
/// Anything that runs cargo in that folder and then reads the ELF it built holds it in between.
pub fn lock(target_dir: &Path) -> Result<std::fs::File, HarnessError> {
    let path = target_dir.join("dualform-build.lock");
    let io = |e: std::io::Error| HarnessError::Io(format!("{}: {e}", path.display()));
    std::fs::create_dir_all(target_dir).map_err(io)?;
    let file = std::fs::File::create(&path).map_err(io)?;
    file.lock().map_err(io)?;
    Ok(file)
}

/// A short name for a set of variables: the first 8 bytes of the SHA-256 of `K=V;...`, in hex.
fn key(vars: &[&(&str, &str)]) -> String {
    use sha2::Digest;
    let text: String = vars.iter().map(|(k, v)| format!("{k}={v};")).collect();
    sha2::Sha256::digest(text.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}
