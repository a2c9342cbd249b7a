//! Every experiment's quick variant, run once through `dualform reproduce all --quick` (as CI and a user would run
//! it): each report read back through its typed report and checked against what must hold (`quick.rs`); here, what
//! holds for every registered experiment alike: the index page, every saved report judged again, and identical
//! outputs across runs and thread counts.

#[path = "../common/mod.rs"]
mod common;
mod quick;

use dualform_harness::output::report::{read, Report, Tables};
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The output folder of one `reproduce all --quick`, shared by every test of this file.
pub(crate) fn quick_all() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("results");
        let o = Command::new(env!("CARGO_BIN_EXE_dualform"))
            .args(["reproduce", "all", "--quick", "--out", out.to_str().unwrap()])
            .output()
            .expect("the dualform binary runs");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let stdout = String::from_utf8_lossy(&o.stdout);
        assert!(stdout.contains("all experiments") && stdout.contains("index.html"), "{stdout}");
        out
    })
}

pub(crate) fn report<S: DeserializeOwned, R: DeserializeOwned + Tables>(name: &str) -> Report<S, R> {
    let dir = quick_all().join(name);
    let r: Report<S, R> = read(&dir.join("report.json")).unwrap_or_else(|e| panic!("{name}: {e}"));
    for f in &r.files {
        assert!(dir.join(f).is_file(), "{name}: listed file {f} is missing");
    }
    // Every table is rectangular: as many cells in each row as there are columns.
    for t in r.results.tables() {
        for row in &t.rows {
            assert_eq!(row.len(), t.columns.len(), "{name}: table {:?}: row {row:?}", t.title);
        }
    }
    r
}

/// The index page has a section and a report link for every registered experiment, and shows every plot each one
/// wrote (at least one each).
#[test]
fn the_index_page_shows_every_experiment_and_plot() {
    let html = std::fs::read_to_string(quick_all().join("index.html")).unwrap();
    for entry in dualform_harness::experiments::REGISTRY {
        let name = entry.name();
        assert!(html.contains(&format!("id=\"{name}\"")), "section {name}");
        assert!(html.contains(&format!("href=\"{name}/report.json\"")), "link to {name}/report.json");
        let mut plots = 0;
        for file in std::fs::read_dir(quick_all().join(name)).unwrap() {
            let file = file.unwrap().file_name().to_string_lossy().to_string();
            if file.ends_with(".png") {
                assert!(html.contains(&format!("src=\"{name}/{file}\"")), "{name}/{file}");
                plots += 1;
            }
        }
        assert!(plots >= 1, "{name} draws no plot");
    }
    assert!(html.contains("Quick run"));
}

/// The checks and the verdict are functions of a report's settings and results: judged again from every saved
/// quick report, they are the ones it stores.
#[test]
fn every_saved_report_judges_again_to_its_own_checks_and_verdict() {
    for entry in dualform_harness::experiments::REGISTRY {
        let path = quick_all().join(entry.name()).join("report.json");
        let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let (checks, verdict) = entry.judge(&report).unwrap_or_else(|e| panic!("{}: {e}", entry.name()));
        assert_eq!(serde_json::to_value(&checks).unwrap(), report["checks"], "{}", entry.name());
        assert_eq!(verdict, report["verdict"]["text"].as_str().unwrap(), "{}", entry.name());
        assert_eq!(checks.iter().all(|c| c.passed), report["verdict"]["passed"], "{}", entry.name());
    }
}

/// Every file under `dir` (relative path, bytes), sorted.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), std::fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Determinism: `reproduce all --quick` again, with one thread instead of one per core and on the portable build of
/// the lane kernels instead of the widest vector unit this CPU has (`DUALFORM_SIMD`), writes byte-identical weight
/// files and tables, and identical reports once timings, the thread count and the unit are taken out, for every
/// experiment. The single-thread run starts before the shared run is awaited, so the two run side by side.
#[test]
fn every_experiment_is_identical_across_runs_and_thread_counts() {
    let dir = tempfile::tempdir().unwrap();
    let again = dir.path().join("results");
    // Its output goes to a file: a pipe left unread while the shared run goes on would stall it once full.
    let log = dir.path().join("stderr.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_dualform"))
        .args(["reproduce", "all", "--quick", "--threads", "1", "--out", again.to_str().unwrap()])
        .env("DUALFORM_SIMD", "portable")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("the dualform binary runs");
    let first = quick_all();
    let status = child.wait().expect("the single-thread run finishes");
    assert!(status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let (a, b) = (files(first), files(&again));
    let names = |f: &[(PathBuf, Vec<u8>)]| f.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert_eq!(names(&a), names(&b), "the same files");
    let mut compared = 0;
    for ((path, x), (_, y)) in a.iter().zip(b.iter()) {
        let name = path.to_string_lossy();
        if name.ends_with(".safetensors") || name.ends_with(".csv") {
            assert!(x == y, "{name} differs between the runs");
            compared += 1;
        } else if name.ends_with("report.json") {
            let json = |b: &[u8]| common::without_timings(serde_json::from_slice(b).unwrap());
            assert_eq!(json(x), json(y), "{name} differs beyond timings");
            compared += 1;
        }
    }
    let experiments = dualform_harness::experiments::REGISTRY.len();
    assert!(compared >= 2 * experiments, "only {compared} files compared for {experiments} experiments");
}
