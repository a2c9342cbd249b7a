//! Every weight layout `inspect` reads, into one [`LoadedModel`]: LSA layers (one, K distinct, or one applied in a
//! schedule) or softmax attention layers. Files go through the shared loader ([`TensorFile::read_foreign`]:
//! safetensors, or a NumPy `.npz` archive), so a bad file is one error naming the file and the tensor.
//!
//! Layouts, matrices acting on column vectors (`h <- h + P sum_j (W_Q h . W_K e_j) W_V e_j`):
//! - this project's files: `dualform-lsa-v1` (any schedule and update rule) and `dualform-softmax-v1`;
//! - the reference layout: tensors `W_Q`, `W_K`, `W_V`, `P`, each `[E, E]` (one layer), `[L, E, E]` (L layers, the
//!   layer index first) or `[L, H, E, E]` (H heads per layer, softmax only); optional string metadata `schedule`
//!   (which layer each application uses, comma-separated; default each layer once in order) and `attention`
//!   (`linear`, the default, or `softmax`, logits scaled by `1/sqrt(E)`);
//! - haiku / flax parameter names as the reference JAX code creates them, flattened with `/` (what `np.savez`
//!   of a flattened parameter tree writes): `<prefix>/multi_head_attention[_K]/{query,key,value,linear}/w` or
//!   `<prefix>/layer_K/...`, each stored `[in, out]` (used as `x @ w`, so transposed here); the modules in order of
//!   their index. A `schedule` array (integers) loops them, as the reference code's recurrent model does.
//!   Biases (`b`) must be zero: the layer has none.

use crate::model::{Lsa, LsaHead, Model, Softmax, SOFTMAX_FORMAT};
use crate::net::Forward;
use crate::net::{SoftmaxLayer, SOFTMAX_HEADS};
use crate::HarnessError;
use dualform::Update;
use dualform_tensors::{TensorFile, LSA_FORMAT, MAX_LAYERS};
use std::collections::BTreeMap;
use std::path::Path;

/// The reference layout's tensor names.
pub const REFERENCE_NAMES: [&str; 4] = ["W_Q", "W_K", "W_V", "P"];

/// The haiku projection names, in the order of [`REFERENCE_NAMES`].
pub const HAIKU_NAMES: [&str; 4] = ["query", "key", "value", "linear"];

/// The weights of a model read from a file.
#[derive(Clone, Debug)]
pub enum Weights {
    /// Linear self-attention layers in a schedule.
    Lsa(Lsa),
    /// Softmax attention layers, applied once each in order.
    Softmax(Softmax),
}

/// A model read from a file.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Its weights.
    pub weights: Weights,
    /// Which layout it was read as.
    pub layout: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// The context size N its metadata names, if any.
    pub n: Option<usize>,
    /// The task distribution its metadata names, if any.
    pub distribution: Option<String>,
}

impl LoadedModel {
    /// The token width E.
    pub fn width(&self) -> usize {
        match &self.weights {
            Weights::Lsa(m) => m.width(),
            Weights::Softmax(m) => m.layers().first().map_or(0, SoftmaxLayer::width),
        }
    }

    /// How many layer applications the model makes.
    pub fn applications(&self) -> usize {
        match &self.weights {
            Weights::Lsa(m) => m.net().applications(),
            Weights::Softmax(m) => m.layers().len(),
        }
    }
}

fn bad(path: &Path, item: &str, message: impl std::fmt::Display) -> HarnessError {
    HarnessError::BadInput(format!("{}: {item}: {message}", path.display()))
}

