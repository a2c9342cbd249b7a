//! Generates `models.rs` with the build-time helper from the firmware example's committed files, so that
//! `embed.rs` compiles and runs the generated code on the host.

use dualform_embed::{Embed, EmbedError};
use std::path::PathBuf;

fn embed(data: &std::path::Path) -> Result<Embed, EmbedError> {
    let mut out = Embed::new();
    out.golden("tasks", &data.join("golden.safetensors"))?;
    for module in ["trained", "stack", "looped"] {
        out.lsa(module, &data.join(format!("{module}.safetensors")))?;
    }
    Ok(out)
}

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default());
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("models.rs");
    let written = embed(&root.join("../firmware-example/data")).and_then(|out| {
        for input in out.inputs() {
            println!("cargo:rerun-if-changed={}", input.display());
        }
        out.write(&dest)
    });
    if let Err(e) = written {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
