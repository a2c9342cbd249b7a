//! Unit tests of `output::report` (`src/output/report.rs`).

use dualform_harness::output::report::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct R {
    x: f64,
}

impl Tables for R {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new("numbers", &["name", "value"]);
        t.row(vec!["x".into(), fmt_num(self.x)]);
        vec![t]
    }
}

#[test]
fn a_report_round_trips_and_renders_its_checks() {
    let checks =
        vec![Check::at_most("loss", "loss vs GD", 0.01, 0.03), Check::at_least("cos", "model cos", f64::NAN, 0.99)];
    assert!(checks[0].passed && !checks[1].passed, "NaN never passes");
    let r = Report {
        experiment: "t".into(),
        config: 3u32,
        results: R { x: 0.5 },
        checks,
        verdict: Verdict { passed: false, text: "DOES NOT".into() },
        wall_seconds: 1.0,
        simd: "avx2".into(),
        files: vec!["a.csv".into()],
    };
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("report.json");
    write(&r, &p).unwrap();
    let back: Report<u32, R> = read(&p).unwrap();
    assert_eq!(back.checks[0], r.checks[0]);
    assert!(back.checks[1].value.is_nan());
    let text = r.text();
    assert!(text.contains("[pass] loss vs GD 0.0100 (needs <= 0.0300)"), "{text}");
    assert!(text.contains("[FAIL] model cos NaN"), "{text}");
    assert!(text.contains("numbers\n  name   value\n  x     0.5000\n"), "{text}");
    assert!(Table::new("a<b", &["c"]).html().contains("a&lt;b"));
}

/// CSV from a table: the header, a line per row, numbers in their shortest round-trip form, and a cell with a comma
/// or a quote quoted (a reference named "GD, rate per step" stays one cell).
#[test]
fn tables_write_csv_with_quoted_cells() {
    let mut t = Table::new("ignored title", &["layers", "model", "loss"]);
    t.row(dualform_harness::cells![2, "GD, rate per step", 0.1f64 + 0.2]);
    t.row(dualform_harness::cells![3, "say \"hi\"", f64::NAN]);
    assert_eq!(t.csv(), "layers,model,loss\n2,\"GD, rate per step\",0.30000000000000004\n3,\"say \"\"hi\"\"\",NaN\n");
}
