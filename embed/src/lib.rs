//! # dualform-embed
//!
//! Puts trained dualform models and golden tasks into a firmware's flash at build time. A firmware's `build.rs`
//! names each weight file and the module it becomes; every file goes through the shared loader
//! (`dualform-tensors`: header, offsets, dtypes, finite values, format, shapes, schedule) and its update rule through
//! the core's own check before one line is written, and a bad file stops the build with one line naming the file
//! and the tensor or key.
//!
//! ```no_run
//! // build.rs of a firmware that runs a trained stack
//! use std::path::{Path, PathBuf};
//! fn main() -> Result<(), dualform_embed::EmbedError> {
//!     let mut out = dualform_embed::Embed::new();
//!     out.lsa("stack", Path::new("data/stack.safetensors"))?;
//!     out.golden("tasks", Path::new("data/golden.safetensors"))?;
//!     for input in out.inputs() {
//!         println!("cargo:rerun-if-changed={}", input.display());
//!     }
//!     out.write(&PathBuf::from(std::env::var("OUT_DIR").unwrap_or_default()).join("models.rs"))
//! }
//! ```
//!
//! and in the firmware (`no_std`, no allocation; the weights stay in flash):
//!
//! ```ignore
//! include!(concat!(env!("OUT_DIR"), "/models.rs"));
//! let (mut ctx, mut query) = (tasks::CTX[0], tasks::QUERY[0]);
//! let mut cache = dualform::LayerCache::zeros();
//! let y = dualform::MergedHead::run_schedule(
//!     &stack::HEADS, &stack::SCHEDULE, &stack::UPDATE, &mut ctx, &mut query, &mut cache)?;
//! ```
//!
//! A weight file (`dualform-lsa-v1`: one layer, K distinct layers, or one layer applied K times) becomes
//! `pub mod NAME` with
//! - `E`, `LAYERS`, `APPLICATIONS`, `SHA256` (of the file);
//! - `SCHEDULE: [usize; APPLICATIONS]` (the layer of each application) and `UPDATE: Update<f32>` (damping, first
//!   written coordinate, clip);
//! - `HEADS: [MergedHead<f32, E>; LAYERS]`: each layer merged into `A = W_K^T W_Q`, `B = P W_V` here, on the host,
//!   by the core's `MergedHead::from_head` (the core's arithmetic is the same bits on every target, so the device
//!   reads what it would have computed);
//! - `WEIGHTS: [Layer<f32, E, E, E, 1>; LAYERS]`: the layers as trained (`W_Q, W_K, W_V, P`), for the kernels that
//!   take them (statics a firmware does not use are not linked).
//!
//! A golden-task file (`dualform-golden-v1`) becomes `pub mod NAME` with `E`, `N`, `TASKS`, `SHA256`, `CTX`,
//! `QUERY`, `Y`, and the first task alone as `CTX0`, `QUERY0` (so a program that needs one task links one).
//!
//! Every value is written as `f32::from_bits(..)`, exact. The same inputs give the same source byte for byte.

use dualform::{Head, MergedHead, Update};
use dualform_tensors::{GoldenFile, LsaFile};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

/// Why a file cannot be embedded: one line naming the file (and the tensor or key) or the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmbedError(pub String);

impl fmt::Display for EmbedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EmbedError {}

impl From<dualform_tensors::TensorError> for EmbedError {
    fn from(e: dualform_tensors::TensorError) -> Self {
        Self(e.to_string())
    }
}

/// What one embedded weight file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddedModel {
    /// Token width E.
    pub e: usize,
    /// Distinct layers.
    pub layers: usize,
    /// Layer applications.
    pub applications: usize,
    /// SHA-256 of the file.
    pub sha256: String,
    /// Bytes of flash the merged heads take (`LAYERS * 2 * E * E * 4`).
    pub merged_bytes: usize,
}

/// What one embedded golden-task file holds.
#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddedGolden {
    /// Token width E.
    pub e: usize,
    /// Context pairs per task.
    pub n: usize,
    /// Tasks.
    pub tasks: usize,
    /// SHA-256 of the file.
    pub sha256: String,
}

/// The generated source, module by module (see the crate docs).
#[derive(Clone, Debug, Default)]
pub struct Embed {
    code: String,
    modules: Vec<String>,
    inputs: Vec<PathBuf>,
}

/// The widths whose heads can be merged here (one instance of the core's code per width).
pub const WIDTHS: std::ops::RangeInclusive<usize> = 2..=32;

const KEYWORDS: [&str; 38] = [
    "as", "async", "await", "break", "const", "continue", "crate", "dyn", "else", "enum", "extern", "false", "fn",
    "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref", "return", "self", "static",
    "struct", "super", "trait", "true", "type", "unsafe", "use", "where", "while", "gen",
];

impl Embed {
    /// Nothing embedded yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the weight file at `path` as `pub mod module` (see the crate docs).
    pub fn lsa(&mut self, module: &str, path: &Path) -> Result<EmbeddedModel, EmbedError> {
        self.check_module(module)?;
        let file = LsaFile::read(path)?;
        let (text, info) = lsa_module(module, &path.display().to_string(), &file)?;
        self.push(module, path, text);
        Ok(info)
    }

