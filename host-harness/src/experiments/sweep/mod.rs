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
pub mod spec;

pub use experiment::{Results, Settings, Sweep};

use crate::output::plot::{draw_heatmaps, HeatPanel, Rgb};
use crate::HarnessError;
use cell::CellResult;
use spec::{Cell, Shard, Spec};
use std::collections::BTreeSet;
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

/// The verdict's colour and its legend word.
fn verdict_colour(outcome: &str, status: &str) -> (Rgb, &'static str) {
    match (status, outcome) {
        ("ok", "implements_gd" | "matches_gd") => ((44, 160, 44), "GD"),
        ("ok", "implements_preconditioned_gd") => ((31, 119, 180), "preconditioned GD"),
        ("ok", "matches_gd_per_step" | "matches_gd_plus_plus") => ((23, 190, 207), "GD per step / GD++"),
        ("ok", "matches_loss_only") => ((255, 170, 60), "GD's loss or better, not identified"),
        ("ok", "mixed") => ((200, 200, 120), "seeds disagree"),
        ("ok", _) => ((214, 39, 40), "neither"),
        _ => ((150, 150, 150), "not finished"),
    }
}

/// A colour for a relative gap: white at 0, red above (worse than the reference), blue below, saturating at 30%.
fn gap_colour(gap: f64) -> Rgb {
    let t = (gap.abs() / 0.3).min(1.0);
    let fade = |c: u8| (255.0 - t * (255.0 - c as f64)).round() as u8;
    if gap >= 0.0 {
        (fade(214), fade(39), fade(40))
    } else {
        (fade(31), fade(119), fade(180))
    }
}

/// A heat map cell's colour and text for a cell's result (`None`: left blank).
type CellShade<'a> = dyn Fn(&CellResult) -> Option<(Rgb, String)> + 'a;

/// The heat maps of a sweep, each over (N / d, d) with one panel per variance ratio, depth and noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    /// The verdict (colour) and the loss gap to GD (text).
    Verdict,
    /// The loss gap to GD (K steps with one tuned rate at depth K).
    GapGd,
    /// The loss gap to preconditioned GD (depth 1 only).
    GapPgd,
}

impl Map {
    /// Every map.
    pub const ALL: [Map; 3] = [Map::Verdict, Map::GapGd, Map::GapPgd];

    /// Its file.
    pub fn file(self) -> &'static str {
        match self {
            Map::Verdict => "heatmap-verdict.png",
            Map::GapGd => "heatmap-gap-gd.png",
            Map::GapPgd => "heatmap-gap-pgd.png",
        }
    }

    /// Its caption.
    pub fn caption(self) -> &'static str {
        match self {
            Map::Verdict => "The verdict over d and N / d (colour) with the loss gap to GD (text), per depth and input anisotropy",
            Map::GapGd => "Loss gap to GD (K steps, one tuned rate) over d and N / d",
            Map::GapPgd => "Loss gap of the one-layer models to preconditioned GD over d and N / d",
        }
    }
}

/// Draws `map` of `results` into `path`; the preconditioned-GD map needs depth-1 cells (an error otherwise).
pub fn heatmap(map: Map, spec: &Spec, results: &[(Cell, Option<CellResult>)], path: &Path) -> Result<(), HarnessError> {
    let columns: Vec<String> = spec.n_over_d.iter().map(|r| format!("{r}")).collect();
    let rows: Vec<String> = spec.d.iter().map(|d| d.to_string()).collect();
    let mut groups: Vec<(f64, usize, f64)> = Vec::new();
    for (c, _) in results {
        if !groups.contains(&(c.variance_ratio, c.layers, c.noise)) && (map != Map::GapPgd || c.layers == 1) {
            groups.push((c.variance_ratio, c.layers, c.noise));
        }
    }
    if groups.is_empty() {
        return Err(HarnessError::Io("no cells for this map".into()));
    }
    let title = |what: &str, (ratio, k, noise): (f64, usize, f64)| {
        let noise = if spec.noise.len() > 1 { format!(", noise {noise}") } else { String::new() };
        format!("{what}: K = {k}, variance ratio {ratio}{noise}")
    };
    let panel = |what: &str, g: (f64, usize, f64), shade: &CellShade<'_>| HeatPanel {
        title: title(what, g),
        x_label: "N / d".into(),
        y_label: "d".into(),
        columns: columns.clone(),
        rows: rows.clone(),
        cells: results
            .iter()
            .filter(|(c, _)| (c.variance_ratio, c.layers, c.noise) == g)
            .filter_map(|(c, r)| {
                let x = spec.n_over_d.iter().position(|r| *r == c.n_over_d)?;
                let y = spec.d.iter().position(|d| *d == c.d)?;
                let (colour, text) = shade(r.as_ref()?)?;
                Some((x, y, colour, text))
            })
            .collect(),
    };
    let gap = |f: fn(&CellResult) -> Option<f64>| {
        move |r: &CellResult| r.gap(f(r)).map(|v| (gap_colour(v), format!("{:+.1}%", 100.0 * v)))
    };
    let key = vec![(gap_colour(0.3), "loss above the reference".to_string()), (gap_colour(-0.3), "below".to_string())];
    let (panels, legend): (Vec<HeatPanel>, Vec<(Rgb, String)>) = match map {
        Map::Verdict => {
            let mut seen = BTreeSet::new();
            let mut legend = Vec::new();
            for r in results.iter().filter_map(|(_, r)| r.as_ref()) {
                let (colour, word) = verdict_colour(&r.outcome, &r.status);
                if seen.insert(word) {
                    legend.push((colour, word.to_string()));
                }
            }
            let shade = |r: &CellResult| {
                let gap = r.gap(r.gd_loss).map_or(String::new(), |v| format!("{:+.0}%", 100.0 * v));
                Some((verdict_colour(&r.outcome, &r.status).0, gap))
            };
            (groups.iter().map(|&g| panel("verdict", g, &shade)).collect(), legend)
        }
        Map::GapGd => (groups.iter().map(|&g| panel("loss gap to GD", g, &gap(|r| r.gd_loss))).collect(), key),
        Map::GapPgd => {
            (groups.iter().map(|&g| panel("loss gap to preconditioned GD", g, &gap(|r| r.pgd_loss))).collect(), key)
        }
    };
    draw_heatmaps(path, &panels, &legend)
}
