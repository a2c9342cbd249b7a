//! Golden tasks for the firmware: a fixed set of in-context regression tasks, written as `.safetensors`, that the
//! device runs and the host recomputes bit for bit.
//!
//! File format (`golden.safetensors`): f32 tensors `ctx` `[T, N, E]`, `query` `[T, E]` (query tokens `(x_q, 0)`),
//! `y` `[T]` (targets), and one metadata entry `dualform` = `{"format": "dualform-golden-v1", "d", "n", "seed",
//! "tasks", "input_range", "task"}` (`task`: the run's task distribution as JSON, the `config.task` of its report).
//!
//! The tasks follow the distribution of the run the weights come from: `dualform golden --from DIR` reads it from
//! `DIR/report.json`, so a model trained with `--input-range 2` is checked on tasks with that input range.

use crate::experiments::settings::in_range;
use crate::experiments::settings::TaskArgs;
use crate::tasks::TaskSampler;
use crate::HarnessError;
use dualform_tensors::{Tensor, TensorFile};
use std::collections::BTreeMap;
use std::path::Path;

/// A set of golden tasks, every token of width `e` (= d + 1) and every context of `n` pairs.
#[derive(Clone, Debug, PartialEq)]
pub struct Golden {
    /// Token width.
    pub e: usize,
    /// Context pairs per task.
    pub n: usize,
    /// Context tokens `[T, N, E]` (row-major: task, then token, then coordinate).
    pub ctx: Vec<f32>,
    /// Query tokens `(x_q, 0)`, `[T, E]`.
    pub query: Vec<f32>,
    /// Query targets, `[T]`.
    pub y: Vec<f32>,
}

impl Golden {
    /// `tasks` tasks of the distribution `sampler` from stream `(seed, 0..)`.
    pub fn generate(sampler: &TaskSampler, seed: u64, tasks: usize) -> Self {
        let (e, n) = (sampler.width(), sampler.n);
        let rows = sampler.par_chunks(seed, 0, tasks, Golden::empty_like(e, n), |acc, c, q, y| {
            acc.ctx.extend_from_slice(c);
            acc.query.extend_from_slice(q);
            acc.y.push(y);
        });
        let mut g = Golden::empty_like(e, n)();
        for part in rows {
            g.ctx.extend(part.ctx);
            g.query.extend(part.query);
            g.y.extend(part.y);
        }
        g
    }

    fn empty_like(e: usize, n: usize) -> impl Fn() -> Golden {
        move || Golden { e, n, ctx: Vec::new(), query: Vec::new(), y: Vec::new() }
    }

    /// The tasks in order: context tokens (`n * e` values), query token, target.
    pub fn tasks(&self) -> impl Iterator<Item = (&[f32], &[f32], f32)> {
        let (c, q) = ((self.n * self.e).max(1), self.e.max(1));
        self.ctx.chunks(c).zip(self.query.chunks(q)).zip(&self.y).map(|((c, q), &y)| (c, q, y))
    }

    /// Writes the file described in the module docs, for tasks of the distribution `task`.
    pub fn save(&self, task: &TaskArgs, seed: u64, path: &Path) -> Result<(), HarnessError> {
        let (t, n, e) = (self.y.len(), self.n, self.e);
        let tensors = [
            Tensor::new("ctx", vec![t, n, e], self.ctx.clone()),
            Tensor::new("query", vec![t, e], self.query.clone()),
            Tensor::new("y", vec![t], self.y.clone()),
        ];
        let meta: BTreeMap<String, String> = [
            ("format", "dualform-golden-v1".to_string()),
            ("d", task.d.to_string()),
            ("n", n.to_string()),
            ("seed", seed.to_string()),
            ("tasks", t.to_string()),
            ("input_range", task.input_range.to_string()),
            ("task", serde_json::to_string(task).map_err(|e| HarnessError::Io(format!("task metadata: {e}")))?),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        TensorFile::write(path, &tensors, &meta)?;
        Ok(())
    }

    /// Reads and validates a file written by [`Golden::save`]; `e`, when given, is the token width the caller needs.
    pub fn load(path: &Path, e: Option<usize>) -> Result<Self, HarnessError> {
        let f = TensorFile::read(path)?;
        f.expect_format("dualform-golden-v1")?;
        let (t, n, d): (usize, usize, usize) = (f.meta_parse("tasks")?, f.meta_parse("n")?, f.meta_parse("d")?);
        let width = d + 1;
        if let Some(want) = e.filter(|&w| w != width) {
            return Err(HarnessError::BadInput(format!(
                "{}: golden tasks of width {width} (d = {d}), but width {want} is needed",
                path.display()
            )));
        }
        Ok(Golden {
            e: width,
            n,
            ctx: f.values("ctx", &[t, n, width])?.to_vec(),
            query: f.values("query", &[t, width])?.to_vec(),
            y: f.values("y", &[t])?.to_vec(),
        })
    }
}

/// The task distribution of the single-layer run in `from` (its `report.json`'s `config.task`).
pub fn run_distribution(from: &Path) -> Result<TaskArgs, HarnessError> {
    let path = from.join("report.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        HarnessError::BadInput(format!(
            "{}: cannot read it ({e}); --from must be a single-layer results folder (the golden tasks follow its \
             distribution)",
            path.display()
        ))
    })?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| HarnessError::BadInput(format!("{}: not a report ({e})", path.display())))?;
    let task = value.get("config").and_then(|c| c.get("task")).cloned().ok_or_else(|| {
        HarnessError::BadInput(format!("{}: config.task: missing (not a single-layer report)", path.display()))
    })?;
    let task: TaskArgs = serde_json::from_value(task)
        .map_err(|e| HarnessError::BadInput(format!("{}: config.task: {e}", path.display())))?;
    task.validate().map_err(|e| HarnessError::BadInput(format!("{}: config.task: {e}", path.display())))?;
    Ok(task)
}

/// `dualform golden`: writes `golden.safetensors` with tasks of the run's distribution ([`run_distribution`]) and
/// copies the trained and GD weights of a single-layer run (`weights.safetensors`, `gd_weights.safetensors` in
/// `from`) to `trained.safetensors` and `gd.safetensors` in `out`. `d` and `n`, when given, must agree with the run.
pub fn export(
    from: &Path,
    out: &Path,
    d: Option<usize>,
    n: Option<usize>,
    tasks: usize,
    seed: u64,
) -> Result<TaskArgs, HarnessError> {
    in_range("--tasks", tasks, 1..=4096)?;
    if !out.is_dir() {
        return Err(HarnessError::BadOutput(format!("--out {} is not a folder", out.display())));
    }
    let task = run_distribution(from)?;
    for (flag, given, run) in [("--d", d, task.d), ("--n", n, task.n)] {
        if let Some(v) = given.filter(|v| *v != run) {
            return Err(HarnessError::Usage(format!(
                "{flag} {v} contradicts the run in {} ({} = {run}); leave it out to use the run's",
                from.display(),
                &flag[2..]
            )));
        }
    }
    // Every weight file is validated by the shared loader before anything is written.
    let files = [("weights.safetensors", "trained.safetensors"), ("gd_weights.safetensors", "gd.safetensors")];
    for (src, _) in files {
        crate::model::load_head(&from.join(src), task.d + 1)?;
    }
    for (src, dst) in files {
        std::fs::copy(from.join(src), out.join(dst))
            .map_err(|e| HarnessError::Io(format!("copying {}: {e}", from.join(src).display())))?;
    }
    Golden::generate(&task.sampler(), seed, tasks).save(&task, seed, &out.join("golden.safetensors"))?;
    Ok(task)
}
