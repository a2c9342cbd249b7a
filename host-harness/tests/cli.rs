//! The `dualform` command line: bad flags fail cleanly, a quick run writes a complete report (read back through the
//! typed report), and runs are reproducible bit for bit (weights) across repetitions and thread counts.

use dualform_harness::experiments::single_layer::{Results, Settings};
use dualform_harness::output::report::{read, Report};
mod common;
use common::without_timings;
use std::path::Path;
use std::process::{Command, Output};

fn dualform(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dualform")).args(args).output().expect("the dualform binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A bad invocation exits with 2, prints exactly one line starting with "error", no panic, and leaves nothing.
fn assert_usage_error(args: &[&str], mentions: &str, out: &Path) {
    let o = dualform(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: exit code; stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: one line expected, got: {err}");
    assert!(err.starts_with("error"), "{args:?}: {err}");
    assert!(err.contains(mentions), "{args:?}: should mention {mentions:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
    assert!(!out.join("single-layer").exists(), "{args:?}: results were written");
    if out.exists() {
        assert_eq!(std::fs::read_dir(out).unwrap().count(), 0, "{args:?}: something was left in --out");
    }
}

#[test]
fn bad_flags_give_one_line_errors_and_exit_code_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = out.to_str().unwrap();
    let base = ["reproduce", "single-layer", "--out", o, "--steps", "2", "--eval-tasks", "4", "--seeds", "1"];
    let with = |extra: &[&'static str]| -> Vec<&str> { base.iter().copied().chain(extra.iter().copied()).collect() };
    assert_usage_error(&with(&["--d", "0"]), "--d", &out);
    assert_usage_error(&with(&["--d", "257"]), "--d", &out);
    assert_usage_error(&["reproduce", "softmax", "--out", o, "--quick", "--d", "257"], "--d", &out);
    assert_usage_error(&["reproduce", "dai", "--out", o, "--quick", "--d", "0"], "--d", &out);
    assert_usage_error(&with(&["--variance-ratio", "0.5"]), "--variance-ratio", &out);
    assert_usage_error(&with(&["--input-scales", "1,2"]), "--input-scales", &out);
    assert_usage_error(&with(&["--input-scales", "1,1,1,1,1,1,1,1,1,-1"]), "--input-scales", &out);
    assert_usage_error(&with(&["--variance-ratio", "4", "--input-scales", "1"]), "--variance-ratio", &out);
    assert_usage_error(&with(&["--noise", "-1"]), "--noise", &out);
    assert_usage_error(&with(&["--input-mean", "nan"]), "--input-mean", &out);
    assert_usage_error(&with(&["--seeds", "0"]), "--seeds", &out);
    assert_usage_error(&with(&["--n", "0"]), "--n", &out);
    assert_usage_error(&with(&["--steps", "-5"]), "--steps", &out);
    assert_usage_error(&with(&["--steps", "0"]), "--steps", &out);
    assert_usage_error(&with(&["--batch", "0"]), "--batch", &out);
    assert_usage_error(&with(&["--input-range", "nan"]), "--input-range", &out);
    assert_usage_error(&with(&["--lr", "-1"]), "--lr", &out);
    assert_usage_error(&["reproduce", "no-such-experiment", "--out", o], "no-such-experiment", &out);
    // --out whose parent does not exist, --out that is a file, --out that cannot be created.
    let missing = dir.path().join("missing/deeper");
    assert_usage_error(
        &["reproduce", "single-layer", "--out", missing.to_str().unwrap(), "--steps", "2"],
        "does not exist",
        &missing,
    );
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = dualform(&["reproduce", "single-layer", "--out", file.to_str().unwrap(), "--steps", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a folder"), "{}", stderr(&o));
    let o = dualform(&["reproduce", "single-layer", "--out", "/proc/dualform-cannot-exist", "--steps", "2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim_end().lines().count(), 1, "{}", stderr(&o));
}

#[test]
fn diverging_training_stops_naming_the_step_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = dualform(&[
        "reproduce",
        "single-layer",
        "--out",
        out.to_str().unwrap(),
        "--lr",
        "1e30",
        "--steps",
        "50",
        "--batch",
        "64",
        "--eval-tasks",
        "64",
        "--seeds",
        "1",
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("NaN or infinite at step "), "{err}");
    assert!(!out.exists(), "the output folder created for the run must be removed");
}

fn read_report(dir: &Path) -> Report<Settings, Results> {
    read(&dir.join("single-layer/report.json")).unwrap()
}

#[test]
fn quick_run_writes_a_complete_report_that_matches_gd() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    let o = dualform(&["reproduce", "single-layer", "--out", out.to_str().unwrap(), "--quick", "--seeds", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("verdict:"), "{stdout}");
    let r = read_report(&out);
    assert_eq!((r.config.task.d, r.config.task.n, r.config.shared.train.steps), (10, 10, 600));
    assert!(r.config.shared.common.quick);
    // The quick run already learns GD: these are the report's own numbers, checked against what GD must give.
    let res = &r.results;
    assert!((res.closed_form.as_ref().unwrap().loss - 0.2062).abs() < 1e-4);
    assert!((res.gd_eta - 6.06).abs() < 0.3, "eta {}", res.gd_eta);
    let c = &res.vs_gd;
    assert!(c.loss_a.mean < 0.6 * res.zero.mean);
    assert!(((c.loss_a.mean - c.loss_b.mean) / c.loss_b.mean).abs() < 0.03);
    assert!(c.model_cos.mean > 0.99);
    assert!(res.gd_family.residual < 0.1 && res.gd_family.functional <= res.gd_family.residual);
    assert!(res.timing.ms_per_step > 0.0 && res.seed_to_seed.is_none());
    assert!(r.verdict.passed && r.verdict.text.starts_with("IMPLEMENTS GD"), "{}", r.verdict.text);
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names.first(), Some(&"loss_vs_gd"));
    assert_eq!(names.last(), Some(&"functional_residual"));
    assert!(names.contains(&"gd_closer_than_two_step_gd"), "{names:?}");
    assert!(r.checks.iter().all(|c| c.passed && c.value.is_finite()));
    for f in [
        "report.json",
        "curves.csv",
        "curves.png",
        "weights.safetensors",
        "gd_weights.safetensors",
        "optimum_weights.safetensors",
    ] {
        assert!(out.join("single-layer").join(f).is_file(), "{f}");
        assert!(r.files.iter().any(|x| x == f), "{f} listed in the report");
    }
    let csv = std::fs::read_to_string(out.join("single-layer/curves.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 600 / 50, "header + one row per 50 steps");
    assert_eq!(res.curves.len(), 600 / 50);
    // No partial folder is left beside the results.
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["single-layer"]);
}

#[test]
fn same_seed_gives_identical_weights_and_numbers_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str, threads: &str, seed: &str| {
        let out = dir.path().join(name);
        let o = dualform(&[
            "reproduce",
            "single-layer",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "120",
            "--batch",
            "512",
            "--eval-tasks",
            "500",
            "--threads",
            threads,
            "--seed",
            seed,
            "--seeds",
            "1",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        out
    };
    let a = run("a", "1", "7");
    let b = run("b", "1", "7");
    let c = run("c", "2", "7");
    let other = run("d", "2", "8");
    let weights = |d: &Path| std::fs::read(d.join("single-layer/weights.safetensors")).unwrap();
    assert_eq!(weights(&a), weights(&b), "same seed, same threads");
    assert_eq!(weights(&a), weights(&c), "same seed, 1 vs 2 threads");
    assert_ne!(weights(&a), weights(&other), "another seed must give other weights");
    let strip = |d: &Path| {
        let text = std::fs::read_to_string(d.join("single-layer/report.json")).unwrap();
        without_timings(serde_json::from_str(&text).unwrap())
    };
    assert_eq!(strip(&a), strip(&b));
    assert_eq!(strip(&a), strip(&c));
}

#[test]
fn an_undertrained_model_gets_a_negative_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = dualform(&[
        "reproduce",
        "single-layer",
        "--out",
        out.to_str().unwrap(),
        "--steps",
        "5",
        "--batch",
        "64",
        "--eval-tasks",
        "500",
        "--seeds",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("verdict: DOES NOT MATCH"), "{stdout}");
    let r = read_report(&out);
    assert!(!r.verdict.passed);
    assert!(r.results.vs_gd.model_cos.mean < 0.99);
    assert!(r.checks.iter().any(|c| c.name == "loss_vs_gd" && !c.passed));
}

/// Shapes are chosen at run time: a single layer at d = 24, N = 48 (beyond the widths the harness used to be
/// compiled for) trains, and its tuned GD step's held-out loss is the closed form's.
#[test]
fn a_single_layer_at_d_24_and_n_48_runs_and_its_gd_reference_is_the_closed_form() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = dualform(&[
        "reproduce",
        "single-layer",
        "--out",
        out.to_str().unwrap(),
        "--quick",
        "--d",
        "24",
        "--n",
        "48",
        "--steps",
        "100",
        "--seeds",
        "1",
        "--eval-tasks",
        "4000",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: Report<Settings, Results> = read(&out.join("single-layer/report.json")).unwrap();
    assert_eq!((r.config.task.d, r.config.task.n), (24, 48));
    let cf = r.results.closed_form.as_ref().expect("a zero-mean distribution has a closed form");
    let gd = r.results.vs_gd.loss_b.mean;
    assert!((gd - cf.loss).abs() / cf.loss < 0.03, "GD loss {gd} vs closed form {}", cf.loss);
    assert!(out.join("single-layer/weights.safetensors").exists());
}

/// An unknown vector unit in `DUALFORM_SIMD` stops a run before it starts: exit 2, one line naming the variable;
/// `inspect` too.
#[test]
fn an_unknown_vector_unit_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let o = Command::new(env!("CARGO_BIN_EXE_dualform"))
        .args(["reproduce", "single-layer", "--quick", "--out", out.to_str().unwrap()])
        .env("DUALFORM_SIMD", "avx9")
        .output()
        .expect("the dualform binary runs");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("DUALFORM_SIMD") && err.contains("avx9"), "{err}");
    assert!(!out.exists(), "nothing written");
    // The same for a command that trains no model of its own.
    let o = Command::new(env!("CARGO_BIN_EXE_dualform"))
        .args(["inspect", "no-such-file.safetensors"])
        .env("DUALFORM_SIMD", "avx9")
        .output()
        .expect("the dualform binary runs");
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "stderr: {err}");
    assert!(err.contains("DUALFORM_SIMD"), "inspect checks the unit first: {err}");
}
