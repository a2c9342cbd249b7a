//! A sweep's spec (a small JSON file) and its cells, in one fixed order.

use crate::HarnessError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What a sweep runs: the grid's axes, seeds, and the flags every cell passes to its experiment.
///
/// ```json
/// {
///   "d": [2, 5, 10],
///   "n_over_d": [0.5, 1, 2, 4],
///   "variance_ratio": [1, 10],
///   "layers": [1, 2],
///   "noise": [0],
///   "seeds": 3,
///   "args": ["--steps", "2000"],
///   "deep_args": ["--fit-iters", "20"]
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Input dimensions d.
    pub d: Vec<usize>,
    /// Context lengths as multiples of d (N = round(n_over_d d), at least 1).
    pub n_over_d: Vec<f64>,
    /// Input anisotropy: the ratio of the largest to the smallest coordinate variance (1: isotropic).
    #[serde(default = "one")]
    pub variance_ratio: Vec<f64>,
    /// Depths: 1 runs `single-layer`, K >= 2 runs `multi-layer --layers K`.
    #[serde(default = "one_layer")]
    pub layers: Vec<usize>,
    /// Label noise standard deviations.
    #[serde(default = "zero")]
    pub noise: Vec<f64>,
    /// Training seeds per cell (0, 1, ...): `single-layer --seeds`, or one `multi-layer` run per seed.
    #[serde(default = "three")]
    pub seeds: usize,
    /// Flags passed to every cell's experiment (for example `--steps 2000` or `--quick`).
    #[serde(default)]
    pub args: Vec<String>,
    /// Flags passed to the depth-K cells' `multi-layer` runs only, after `args` (for example `--fit-iters 20`).
    #[serde(default)]
    pub deep_args: Vec<String>,
}

fn one() -> Vec<f64> {
    vec![1.0]
}
fn one_layer() -> Vec<usize> {
    vec![1]
}
fn zero() -> Vec<f64> {
    vec![0.0]
}
fn three() -> usize {
    3
}

/// One point of the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// Its position in the spec's order.
    pub index: usize,
    /// Its name and folder: `d5-n10-vr10-k1-noise0`.
    pub id: String,
    /// Input dimension.
    pub d: usize,
    /// Context pairs.
    pub n: usize,
    /// N / d as the spec gives it.
    pub n_over_d: f64,
    /// Variance ratio.
    pub variance_ratio: f64,
    /// Depth.
    pub layers: usize,
    /// Label noise.
    pub noise: f64,
}

impl Cell {
    /// The experiment the cell runs.
    pub fn experiment(&self) -> &'static str {
        if self.layers == 1 {
            "single-layer"
        } else {
            "multi-layer"
        }
    }
}

/// A number as a folder name writes it: `0.5` -> `0.5`, `10` -> `10`.
fn short(v: f64) -> String {
    format!("{v}")
}