/// Reads the model in `path` (see the module docs).
pub fn load(path: &Path) -> Result<LoadedModel, HarnessError> {
    let f = TensorFile::read_foreign(path)?;
    let n = f.meta.get("n").and_then(|v| v.parse().ok());
    let distribution = f.meta.get("distribution").cloned();
    let done = |weights, layout: String| {
        Ok(LoadedModel { weights, layout, sha256: f.sha256.clone(), n, distribution: distribution.clone() })
    };
    match f.meta.get("format").map(String::as_str) {
        Some(LSA_FORMAT) => return done(Weights::Lsa(Lsa::from_file(&f, None)?), LSA_FORMAT.into()),
        Some(SOFTMAX_FORMAT) => {
            let t = f.tensor("w_q")?;
            let layers = stacked(&f, &["w_q", "w_k", "w_v", "p"], &t.shape.clone(), true)?;
            return done(Weights::Softmax(softmax(path, layers)?), SOFTMAX_FORMAT.into());
        }
        Some(other) => return Err(bad(path, "format", format!("{other} is not a model inspect reads"))),
        None => {}
    }
    if f.tensors.contains_key("W_Q") {
        let shape = f.tensor("W_Q")?.shape.clone();
        let softmax_kind = match f.meta.get("attention").map(String::as_str) {
            None | Some("linear") => false,
            Some("softmax") => true,
            Some(other) => return Err(bad(path, "attention", format!("{other:?}; expected linear or softmax"))),
        };
        let layers = stacked(&f, &REFERENCE_NAMES, &shape, softmax_kind)?;
        let layout =
            format!("reference (W_Q, W_K, W_V, P), {} attention", if softmax_kind { "softmax" } else { "linear" });
        return if softmax_kind {
            done(Weights::Softmax(softmax(path, layers)?), layout)
        } else {
            done(Weights::Lsa(lsa(&f, layers)?), layout)
        };
    }
    let layers = haiku(&f)?;
    let count = layers.len();
    done(
        Weights::Lsa(lsa(&f, layers.into_iter().map(|l| vec![l]).collect())?),
        format!("haiku / flax names ({count} attention module(s), [in, out] transposed)"),
    )
}

/// One layer's heads, each `[W_Q, W_K, W_V, P]` column-major.
type Layer = Vec<[Vec<f32>; 4]>;

/// Column-major values of a row-major `e x e` block.
fn col_major(e: usize, row_major: &[f32]) -> Vec<f32> {
    (0..e * e).map(|k| row_major[(k % e) * e + k / e]).collect()
}

/// The four tensors `names` as `[E, E]`, `[L, E, E]` or (with `heads`) `[L, H, E, E]`, every one the shape of the
/// first, into layers of heads.
fn stacked(f: &TensorFile, names: &[&str; 4], shape: &[usize], heads: bool) -> Result<Vec<Layer>, HarnessError> {
    let (l, h, e) = match *shape {
        [e, e2] if e == e2 && e >= 2 => (1, 1, e),
        [l, e, e2] if e == e2 && e >= 2 && l >= 1 => (l, 1, e),
        [l, h, e, e2] if heads && e == e2 && e >= 2 && l >= 1 && h >= 1 => (l, h, e),
        _ => {
            let want = if heads { "[E, E], [L, E, E] or [L, H, E, E]" } else { "[E, E] or [L, E, E]" };
            return Err(bad(&f.path, names[0], format!("shape {shape:?}, expected {want} with E = d + 1 >= 2")));
        }
    };
    if l > MAX_LAYERS {
        return Err(bad(&f.path, names[0], format!("{l} layers, at most {MAX_LAYERS}")));
    }
    let mut out = vec![vec![[vec![], vec![], vec![], vec![]]; h]; l];
    for (which, name) in names.iter().enumerate() {
        let v = f.values(name, shape)?;
        for (i, block) in v.chunks_exact(e * e).enumerate() {
            out[i / h][i % h][which] = col_major(e, block);
        }
    }
    Ok(out)
}

/// The layers (one head each) in the schedule the metadata gives, with the plain residual update.
fn lsa(f: &TensorFile, layers: Vec<Layer>) -> Result<Lsa, HarnessError> {
    let path = &f.path;
    let mut heads = Vec::new();
    for layer in layers {
        let [one] = <[_; 1]>::try_from(layer)
            .map_err(|l| bad(path, "W_Q", format!("{} heads per layer; linear attention takes one", l.len())))?;
        let e = (one[0].len() as f64).sqrt() as usize;
        let mut head = LsaHead::zeros(e);
        for (dst, src) in head.mats_mut().into_iter().zip(one) {
            dst.copy_from_slice(&src);
        }
        heads.push(head);
    }
    let schedule: Vec<usize> = match f.meta.get("schedule") {
        None => (0..heads.len()).collect(),
        Some(s) => s
            .split(',')
            .map(|v| v.trim().parse::<usize>().ok().filter(|&k| k < heads.len()))
            .collect::<Option<Vec<_>>>()
            .filter(|v| !v.is_empty() && v.len() <= 1024)
            .ok_or_else(|| {
                bad(path, "schedule", format!("{s:?}: expected 1 to 1024 layer indices below {}", heads.len()))
            })?,
    };
    Lsa::new(heads, schedule, Update::residual())
        .map_err(|e| HarnessError::BadInput(format!("{}: {e}", path.display())))
}

