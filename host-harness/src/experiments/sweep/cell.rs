//! Running one cell (its experiment, once or once per seed, into the cell's own folder) and reading its outcome back
//! from the reports it wrote.

use super::spec::{Cell, Spec};
use crate::judge::stats::Stat;
use crate::judge::verdict::{over_seeds, LOSS_TOLERANCE};
use crate::HarnessError;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What became of a cell.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CellResult {
    /// The cell.
    pub cell: Cell,
    /// Seeds trained.
    pub seeds: usize,
    /// `ok`, `diverged` (a loss that is not finite) or `failed` (the experiment stopped with an error).
    pub status: String,
    /// The verdict: `implements_gd`, `implements_preconditioned_gd`, `matches_loss_only`, `does_not_match` (depth 1,
    /// the single-layer rules); `matches_gd`, `matches_gd_per_step`, `matches_gd_plus_plus`, `matches_loss_only`,
    /// `does_not_match` (depth K, the multi-layer rule: loss within 3% and Model cos at least 0.99), or `mixed` when
    /// the seeds of a deep cell disagree; empty when the cell did not finish.
    pub outcome: String,
    /// The trained model's held-out loss (interval over seeds and tasks).
    pub loss: Option<Stat>,
    /// K steps of GD with a tuned rate (one step at depth 1).
    pub gd_loss: Option<f64>,
    /// Preconditioned GD (depth 1 only).
    pub pgd_loss: Option<f64>,
    /// GD++ (depth 2 and more).
    pub gdpp_loss: Option<f64>,
    /// The error, for a failed cell.
    pub message: String,
    /// Wall time of the cell, seconds (not part of the merged table, which must not depend on the machine).
    pub wall_seconds: f64,
}

impl CellResult {
    /// The loss's relative gap to a reference's: `loss / reference - 1`.
    pub fn gap(&self, reference: Option<f64>) -> Option<f64> {
        Some(self.loss?.mean / reference? - 1.0)
    }
}

/// The flags of a cell's experiment run (besides `--out`): its shape, distribution and seeds, then the spec's own
/// (`args`, and `deep_args` for a `multi-layer` run, which is the one given a `seed`).
pub fn args(spec: &Spec, cell: &Cell, seed: Option<usize>) -> Vec<String> {
    let mut a: Vec<String> = vec!["--d".into(), cell.d.to_string(), "--n".into(), cell.n.to_string()];
    if cell.variance_ratio != 1.0 {
        a.extend(["--variance-ratio".into(), cell.variance_ratio.to_string()]);
    }
    if cell.noise != 0.0 {
        a.extend(["--noise".into(), cell.noise.to_string()]);
    }
    match seed {
        None => a.extend(["--seeds".into(), spec.seeds.to_string()]),
        Some(s) => a.extend(["--seed".into(), s.to_string(), "--layers".into(), cell.layers.to_string()]),
    }
    a.extend(spec.args.iter().cloned());
    if seed.is_some() {
        a.extend(spec.deep_args.iter().cloned());
    }
    a
}

/// Runs `cell` into `dir` (created; anything there is replaced) and returns its result; an experiment that stops
/// with an error gives a `failed` result, not an error. `threads` is passed on (`--threads`).
pub fn run(spec: &Spec, cell: &Cell, dir: &Path, threads: usize) -> CellResult {
    let start = std::time::Instant::now();
    let _ = std::fs::remove_dir_all(dir);
    let outcome = std::fs::create_dir_all(dir)
        .map_err(|e| HarnessError::BadOutput(format!("{}: {e}", dir.display())))
        .and_then(|()| {
            if cell.layers == 1 {
                run_one("single-layer", &args(spec, cell, None), dir, threads)?;
                read_single(&dir.join("single-layer").join("report.json"))
            } else {
                let mut per_seed = Vec::new();
                for seed in 0..spec.seeds {
                    let out = dir.join(format!("seed-{seed}"));
                    run_one("multi-layer", &args(spec, cell, Some(seed)), &out, threads)?;
                    per_seed.push(read_deep(&out.join("multi-layer").join("report.json"))?);
                }
                Ok(combine_deep(&per_seed))
            }
        });
    let wall_seconds = start.elapsed().as_secs_f64();
    let mut r = CellResult {
        cell: cell.clone(),
        seeds: spec.seeds,
        status: "ok".into(),
        outcome: String::new(),
        loss: None,
        gd_loss: None,
        pgd_loss: None,
        gdpp_loss: None,
        message: String::new(),
        wall_seconds,
    };
    match outcome {
        Ok(o) => {
            r.status = if o.loss.mean.is_finite() { "ok" } else { "diverged" }.into();
            (r.outcome, r.loss, r.gd_loss, r.pgd_loss, r.gdpp_loss) =
                (o.outcome, Some(o.loss), o.gd_loss, o.pgd_loss, o.gdpp_loss);
        }
        Err(e) => {
            r.status = "failed".into();
            r.message = e.to_string();
        }
    }
    r
}

