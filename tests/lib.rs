//! Shared helpers of the integration tests.

use std::path::PathBuf;

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().map(PathBuf::from).unwrap_or_default()
}

/// The firmware crate's folder.
pub fn firmware_dir() -> PathBuf {
    workspace().join("firmware-example")
}
