//! `dualform reproduce sweep`: the main job's map, a sweep sized for 2 cores (by default d in 2, 5, 10; N / d in
//! 0.5, 1, 2, 4; variance ratio 1 and 10; one and two layers; 2 seeds; 2000 steps of 1024 tasks), run in the
//! experiment's folder with the sweep engine and drawn as heat maps on the index page.
//!
//! Files: `report.json`, `spec.json`, `sweep.csv`, `sweep.json`, `cells/` (each cell's experiment folder and record),
//! `heatmap-verdict.png`, `heatmap-gap-gd.png`, `heatmap-gap-pgd.png`.

use super::cell::CellResult;
use super::spec::{Shard, Spec};
use crate::experiments::settings::{in_range, Shared};
use crate::experiments::{Experiment, Groups, QuickSet, Run};
use crate::output::report::{Check, Table, Tables};
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// The experiment.
pub struct Sweep;

fn list<T: std::str::FromStr>(flag: &str, text: &str) -> Result<Vec<T>, HarnessError> {
    text.split(',')
        .map(|v| v.trim().parse::<T>().map_err(|_| HarnessError::Usage(format!("{flag}: {v} is not a number"))))
        .collect()
}

/// Settings of `reproduce sweep`: the grid's axes, and the shared training and evaluation flags that every cell gets.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub shared: Shared,
    /// Input dimensions d of the grid, comma-separated.
    #[arg(long, default_value = "2,5,10")]
    pub grid_d: String,
    /// Context lengths N / d of the grid, comma-separated.
    #[arg(long, default_value = "0.5,1,2,4")]
    pub grid_n_over_d: String,
    /// Variance ratios of the grid, comma-separated (1: isotropic).
    #[arg(long, default_value = "1,10")]
    pub grid_variance_ratio: String,
    /// Depths of the grid, comma-separated.
    #[arg(long, default_value = "1,2")]
    pub grid_layers: String,
    /// Training seeds per cell (3: the one-layer rules' minimum for a verdict; with 2, Student t's 12.7 makes the
    /// seed intervals too wide for the closeness rule).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub grid_seeds: usize,
}

impl Settings {
    /// The spec the settings describe: the grid, and the shared flags for every cell.
    pub fn spec(&self) -> Result<Spec, HarnessError> {
        let (t, e, c) = (&self.shared.train, &self.shared.eval, &self.shared.curves);
        let mut args = vec![
            "--eval-seed".to_string(),
            self.shared.common.eval_seed.to_string(),
            "--steps".into(),
            t.steps.to_string(),
            "--batch".into(),
            t.batch.to_string(),
            "--eval-tasks".into(),
            e.eval_tasks.to_string(),
            "--probe-tasks".into(),
            c.probe_tasks.to_string(),
            "--log-every".into(),
            c.log_every.to_string(),
        ];
        if let Some(lr) = t.lr {
            args.extend(["--lr".into(), lr.to_string()]);
        }
        if let Some(clip) = t.clip {
            args.extend(["--clip".into(), clip.to_string()]);
        }
        let spec = Spec {
            d: list("--grid-d", &self.grid_d)?,
            n_over_d: list("--grid-n-over-d", &self.grid_n_over_d)?,
            variance_ratio: list("--grid-variance-ratio", &self.grid_variance_ratio)?,
            layers: list("--grid-layers", &self.grid_layers)?,
            noise: vec![0.0],
            seeds: self.grid_seeds,
            args,
            deep_args: if self.shared.common.quick { vec!["--fit-iters".into(), "2".into()] } else { vec![] },
        };
        spec.check().map_err(|e| HarnessError::Usage(format!("the grid: {e}")))?;
        Ok(spec)
    }
}

impl crate::experiments::Settings for Settings {
    const QUICK: &'static [QuickSet] = &[&[
        ("grid_d", "2,3"),
        ("grid_n_over_d", "1,2"),
        ("grid_variance_ratio", "1"),
        ("steps", "40"),
        ("eval_tasks", "300"),
        ("probe_tasks", "64"),
    ]];

    fn groups(&self) -> Groups<'_> {
        Groups::new(&self.shared)
    }

    fn check(&self) -> Result<(), HarnessError> {
        in_range("--grid-seeds", self.grid_seeds, 1..=100)?;
        if self.shared.common.seed != 0 {
            return Err(HarnessError::Usage(
                "--seed: every cell trains seeds 0 to --grid-seeds - 1; the sweep takes no other first seed".into(),
            ));
        }
        self.spec().map(|_| ())
    }
}

/// What `reproduce sweep` found: every cell's result, in the spec's order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The spec the cells ran.
    pub spec: Spec,
    /// Every cell's record.
    pub cells: Vec<CellResult>,
}