fn run_one(experiment: &str, args: &[String], out: &Path, threads: usize) -> Result<(), HarnessError> {
    let mut all = args.to_vec();
    all.extend(["--out".into(), out.display().to_string(), "--threads".into(), threads.to_string()]);
    std::fs::create_dir_all(out).map_err(|e| HarnessError::BadOutput(format!("{}: {e}", out.display())))?;
    crate::experiments::reproduce(experiment, &all, |_| {}).map(|_| ())
}

/// What a cell's reports say.
struct Outcome {
    outcome: String,
    loss: Stat,
    gd_loss: Option<f64>,
    pgd_loss: Option<f64>,
    gdpp_loss: Option<f64>,
}

fn read_json(path: &Path) -> Result<serde_json::Value, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| HarnessError::Io(format!("{}: {e}", path.display())))
}

fn stat(v: &serde_json::Value) -> Option<Stat> {
    serde_json::from_value(v.clone()).ok()
}

/// `single-layer`'s assessment: the ruling's outcome, the loss over seeds, GD's and preconditioned GD's losses.
fn read_single(path: &Path) -> Result<Outcome, HarnessError> {
    let r = read_json(path)?;
    let a = &r["results"]["assessment"];
    let missing = || HarnessError::Io(format!("{}: no assessment", path.display()));
    let loss = stat(&a["loss"]).ok_or_else(missing)?;
    let role = |role: &str| {
        a["agreements"].as_array()?.iter().find(|g| g["role"] == role).and_then(|g| g["loss"]["mean"].as_f64())
    };
    Ok(Outcome {
        outcome: a["ruling"]["outcome"].as_str().unwrap_or("").to_string(),
        loss,
        gd_loss: role("gd"),
        pgd_loss: role("preconditioned"),
        gdpp_loss: None,
    })
}

/// One `multi-layer` run at one depth: its outcome by the multi-layer rule and the losses.
fn read_deep(path: &Path) -> Result<Outcome, HarnessError> {
    let r = read_json(path)?;
    let depth = &r["results"]["depths"][0];
    let missing = || HarnessError::Io(format!("{}: no depth", path.display()));
    let loss = depth["readout"].as_array().and_then(|v| v.last()).and_then(stat).ok_or_else(missing)?;
    let refs = depth["references"].as_array().ok_or_else(missing)?;
    let find = |name: &str| refs.iter().find(|x| x["params"]["name"] == name);
    let ref_loss = |name: &str| find(name).and_then(|x| x["vs_trained"]["loss_b"]["mean"].as_f64());
    let matched = |name: &str| find(name).is_some_and(|x| x["matched"] == true);
    let gd_loss = ref_loss("GD");
    let outcome = if matched("GD") {
        "matches_gd"
    } else if matched("GD, rate per step") {
        "matches_gd_per_step"
    } else if matched("GD++") {
        "matches_gd_plus_plus"
    } else if gd_loss.is_some_and(|g| loss.mean <= g * (1.0 + LOSS_TOLERANCE)) {
        "matches_loss_only"
    } else {
        "does_not_match"
    };
    Ok(Outcome { outcome: outcome.into(), loss, gd_loss, pgd_loss: None, gdpp_loss: ref_loss("GD++") })
}

/// Seeds of a deep cell together: their common outcome (`mixed` if they differ), the loss over seeds, the
/// references' mean losses.
fn combine_deep(per_seed: &[Outcome]) -> Outcome {
    let first = per_seed.first().map_or("", |o| o.outcome.as_str());
    let outcome = if per_seed.iter().all(|o| o.outcome == first) { first.to_string() } else { "mixed".into() };
    let mean = |f: fn(&Outcome) -> Option<f64>| {
        let v: Option<Vec<f64>> = per_seed.iter().map(f).collect();
        v.map(|v| v.iter().sum::<f64>() / v.len().max(1) as f64)
    };
    Outcome {
        outcome,
        loss: over_seeds(&per_seed.iter().map(|o| o.loss).collect::<Vec<_>>()),
        gd_loss: mean(|o| o.gd_loss),
        pgd_loss: None,
        gdpp_loss: mean(|o| o.gdpp_loss),
    }
}
