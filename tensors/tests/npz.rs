//! NumPy `.npz` archives (written by NumPy itself: `tests/fixtures/README.md`) read through the shared loader:
//! values in row-major order whatever the stored order, float64 rounded to f32, 1-D integer arrays as metadata,
//! deflate-compressed archives; and one-line errors naming the file and the member for what cannot be weights.
#![cfg(feature = "npz")]

use dualform_tensors::TensorFile;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

const A: [f32; 6] = [-0.5, -0.25, 0.0, 0.25, 0.5, 0.75];

#[test]
fn arrays_are_read_row_major_whatever_numpy_stored() {
    let f = TensorFile::read_foreign(&fixture("plain.npz")).unwrap();
    let a = f.tensor("net/a").unwrap();
    assert_eq!((a.shape.as_slice(), a.data.as_slice()), (&[2, 3][..], &A[..]));
    // a.T, stored in Fortran order: row-major values of the transpose.
    let t = f.tensor("net/a_t").unwrap();
    assert_eq!(t.shape, [3, 2]);
    assert_eq!(t.data, [-0.5, 0.25, -0.25, 0.5, 0.0, 0.75]);
    let cube = f.tensor("cube_f").unwrap();
    assert_eq!(cube.shape, [2, 3, 4]);
    assert_eq!(cube.data, (0..24).map(|v| v as f32).collect::<Vec<_>>());
    assert_eq!(f.tensor("b64").unwrap().data, [1.5, -2.0]);
    assert_eq!(f.meta.get("schedule").map(String::as_str), Some("0,1,1"));
    assert!(!f.tensors.contains_key("schedule"));
    assert_eq!(f.sha256, dualform_tensors::sha256_hex(&std::fs::read(fixture("plain.npz")).unwrap()));
}

#[test]
fn compressed_archives_read_the_same() {
    let f = TensorFile::read_foreign(&fixture("compressed.npz")).unwrap();
    assert_eq!(f.tensor("net/a").unwrap().data, A);
    assert_eq!(f.meta.get("schedule").map(String::as_str), Some("2,0"));
}

fn one_line_error(path: &Path, mentions: &[&str]) {
    let e = TensorFile::read_foreign(path).unwrap_err().to_string();
    assert_eq!(e.lines().count(), 1, "{e}");
    for m in mentions {
        assert!(e.contains(m), "{e} should mention {m}");
    }
}

#[test]
fn what_cannot_be_weights_is_refused_naming_file_and_member() {
    one_line_error(&fixture("strings.npz"), &["strings.npz", "names", "dtype"]);
    one_line_error(&fixture("nan.npz"), &["nan.npz", "w", "finite"]);
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixture("plain.npz")).unwrap();
    let cut = dir.path().join("cut.npz");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    one_line_error(&cut, &["cut.npz", ".npz"]);
    // A zip without arrays.
    let junk = dir.path().join("junk.npz");
    let mut z = b"PK\x03\x04".to_vec();
    z.extend([0u8; 40]);
    std::fs::write(&junk, &z).unwrap();
    one_line_error(&junk, &["junk.npz"]);
}
