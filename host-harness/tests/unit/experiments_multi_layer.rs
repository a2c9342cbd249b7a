//! Unit tests of `experiments::multi_layer` (`src/experiments/multi_layer/mod.rs`).

use dualform_harness::judge::eval::compare;
use dualform_harness::judge::eval::matches;
use dualform_harness::model::Model;
use dualform_harness::model::{GdFamily, GdKind};
use dualform_harness::tasks::streams;
use dualform_harness::tasks::TaskSampler;

/// A model that is per-step GD matches per-step GD, and the comparison catches the same reference with its rates
/// doubled.
#[test]
fn a_reference_with_its_rates_off_by_two_is_detected() {
    let sampler = TaskSampler::new(10, 10, 1.0);
    let right = GdFamily::new(10, GdKind::PerStep, 2, 10, 1.0).unwrap().with_etas(&[3.0, 4.0]).unwrap();
    let wrong = right.clone().with_etas(&[6.0, 8.0]).unwrap();
    let model = right.clone();
    let ok = compare(model.net(), right.net(), &sampler, 4, streams::EVAL, 2000);
    let bad = compare(model.net(), wrong.net(), &sampler, 4, streams::EVAL, 2000);
    assert!(matches(&ok), "{ok:?}");
    assert!(!matches(&bad), "{bad:?}");
}
