//! Unit tests of `experiments` (`src/experiments/mod.rs`).

use dualform_harness::experiments::settings;
use dualform_harness::experiments::*;

/// Every registered experiment: its defaults and its `--quick` defaults parse and validate, every default names a
/// real argument, `--quick` shows in the config, and no two experiments share a name.
#[test]
fn every_experiment_parses_its_defaults_and_quick_defaults() {
    for entry in REGISTRY {
        let full = entry.defaults(false).unwrap_or_else(|e| panic!("{}: {e}", entry.name()));
        let quick = entry.defaults(true).unwrap_or_else(|e| panic!("{}: {e}", entry.name()));
        assert_eq!(full["common"]["quick"], false, "{}", entry.name());
        assert_eq!(quick["common"]["quick"], true, "{}", entry.name());
        assert_ne!(full, quick, "{}: --quick changes some default", entry.name());
    }
    let mut names = names();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), REGISTRY.len() + 1, "names are unique");
}

/// The defaults an experiment sets over its settings type's (`preconditioned` over `single-layer`'s) are the ones
/// its config shows.
#[test]
fn an_experiments_own_defaults_win_over_its_settings_types() {
    let entry = |name: &str| REGISTRY.iter().find(|e| e.name() == name).unwrap();
    let single = entry("single-layer").defaults(false).unwrap();
    let precond = entry("preconditioned").defaults(false).unwrap();
    assert_eq!(single["task"]["variance_ratio"], serde_json::Value::Null);
    assert_eq!(precond["task"]["variance_ratio"], 10.0);
}

#[test]
fn a_value_given_with_quick_wins_over_the_quick_default() {
    let args: Vec<String> = ["--quick", "--steps", "7"].iter().map(|s| s.to_string()).collect();
    let (s, _) =
        settings::parse::<single_layer::Settings>("t", |c| c, &<single_layer::Settings as Settings>::quick(), &args)
            .unwrap();
    assert_eq!(s.shared.train.steps, 7);
    assert_eq!(s.shared.eval.eval_tasks, 2000, "the other quick defaults still apply");
}

/// The deep models train for the authors' 50 000 steps by default: `multi-layer` and `gd-plus-plus` agree on every
/// default, with and without `--quick` (so that `reproduce all` trains and fits each deep model once), and
/// `recurrent` trains its looped layer that long while part 1 keeps `single-layer`'s layer (the same training
/// defaults, so the same cached layer).
#[test]
fn the_deep_models_train_for_the_authors_50000_steps() {
    let entry = |name: &str| REGISTRY.iter().find(|e| e.name() == name).unwrap();
    for quick in [false, true] {
        let deep = entry("multi-layer").defaults(quick).unwrap();
        assert_eq!(deep, entry("gd-plus-plus").defaults(quick).unwrap(), "quick {quick}");
        let recurrent = entry("recurrent").defaults(quick).unwrap();
        assert_eq!(recurrent["train"], entry("single-layer").defaults(quick).unwrap()["train"], "quick {quick}");
    }
    let full = |name: &str| entry(name).defaults(false).unwrap();
    assert_eq!(full("multi-layer")["train"]["steps"], 50_000);
    assert_eq!(full("recurrent")["loop_steps"], 50_000);
    assert_eq!(full("single-layer")["train"]["steps"], 5000);
    let quick = entry("multi-layer").defaults(true).unwrap();
    assert_eq!(quick["train"]["steps"], 300, "--quick still wins over the experiment's own defaults");
}
