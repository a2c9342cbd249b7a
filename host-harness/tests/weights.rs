//! Every weight file `dualform golden` reads is validated before anything is written: broken files (empty, random
//! bytes, a header larger than the file, truncated data, overlapping offsets), wrong dtypes, shapes, formats, missing
//! tensors, NaN and infinite weights, and a valid file of another width E give exit code 2, one line naming the file
//! (and the tensor where there is one), and an untouched output folder.

use dualform_harness::experiments::settings::TaskArgs;
use dualform_harness::model::{save, Lsa};
use dualform_tensors::{Tensor, TensorFile};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

/// d = 2, so E = 3.
const E: usize = 3;

fn lsa_meta() -> BTreeMap<String, String> {
    [("format", "dualform-lsa-v1")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// The four LSA tensors of width `e`, with `edit` applied to the named one's values.
fn lsa_tensors(e: usize, edit: Option<(&str, usize, f32)>) -> Vec<Tensor> {
    ["w_q", "w_k", "w_v", "p"]
        .iter()
        .map(|name| {
            let mut data: Vec<f32> = (0..e * e).map(|k| if k % (e + 1) == 0 { 0.5 } else { 0.0 }).collect();
            if let Some((_, at, v)) = edit.filter(|(t, _, _)| t == name) {
                data[at] = v;
            }
            Tensor::new(*name, vec![e, e], data)
        })
        .collect()
}

/// A single-layer results folder for d = 2: a report with the task distribution, and valid weights.
fn run_folder(dir: &Path) {
    let report = serde_json::json!({ "config": { "task": TaskArgs::anisotropic(2, 4, 1.0) } });
    std::fs::write(dir.join("report.json"), report.to_string()).unwrap();
    let head = Lsa::from_file(
        &{
            let p = dir.join("weights.safetensors");
            TensorFile::write(&p, &lsa_tensors(E, None), &lsa_meta()).unwrap();
            TensorFile::read(&p).unwrap()
        },
        Some(E),
    )
    .unwrap();
    save(&head, &[], &dir.join("gd_weights.safetensors")).unwrap();
}

fn golden(from: &Path, out: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_dualform"))
        .args(["golden", "--from", from.to_str().unwrap(), "--out", out.to_str().unwrap(), "--tasks", "4"])
        .output()
        .unwrap()
}

fn valid_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("gd_weights.safetensors")).unwrap()
}

/// A header written by hand: tensors `w_q, w_k, w_v, p` of width E whose offsets are `offsets`.
fn forged(offsets: [[usize; 2]; 4], data: usize) -> Vec<u8> {
    let entries: Vec<String> = ["w_q", "w_k", "w_v", "p"]
        .iter()
        .zip(offsets)
        .map(|(n, o)| format!("\"{n}\":{{\"dtype\":\"F32\",\"shape\":[{E},{E}],\"data_offsets\":{o:?}}}"))
        .collect();
    let header = format!(
        "{{{},\"__metadata__\":{{\"dualform\":\"{{\\\"format\\\":\\\"dualform-lsa-v1\\\"}}\"}}}}",
        entries.join(",")
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(0u8, data));
    bytes
}