    /// Adds the golden-task file at `path` as `pub mod module` (see the crate docs).
    pub fn golden(&mut self, module: &str, path: &Path) -> Result<EmbeddedGolden, EmbedError> {
        self.check_module(module)?;
        let file = GoldenFile::read(path)?;
        let text = golden_module(module, &path.display().to_string(), &file);
        self.push(module, path, text);
        Ok(EmbeddedGolden { e: file.e, n: file.n, tasks: file.tasks, sha256: file.sha256 })
    }

    /// The generated source.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The files read so far (for `cargo:rerun-if-changed`).
    pub fn inputs(&self) -> &[PathBuf] {
        &self.inputs
    }

    /// Writes the generated source to `path`.
    pub fn write(&self, path: &Path) -> Result<(), EmbedError> {
        std::fs::write(path, &self.code).map_err(|e| EmbedError(format!("cannot write {}: {e}", path.display())))
    }

    fn check_module(&self, module: &str) -> Result<(), EmbedError> {
        let ok_start = module.starts_with(|c: char| c.is_ascii_lowercase());
        let ok_chars = module.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !ok_start || !ok_chars || KEYWORDS.contains(&module) {
            return Err(EmbedError(format!(
                "module name {module:?}: use a lowercase Rust identifier (letters, digits, _), not a keyword"
            )));
        }
        if self.modules.iter().any(|m| m == module) {
            return Err(EmbedError(format!("module name {module:?} is used twice")));
        }
        Ok(())
    }

    fn push(&mut self, module: &str, path: &Path, text: String) {
        self.code.push_str(&text);
        self.modules.push(module.to_string());
        self.inputs.push(path.to_path_buf());
    }
}

/// `[f32::from_bits(..), ..]` of `v`.
fn f32s(v: &[f32]) -> String {
    let mut s = String::from("[");
    for x in v {
        let _ = write!(s, "f32::from_bits({:#010x}),", x.to_bits());
    }
    s.push(']');
    s
}

/// An E x E matrix from its columns (nalgebra stores columns).
fn matrix(cols: impl Iterator<Item = Vec<f32>>) -> String {
    format!("m([{}])", cols.map(|c| f32s(&c)).collect::<Vec<_>>().join(","))
}

/// The columns of a row-major E x E matrix.
fn columns(row_major: &[f32], e: usize) -> impl Iterator<Item = Vec<f32>> + '_ {
    (0..e).map(move |j| (0..e).map(|i| row_major[i * e + j]).collect())
}

/// One layer merged by the core at width E: `(A, B)` as column-major values.
fn merge<const E: usize>(mats: &[Vec<f32>; 4]) -> (Vec<f32>, Vec<f32>) {
    use dualform::nalgebra::SMatrix;
    let from_row_major = |v: &Vec<f32>| SMatrix::<f32, E, E>::from_fn(|i, j| v[i * E + j]);
    let head = Head {
        w_q: from_row_major(&mats[0]),
        w_k: from_row_major(&mats[1]),
        w_v: from_row_major(&mats[2]),
        p: from_row_major(&mats[3]),
    };
    let m = MergedHead::from_head(&head);
    (m.a.as_slice().to_vec(), m.b.as_slice().to_vec())
}

macro_rules! merge_at {
    ($e:expr, $mats:expr, $($w:literal)*) => {
        match $e {
            $($w => Some(merge::<$w>($mats)),)*
            _ => None,
        }
    };
}

/// `(A, B)` of one layer of width `e`, column-major; `None` outside [`WIDTHS`].
pub fn merged(e: usize, mats: &[Vec<f32>; 4]) -> Option<(Vec<f32>, Vec<f32>)> {
    merge_at!(e, mats, 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32)
}

const HELPER: &str = "    const fn m(cols: [[f32; E]; E]) -> SMatrix<f32, E, E> {
        SMatrix::from_array_storage(ArrayStorage(cols))
    }
";

