//! Golden tasks for the firmware: a fixed set of in-context regression tasks, written as `.safetensors`, that the
//! device runs and the host recomputes bit for bit.
//!
//! File format (`golden.safetensors`): f32 tensors `ctx` `[T, N, E]`, `query` `[T, E]` (query tokens `(x_q, 0)`),
//! `y` `[T]` (targets), and one metadata entry `dualform` = `{"format": "dualform-golden-v1", "d", "n", "seed",
//! "tasks"}`.

use crate::tasks::TaskSampler;
use crate::HarnessError;
use safetensors::{Dtype, SafeTensors};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A set of golden tasks with token width E.
#[derive(Clone, Debug, PartialEq)]
pub struct Golden<const E: usize> {
    /// Context tokens, one vector of N per task.
    pub ctx: Vec<Vec<[f32; E]>>,
    /// Query tokens `(x_q, 0)`.
    pub query: Vec<[f32; E]>,
    /// Query targets.
    pub y: Vec<f32>,
}

impl<const E: usize> Golden<E> {
    /// `tasks` tasks of the distribution `sampler` from stream `(seed, 0..)`.
    pub fn generate(sampler: &TaskSampler, seed: u64, tasks: usize) -> Self {
        let rows =
            sampler.par_chunks::<E, Vec<(Vec<[f32; E]>, [f32; E], f32)>>(seed, 0, tasks, Vec::new, |acc, c, q, y| {
                acc.push((c.to_vec(), *q, y));
            });
        let mut g = Golden { ctx: Vec::new(), query: Vec::new(), y: Vec::new() };
        for (c, q, y) in rows.into_iter().flatten() {
            g.ctx.push(c);
            g.query.push(q);
            g.y.push(y);
        }
        g
    }

    /// Writes the file described in the module docs.
    pub fn save(&self, d: usize, seed: u64, path: &Path) -> Result<(), HarnessError> {
        let n = self.ctx.first().map_or(0, |c| c.len());
        let le = |v: &mut Vec<u8>, x: f32| v.extend_from_slice(&x.to_le_bytes());
        let mut ctx = Vec::new();
        self.ctx.iter().flatten().flatten().for_each(|&x| le(&mut ctx, x));
        let mut query = Vec::new();
        self.query.iter().flatten().for_each(|&x| le(&mut query, x));
        let mut y = Vec::new();
        self.y.iter().for_each(|&x| le(&mut y, x));
        let t = self.y.len();
        let err = |e: safetensors::SafeTensorError| HarnessError::Io(format!("golden tasks: {e}"));
        let views = vec![
            ("ctx", safetensors::tensor::TensorView::new(Dtype::F32, vec![t, n, E], &ctx).map_err(err)?),
            ("query", safetensors::tensor::TensorView::new(Dtype::F32, vec![t, E], &query).map_err(err)?),
            ("y", safetensors::tensor::TensorView::new(Dtype::F32, vec![t], &y).map_err(err)?),
        ];
        let meta: BTreeMap<&str, String> = [
            ("format", "dualform-golden-v1".to_string()),
            ("d", d.to_string()),
            ("n", n.to_string()),
            ("seed", seed.to_string()),
            ("tasks", t.to_string()),
        ]
        .into_iter()
        .collect();
        let info = HashMap::from([("dualform".to_string(), serde_json::to_string(&meta).unwrap_or_default())]);
        safetensors::serialize_to_file(views, Some(info), path)
            .map_err(|e| HarnessError::Io(format!("writing {}: {e}", path.display())))
    }

    /// Reads a file written by [`Golden::save`], checking names, dtypes and shapes against E.
    pub fn load(path: &Path) -> Result<Self, HarnessError> {
        let bytes = std::fs::read(path).map_err(|e| HarnessError::Io(format!("reading {}: {e}", path.display())))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
        let get = |name: &str| -> Result<(Vec<usize>, Vec<f32>), HarnessError> {
            let t = st.tensor(name).map_err(|e| HarnessError::Io(format!("{}: tensor {name}: {e}", path.display())))?;
            if t.dtype() != Dtype::F32 {
                return Err(HarnessError::Io(format!("{}: tensor {name} is not F32", path.display())));
            }
            let v = crate::params::f32_le(t.data());
            Ok((t.shape().to_vec(), v))
        };
        let (cs, cv) = get("ctx")?;
        let (qs, qv) = get("query")?;
        let (ys, yv) = get("y")?;
        let shape_err = || HarnessError::Io(format!("{}: golden tensors do not fit token width {E}", path.display()));
        let [t, n, e] = cs[..] else { return Err(shape_err()) };
        if e != E || qs != [t, E] || ys != [t] {
            return Err(shape_err());
        }
        let token = |s: &[f32]| -> [f32; E] { core::array::from_fn(|i| s[i]) };
        Ok(Golden {
            ctx: cv.chunks_exact(n * E).map(|task| task.chunks_exact(E).map(token).collect()).collect(),
            query: qv.chunks_exact(E).map(token).collect(),
            y: yv,
        })
    }
}

/// `dualform golden`: writes `golden.safetensors` and copies the trained and GD weights of a single-layer run
/// (`weights.safetensors`, `gd_weights.safetensors` in `from`) to `trained.safetensors` and `gd.safetensors` in `out`.
pub fn export(from: &Path, out: &Path, d: usize, n: usize, tasks: usize, seed: u64) -> Result<(), HarnessError> {
    if !(1..=4096).contains(&tasks) {
        return Err(HarnessError::Usage(format!("--tasks must be between 1 and 4096 (got {tasks})")));
    }
    if !out.is_dir() {
        return Err(HarnessError::BadOutput(format!("--out {} is not a folder", out.display())));
    }
    for (src, dst) in [("weights.safetensors", "trained.safetensors"), ("gd_weights.safetensors", "gd.safetensors")] {
        std::fs::copy(from.join(src), out.join(dst))
            .map_err(|e| HarnessError::Io(format!("copying {}: {e}", from.join(src).display())))?;
    }
    let sampler = TaskSampler { d, n, input_range: 1.0 };
    fn write<const D: usize, const E: usize>(
        s: &TaskSampler,
        seed: u64,
        tasks: usize,
        out: &Path,
    ) -> Result<(), HarnessError> {
        Golden::<E>::generate(s, seed, tasks).save(D, seed, &out.join("golden.safetensors"))
    }
    crate::with_d!(d, write(&sampler, seed, tasks, out))
}
