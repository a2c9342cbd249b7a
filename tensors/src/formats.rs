//! The two formats a firmware embeds, read into plain values once for every reader: [`LsaFile`] (trained LSA
//! weights, `dualform-lsa-v1`: one layer, K distinct layers, or one layer applied K times) and [`GoldenFile`]
//! (golden tasks, `dualform-golden-v1`). The harness builds its models from them; the build-time helper
//! (`dualform-embed`) turns them into flash constants.

use crate::{TensorError, TensorFile};

/// The format name of LSA weight files.
pub const LSA_FORMAT: &str = "dualform-lsa-v1";
/// The format name of golden-task files.
pub const GOLDEN_FORMAT: &str = "dualform-golden-v1";
/// The tensor names of an LSA layer, in the order [`LsaFile::layers`] keeps them.
pub const LSA_NAMES: [&str; 4] = ["w_q", "w_k", "w_v", "p"];
/// The most distinct layers a file may hold.
pub const MAX_LAYERS: usize = 64;

/// An LSA weight file (`dualform-lsa-v1`): tensors `w_q, w_k, w_v, p` of shape `[E, E]` (one layer) or `[L, E, E]`,
/// and in the metadata the schedule (`layers`, `applications`, `schedule`: which layer each application uses) and
/// the update rule (`damping`, `first`, `clip`). Metadata a file does not have takes the single layer's values: one
/// layer, applied once per layer in order, plain residual update.
#[derive(Clone, Debug, PartialEq)]
pub struct LsaFile {
    /// Token width E.
    pub e: usize,
    /// Per distinct layer, `W_Q, W_K, W_V, P`, each `E * E` values in row-major order.
    pub layers: Vec<[Vec<f32>; 4]>,
    /// Entry k: the layer of application k (never empty, every entry below `layers.len()`).
    pub schedule: Vec<usize>,
    /// The update rule's scale (`h <- h + damping * update`).
    pub damping: f32,
    /// The first coordinate the rule writes.
    pub first: usize,
    /// The rule's clip bound, if any.
    pub clip: Option<f32>,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

impl LsaFile {
    /// Reads and validates `f` (see the type's docs); every problem is one error naming the file and the tensor or
    /// key. The rule's values are only parsed here: whether they are valid for width E is the core's
    /// `Update::validate`.
    pub fn from_file(f: &TensorFile) -> Result<Self, TensorError> {
        f.expect_format(LSA_FORMAT)?;
        let bad = |key: &str, v: &str| TensorError::new(&f.path, Some(key), format!("bad value {v:?}"));
        let get = |key: &str| f.meta.get(key).map(String::as_str);
        let num = |key: &str, default: usize| -> Result<usize, TensorError> {
            get(key).map_or(Ok(default), |v| v.parse().map_err(|_| bad(key, v)))
        };
        let layers = num("layers", 1)?;
        if !(1..=MAX_LAYERS).contains(&layers) {
            return Err(TensorError::new(
                &f.path,
                Some("layers"),
                format!("{layers} is out of range 1..={MAX_LAYERS}"),
            ));
        }
        let applications = num("applications", layers)?;
        let schedule: Vec<usize> = match get("schedule") {
            Some(s) => {
                s.split(',').map(|v| v.trim().parse().map_err(|_| bad("schedule", s))).collect::<Result<_, _>>()?
            }
            None => (0..applications).map(|k| k % layers).collect(),
        };
        if schedule.is_empty() {
            return Err(TensorError::new(&f.path, Some("schedule"), "no application"));
        }
        if let Some(k) = schedule.iter().find(|&&k| k >= layers) {
            return Err(TensorError::new(
                &f.path,
                Some("schedule"),
                format!("application of layer {k}, but there are {layers}"),
            ));
        }
        let float = |key: &str, v: &str| -> Result<f32, TensorError> { v.parse().map_err(|_| bad(key, v)) };
        let damping = get("damping").map_or(Ok(1.0), |v| float("damping", v))?;
        let first = num("first", 0)?;
        let clip = match get("clip") {
            None | Some("none") => None,
            Some(c) => Some(float("clip", c)?),
        };
        let shape = &f.tensor("w_q")?.shape;
        let e = match (layers, shape.as_slice()) {
            (1, &[r, c]) | (_, &[_, r, c]) if r == c && r >= 2 => r,
            _ => {
                let want = if layers == 1 { "[E, E]" } else { "[layers, E, E]" };
                return Err(TensorError::new(&f.path, Some("w_q"), format!("shape {shape:?}, expected {want}")));
            }
        };
        let per = e * e;
        let mut out = vec![[vec![], vec![], vec![], vec![]]; layers];
        for (i, name) in LSA_NAMES.iter().enumerate() {
            let want: Vec<usize> = if layers == 1 { vec![e, e] } else { vec![layers, e, e] };
            let v = f.values(name, &want)?;
            for (layer, chunk) in out.iter_mut().zip(v.chunks_exact(per)) {
                layer[i] = chunk.to_vec();
            }
        }
        Ok(Self { e, layers: out, schedule, damping, first, clip, sha256: f.sha256.clone() })
    }

    /// Reads and validates the file at `path` ([`TensorFile::read`], then [`LsaFile::from_file`]).
    pub fn read(path: &std::path::Path) -> Result<Self, TensorError> {
        Self::from_file(&TensorFile::read(path)?)
    }
}

/// A golden-task file (`dualform-golden-v1`): tensors `ctx` `[T, N, E]`, `query` `[T, E]`, `y` `[T]`, with at least
/// one task of at least one pair.
#[derive(Clone, Debug, PartialEq)]
pub struct GoldenFile {
    /// Token width E.
    pub e: usize,
    /// Context pairs per task.
    pub n: usize,
    /// Tasks.
    pub tasks: usize,
    /// Context tokens, `tasks * n * e` values (task, pair, coordinate).
    pub ctx: Vec<f32>,
    /// Query tokens, `tasks * e` values.
    pub query: Vec<f32>,
    /// Query targets.
    pub y: Vec<f32>,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

impl GoldenFile {
    /// Reads and validates the file at `path`.
    pub fn read(path: &std::path::Path) -> Result<Self, TensorError> {
        let f = TensorFile::read(path)?;
        f.expect_format(GOLDEN_FORMAT)?;
        let shape = f.tensor("ctx")?.shape.clone();
        let [tasks, n, e] = shape[..] else {
            return Err(TensorError::new(&f.path, Some("ctx"), format!("shape {shape:?}, expected [T, N, E]")));
        };
        if tasks == 0 || n == 0 || e < 2 {
            return Err(TensorError::new(&f.path, Some("ctx"), format!("shape {shape:?}: no task, pair or input")));
        }
        let ctx = f.values("ctx", &[tasks, n, e])?.to_vec();
        let query = f.values("query", &[tasks, e])?.to_vec();
        let y = f.values("y", &[tasks])?.to_vec();
        Ok(Self { e, n, tasks, ctx, query, y, sha256: f.sha256.clone() })
    }
}