#[test]
fn golden_refuses_every_bad_weight_file_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = (dir.path().join("run"), dir.path().join("out"));
    std::fs::create_dir_all(&run).unwrap();
    std::fs::create_dir_all(&out).unwrap();
    run_folder(&run);
    // The valid run is accepted (so the refusals below are about the files).
    let ok = golden(&run, &out);
    assert_eq!(ok.status.code(), Some(0), "{}", String::from_utf8_lossy(&ok.stderr));
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 3);
    let valid = valid_bytes(&run);
    let bytes = 4 * E * E;

    let write_tensors = |p: &Path, t: Vec<Tensor>| TensorFile::write(p, &t, &lsa_meta()).unwrap();
    type Maker<'a> = Box<dyn Fn(&Path) + 'a>;
    let raw = |b: Vec<u8>| -> Maker { Box::new(move |p: &Path| std::fs::write(p, &b).unwrap()) };
    let mut huge_header = valid.clone();
    huge_header[..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
    let mut truncated = valid.clone();
    truncated.truncate(valid.len() - 5);
    let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
    let cases: Vec<(&str, Maker, Vec<&str>)> = vec![
        ("empty", raw(Vec::new()), vec!["not a valid safetensors file"]),
        ("random bytes", raw(random), vec!["not a valid safetensors file"]),
        ("header of 2^63 bytes", raw(huge_header), vec!["not a valid safetensors file"]),
        ("truncated data", raw(truncated), vec!["not a valid safetensors file"]),
        (
            "overlapping offsets",
            raw(forged(
                [[0, bytes], [bytes / 2, bytes + bytes / 2], [2 * bytes, 3 * bytes], [3 * bytes, 4 * bytes]],
                4 * bytes,
            )),
            vec!["not a valid safetensors file"],
        ),
        (
            "NaN weight",
            Box::new(move |p: &Path| write_tensors(p, lsa_tensors(E, Some(("w_k", 4, f32::NAN))))),
            vec!["w_k", "finite"],
        ),
        (
            "infinite weight",
            Box::new(move |p: &Path| write_tensors(p, lsa_tensors(E, Some(("p", 0, f32::INFINITY))))),
            vec!["p", "finite"],
        ),
        (
            "wrong shape",
            Box::new(move |p: &Path| {
                let mut t = lsa_tensors(E, None);
                t[2] = Tensor::new("w_v", vec![E, E + 1], vec![0.0; E * (E + 1)]);
                write_tensors(p, t)
            }),
            vec!["w_v", "shape"],
        ),
        (
            "missing tensor",
            Box::new(move |p: &Path| write_tensors(p, lsa_tensors(E, None).into_iter().take(3).collect())),
            vec!["p", "missing"],
        ),
        ("another width E", Box::new(move |p: &Path| write_tensors(p, lsa_tensors(E + 1, None))), vec!["w_q", "shape"]),
        (
            "another format",
            Box::new(move |p: &Path| {
                let meta = [("format".to_string(), "dualform-golden-v1".to_string())].into_iter().collect();
                TensorFile::write(p, &lsa_tensors(E, None), &meta).unwrap()
            }),
            vec!["format", "dualform-golden-v1"],
        ),
        (
            "wrong dtype",
            Box::new(move |p: &Path| {
                let data = vec![0u8; 8 * E * E];
                let views: Vec<(&str, safetensors::tensor::TensorView<'_>)> = ["w_q", "w_k", "w_v", "p"]
                    .iter()
                    .map(|n| {
                        (*n, safetensors::tensor::TensorView::new(safetensors::Dtype::F64, vec![E, E], &data).unwrap())
                    })
                    .collect();
                let info = std::collections::HashMap::from([("dualform".to_string(), "{}".to_string())]);
                safetensors::serialize_to_file(views, Some(info), p).unwrap()
            }),
            vec!["F64", "F32"],
        ),
    ];
    for file in ["weights.safetensors", "gd_weights.safetensors"] {
        for (what, make, mentions) in &cases {
            let out = dir.path().join(format!("out-{file}-{}", what.replace(' ', "-")));
            std::fs::create_dir_all(&out).unwrap();
            make(&run.join(file));
            let o = golden(&run, &out);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{file}, {what}: {err}");
            assert_eq!(err.trim_end().lines().count(), 1, "{file}, {what}: {err}");
            assert!(err.contains(file) && !err.contains("panicked"), "{file}, {what}: {err}");
            for m in mentions {
                assert!(err.contains(m), "{file}, {what}: should mention {m:?}: {err}");
            }
            assert_eq!(std::fs::read_dir(&out).unwrap().count(), 0, "{file}, {what}: something was written");
        }
        std::fs::write(run.join(file), &valid).unwrap();
    }
}
