//! Sweeps (`dualform sweep`, and the main job's `reproduce sweep`): where a verdict holds, over a grid of d, N / d, input anisotropy, depth and label noise.
//!
//! A spec ([`spec::Spec`], JSON) names the grid; every cell runs an existing experiment (`single-layer` at depth 1,
//! `multi-layer --layers K` per seed at depth K) into its own folder `OUT/cells/ID/` and records what became of it
//! in `OUT/cells/ID/cell.json` (finished, diverged, or failed with its error; never dropped). [`run`] runs the cells
//! of one shard (`--shard I/N`, or `--shard slurm` inside an array job) and skips cells that already have a record,
//! so re-running resumes; a cell's result does not depend on which shard or machine ran it (each experiment is
//! seeded and gives the same bits for any thread count). [`merge`] reads every cell's record, in the spec's order,
//! into one table (`sweep.csv`, `sweep.json`; cells without a record are listed as `missing`), their times
//! (`times.csv`, apart, since they depend on the machine) and heat maps of the verdict and of the loss gaps.

pub mod cell;
mod experiment;
pub mod maps;
pub mod spec;

pub use experiment::{Results, Settings, Sweep};
pub use maps::{heatmap, Map};

use crate::HarnessError;
use cell::CellResult;
use spec::{Cell, Shard, Spec};
use std::path::{Path, PathBuf};

/// What [`run`] did.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    /// Cells of this shard.
    pub cells: usize,
    /// Of those, already recorded and skipped.
    pub skipped: usize,
    /// Of those run now, how many finished (`ok`), and how many did not (`diverged` or `failed`).
    pub ok: usize,
    /// Not finished.
    pub not_ok: usize,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> HarnessError + '_ {
    move |e| HarnessError::BadOutput(format!("{}: {e}", path.display()))
}

/// The folder of a cell.
pub fn cell_dir(out: &Path, cell: &Cell) -> PathBuf {
    out.join("cells").join(&cell.id)
}

/// Writes `text` to `path` through a temporary file of its own (process and call) and a rename, so a record is whole or absent
/// even when several shards write the same file (the spec) at once.
fn write_atomic(path: &Path, text: &str) -> Result<(), HarnessError> {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}-{n}.tmp", std::process::id()));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Runs the cells of `shard` that have no record in `out` yet (with `retry_failed`, also those recorded as failed
/// or diverged), each with `threads` worker threads; `progress` hears of each cell as it starts and ends. `out`
/// keeps a copy of the spec (`spec.json`): a folder that holds another spec's cells is refused.
pub fn run(
    spec: &Spec,
    out: &Path,
    shard: Shard,
    threads: usize,
    retry_failed: bool,
    mut progress: impl FnMut(&str),
) -> Result<RunSummary, HarnessError> {
    std::fs::create_dir_all(out.join("cells")).map_err(io(out))?;
    let own = serde_json::to_string_pretty(spec).map_err(|e| HarnessError::Io(e.to_string()))?;
    let spec_path = out.join("spec.json");
    match std::fs::read_to_string(&spec_path) {
        Ok(existing) if serde_json::from_str::<Spec>(&existing).ok().as_ref() != Some(spec) => {
            return Err(HarnessError::Usage(format!(
                "{} holds the cells of another spec ({}); use another --out",
                out.display(),
                spec_path.display()
            )))
        }
        Ok(_) => {}
        // Several shards may start at once: whichever writes first, they write the same text.
        Err(_) => write_atomic(&spec_path, &own)?,
    }
    let cells: Vec<Cell> = spec.cells().into_iter().filter(|c| shard.has(c.index)).collect();
    let mut s = RunSummary { cells: cells.len(), skipped: 0, ok: 0, not_ok: 0 };
    for (i, c) in cells.iter().enumerate() {
        let record = cell_dir(out, c).join("cell.json");
        if let Some(done) = read_record(&record) {
            if done.status == "ok" || !retry_failed {
                s.skipped += 1;
                continue;
            }
        }
        progress(&format!("[{}/{}] {} ({}) ...", i + 1, cells.len(), c.id, c.experiment()));
        let r = cell::run(spec, c, &cell_dir(out, c), threads);
        let text = serde_json::to_string_pretty(&r).map_err(|e| HarnessError::Io(e.to_string()))?;
        write_atomic(&record, &text)?;
        progress(&format!(" {} {} ({:.1} s)\n", r.status, r.outcome, r.wall_seconds));
        if r.status == "ok" {
            s.ok += 1;
        } else {
            s.not_ok += 1;
        }
    }
    Ok(s)
}

fn read_record(path: &Path) -> Option<CellResult> {
    serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
}

/// What [`merge`] found.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeSummary {
    /// The printed table.
    pub text: String,
    /// Cells in the spec.
    pub cells: usize,
    /// Cells without a record.
    pub missing: Vec<String>,
}

/// The merged table's columns.
const COLUMNS: [&str; 19] = [
    "cell",
    "experiment",
    "d",
    "n",
    "n_over_d",
    "variance_ratio",
    "layers",
    "noise",
    "seeds",
    "status",
    "outcome",
    "loss",
    "loss_ci95",
    "gd_loss",
    "pgd_loss",
    "gdpp_loss",
    "gap_gd",
    "gap_pgd",
    "message",
];

fn num(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v:.6}"))
}

