//! Unit tests of `firmware::golden_check` (`src/firmware/golden_check.rs`).

use dualform_harness::firmware::golden_check::*;
use dualform_protocol::{Kernel, Kind, Model};

#[test]
fn device_lines_parse_and_differences_name_the_task_and_bits() {
    let lines = [
        "dualform firmware: E 11 N 10 tasks 16",
        "weights trained aa",
        "weights gd bb",
        "pred 3 trained_full 0.5 1056964608",
        "stream 3 2 0.25 1048576000",
        "loss gd 0.1 1036831949",
        "stack 2048",
        "done",
    ];
    let run = parse(lines.iter().map(|s| s.to_string()).collect()).unwrap();
    let hashes: Vec<(Model, &str)> = run.weights.iter().map(|(m, h)| (*m, h.as_str())).collect();
    assert_eq!(hashes, [(Model::Trained, "aa"), (Model::Gd, "bb")]);
    let trained_full = Kind { model: Model::Trained, kernel: Kernel::Full };
    assert_eq!(run.results.preds[&(3, trained_full)], 0.5f32.to_bits());
    assert_eq!(run.stack, Some(2048));
    assert!(run.done);
    let mut host = run.results.clone();
    assert_eq!(compare_bits(&run.results, &host), Ok(3));
    host.preds.insert((3, trained_full), 0.5f32.to_bits() + 1);
    let err = compare_bits(&run.results, &host).unwrap_err();
    assert!(err.contains("task 3 trained_full") && err.contains("0x3f000000") && err.contains("0x3f000001"), "{err}");
    assert!(parse(vec!["ERROR panic at x.rs:1".into()]).is_err());
    assert!(parse(vec!["pred x trained_full 1 2".into()]).is_err());
}
