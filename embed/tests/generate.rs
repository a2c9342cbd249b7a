//! The generated source against the core and the loader: merged heads bit for bit, the schedule and rule as in the
//! file, the same source for the same inputs, and one-line errors naming the file or module for bad input. (The
//! generated code is compiled and run in the workspace's integration tests, `tests/embed.rs`.)

use dualform::nalgebra::SMatrix;
use dualform::{Head, MergedHead};
use dualform_embed::{Embed, EmbedError};
use dualform_tensors::{Tensor, TensorFile};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const E: usize = 5;

/// Deterministic weights of order 1 (not exactly representable products, so a wrong merge shows in the bits).
fn weights(layers: usize) -> Vec<[Vec<f32>; 4]> {
    let mut s = 0x9e37_79b9u32;
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 17;
        s ^= s << 5;
        (s as f32 / u32::MAX as f32) * 2.0 - 1.0
    };
    (0..layers).map(|_| [0; 4].map(|_| (0..E * E).map(|_| next()).collect())).collect()
}

fn write_lsa(dir: &Path, name: &str, w: &[[Vec<f32>; 4]], meta: &[(&str, &str)]) -> PathBuf {
    let l = w.len();
    let shape = if l == 1 { vec![E, E] } else { vec![l, E, E] };
    let tensors: Vec<Tensor> = ["w_q", "w_k", "w_v", "p"]
        .iter()
        .enumerate()
        .map(|(i, n)| Tensor::new(*n, shape.clone(), w.iter().flat_map(|m| m[i].clone()).collect()))
        .collect();
    let mut m: BTreeMap<String, String> = BTreeMap::from([("format".into(), "dualform-lsa-v1".into())]);
    for (k, v) in meta {
        m.insert(k.to_string(), v.to_string());
    }
    let path = dir.join(name);
    TensorFile::write(&path, &tensors, &m).unwrap();
    path
}

fn write_golden(dir: &Path) -> PathBuf {
    let (t, n) = (3, 4);
    let ctx: Vec<f32> = (0..t * n * E).map(|i| i as f32 * 0.25 - 7.0).collect();
    let query: Vec<f32> = (0..t * E).map(|i| i as f32 * -0.5).collect();
    let tensors = [
        Tensor::new("ctx", vec![t, n, E], ctx),
        Tensor::new("query", vec![t, E], query),
        Tensor::new("y", vec![t], vec![1.0, 2.0, 3.0]),
    ];
    let path = dir.join("golden.safetensors");
    TensorFile::write(&path, &tensors, &BTreeMap::from([("format".into(), "dualform-golden-v1".into())])).unwrap();
    path
}

/// Every `0x........` after `from_bits(` in the line that declares `item`.
fn bits_of(code: &str, item: &str) -> Vec<u32> {
    let line = code.lines().find(|l| l.contains(item)).unwrap_or_else(|| panic!("{item} missing"));
    line.split("from_bits(0x").skip(1).map(|s| u32::from_str_radix(&s[..8], 16).unwrap()).collect()
}

#[test]
fn merged_heads_are_the_cores_bits_and_the_schedule_and_rule_are_the_files() {
    let dir = tempfile::tempdir().unwrap();
    let w = weights(3);
    let path = write_lsa(dir.path(), "stack.safetensors", &w, &[("layers", "3"), ("clip", "10"), ("damping", "0.5")]);
    let mut out = Embed::new();
    let info = out.lsa("stack", &path).unwrap();
    assert_eq!((info.e, info.layers, info.applications, info.merged_bytes), (E, 3, 3, 3 * 2 * E * E * 4));
    let code = out.code();
    let mut want = Vec::new();
    for m in &w {
        let rm = |v: &Vec<f32>| SMatrix::<f32, E, E>::from_fn(|i, j| v[i * E + j]);
        let head = Head { w_q: rm(&m[0]), w_k: rm(&m[1]), w_v: rm(&m[2]), p: rm(&m[3]) };
        let merged = MergedHead::from_head(&head);
        want.extend(merged.a.iter().chain(merged.b.iter()).map(|v| v.to_bits()));
    }
    assert_eq!(bits_of(code, "pub static HEADS"), want);
    // The trained weights, column by column: entry (0, 1) of W_Q is the file's second value.
    let raw = bits_of(code, "pub static WEIGHTS");
    assert_eq!(raw.len(), 3 * 4 * E * E);
    assert_eq!(raw[E], w[0][0][1].to_bits());
    assert!(code.contains("pub const SCHEDULE: [usize; APPLICATIONS] = [0, 1, 2];"), "{code}");
    assert_eq!(bits_of(code, "pub const UPDATE"), [0.5f32.to_bits(), 10.0f32.to_bits()]);
    assert!(code.contains(&info.sha256));
    // One layer looped: the default schedule from `applications`.
    let looped = write_lsa(dir.path(), "looped.safetensors", &weights(1), &[("applications", "4")]);
    let mut out2 = Embed::new();
    out2.lsa("looped", &looped).unwrap();
    assert!(out2.code().contains("pub const SCHEDULE: [usize; APPLICATIONS] = [0, 0, 0, 0];"));
    assert!(out2.code().contains("clip: None"));
    // The same inputs give the same source.
    let mut again = Embed::new();
    again.lsa("stack", &path).unwrap();
    assert_eq!(again.code(), code);
}