/// Softmax layers of at most [`SOFTMAX_HEADS`] heads (fewer are padded with zero heads, which add nothing).
fn softmax(path: &Path, layers: Vec<Layer>) -> Result<Softmax, HarnessError> {
    let e = layers.first().and_then(|l| l.first()).map_or(0, |h| (h[0].len() as f64).sqrt() as usize);
    let mut out = Vec::new();
    for layer in layers {
        if layer.len() > SOFTMAX_HEADS {
            return Err(bad(path, "W_Q", format!("{} heads per layer; at most {SOFTMAX_HEADS}", layer.len())));
        }
        let mut s = SoftmaxLayer::zeros(e);
        for (h, mats) in layer.iter().enumerate() {
            for (which, m) in mats.iter().enumerate() {
                s.matrix_mut(h, which).copy_from_slice(m);
            }
        }
        out.push(s);
    }
    Ok(Softmax::new(e, out))
}

/// The attention modules under haiku / flax names (see the module docs), in index order, one head each.
fn haiku(f: &TensorFile) -> Result<Vec<[Vec<f32>; 4]>, HarnessError> {
    let path = &f.path;
    // module index -> (module name, projection -> tensor name)
    let mut modules: BTreeMap<usize, (String, BTreeMap<usize, String>)> = BTreeMap::new();
    for name in f.tensors.keys() {
        let parts: Vec<&str> = name.split('/').collect();
        let [.., module, projection, param] = parts[..] else { continue };
        let Some(index) = module_index(module) else { continue };
        let Some(which) = HAIKU_NAMES.iter().position(|p| *p == projection) else { continue };
        let entry = modules.entry(index).or_insert_with(|| (module.to_string(), BTreeMap::new()));
        if entry.0 != module {
            return Err(bad(path, name, format!("module index {index} appears as {} and {module}", entry.0)));
        }
        match param {
            "w" => {
                entry.1.insert(which, name.clone());
            }
            "b" if f.tensor(name)?.data.iter().any(|&v| v != 0.0) => {
                return Err(bad(path, name, "a non-zero bias; the LSA layer has none (train with use_bias_p=False)"));
            }
            _ => {}
        }
    }
    if modules.is_empty() {
        return Err(bad(
            path,
            "W_Q",
            "tensor missing (expected a dualform weight file, tensors W_Q, W_K, W_V, P, or haiku names such as transformer/multi_head_attention/query/w)",
        ));
    }
    let mut out = Vec::new();
    let mut e = 0;
    for (position, (index, (module, found))) in modules.into_iter().enumerate() {
        if index != position {
            return Err(bad(path, &module, format!("attention module {position} is missing before it")));
        }
        let mut mats: [Vec<f32>; 4] = Default::default();
        for (which, projection) in HAIKU_NAMES.iter().enumerate() {
            let name =
                found.get(&which).ok_or_else(|| bad(path, &format!("{module}/{projection}/w"), "tensor missing"))?;
            let t = f.tensor(name)?;
            if e == 0 {
                e = t.shape.first().copied().unwrap_or(0);
            }
            if t.shape != [e, e] || e < 2 {
                return Err(bad(
                    path,
                    name,
                    format!("shape {:?}, expected [E, E] = [{e}, {e}] (key size = token width)", t.shape),
                ));
            }
            // Stored [in, out] and used as x @ w: the matrix acting on column vectors is its transpose, so the
            // row-major values of w are the column-major values of the matrix.
            mats[which] = t.data.clone();
        }
        out.push(mats);
    }
    Ok(out)
}

/// The index of a haiku attention module: `multi_head_attention` 0, `multi_head_attention_K` K, `layer_K` K.
fn module_index(module: &str) -> Option<usize> {
    if module == "multi_head_attention" {
        return Some(0);
    }
    module.strip_prefix("multi_head_attention_").or_else(|| module.strip_prefix("layer_")).and_then(|k| k.parse().ok())
}