impl Results {
    /// Cells at `layers` (with `isotropic` inputs, or not) and how many of them have outcome `outcome`.
    fn count(&self, layers: usize, isotropic: bool, outcome: &str) -> (usize, usize) {
        let at = self.cells.iter().filter(|r| r.cell.layers == layers && (r.cell.variance_ratio == 1.0) == isotropic);
        let all: Vec<&CellResult> = at.collect();
        (all.iter().filter(|r| r.outcome == outcome).count(), all.len())
    }
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new(
            "every cell: verdict and loss against GD (K steps, one tuned rate) and preconditioned GD (one layer)",
            &["d", "N", "variance ratio", "K", "status", "verdict", "loss", "GD", "gap to GD", "gap to PGD"],
        );
        let pct = |v: Option<f64>| v.map_or("-".into(), |v| format!("{:+.1}%", 100.0 * v));
        for r in &self.cells {
            t.row(vec![
                r.cell.d.to_string(),
                r.cell.n.to_string(),
                r.cell.variance_ratio.to_string(),
                r.cell.layers.to_string(),
                r.status.clone(),
                r.outcome.clone(),
                r.loss.map_or("-".into(), |l| l.show()),
                r.gd_loss.map_or("-".into(), |l| format!("{l:.4}")),
                pct(r.gap(r.gd_loss)),
                pct(r.gap(r.pgd_loss)),
            ]);
        }
        vec![t]
    }
}

impl Experiment for Sweep {
    const NAME: &'static str = "sweep";
    const ABOUT: &'static str =
        "Where a verdict holds: single-layer and multi-layer over a grid of d, N / d, input anisotropy and depth";
    const DEFAULTS: &'static [(&'static str, &'static str)] =
        &[("steps", "2000"), ("batch", "1024"), ("eval_tasks", "2000")];
    type Settings = Settings;
    type Results = Results;

    /// Every cell finishes; and one layer implements GD on isotropic inputs in every cell with d >= 5 (where
    /// `single-layer` finds it at d = 10).
    fn checks(_: &Settings, r: &Results) -> Vec<Check> {
        let unfinished = r.cells.iter().filter(|c| c.status != "ok").count();
        let iso: Vec<&CellResult> =
            r.cells.iter().filter(|c| c.cell.layers == 1 && c.cell.variance_ratio == 1.0 && c.cell.d >= 5).collect();
        let gd = iso.iter().filter(|c| c.outcome == "implements_gd").count();
        vec![
            Check::at_most("every_cell_finished", "cells that failed or diverged", unfinished as f64, 0.0),
            Check::at_least(
                "one_layer_gd_isotropic",
                "share of one-layer isotropic cells with d >= 5 that implement GD",
                if iso.is_empty() { f64::NAN } else { gd as f64 / iso.len() as f64 },
                1.0,
            ),
        ]
    }

    fn verdict(_: &Settings, r: &Results, _: &[Check]) -> String {
        let (gd, iso) = r.count(1, true, "implements_gd");
        let (pgd, aniso) = r.count(1, false, "implements_preconditioned_gd");
        let deep: Vec<&CellResult> = r.cells.iter().filter(|c| c.cell.layers > 1).collect();
        let matched = deep.iter().filter(|c| c.outcome.starts_with("matches_gd")).count();
        let below = deep.iter().filter(|c| c.gap(c.gd_loss).is_some_and(|g| g < 0.0)).count();
        let unfinished = r.cells.iter().filter(|c| c.status != "ok").count();
        format!(
            "{} cells: one layer implements GD in {gd} of {iso} isotropic cells and preconditioned GD in {pgd} of \
             {aniso} anisotropic ones; deeper models match a GD variant in {matched} of {} cells and beat K GD steps \
             in {below}{}",
            r.cells.len(),
            deep.len(),
            if unfinished > 0 { format!("; {unfinished} cells did not finish") } else { String::new() }
        )
    }

    fn run(s: &Settings, run: &mut Run<'_>) -> Result<Results, HarnessError> {
        let spec = s.spec()?;
        // The engine writes its records under `cells/` and the spec's copy beside them, in this run's folder.
        let dir = run.file("spec.json").parent().map(std::path::Path::to_path_buf).unwrap_or_default();
        run.file("cells");
        let threads = s.shared.common.threads;
        let progress = |line: &str| {
            if line.ends_with('\n') {
                eprint!("{line}");
            } else {
                eprint!("sweep {line}");
            }
        };
        super::run(&spec, &dir, Shard::ALL, threads, false, progress)?;
        let merged = super::merge_table(&spec, &dir)?;
        run.file("sweep.csv");
        run.file("sweep.json");
        for map in super::Map::ALL {
            run.image(map.file(), map.caption(), |path| super::heatmap(map, &spec, &merged.results, path));
        }
        let cells = merged.results.into_iter().filter_map(|(_, r)| r).collect();
        Ok(Results { spec, cells })
    }
}
