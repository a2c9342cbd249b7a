//! Unit tests of `sweep` (`src/sweep/`): the spec and its cells, shards (and the Slurm array's variables), and runs
//! that merge to the same bytes however they were sharded, resume, and record failures.

use dualform_harness::experiments::sweep::spec::{Shard, Spec};
use dualform_harness::experiments::sweep::{merge, run};
use std::path::{Path, PathBuf};

fn spec(text: &str) -> Spec {
    let s: Spec = serde_json::from_str(text).unwrap();
    s.check().unwrap();
    s
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("dualform-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

/// Cells come in the spec's order (d slowest, noise fastest), N = round(N/d d) and at least 1, ids name every axis;
/// each field is checked with a message that names it, and flags the sweep sets per cell are refused in `args`.
#[test]
fn a_spec_lists_its_cells_in_order_and_refuses_bad_fields() {
    let s = spec(r#"{"d": [3, 10], "n_over_d": [0.1, 2], "layers": [1, 2], "seeds": 2}"#);
    let cells = s.cells();
    let ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "d3-n1-vr1-k1-noise0",
            "d3-n1-vr1-k2-noise0",
            "d3-n6-vr1-k1-noise0",
            "d3-n6-vr1-k2-noise0",
            "d10-n1-vr1-k1-noise0",
            "d10-n1-vr1-k2-noise0",
            "d10-n20-vr1-k1-noise0",
            "d10-n20-vr1-k2-noise0"
        ]
    );
    assert!(cells.iter().enumerate().all(|(i, c)| c.index == i));
    assert_eq!((cells[1].experiment(), cells[0].experiment()), ("multi-layer", "single-layer"));
    for (text, says) in [
        (r#"{"d": [], "n_over_d": [1]}"#, "d: give at least one value"),
        (r#"{"d": [0], "n_over_d": [1]}"#, "d: 0 is outside 1 to 256"),
        (r#"{"d": [2], "n_over_d": [-1]}"#, "n_over_d: -1 is not a positive number"),
        (r#"{"d": [2], "n_over_d": [1], "variance_ratio": [0.5]}"#, "variance_ratio: 0.5"),
        (r#"{"d": [2], "n_over_d": [1], "layers": [9]}"#, "layers: 9 is outside 1 to 8"),
        (r#"{"d": [2], "n_over_d": [1], "seeds": 0}"#, "seeds: 0 is outside 1 to 100"),
        (r#"{"d": [2], "n_over_d": [1], "args": ["--d=3"]}"#, "args: --d=3 is set by the sweep"),
        (r#"{"d": [2], "n_over_d": [1], "deep_args": ["--layers", "3"]}"#, "deep_args: --layers is set"),
    ] {
        let s: Spec = serde_json::from_str(text).unwrap();
        let err = s.check().unwrap_err();
        assert!(err.contains(says), "{text}: {err}");
    }
    let file = tmp("bad-spec");
    std::fs::create_dir_all(&file).unwrap();
    std::fs::write(file.join("s.json"), r#"{"d": [2], "n_over_d": [1], "depth": [1]}"#).unwrap();
    let err = Spec::read(&file.join("s.json")).unwrap_err().to_string();
    assert!(err.contains("s.json") && err.contains("unknown field `depth`"), "{err}");
    std::fs::remove_dir_all(&file).unwrap();
}

/// `I/N` takes the cells whose index is I modulo N, so N shards cover every cell once; `slurm` reads the array
/// task's place from the variables Slurm sets (an array `4-6` is shards 0, 1, 2 of 3); bad values are usage errors.
#[test]
fn shards_cover_every_cell_once_and_follow_the_slurm_array() {
    let none = |_: &str| None;
    let s = Shard::parse("1/3", none).unwrap();
    assert_eq!(s, Shard { index: 1, count: 3 });
    let shards: Vec<Shard> = (0..3).map(|i| Shard::parse(&format!("{i}/3"), none).unwrap()).collect();
    for cell in 0..20 {
        assert_eq!(shards.iter().filter(|s| s.has(cell)).count(), 1);
    }
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    };
    static ARRAY: [(&str, &str); 3] =
        [("SLURM_ARRAY_TASK_ID", "5"), ("SLURM_ARRAY_TASK_MIN", "4"), ("SLURM_ARRAY_TASK_COUNT", "3")];
    assert_eq!(Shard::parse("slurm", env(&ARRAY)).unwrap(), Shard { index: 1, count: 3 });
    static FROM_ZERO: [(&str, &str); 2] = [("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "3")];
    assert_eq!(Shard::parse("slurm", env(&FROM_ZERO)).unwrap(), Shard { index: 2, count: 3 });
    for (text, vars, says) in [
        ("3/3", &[][..], "need 0 <= I < N"),
        ("1-3", &[][..], "expected I/N"),
        ("slurm", &[][..], "SLURM_ARRAY_TASK_ID is not set"),
        ("slurm", &[("SLURM_ARRAY_TASK_ID", "x"), ("SLURM_ARRAY_TASK_COUNT", "2")][..], "is not a number"),
    ] {
        let vars: Vec<(String, String)> = vars.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
        let err = Shard::parse(text, |k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap_err();
        assert!(err.to_string().contains(says), "{text}: {err}");
    }
}

const TINY: &str = r#"{"d": [2, 3], "n_over_d": [1, 2], "layers": [1, 2], "seeds": 2,
    "args": ["--quick", "--steps", "40", "--eval-tasks", "300", "--probe-tasks", "64"], "deep_args": ["--fit-iters", "2"]}"#;

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

/// The same spec run whole and as 3 shards (two at once, each with another thread count) merges to byte-identical
/// tables; before
/// the last shard the merge lists its cells as missing; running a finished sweep again runs nothing.
#[test]
fn sharded_and_whole_runs_merge_to_the_same_bytes_and_resume() {
    let s = spec(TINY);
    let (whole, sharded) = (tmp("whole"), tmp("sharded"));
    let r = run(&s, &whole, Shard::ALL, 1, false, |_| {}).unwrap();
    assert_eq!((r.cells, r.ok, r.skipped), (8, 8, 0), "{r:?}");
    merge(&s, &whole).unwrap();
    // Two shards at once, as array tasks start (both write the spec's copy), each with its own thread count.
    std::thread::scope(|scope| {
        for i in 0..2 {
            let (s, sharded) = (&s, &sharded);
            scope.spawn(move || run(s, sharded, Shard { index: i, count: 3 }, i + 1, false, |_| {}).unwrap());
        }
    });
    let partial = merge(&s, &sharded).unwrap();
    assert_eq!(partial.missing, ["d2-n4-vr1-k1-noise0", "d3-n3-vr1-k2-noise0"], "{}", partial.text);
    run(&s, &sharded, Shard { index: 2, count: 3 }, 0, false, |_| {}).unwrap();
    let full = merge(&s, &sharded).unwrap();
    assert!(full.missing.is_empty());
    for file in ["sweep.csv", "sweep.json"] {
        assert_eq!(read(&whole, file), read(&sharded, file), "{file} differs between the whole and the sharded run");
    }
    let csv = String::from_utf8(read(&whole, "sweep.csv")).unwrap();
    assert_eq!(csv.lines().count(), 9, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.contains(",ok,")), "{csv}");
    for png in ["heatmap-verdict.png", "heatmap-gap-gd.png", "heatmap-gap-pgd.png"] {
        assert!(read(&whole, png).starts_with(b"\x89PNG"), "{png}");
    }
    let again = run(&s, &whole, Shard::ALL, 1, false, |_| {}).unwrap();
    assert_eq!((again.skipped, again.ok, again.not_ok), (8, 0, 0));
    // A folder that holds another spec's cells is refused.
    let other = spec(r#"{"d": [2], "n_over_d": [1]}"#);
    let err = run(&other, &whole, Shard::ALL, 1, false, |_| {}).unwrap_err().to_string();
    assert!(err.contains("another spec"), "{err}");
    std::fs::remove_dir_all(&whole).unwrap();
    std::fs::remove_dir_all(&sharded).unwrap();
}

/// A cell whose experiment stops with an error is recorded as failed with the error, shown in the merged table,
/// and skipped when the sweep is run again unless failed cells are retried.
#[test]
fn a_failing_cell_is_recorded_and_kept() {
    let s = spec(r#"{"d": [2], "n_over_d": [1], "seeds": 1, "args": ["--quick", "--steps", "0"]}"#);
    let out = tmp("failing");
    let r = run(&s, &out, Shard::ALL, 1, false, |_| {}).unwrap();
    assert_eq!((r.ok, r.not_ok), (0, 1));
    let m = merge(&s, &out).unwrap();
    let csv = String::from_utf8(read(&out, "sweep.csv")).unwrap();
    let row = csv.lines().nth(1).unwrap();
    assert!(row.starts_with("d2-n2-vr1-k1-noise0,single-layer,") && row.contains(",failed,"), "{row}");
    assert!(row.contains("--steps"), "the error names the flag: {row}");
    assert!(m.missing.is_empty());
    assert_eq!(run(&s, &out, Shard::ALL, 1, false, |_| {}).unwrap().skipped, 1);
    assert_eq!(run(&s, &out, Shard::ALL, 1, true, |_| {}).unwrap().not_ok, 1);
    std::fs::remove_dir_all(&out).unwrap();
}
