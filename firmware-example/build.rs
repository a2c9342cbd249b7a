//! Puts `memory.x` and the link arguments in place, and embeds the weights and golden tasks as constants in flash.
//!
//! Inputs (each a `.safetensors` file; paths from environment variables, committed defaults in `data/`):
//! - `DUALFORM_WEIGHTS` (default `data/trained.safetensors`): the trained single-layer LSA, tensors `w_q`, `w_k`,
//!   `w_v`, `p`, F32 `[E, E]`, row-major;
//! - `DUALFORM_GD_WEIGHTS` (default `data/gd.safetensors`): the GD construction, same layout;
//! - `DUALFORM_GOLDEN` (default `data/golden.safetensors`): tensors `ctx` `[T, N, E]`, `query` `[T, E]`, `y` `[T]`.
//!
//! Every file goes through the shared loader (`dualform-tensors`: header, offsets, dtypes, finite values,
//! metadata), then names, shapes and formats are checked here (a build error naming the file and tensor otherwise).
//! The generated `data.rs` holds every value
//! as `f32::from_bits` (exact), the sizes E, N, T, and the SHA-256 of each weight file. It also merges each layer's
//! head into `A = W_K^T W_Q`, `B = P W_V` with the core's own `MergedHead::from_head`, run here on the host: the
//! core's arithmetic is the same bits on every target, so the device reads the merged matrices from flash instead
//! of computing them into RAM.

use dualform_tensors::TensorFile;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
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

/// The validated file at `path`, or a build error naming the problem.
fn read(path: &Path) -> TensorFile {
    TensorFile::read(path).unwrap_or_else(|e| fail(e.to_string()))
}

fn f32s(v: &[f32]) -> String {
    let mut s = String::from("[");
    for x in v {
        let _ = write!(s, "f32::from_bits({:#010x}),", x.to_bits());
    }
    s.push(']');
    s
}

fn matrix(cols: &[&[f32]]) -> String {
    format!("m([{}])", cols.iter().map(|c| f32s(c)).collect::<Vec<_>>().join(","))
}

/// The merged head's Rust expression, computed by the core for width E.
fn merged<const E: usize>(mats: &[Vec<f32>]) -> String {
    use dualform::nalgebra::SMatrix;
    let from_row_major = |v: &Vec<f32>| SMatrix::<f32, E, E>::from_fn(|i, j| v[i * E + j]);
    let head = dualform::Head {
        w_q: from_row_major(&mats[0]),
        w_k: from_row_major(&mats[1]),
        w_v: from_row_major(&mats[2]),
        p: from_row_major(&mats[3]),
    };
    let m = dualform::MergedHead::from_head(&head);
    let cols = |x: &SMatrix<f32, E, E>| matrix(&x.as_slice().chunks_exact(E).collect::<Vec<_>>());
    format!("MergedHead {{ a: {}, b: {} }}", cols(&m.a), cols(&m.b))
}