/// The source of `pub mod module` for a weight file read from `origin` (see the crate docs).
pub fn lsa_module(module: &str, origin: &str, file: &LsaFile) -> Result<(String, EmbeddedModel), EmbedError> {
    let e = file.e;
    let update = Update { scale: file.damping, first: file.first, clip: file.clip };
    update.validate(e).map_err(|err| EmbedError(format!("{origin}: update rule: {err}")))?;
    let (layers, apps) = (file.layers.len(), file.schedule.len());
    let mut heads = Vec::new();
    let mut weights = Vec::new();
    for mats in &file.layers {
        let (a, b) = merged(e, mats).ok_or_else(|| {
            EmbedError(format!(
                "{origin}: E = {e}: heads are merged for E in {}..={} only",
                WIDTHS.start(),
                WIDTHS.end()
            ))
        })?;
        let cols = |v: &[f32]| matrix(v.chunks_exact(e).map(<[f32]>::to_vec));
        heads.push(format!("MergedHead {{ a: {}, b: {} }}", cols(&a), cols(&b)));
        let [q, k, v, p] = mats.each_ref().map(|x| matrix(columns(x, e)));
        weights.push(format!("Layer {{ heads: [Head {{ w_q: {q}, w_k: {k}, w_v: {v}, p: {p} }}] }}"));
    }
    let clip = file.clip.map_or("None".to_string(), |c| format!("Some(f32::from_bits({:#010x}))", c.to_bits()));
    let schedule: Vec<String> = file.schedule.iter().map(usize::to_string).collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        "/// `{origin}`: {layers} distinct layer(s), {apps} application(s) in the order {:?}; update rule: damping {}, \
         first written coordinate {}, clip {}.",
        file.schedule,
        file.damping,
        file.first,
        file.clip.map_or("none".to_string(), |c| c.to_string())
    );
    let _ = writeln!(s, "#[allow(dead_code, clippy::all)]\npub mod {module} {{");
    s.push_str("    use ::dualform::nalgebra::{ArrayStorage, SMatrix};\n    use ::dualform::{Head, Layer, MergedHead, Update};\n");
    let _ = writeln!(s, "    /// Token width (d + 1).\n    pub const E: usize = {e};");
    let _ = writeln!(s, "    /// Distinct layers.\n    pub const LAYERS: usize = {layers};");
    let _ = writeln!(s, "    /// Layer applications.\n    pub const APPLICATIONS: usize = {apps};");
    let _ = writeln!(s, "    /// SHA-256 of the weight file.\n    pub const SHA256: &str = \"{}\";", file.sha256);
    let _ = writeln!(
        s,
        "    /// The layer of each application.\n    pub const SCHEDULE: [usize; APPLICATIONS] = [{}];",
        schedule.join(", ")
    );
    let _ = writeln!(
        s,
        "    /// The update rule.\n    pub const UPDATE: Update<f32> = Update {{ scale: f32::from_bits({:#010x}), first: {}, clip: {clip} }};",
        file.damping.to_bits(),
        file.first
    );
    let _ = writeln!(
        s,
        "    /// Each layer merged by the core on the host (`A = W_K^T W_Q`, `B = P W_V`).\n    pub static HEADS: [MergedHead<f32, E>; LAYERS] = [{}];",
        heads.join(",")
    );
    let _ = writeln!(
        s,
        "    /// The layers as trained (`W_Q, W_K, W_V, P`).\n    pub static WEIGHTS: [Layer<f32, E, E, E, 1>; LAYERS] = [{}];",
        weights.join(",")
    );
    s.push_str(HELPER);
    s.push_str("}\n");
    let info = EmbeddedModel {
        e,
        layers,
        applications: apps,
        sha256: file.sha256.clone(),
        merged_bytes: layers * 2 * e * e * 4,
    };
    Ok((s, info))
}

/// The source of `pub mod module` for a golden-task file read from `origin` (see the crate docs).
pub fn golden_module(module: &str, origin: &str, g: &GoldenFile) -> String {
    let (e, n) = (g.e, g.n);
    let tokens = |v: &[f32]| v.chunks_exact(e).map(f32s).collect::<Vec<_>>().join(",");
    let ctxs: Vec<String> = g.ctx.chunks_exact(n * e).map(|task| format!("[{}]", tokens(task))).collect();
    let mut s = String::new();
    let _ = writeln!(s, "/// `{origin}`: {} golden tasks of {n} pairs, tokens of width {e}.", g.tasks);
    let _ = writeln!(s, "#[allow(dead_code, clippy::all)]\npub mod {module} {{");
    let _ = writeln!(s, "    /// Token width (d + 1).\n    pub const E: usize = {e};");
    let _ = writeln!(s, "    /// Context pairs per task.\n    pub const N: usize = {n};");
    let _ = writeln!(s, "    /// Golden tasks.\n    pub const TASKS: usize = {};", g.tasks);
    let _ = writeln!(s, "    /// SHA-256 of the golden-task file.\n    pub const SHA256: &str = \"{}\";", g.sha256);
    let _ = writeln!(
        s,
        "    /// Context tokens of each task.\n    pub static CTX: [[[f32; E]; N]; TASKS] = [{}];",
        ctxs.join(",")
    );
    let _ = writeln!(s, "    /// Query tokens.\n    pub static QUERY: [[f32; E]; TASKS] = [{}];", tokens(&g.query));
    let _ = writeln!(s, "    /// Query targets.\n    pub static Y: [f32; TASKS] = {};", f32s(&g.y));
    let _ = writeln!(
        s,
        "    /// The first task's context alone.\n    pub static CTX0: [[f32; E]; N] = [{}];",
        tokens(&g.ctx[..n * e])
    );
    let _ = writeln!(
        s,
        "    /// The first task's query alone.\n    pub static QUERY0: [f32; E] = {};",
        f32s(&g.query[..e])
    );
    s.push_str("}\n");
    s
}