impl Spec {
    /// Reads and checks a spec file; every problem is one line naming the file and the field.
    pub fn read(path: &Path) -> Result<Spec, HarnessError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| HarnessError::BadInput(format!("{}: cannot read the sweep spec: {e}", path.display())))?;
        let spec: Spec = serde_json::from_str(&text)
            .map_err(|e| HarnessError::BadInput(format!("{}: not a sweep spec: {e}", path.display())))?;
        spec.check().map_err(|e| HarnessError::BadInput(format!("{}: {e}", path.display())))?;
        Ok(spec)
    }

    /// The spec's own rules: every axis non-empty, d from 1 to 256, N / d and ratios positive and finite, depths
    /// from 1 to 8, noise finite and not negative, 1 to 100 seeds, and no flag that the sweep sets itself.
    pub fn check(&self) -> Result<(), String> {
        let empty = [
            ("d", self.d.is_empty()),
            ("n_over_d", self.n_over_d.is_empty()),
            ("variance_ratio", self.variance_ratio.is_empty()),
            ("layers", self.layers.is_empty()),
            ("noise", self.noise.is_empty()),
        ];
        if let Some((name, _)) = empty.iter().find(|(_, e)| *e) {
            return Err(format!("{name}: give at least one value"));
        }
        if let Some(d) = self.d.iter().find(|d| !(1..=256).contains(*d)) {
            return Err(format!("d: {d} is outside 1 to 256"));
        }
        if let Some(r) = self.n_over_d.iter().find(|r| !(r.is_finite() && **r > 0.0)) {
            return Err(format!("n_over_d: {r} is not a positive number"));
        }
        if let Some(r) = self.variance_ratio.iter().find(|r| !(r.is_finite() && **r >= 1.0)) {
            return Err(format!("variance_ratio: {r} is not a number of at least 1"));
        }
        if let Some(k) = self.layers.iter().find(|k| !(1..=8).contains(*k)) {
            return Err(format!("layers: {k} is outside 1 to 8"));
        }
        if let Some(s) = self.noise.iter().find(|s| !(s.is_finite() && **s >= 0.0)) {
            return Err(format!("noise: {s} is not a standard deviation"));
        }
        if !(1..=100).contains(&self.seeds) {
            return Err(format!("seeds: {} is outside 1 to 100", self.seeds));
        }
        let owned =
            ["--out", "--d", "--n", "--variance-ratio", "--input-scales", "--noise", "--layers", "--seed", "--seeds"];
        let own = |a: &&String| owned.iter().any(|o| a.as_str() == *o || a.starts_with(&format!("{o}=")));
        for (name, list) in [("args", &self.args), ("deep_args", &self.deep_args)] {
            if let Some(a) = list.iter().find(own) {
                return Err(format!("{name}: {a} is set by the sweep for each cell; use the spec's fields"));
            }
        }
        Ok(())
    }

    /// Every cell, in the spec's order: d, then N / d, variance ratio, depth and noise, the last varying fastest.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::new();
        for &d in &self.d {
            for &r in &self.n_over_d {
                for &ratio in &self.variance_ratio {
                    for &layers in &self.layers {
                        for &noise in &self.noise {
                            let n = ((r * d as f64).round() as usize).max(1);
                            let id = format!("d{d}-n{n}-vr{}-k{layers}-noise{}", short(ratio), short(noise));
                            let index = cells.len();
                            cells.push(Cell { index, id, d, n, n_over_d: r, variance_ratio: ratio, layers, noise });
                        }
                    }
                }
            }
        }
        cells
    }
}

/// Which cells a process runs: `I/N` (the cells whose index is I modulo N, 0 <= I < N), or the whole grid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This shard's number, from 0.
    pub index: usize,
    /// How many shards.
    pub count: usize,
}

impl Shard {
    /// Every cell.
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// `I/N`; or `slurm`: the array task's place in its array, from `SLURM_ARRAY_TASK_ID`, `SLURM_ARRAY_TASK_MIN`
    /// (0 when unset) and `SLURM_ARRAY_TASK_COUNT`, as an array job sets them (`sbatch --array=0-7`).
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Shard, HarnessError> {
        let usage = |m: String| HarnessError::Usage(format!("--shard {text}: {m}"));
        let (index, count) = if text == "slurm" {
            let var = |name: &str| -> Result<usize, HarnessError> {
                let v = env(name).ok_or_else(|| usage(format!("{name} is not set (not inside a Slurm array job?)")))?;
                v.trim().parse().map_err(|_| usage(format!("{name}={v} is not a number")))
            };
            let id = var("SLURM_ARRAY_TASK_ID")?;
            let min = if env("SLURM_ARRAY_TASK_MIN").is_some() { var("SLURM_ARRAY_TASK_MIN")? } else { 0 };
            let count = var("SLURM_ARRAY_TASK_COUNT")?;
            (id.checked_sub(min).ok_or_else(|| usage(format!("task {id} is below the array's first, {min}")))?, count)
        } else {
            let (i, n) = text.split_once('/').ok_or_else(|| usage("expected I/N (for example 0/4) or slurm".into()))?;
            let num = |s: &str| s.trim().parse::<usize>().map_err(|_| usage(format!("{s} is not a number")));
            (num(i)?, num(n)?)
        };
        if count == 0 || index >= count {
            return Err(usage(format!("shard {index} of {count}: need 0 <= I < N")));
        }
        Ok(Shard { index, count })
    }

    /// Whether cell `index` is this shard's.
    pub fn has(&self, index: usize) -> bool {
        index % self.count == self.index
    }
}