/// A layer's Rust expression, plus E and the file's SHA-256, and its row-major matrices.
fn layer(path: &Path) -> (String, usize, String, Vec<Vec<f32>>) {
    let f = read(path);
    f.expect_format("dualform-lsa-v1").unwrap_or_else(|e| fail(e.to_string()));
    if f.meta("layers").is_ok_and(|l| l != "1") || f.meta("applications").is_ok_and(|a| a != "1") {
        fail(format!("{}: the golden run embeds one layer applied once", path.display()));
    }
    let e = match f.tensor("w_q").map(|t| t.shape.clone()) {
        Ok(shape) => match shape[..] {
            [r, c] if r == c && r >= 2 => r,
            _ => fail(format!("{}: w_q: shape {shape:?}, expected [E, E]", path.display())),
        },
        Err(err) => fail(err.to_string()),
    };
    let mut mats = Vec::new();
    let mut raw = Vec::new();
    for name in ["w_q", "w_k", "w_v", "p"] {
        let v = f.values(name, &[e, e]).unwrap_or_else(|err| fail(err.to_string())).to_vec();
        // Row-major on disk; nalgebra stores columns.
        let cols: Vec<String> = (0..e).map(|j| f32s(&(0..e).map(|i| v[i * e + j]).collect::<Vec<_>>())).collect();
        mats.push(format!("m([{}])", cols.join(",")));
        raw.push(v);
    }
    let expr =
        format!("Layer {{ heads: [Head {{ w_q: {}, w_k: {}, w_v: {}, p: {} }}] }}", mats[0], mats[1], mats[2], mats[3]);
    (expr, e, f.sha256.clone(), raw)
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

    let (trained_path, gd_path) =
        (input("DUALFORM_WEIGHTS", "data/trained.safetensors"), input("DUALFORM_GD_WEIGHTS", "data/gd.safetensors"));
    let (trained, e1, h1, raw_trained) = layer(&trained_path);
    let (gd, e2, h2, raw_gd) = layer(&gd_path);
    if e1 != e2 {
        fail(format!("{}: E = {e1}, but the GD weights {} have E = {e2}", trained_path.display(), gd_path.display()));
    }
    let golden = input("DUALFORM_GOLDEN", "data/golden.safetensors");
    let g = read(&golden);
    g.expect_format("dualform-golden-v1").unwrap_or_else(|e| fail(e.to_string()));
    let cs = g.tensor("ctx").unwrap_or_else(|e| fail(e.to_string())).shape.clone();
    let [t, n, e] = cs[..] else { fail(format!("{}: ctx: shape {cs:?}, expected [T, N, E]", golden.display())) };
    if e != e1 || t == 0 || n == 0 {
        fail(format!("{}: ctx: shape {cs:?} does not fit the weights' E = {e1}", golden.display()));
    }
    let get = |name: &str, shape: &[usize]| g.values(name, shape).unwrap_or_else(|err| fail(err.to_string())).to_vec();
    let (ctx, query, y) = (get("ctx", &[t, n, e]), get("query", &[t, e]), get("y", &[t]));
    let tokens = |v: &[f32]| v.chunks_exact(e).map(f32s).collect::<Vec<_>>().join(",");
    let mut code = String::new();
    let _ = writeln!(code, "/// Token width (d + 1).\npub const E: usize = {e};");
    let _ = writeln!(code, "/// Context pairs per task.\npub const N: usize = {n};");
    let _ = writeln!(code, "/// Golden tasks.\npub const TASKS: usize = {t};");
    let _ = writeln!(code, "/// SHA-256 of the trained weight file.\npub const TRAINED_SHA256: &str = \"{h1}\";");
    let _ = writeln!(code, "/// SHA-256 of the GD weight file.\npub const GD_SHA256: &str = \"{h2}\";");
    let _ = writeln!(code, "/// The trained LSA layer.\npub static TRAINED: Model = {trained};");
    let _ = writeln!(code, "/// The GD construction.\npub static GD: Model = {gd};");
    let merge = |raw: &[Vec<f32>]| match e {
        11 => merged::<11>(raw),
        _ => fail(format!("build.rs merges heads for E = 11 only (the weights have E = {e}); add E to `merged`")),
    };
    let _ = writeln!(
        code,
        "/// The trained head merged at build time.\npub static MERGED_TRAINED: MergedHead<f32, E> = {};",
        merge(&raw_trained)
    );
    let _ = writeln!(
        code,
        "/// The GD head merged at build time.\npub static MERGED_GD: MergedHead<f32, E> = {};",
        merge(&raw_gd)
    );
    let ctxs: Vec<String> = ctx.chunks_exact(n * e).map(|task| format!("[{}]", tokens(task))).collect();
    let _ = writeln!(
        code,
        "/// Context tokens of each task.\npub static CTX: [[[f32; E]; N]; TASKS] = [{}];",
        ctxs.join(",")
    );
    let _ = writeln!(code, "/// The first task's context alone (so a binary that needs one task embeds one).\npub static CTX0: [[f32; E]; N] = [{}];", tokens(&ctx[..n * e]));
    let _ = writeln!(code, "/// The first task's query alone.\npub static QUERY0: [f32; E] = {};", f32s(&query[..e]));
    let _ = writeln!(code, "/// Query tokens.\npub static QUERY: [[f32; E]; TASKS] = [{}];", tokens(&query));
    let _ = writeln!(code, "/// Query targets.\npub static Y: [f32; TASKS] = {};", f32s(&y));
    fs::write(out.join("data.rs"), code).unwrap_or_else(|e| fail(format!("cannot write data.rs: {e}")));
}
