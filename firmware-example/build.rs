//! Puts `memory.x` and the link arguments in place, and embeds the models and golden tasks as constants in flash
//! with the build-time helper `dualform-embed` (which validates every file with the shared loader, merges each
//! layer's head with the core on the host, and writes one module per file into `data.rs`).
//!
//! Inputs (each a `.safetensors` file; paths from environment variables, committed defaults in `data/`):
//! - `DUALFORM_WEIGHTS` (default `data/trained.safetensors`): the trained single-layer LSA (`dualform-lsa-v1`,
//!   one layer applied once), module `trained`;
//! - `DUALFORM_GD_WEIGHTS` (default `data/gd.safetensors`): the GD construction, same layout, module `gd`;
//! - `DUALFORM_STACK` (default `data/stack.safetensors`): a stack of K trained layers (any K, schedule and update
//!   rule), module `stack`;
//! - `DUALFORM_LOOPED` (default `data/looped.safetensors`): one trained layer applied K times, module `looped`;
//! - `DUALFORM_GOLDEN` (default `data/golden.safetensors`): golden tasks (`dualform-golden-v1`), module `tasks`.
//!
//! A file that the loader refuses, a single layer that is not one layer applied once, or a width E that differs
//! between the files stops the build with one line naming the file.

use dualform_embed::{Embed, EmbedError};
use std::path::PathBuf;
use std::{env, fs};

fn fail(msg: String) -> ! {
    eprintln!("error: {msg}");
    std::process::exit(1)
}

fn input(var: &str, default: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let path = env::var(var).map(PathBuf::from).unwrap_or_else(|_| manifest.join(default));
    println!("cargo:rerun-if-changed={}", path.display());
    path
}

fn embed() -> Result<Embed, EmbedError> {
    let mut out = Embed::new();
    let golden = input("DUALFORM_GOLDEN", "data/golden.safetensors");
    let tasks = out.golden("tasks", &golden)?;
    for (module, var, default, single) in [
        ("trained", "DUALFORM_WEIGHTS", "data/trained.safetensors", true),
        ("gd", "DUALFORM_GD_WEIGHTS", "data/gd.safetensors", true),
        ("stack", "DUALFORM_STACK", "data/stack.safetensors", false),
        ("looped", "DUALFORM_LOOPED", "data/looped.safetensors", false),
    ] {
        let path = input(var, default);
        let m = out.lsa(module, &path)?;
        if single && (m.layers, m.applications) != (1, 1) {
            let (l, a) = (m.layers, m.applications);
            return Err(EmbedError(format!(
                "{}: {l} layer(s) applied {a} time(s); the golden run's single layer is one layer applied once",
                path.display()
            )));
        }
        if m.e != tasks.e {
            return Err(EmbedError(format!(
                "{}: E = {}, but the golden tasks {} have E = {}",
                path.display(),
                m.e,
                golden.display(),
                tasks.e
            )));
        }
    }
    Ok(out)
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    let memory = if env::var_os("CARGO_FEATURE_BOARD").is_some() { "memory-board.x" } else { "memory-qemu.x" };
    println!("cargo:rerun-if-changed={memory}");
    let text = fs::read_to_string(memory).unwrap_or_else(|e| fail(format!("cannot read {memory}: {e}")));
    fs::write(out.join("memory.x"), text).unwrap_or_else(|e| fail(format!("cannot write memory.x: {e}")));
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=--nmagic");
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
    let data = embed().unwrap_or_else(|e| fail(e.to_string()));
    data.write(&out.join("data.rs")).unwrap_or_else(|e| fail(e.to_string()));
}
