//! Output folders that are never left half-written: an experiment writes into a hidden partial folder beside its
//! destination and renames it into place only when every file is written.

use crate::HarnessError;
use std::path::{Path, PathBuf};

/// A partial output folder for `DIR/NAME`; dropped without [`Staged::commit`], it removes what it wrote.
pub struct Staged {
    partial: PathBuf,
    dest: PathBuf,
    created_root: Option<PathBuf>,
    done: bool,
}

impl Staged {
    /// Checks `root` (created if its parent exists) and opens `root/.NAME.partial-PID`.
    pub fn new(root: &Path, name: &str) -> Result<Self, HarnessError> {
        let mut created_root = None;
        if root.exists() {
            if !root.is_dir() {
                return Err(HarnessError::BadOutput(format!("--out {} is not a folder", root.display())));
            }
        } else {
            let parent = root.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
            if !parent.is_dir() {
                return Err(HarnessError::BadOutput(format!(
                    "--out {}: the folder {} does not exist",
                    root.display(),
                    parent.display()
                )));
            }
            std::fs::create_dir(root)
                .map_err(|e| HarnessError::BadOutput(format!("--out {}: cannot create it: {e}", root.display())))?;
            created_root = Some(root.to_path_buf());
        }
        let partial = root.join(format!(".{name}.partial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        if let Err(e) = std::fs::create_dir(&partial) {
            if let Some(r) = &created_root {
                let _ = std::fs::remove_dir(r);
            }
            return Err(HarnessError::BadOutput(format!("--out {} is not writable: {e}", root.display())));
        }
        Ok(Self { partial, dest: root.join(name), created_root, done: false })
    }

    /// Where to write files now.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Where the files will be once committed.
    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Replaces `DIR/NAME` by the partial folder.
    pub fn commit(mut self) -> Result<PathBuf, HarnessError> {
        if self.dest.exists() {
            std::fs::remove_dir_all(&self.dest)
                .map_err(|e| HarnessError::Io(format!("removing the old {}: {e}", self.dest.display())))?;
        }
        std::fs::rename(&self.partial, &self.dest)
            .map_err(|e| HarnessError::Io(format!("moving results into {}: {e}", self.dest.display())))?;
        self.done = true;
        Ok(self.dest.clone())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.partial);
            if let Some(r) = &self.created_root {
                let _ = std::fs::remove_dir(r);
            }
        }
    }
}

/// Writes `text` to `path`, naming the file on error.
pub fn write(path: &Path, text: &str) -> Result<(), HarnessError> {
    std::fs::write(path, text).map_err(|e| HarnessError::Io(format!("writing {}: {e}", path.display())))
}