/// A CSV field: quoted when it holds a comma, a quote or a line break.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// Merges every cell's record in `out` into `sweep.csv`, `sweep.json`, `times.csv` and the heat maps
/// (`heatmap-verdict.png`, `heatmap-gap-gd.png`, `heatmap-gap-pgd.png` where there are depth-1 cells). The table
/// depends only on the records' results, not on which shard or machine wrote them, nor on their times.
pub fn merge(spec: &Spec, out: &Path) -> Result<MergeSummary, HarnessError> {
    let merged = merge_table(spec, out)?;
    let mut times = String::from("cell,status,wall_seconds\n");
    for (c, r) in merged.results.iter().filter_map(|(c, r)| Some((c, r.as_ref()?))) {
        times.push_str(&format!("{},{},{:.2}\n", c.id, r.status, r.wall_seconds));
    }
    std::fs::write(out.join("times.csv"), times).map_err(io(out))?;
    let mut text = merged.text;
    for map in Map::ALL {
        if let Err(e) = heatmap(map, spec, &merged.results, &out.join(map.file())) {
            text.push_str(&format!("{} not drawn: {e}\n", map.file()));
        }
    }
    text.push_str(&format!("table: {}\n", out.join("sweep.csv").display()));
    Ok(MergeSummary { text, cells: merged.results.len(), missing: merged.missing })
}

/// The cells and their records, merged (see [`merge_table`]).
pub struct Merged {
    /// Every cell in the spec's order, with its record if it has one.
    pub results: Vec<(Cell, Option<CellResult>)>,
    /// Cells without a record.
    pub missing: Vec<String>,
    /// The table as printed, with a line on the missing cells.
    pub text: String,
}

/// Reads every cell's record in `out`, in the spec's order, and writes `sweep.csv` and `sweep.json` there (the parts
/// of [`merge`] that do not depend on the machine).
pub fn merge_table(spec: &Spec, out: &Path) -> Result<Merged, HarnessError> {
    let cells = spec.cells();
    let mut csv = COLUMNS.join(",") + "\n";
    let mut rows = Vec::new();
    let mut missing = Vec::new();
    let mut results = Vec::new();
    for c in &cells {
        let r = read_record(&cell_dir(out, c).join("cell.json"));
        let (status, outcome, loss, message) = match &r {
            Some(r) => (r.status.clone(), r.outcome.clone(), r.loss, r.message.clone()),
            None => {
                missing.push(c.id.clone());
                ("missing".to_string(), String::new(), None, String::new())
            }
        };
        let get = |f: fn(&CellResult) -> Option<f64>| r.as_ref().and_then(f);
        let line = [
            c.id.clone(),
            c.experiment().to_string(),
            c.d.to_string(),
            c.n.to_string(),
            c.n_over_d.to_string(),
            c.variance_ratio.to_string(),
            c.layers.to_string(),
            c.noise.to_string(),
            spec.seeds.to_string(),
            status.clone(),
            outcome.clone(),
            num(loss.map(|l| l.mean)),
            num(loss.map(|l| l.ci95)),
            num(get(|r| r.gd_loss)),
            num(get(|r| r.pgd_loss)),
            num(get(|r| r.gdpp_loss)),
            num(get(|r| r.gap(r.gd_loss))),
            num(get(|r| r.gap(r.pgd_loss))),
            message.lines().next().unwrap_or("").to_string(),
        ];
        csv.push_str(&line.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        csv.push('\n');
        rows.push(serde_json::Value::Object(
            COLUMNS.iter().zip(&line).map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect(),
        ));
        results.push((c.clone(), r));
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    std::fs::write(out.join("sweep.csv"), &csv).map_err(io(out))?;
    let json = serde_json::json!({ "spec": spec, "cells": rows, "missing": missing });
    let json = serde_json::to_string_pretty(&json).map_err(|e| HarnessError::Io(e.to_string()))?;
    std::fs::write(out.join("sweep.json"), json).map_err(io(out))?;
    let mut text = table(&results);
    if !missing.is_empty() {
        text.push_str(&format!(
            "{} of {} cells have no record yet: {}\n",
            missing.len(),
            cells.len(),
            missing.join(", ")
        ));
    }
    Ok(Merged { results, missing, text })
}

/// The merged table as printed: one line per cell.
fn table(results: &[(Cell, Option<CellResult>)]) -> String {
    let mut t = format!(
        "{:<28} {:>4} {:>5} {:>6} {:>3} {:<9} {:<30} {:>8} {:>8} {:>8} {:>8}\n",
        "cell", "d", "N", "ratio", "K", "status", "verdict", "loss", "GD", "gap GD", "gap PGD"
    );
    for (c, r) in results {
        let (status, outcome) = r.as_ref().map_or(("missing", ""), |r| (r.status.as_str(), r.outcome.as_str()));
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:+.1}%", 100.0 * v));
        let loss = r.as_ref().and_then(|r| r.loss).map_or("-".into(), |l| format!("{:.4}", l.mean));
        let gd = r.as_ref().and_then(|r| r.gd_loss).map_or("-".into(), |l| format!("{l:.4}"));
        t.push_str(&format!(
            "{:<28} {:>4} {:>5} {:>6} {:>3} {:<9} {:<30} {:>8} {:>8} {:>8} {:>8}\n",
            c.id,
            c.d,
            c.n,
            c.variance_ratio,
            c.layers,
            status,
            outcome,
            loss,
            gd,
            pct(r.as_ref().and_then(|r| r.gap(r.gd_loss))),
            pct(r.as_ref().and_then(|r| r.gap(r.pgd_loss)))
        ));
    }
    t
}
