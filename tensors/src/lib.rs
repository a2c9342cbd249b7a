//! # dualform-tensors
//!
//! The tensor files of dualform, read, validated and written in one place: used by every harness command that
//! reads or writes weights or golden tasks, and by the firmware's `build.rs`.
//!
//! A file is a [safetensors](https://huggingface.co/docs/safetensors) file of little-endian f32 tensors in
//! row-major order, with one metadata entry `dualform`: a JSON object of strings with sorted keys (`format` says
//! what the file holds, for example `dualform-lsa-v1`; the rest are the facts a reader needs, such as `d` and `n`).
//! One entry, because safetensors keeps metadata in a hash map whose order varies between processes: with a single
//! key, the same tensors and metadata give the same file byte for byte.
//!
//! [`TensorFile::read`] checks, and reports the first problem naming the file (and the tensor or key):
//! the header (its size against the file's, its JSON, offsets inside the data and not overlapping, sizes that match
//! dtype and shape: the safetensors parser's own checks), that every tensor is F32 and every value finite, and that
//! the metadata entry is there and is a JSON object of strings. What a command needs beyond that (which tensors,
//! which shapes, which metadata) it asks for with [`TensorFile::tensor`], [`TensorFile::values`] and
//! [`TensorFile::meta`], which fail with the same kind of one-line error.

mod formats;
#[cfg(feature = "npz")]
mod npz;
pub use formats::{GoldenFile, LsaFile, GOLDEN_FORMAT, LSA_FORMAT, LSA_NAMES, MAX_LAYERS};

use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// The metadata key that holds dualform's JSON object.
pub const META_KEY: &str = "dualform";

