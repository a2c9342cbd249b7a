//! NumPy `.npz` archives, as `np.savez` and `np.savez_compressed` write them (for example a haiku or flax parameter
//! tree flattened to `{"transformer/layer_0/query/w": array, ...}`), read into the same [`TensorFile`] as a
//! safetensors file and held to the same rules: every floating-point array becomes an f32 tensor (float64 is rounded
//! to f32) whose values must be finite; a one-dimensional integer array becomes a metadata entry of
//! comma-separated values (how an archive carries a schedule, `schedule=np.array([0, 0, 0])`); anything else
//! (strings, objects, structured arrays) is refused. Fortran-ordered arrays (what `np.savez` writes for a
//! transposed view such as `w.T`) are reordered to row-major, naming the file and the member.

use crate::{sha256_hex, Tensor, TensorError, TensorFile};
use npyz::{DType, NpyFile, Order, TypeChar};
use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::Path;

/// The first bytes of a zip archive (a `.npz` is one).
pub(crate) const ZIP_MAGIC: &[u8] = b"PK\x03\x04";

/// Reads and validates the `.npz` archive held in `bytes` (see the module docs); `path` is only used in errors.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<TensorFile, TensorError> {
    let err = |item: Option<&str>, m: String| TensorError::new(path, item, m);
    let mut zip =
        zip::ZipArchive::new(Cursor::new(bytes)).map_err(|e| err(None, format!("not a valid .npz archive ({e})")))?;
    let mut tensors = BTreeMap::new();
    let mut meta = BTreeMap::new();
    for i in 0..zip.len() {
        let mut member = zip.by_index(i).map_err(|e| err(None, format!("not a valid .npz archive ({e})")))?;
        if member.is_dir() {
            continue;
        }
        let file_name =
            member.name().map_err(|e| err(None, format!("a member's name cannot be read ({e})")))?.to_string();
        let name = file_name.strip_suffix(".npy").unwrap_or(&file_name).to_string();
        let mut raw = Vec::new();
        member.read_to_end(&mut raw).map_err(|e| err(Some(&name), format!("cannot be unpacked ({e})")))?;
        match read_array(&raw).map_err(|m| err(Some(&name), m))? {
            Array::Float(shape, data) => {
                if let Some((i, v)) = data.iter().enumerate().find(|(_, v)| !v.is_finite()) {
                    return Err(err(Some(&name), format!("value {i} is {v}; weights must be finite")));
                }
                tensors.insert(name.clone(), Tensor::new(name, shape, data));
            }
            Array::Int(values) => {
                let text: Vec<String> = values.iter().map(i64::to_string).collect();
                meta.insert(name, text.join(","));
            }
        }
    }
    if tensors.is_empty() {
        return Err(err(None, "no floating-point array in the archive".into()));
    }
    Ok(TensorFile { path: path.to_path_buf(), tensors, meta, sha256: sha256_hex(bytes) })
}

/// What one member holds.
enum Array {
    /// Shape and values (row-major) of a floating-point array.
    Float(Vec<usize>, Vec<f32>),
    /// The values of a one-dimensional integer array.
    Int(Vec<i64>),
}

/// Reads one `.npy` member; the error is the message without file and member.
fn read_array(raw: &[u8]) -> Result<Array, String> {
    let npy = NpyFile::new(raw).map_err(|e| format!("not a valid .npy array ({e})"))?;
    let shape: Vec<usize> = npy.shape().iter().map(|&s| s as usize).collect();
    let DType::Plain(ty) = npy.dtype() else {
        return Err("a structured array; expected a plain float array".into());
    };
    let fortran = npy.order() == Order::Fortran;
    let bad = |e: std::io::Error| format!("cannot be read as {ty} ({e})");
    match (ty.type_char(), ty.size_field()) {
        (TypeChar::Float, 4) => {
            let v = npy.into_vec::<f32>().map_err(bad)?;
            Ok(Array::Float(shape.clone(), if fortran { to_row_major(&shape, &v) } else { v }))
        }
        (TypeChar::Float, 8) => {
            let v: Vec<f32> = npy.into_vec::<f64>().map_err(bad)?.into_iter().map(|v| v as f32).collect();
            Ok(Array::Float(shape.clone(), if fortran { to_row_major(&shape, &v) } else { v }))
        }
        (TypeChar::Int | TypeChar::Uint, _) if shape.len() == 1 => {
            let values = match (ty.type_char(), ty.size_field()) {
                (TypeChar::Int, 8) => npy.into_vec::<i64>().map_err(bad)?,
                (TypeChar::Int, 4) => npy.into_vec::<i32>().map_err(bad)?.into_iter().map(i64::from).collect(),
                (TypeChar::Uint, 8) => {
                    let v = npy.into_vec::<u64>().map_err(bad)?;
                    v.into_iter()
                        .map(|x| i64::try_from(x).map_err(|_| format!("value {x} is too large")))
                        .collect::<Result<_, _>>()?
                }
                (TypeChar::Uint, 4) => npy.into_vec::<u32>().map_err(bad)?.into_iter().map(i64::from).collect(),
                _ => return Err(format!("dtype {ty}; expected 32- or 64-bit integers")),
            };
            Ok(Array::Int(values))
        }
        _ => Err(format!("dtype {ty} with shape {shape:?}; expected float32 or float64 (or a 1-D integer array)")),
    }
}

/// The row-major values of an array of `shape` stored in Fortran (column-major) order.
fn to_row_major(shape: &[usize], fortran: &[f32]) -> Vec<f32> {
    let mut out = vec![0.0; fortran.len()];
    let mut index = vec![0usize; shape.len()];
    for &v in fortran {
        // `v` is the element at `index` (Fortran order: the first axis varies fastest).
        let row_major = index.iter().zip(shape).fold(0, |acc, (i, s)| acc * s + i);
        if let Some(o) = out.get_mut(row_major) {
            *o = v;
        }
        for (i, s) in index.iter_mut().zip(shape) {
            *i += 1;
            if *i < *s {
                break;
            }
            *i = 0;
        }
    }
    out
}
