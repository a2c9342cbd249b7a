//! Writes the board's `memory.x` (from its entry in `dualform_protocol::BOARDS`, chosen by `DUALFORM_BOARD`; by
//! default QEMU's Cortex-M4F, or the NUCLEO-F411RE with the `board` feature) and its constants and stack guard, puts
//! the link arguments in place, and embeds the models and golden tasks as constants in flash
//! with the build-time helper `dualform-embed` (which validates every file with the shared loader, merges each
//! layer's head with the core on the host, and writes one module per file into `data.rs`).
//!
//! Inputs (each a `.safetensors` file; paths from environment variables, committed defaults in `data/`): every
//! model of the golden run's list (`dualform_protocol::Model::ALL`: its file in `data/` and the variable that names
//! another, for example `DUALFORM_WEIGHTS` for the trained single layer), one module each named after the model,
//! and the table `MODELS` of them all; and `DUALFORM_GOLDEN` (default `data/golden.safetensors`): golden tasks
//! (`dualform-golden-v1`), module `tasks`.
//!
//! A file that the loader refuses, a single layer that is not one layer applied once, or a width E that differs
//! between the files stops the build with one line naming the file.

use dualform_embed::{Embed, EmbedError};
use dualform_protocol::{boards, Board, Model, BOARDS};
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

/// The embedded data, and the source of the table `MODELS` (one entry per model of the list, in its order).
fn embed() -> Result<(Embed, String), EmbedError> {
    let mut out = Embed::new();
    let golden = input("DUALFORM_GOLDEN", "data/golden.safetensors");
    let tasks = out.golden("tasks", &golden)?;
    let mut table = String::from(
        "/// Every golden model, in the order of `dualform_protocol::Model::ALL`.\n\
         pub static MODELS: [Embedded; MODEL_COUNT] = [\n",
    );
    for model in Model::ALL {
        let (file, var) = model.source();
        let path = input(var, &format!("data/{file}"));
        let module = model.as_str();
        let m = out.lsa(module, &path)?;
        if model.single() && (m.layers, m.applications) != (1, 1) {
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
        table.push_str(&format!("    Embedded {{ model: ::dualform_protocol::Model::{model:?}, "));
        // A scheduled model runs its merged heads only: its unmerged layers stay out of the table (and of flash).
        let weights = if model.single() { format!("&{module}::WEIGHTS") } else { "&[]".to_string() };
        table.push_str(&format!("weights: {weights}, heads: &{module}::HEADS, schedule: &{module}::SCHEDULE, "));
        table.push_str(&format!("update: {module}::UPDATE, sha256: {module}::SHA256 }},\n"));
    }
    table.push_str("];\n");
    Ok((out, table))
}

/// The board to build for: `DUALFORM_BOARD`, or the feature's default (QEMU's Cortex-M4F; the NUCLEO-F411RE with
/// `board`). It must be a board of the list, and the build's target must be its target.
fn board() -> &'static Board {
    println!("cargo:rerun-if-env-changed=DUALFORM_BOARD");
    let probe = env::var_os("CARGO_FEATURE_BOARD").is_some();
    let default = if probe { boards::PROBE_DEFAULT } else { boards::DEFAULT };
    let name = env::var("DUALFORM_BOARD").unwrap_or_else(|_| default.to_string());
    let known = || BOARDS.iter().map(|b| b.name).collect::<Vec<_>>().join(", ");
    let board = Board::named(&name)
        .unwrap_or_else(|| fail(format!("DUALFORM_BOARD={name} is not a board of the list ({})", known())));
    let target = env::var("TARGET").unwrap_or_default();
    if target != board.target {
        fail(format!("board {name} ({}) builds for --target {}, not {target}", board.core, board.target));
    }
    if !probe && board.qemu.is_none() {
        fail(format!("board {name} is not emulated: build it with --no-default-features --features board"));
    }
    board
}

/// Bytes at the top of RAM for static data on RISC-V, above the stack.
const RISCV_STATIC: u32 = 1024;

/// The linker's memory map from the board's entry: cortex-m-rt's `FLASH` and `RAM` (flip-link then moves the stack
/// below static RAM); for riscv-rt, the same layout written out: the stack at the bottom of RAM, growing down to the
/// RAM origin, and static data in the top [`RISCV_STATIC`] bytes.
fn memory_x(b: &Board) -> String {
    let head = format!("/* {} ({}), from dualform_protocol::BOARDS. */\nMEMORY\n{{\n", b.name, b.core);
    let flash = format!("  FLASH : ORIGIN = {:#010x}, LENGTH = {}\n", b.flash.0, b.flash.1);
    if b.target.starts_with("riscv") {
        let stack = b.ram.1 - RISCV_STATIC;
        format!(
            "{head}{flash}  STACK : ORIGIN = {:#010x}, LENGTH = {stack}\n  RAM   : ORIGIN = {:#010x}, LENGTH = {}\n}}\n\
             REGION_ALIAS(\"REGION_TEXT\", FLASH);\nREGION_ALIAS(\"REGION_RODATA\", FLASH);\n\
             REGION_ALIAS(\"REGION_DATA\", RAM);\nREGION_ALIAS(\"REGION_BSS\", RAM);\n\
             REGION_ALIAS(\"REGION_HEAP\", RAM);\nREGION_ALIAS(\"REGION_STACK\", STACK);\n",
            b.ram.0,
            b.ram.0 + stack,
            RISCV_STATIC
        )
    } else {
        format!("{head}{flash}  RAM   : ORIGIN = {:#010x}, LENGTH = {}\n}}\n", b.ram.0, b.ram.1)
    }
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").unwrap_or_default());
    let board = board();
    fs::write(out.join("memory.x"), memory_x(board)).unwrap_or_else(|e| fail(format!("cannot write memory.x: {e}")));
    // The board's constants, and its stack guard as `cfg(dualform_guard = "mpu" | "msplim" | "none")`.
    let consts = format!(
        "/// The board this firmware was built for.\npub const BOARD: &str = {:?};\n\
         /// The origin of RAM (the floor of flip-link's stack).\npub const RAM_ORIGIN: usize = {:#x};\n",
        board.name, board.ram.0
    );
    fs::write(out.join("board.rs"), consts).unwrap_or_else(|e| fail(format!("cannot write board.rs: {e}")));
    println!("cargo::rustc-check-cfg=cfg(dualform_guard, values(\"mpu\", \"msplim\", \"none\"))");
    println!("cargo:rustc-cfg=dualform_guard=\"{}\"", board.guard.as_str());
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg=--nmagic");
    println!("cargo:rustc-link-arg=-Tlink.x");
    println!("cargo:rustc-link-arg=-Tdefmt.x");
    let (data, table) = embed().unwrap_or_else(|e| fail(e.to_string()));
    data.write(&out.join("data.rs")).unwrap_or_else(|e| fail(e.to_string()));
    fs::write(out.join("models.rs"), table).unwrap_or_else(|e| fail(format!("cannot write models.rs: {e}")));
}