#[test]
fn golden_tasks_keep_every_value_and_the_first_task_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_golden(dir.path());
    let mut out = Embed::new();
    let g = out.golden("tasks", &path).unwrap();
    assert_eq!((g.e, g.n, g.tasks), (E, 4, 3));
    let code = out.code();
    let ctx = bits_of(code, "pub static CTX:");
    assert_eq!(ctx.len(), 3 * 4 * E);
    assert_eq!(ctx[7], (7.0f32 * 0.25 - 7.0).to_bits());
    assert_eq!(bits_of(code, "pub static CTX0"), ctx[..4 * E]);
    assert_eq!(bits_of(code, "pub static Y"), [1.0f32, 2.0, 3.0].map(f32::to_bits));
    assert_eq!(out.inputs(), [path]);
}

fn err(r: Result<impl std::fmt::Debug, EmbedError>) -> String {
    let e = r.unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    e
}

#[test]
fn bad_files_and_names_stop_the_build_with_one_line_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    let ok = write_lsa(dir.path(), "ok.safetensors", &weights(2), &[("layers", "2")]);
    let mut out = Embed::new();
    out.lsa("model", &ok).unwrap();
    assert!(err(out.lsa("model", &ok)).contains("used twice"));
    for bad in ["Model", "2x", "static", "a-b", ""] {
        assert!(err(out.lsa(bad, &ok)).contains("module name"), "{bad}");
    }
    type Meta<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Meta, &str); 4] = [
        ("schedule.safetensors", &[("layers", "2"), ("schedule", "0,2")], "schedule"),
        ("first.safetensors", &[("layers", "2"), ("first", "9")], "update rule"),
        ("clip.safetensors", &[("layers", "2"), ("clip", "-1")], "update rule"),
        ("layers.safetensors", &[("layers", "3")], "w_q"),
    ];
    for (name, meta, says) in cases {
        let p = write_lsa(dir.path(), name, &weights(2), meta);
        let e = err(Embed::new().lsa("m", &p));
        assert!(e.contains(name) && e.contains(says), "{name}: {e}");
    }
    // A golden file is not a weight file, and the other way round.
    let g = write_golden(dir.path());
    assert!(err(Embed::new().lsa("m", &g)).contains("expected dualform-lsa-v1"));
    assert!(err(Embed::new().golden("m", &ok)).contains("expected dualform-golden-v1"));
    assert!(err(Embed::new().lsa("m", &dir.path().join("missing.safetensors"))).contains("missing.safetensors"));
}

#[test]
fn widths_outside_the_merged_range_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let e = 33;
    let tensors: Vec<Tensor> =
        ["w_q", "w_k", "w_v", "p"].iter().map(|n| Tensor::new(*n, vec![e, e], vec![0.0; e * e])).collect();
    let p = dir.path().join("wide.safetensors");
    TensorFile::write(&p, &tensors, &BTreeMap::from([("format".into(), "dualform-lsa-v1".into())])).unwrap();
    let msg = err(Embed::new().lsa("wide", &p));
    assert!(msg.contains("E = 33") && msg.contains("2..=32"), "{msg}");
}
