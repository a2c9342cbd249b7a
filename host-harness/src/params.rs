//! The trained model's parameters: a single-head LSA layer with key and value size E (`W_Q`, `W_K`, `W_V`, `P`, each
//! E x E), its initialisation, and its `.safetensors` form.
//!
//! File format: four f32 tensors named `w_q`, `w_k`, `w_v`, `p`, each of shape `[E, E]` in row-major order, plus one
//! metadata entry `dualform`, a JSON object with sorted keys (`format = dualform-lsa-v1`, `d`, `n`, what the weights
//! are). One entry, because safetensors keeps metadata in a hash map whose order varies between processes: with
//! a single key the file is the same byte for byte whenever the weights are.

use crate::HarnessError;
use dualform::{Head, Layer};
use rand_distr::{Distribution, StandardNormal};
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The model: one LSA layer, one head, key and value size E.
pub type Lsa<const E: usize> = Layer<f32, E, E, E, 1>;

/// The tensor names, in the order of [`slices`].
pub const NAMES: [&str; 4] = ["w_q", "w_k", "w_v", "p"];

/// The four matrices as column-major slices: `W_Q`, `W_K`, `W_V`, `P`.
pub fn slices<const E: usize>(l: &Lsa<E>) -> [&[f32]; 4] {
    let h = &l.heads[0];
    [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()]
}

/// Mutable [`slices`].
pub fn slices_mut<const E: usize>(l: &mut Lsa<E>) -> [&mut [f32]; 4] {
    let Head { w_q, w_k, w_v, p } = &mut l.heads[0];
    [w_q.as_mut_slice(), w_k.as_mut_slice(), w_v.as_mut_slice(), p.as_mut_slice()]
}

/// The reference initialisation: variance scaling with scale `0.002 / layers`, fan-in (E), truncated normal at two
/// standard deviations, the standard deviation corrected for the truncation as the reference code does
/// (`sqrt(scale / fan_in) / 0.8796`, about 0.0153 per entry for one layer at E = 11).
pub fn init<const E: usize>(rng: &mut impl rand::Rng, layers: usize) -> Lsa<E> {
    let std = (0.002 / layers as f64 / E as f64).sqrt() / 0.879_625_661_034_239_8;
    let mut l = Lsa::<E>::zeros();
    for s in slices_mut(&mut l) {
        for v in s.iter_mut() {
            let z = loop {
                let z: f64 = StandardNormal.sample(rng);
                if z.abs() <= 2.0 {
                    break z;
                }
            };
            *v = (z * std) as f32;
        }
    }
    l
}

/// Row-major little-endian bytes of a column-major E x E matrix.
fn row_major_bytes<const E: usize>(col_major: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(E * E * 4);
    for i in 0..E {
        for j in 0..E {
            out.extend_from_slice(&col_major[j * E + i].to_le_bytes());
        }
    }
    out
}

/// Little-endian f32 values of a tensor's bytes (a trailing partial value is ignored).
pub fn f32_le(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

/// Writes `layer` to `path` with the given metadata (plus `format`).
pub fn save<const E: usize>(layer: &Lsa<E>, meta: &[(&str, String)], path: &Path) -> Result<(), HarnessError> {
    let bytes: Vec<Vec<u8>> = slices(layer).iter().map(|s| row_major_bytes::<E>(s)).collect();
    let views = NAMES
        .iter()
        .zip(bytes.iter())
        .map(|(name, b)| Ok((*name, safetensors::tensor::TensorView::new(Dtype::F32, vec![E, E], b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(|e| HarnessError::Io(format!("safetensors: {e}")))?;
    let mut fields: BTreeMap<&str, String> = meta.iter().map(|(k, v)| (*k, v.clone())).collect();
    fields.insert("format", "dualform-lsa-v1".into());
    let json = serde_json::to_string(&fields).map_err(|e| HarnessError::Io(e.to_string()))?;
    let info = HashMap::from([("dualform".to_string(), json)]);
    safetensors::serialize_to_file(views, Some(info), path)
        .map_err(|e| HarnessError::Io(format!("writing {}: {e}", path.display())))
}

/// Reads an LSA layer of width E written by [`save`]; names, dtypes and shapes are checked.
pub fn load<const E: usize>(path: &Path) -> Result<Lsa<E>, HarnessError> {
    let bytes = std::fs::read(path).map_err(|e| HarnessError::Io(format!("reading {}: {e}", path.display())))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
    let mut layer = Lsa::<E>::zeros();
    for (name, dst) in NAMES.iter().zip(slices_mut(&mut layer)) {
        let t = st.tensor(name).map_err(|e| HarnessError::Io(format!("{}: tensor {name}: {e}", path.display())))?;
        if t.dtype() != Dtype::F32 || t.shape() != [E, E] {
            return Err(HarnessError::Io(format!(
                "{}: tensor {name} is {:?} {:?}, expected F32 [{E}, {E}]",
                path.display(),
                t.dtype(),
                t.shape()
            )));
        }
        for (k, v) in f32_le(t.data()).into_iter().enumerate() {
            let (i, j) = (k / E, k % E);
            dst[j * E + i] = v;
        }
    }
    Ok(layer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_and_load_round_trip_bit_for_bit() {
        let mut rng = crate::tasks::stream_rng(3, 0);
        let layer = init::<5>(&mut rng, 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        save(&layer, &[("d", "4".into())], &path).unwrap();
        let back = load::<5>(&path).unwrap();
        for (a, b) in slices(&layer).iter().zip(slices(&back).iter()) {
            assert_eq!(
                a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
        // Row-major on disk: entry (0, 1) of W_Q is the second value of the tensor.
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("w_q").unwrap();
        let v01 = f32::from_le_bytes(t.data()[4..8].try_into().unwrap());
        assert_eq!(v01, layer.heads[0].w_q[(0, 1)]);
        // A wrong width is an error naming the tensor.
        let err = load::<6>(&path).unwrap_err().to_string();
        assert!(err.contains("w_q") && err.contains("[6, 6]"), "{err}");
    }

    #[test]
    fn init_has_the_reference_scale() {
        let mut rng = crate::tasks::stream_rng(4, 0);
        let layer = init::<11>(&mut rng, 1);
        let all: Vec<f32> = slices(&layer).concat();
        let std = (all.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
        // Truncation at 2 sigma shrinks the corrected std back to about sqrt(0.002 / 11) = 0.0135.
        assert!((std - 0.0135).abs() < 0.0015, "std {std}");
        assert!(all.iter().all(|v| v.abs() <= 2.0 * 0.0154));
    }
}
