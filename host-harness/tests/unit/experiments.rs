//! Unit tests of `experiments` (`src/experiments/mod.rs`).

use dualform_harness::experiments::settings;
use dualform_harness::experiments::*;

#[test]
fn every_experiment_parses_its_defaults_and_quick_defaults() {
    fn check<X: Experiment>() {
        let full: X::Settings = settings::defaults(<X::Settings as Settings>::QUICK, false).unwrap();
        let quick: X::Settings = settings::defaults(<X::Settings as Settings>::QUICK, true).unwrap();
        full.validate().unwrap();
        quick.validate().unwrap();
        assert!(quick.common().quick && !full.common().quick, "{}", X::NAME);
        // Every quick default names a real argument (mut_arg would otherwise panic at parse time).
        let cmd = <X::Settings as clap::Args>::augment_args(clap::Command::new(X::NAME));
        for (id, _) in <X::Settings as Settings>::QUICK {
            assert!(cmd.get_arguments().any(|a| a.get_id() == *id), "{}: no argument {id}", X::NAME);
        }
    }
    check::<single_layer::SingleLayer>();
    check::<preconditioned::Preconditioned>(); // the settings of single-layer
    check::<multi_layer::MultiLayer>();
    check::<recurrent::Recurrent>();
    check::<gd_plus_plus::GdPlusPlus>(); // the settings of multi-layer
    check::<interpolate::Interpolate>();
    check::<ood::Ood>();
    check::<softmax::SoftmaxExperiment>();
    check::<dai::Dai>();
    check::<mlp_sine::MlpSine>();
    check::<attention_zoo::AttentionZoo>();
    assert_eq!(REGISTRY.len(), 11);

    let mut names = names();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), REGISTRY.len() + 1, "names are unique");
}

#[test]
fn a_value_given_with_quick_wins_over_the_quick_default() {
    let args: Vec<String> = ["--quick", "--steps", "7"].iter().map(|s| s.to_string()).collect();
    let (s, _) =
        settings::parse::<single_layer::Settings>("t", |c| c, <single_layer::Settings as Settings>::QUICK, &args)
            .unwrap();
    assert_eq!(s.train.steps, 7);
    assert_eq!(s.eval.eval_tasks, 2000, "the other quick defaults still apply");
}
