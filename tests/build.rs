//! Generates `models.rs` with the build-time helper from the firmware example's committed files, so that
//! `embed.rs` compiles and runs the generated code on the host.

use std::path::PathBuf;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let data = root.join("../firmware-example/data");
    let mut out = dualform_embed::Embed::new();
    let added = out
        .golden("tasks", &data.join("golden.safetensors"))
        .map(|_| ())
        .and_then(|()| out.lsa("trained", &data.join("trained.safetensors")).map(|_| ()))
        .and_then(|()| out.lsa("stack", &data.join("stack.safetensors")).map(|_| ()))
        .and_then(|()| out.lsa("looped", &data.join("looped.safetensors")).map(|_| ()));
    if let Err(e) = added {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
    for input in out.inputs() {
        println!("cargo:rerun-if-changed={}", input.display());
    }
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("models.rs");
    if let Err(e) = out.write(&dest) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