/// Why a tensor file cannot be used: always names the file, and the tensor or metadata key where there is one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorError {
    /// The file.
    pub path: PathBuf,
    /// The tensor or metadata key the problem is in, if any.
    pub item: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl TensorError {
    fn new(path: &Path, item: Option<&str>, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), item: item.map(str::to_string), message: message.into() }
    }
}

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.item {
            Some(item) => write!(f, "{}: {item}: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for TensorError {}

/// One f32 tensor: its name, shape and values in row-major order.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Name in the file.
    pub name: String,
    /// Shape (row-major).
    pub shape: Vec<usize>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl Tensor {
    /// A tensor; `data.len()` must be the product of `shape` (checked when written).
    pub fn new(name: impl Into<String>, shape: Vec<usize>, data: Vec<f32>) -> Self {
        Self { name: name.into(), shape, data }
    }
}

/// A validated tensor file (see the crate docs).
#[derive(Clone, Debug, PartialEq)]
pub struct TensorFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// The tensors, by name.
    pub tensors: BTreeMap<String, Tensor>,
    /// The `dualform` metadata object.
    pub meta: BTreeMap<String, String>,
    /// SHA-256 of the file's bytes, lower-case hex.
    pub sha256: String,
}

/// SHA-256 of `bytes`, lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl TensorFile {
    /// Reads and validates `path` (see the crate docs).
    pub fn read(path: &Path) -> Result<Self, TensorError> {
        let bytes = std::fs::read(path).map_err(|e| TensorError::new(path, None, format!("cannot read it: {e}")))?;
        Self::parse(path, &bytes)
    }

    /// Reads and validates a file written by other tools (PyTorch's or NumPy's `save_file`, and with the `npz`
    /// feature NumPy's `np.savez`): the same checks as [`TensorFile::read`], but the `dualform` metadata entry is
    /// optional. Without it, the file's other string metadata (safetensors' `metadata=` argument; an `.npz`
    /// archive's one-dimensional integer arrays) is the metadata map.
    pub fn read_foreign(path: &Path) -> Result<Self, TensorError> {
        let bytes = std::fs::read(path).map_err(|e| TensorError::new(path, None, format!("cannot read it: {e}")))?;
        #[cfg(feature = "npz")]
        if bytes.starts_with(npz::ZIP_MAGIC) {
            return npz::parse(path, &bytes);
        }
        Self::parse_with(path, &bytes, false)
    }

    /// Validates the bytes of a file; `path` is only used in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Self, TensorError> {
        Self::parse_with(path, bytes, true)
    }

    fn parse_with(path: &Path, bytes: &[u8], need_meta: bool) -> Result<Self, TensorError> {
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| TensorError::new(path, None, format!("not a valid safetensors file ({e})")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| TensorError::new(path, None, format!("not a valid safetensors file ({e})")))?;
        let mut tensors = BTreeMap::new();
        for (name, view) in st.iter() {
            if view.dtype() != Dtype::F32 {
                return Err(TensorError::new(path, Some(name), format!("dtype {:?}, expected F32", view.dtype())));
            }
            let data: Vec<f32> =
                view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                return Err(TensorError::new(path, Some(name), format!("value {i} is {v}; weights must be finite")));
            }
            tensors.insert(name.to_string(), Tensor::new(name, view.shape().to_vec(), data));
        }
        let meta: BTreeMap<String, String> = match header.metadata().as_ref().and_then(|m| m.get(META_KEY)) {
            Some(text) => serde_json::from_str(text)
                .map_err(|e| TensorError::new(path, Some(META_KEY), format!("not a JSON object of strings ({e})")))?,
            None if need_meta => {
                return Err(TensorError::new(path, Some(META_KEY), "metadata entry missing (not a dualform file)"))
            }
            None => header
                .metadata()
                .as_ref()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default(),
        };
        Ok(Self { path: path.to_path_buf(), tensors, meta, sha256: sha256_hex(bytes) })
    }

    /// The tensor `name`, or an error naming it.
    pub fn tensor(&self, name: &str) -> Result<&Tensor, TensorError> {
        self.tensors.get(name).ok_or_else(|| TensorError::new(&self.path, Some(name), "tensor missing"))
    }

    /// The values of tensor `name`, which must have exactly `shape`.
    pub fn values(&self, name: &str, shape: &[usize]) -> Result<&[f32], TensorError> {
        let t = self.tensor(name)?;
        if t.shape != shape {
            return Err(TensorError::new(&self.path, Some(name), format!("shape {:?}, expected {:?}", t.shape, shape)));
        }
        Ok(&t.data)
    }

    /// The metadata value `key`, or an error naming it.
    pub fn meta(&self, key: &str) -> Result<&str, TensorError> {
        self.meta
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| TensorError::new(&self.path, Some(key), "metadata missing"))
    }

    /// The metadata value `key` as a number.
    pub fn meta_parse<V: std::str::FromStr>(&self, key: &str) -> Result<V, TensorError> {
        let s = self.meta(key)?;
        s.parse().map_err(|_| TensorError::new(&self.path, Some(key), format!("metadata value {s:?} is not a number")))
    }

    /// Fails unless the metadata `format` is `format`.
    pub fn expect_format(&self, format: &str) -> Result<(), TensorError> {
        let found = self.meta("format")?;
        if found != format {
            return Err(TensorError::new(
                &self.path,
                Some("format"),
                format!("the file holds {found}, expected {format}"),
            ));
        }
        Ok(())
    }

    /// Writes `tensors` (in the given order) and the metadata object to `path`; the same inputs give the same bytes.
    pub fn write(path: &Path, tensors: &[Tensor], meta: &BTreeMap<String, String>) -> Result<(), TensorError> {
        let bytes: Vec<Vec<u8>> =
            tensors.iter().map(|t| t.data.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).collect();
        let views = tensors
            .iter()
            .zip(bytes.iter())
            .map(|(t, b)| {
                safetensors::tensor::TensorView::new(Dtype::F32, t.shape.clone(), b)
                    .map(|v| (t.name.as_str(), v))
                    .map_err(|e| TensorError::new(path, Some(&t.name), format!("cannot be written: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let json = serde_json::to_string(meta).map_err(|e| TensorError::new(path, Some(META_KEY), e.to_string()))?;
        let info = HashMap::from([(META_KEY.to_string(), json)]);
        safetensors::serialize_to_file(views, Some(info), path)
            .map_err(|e| TensorError::new(path, None, format!("cannot be written: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn sample() -> Vec<Tensor> {
        vec![
            Tensor::new("w_q", vec![2, 3], vec![1.0, -2.0, 0.5, 3.25, -0.0, 7.0]),
            Tensor::new("p", vec![2], vec![0.125, f32::MIN_POSITIVE]),
        ]
    }

    #[test]
    fn round_trip_is_bit_exact_and_the_bytes_are_deterministic() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.safetensors"), dir.path().join("b.safetensors"));
        let m = meta(&[("format", "test-v1"), ("d", "2"), ("zeta", "last")]);
        TensorFile::write(&a, &sample(), &m).unwrap();
        TensorFile::write(&b, &sample(), &m).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let f = TensorFile::read(&a).unwrap();
        for t in sample() {
            let got = f.values(&t.name, &t.shape).unwrap();
            assert_eq!(
                got.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                t.data.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
        assert_eq!(f.meta, m);
        assert_eq!(f.meta_parse::<usize>("d").unwrap(), 2);
        f.expect_format("test-v1").unwrap();
        assert_eq!(f.sha256, sha256_hex(&std::fs::read(&a).unwrap()));
        assert_eq!(f.sha256.len(), 64);
    }

    /// Writes `bytes`, reads them back, and returns the one-line error.
    fn error_of(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.safetensors");
        std::fs::write(&p, bytes).unwrap();
        let e = TensorFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("bad.safetensors"), "the error must name the file: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    }

    fn valid_bytes() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ok.safetensors");
        TensorFile::write(&p, &sample(), &meta(&[("format", "test-v1")])).unwrap();
        std::fs::read(&p).unwrap()
    }

    #[test]
    fn broken_files_are_refused_naming_the_file() {
        assert!(error_of(b"").contains("not a valid safetensors file"));
        let random: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        assert!(error_of(&random).contains("not a valid safetensors file"));
        let mut huge = valid_bytes();
        huge[..8].copy_from_slice(&(1u64 << 63).to_le_bytes());
        assert!(error_of(&huge).contains("not a valid safetensors file"));
        let mut truncated = valid_bytes();
        truncated.truncate(truncated.len() - 3);
        assert!(error_of(&truncated).contains("not a valid safetensors file"));
        let mut longer = valid_bytes();
        longer.extend_from_slice(&[0; 8]);
        assert!(error_of(&longer).contains("not a valid safetensors file"));
    }

    #[test]
    fn wrong_dtypes_missing_metadata_and_non_finite_values_are_refused_naming_the_tensor() {
        let dir = tempfile::tempdir().unwrap();
        // An F64 tensor.
        let p = dir.path().join("f64.safetensors");
        let bytes = 1.5f64.to_le_bytes().to_vec();
        let view = safetensors::tensor::TensorView::new(Dtype::F64, vec![1], &bytes).unwrap();
        let info = HashMap::from([(META_KEY.to_string(), "{}".to_string())]);
        safetensors::serialize_to_file(vec![("w", view)], Some(info), &p).unwrap();
        let e = TensorFile::read(&p).unwrap_err().to_string();
        assert!(e.contains(": w: dtype F64, expected F32"), "{e}");
        // No dualform metadata.
        let p = dir.path().join("nometa.safetensors");
        let bytes = 1.5f32.to_le_bytes().to_vec();
        let view = safetensors::tensor::TensorView::new(Dtype::F32, vec![1], &bytes).unwrap();
        safetensors::serialize_to_file(vec![("w", view)], None, &p).unwrap();
        let e = TensorFile::read(&p).unwrap_err().to_string();
        assert!(e.contains("dualform: metadata entry missing"), "{e}");
        // NaN and infinity.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let p = dir.path().join("nan.safetensors");
            let t = Tensor::new("w_v", vec![3], vec![0.0, bad, 1.0]);
            TensorFile::write(&p, &[t], &meta(&[("format", "x")])).unwrap();
            let e = TensorFile::read(&p).unwrap_err().to_string();
            assert!(e.contains(": w_v: value 1 is"), "{e}");
        }
    }

    #[test]
    fn a_command_asking_for_the_wrong_tensor_shape_or_format_gets_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ok.safetensors");
        TensorFile::write(&p, &sample(), &meta(&[("format", "test-v1")])).unwrap();
        let f = TensorFile::read(&p).unwrap();
        assert!(f.values("w_k", &[2, 3]).unwrap_err().to_string().ends_with("w_k: tensor missing"));
        assert!(f.values("w_q", &[3, 3]).unwrap_err().to_string().ends_with("w_q: shape [2, 3], expected [3, 3]"));
        assert!(f.expect_format("dualform-lsa-v1").unwrap_err().to_string().contains("holds test-v1"));
        assert!(f.meta("d").unwrap_err().to_string().ends_with("d: metadata missing"));
    }
}
