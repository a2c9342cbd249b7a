//! Building the firmware crate from the host: release builds, variants with other weights or flags in their own
//! target folders, and the outer cargo's settings kept out.

use super::TARGET;
use crate::HarnessError;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds binary `bin` of the firmware crate in `dir` (release); `env` adds variables such as `DUALFORM_WEIGHTS`.
/// The default build goes to `dir/target`; a build with extra variables to its own folder under
/// `dir/target/variants/`, so builds with different weights never overwrite each other. Returns the ELF path.
pub fn build(dir: &Path, bin: &str, env: &[(&str, &str)]) -> Result<PathBuf, HarnessError> {
    // Absolute: cargo runs inside `dir` and would resolve a relative target folder against it.
    let dir = &std::path::absolute(dir).map_err(|e| HarnessError::Io(format!("{}: {e}", dir.display())))?;
    if !dir.join("Cargo.toml").is_file() {
        return Err(HarnessError::Usage(format!("{} is not the firmware crate (no Cargo.toml)", dir.display())));
    }
    let target_dir = if env.is_empty() {
        dir.join("target")
    } else {
        use sha2::Digest;
        let key: String = env.iter().map(|(k, v)| format!("{k}={v};")).collect();
        let hash: String = sha2::Sha256::digest(key.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
        dir.join("target").join("variants").join(hash)
    };
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--bin", bin]).current_dir(dir).env("CARGO_TARGET_DIR", &target_dir);
    // The outer cargo (when this runs inside `cargo test`) must not leak its settings into the firmware build.
    for var in ["RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| HarnessError::Io(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let reason = err.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join(" | ");
        return Err(HarnessError::Io(format!("building the firmware ({bin}) failed: {reason}")));
    }
    Ok(target_dir.join(TARGET).join("release").join(bin))
}
