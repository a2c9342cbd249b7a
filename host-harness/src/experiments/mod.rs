//! The experiments of `dualform reproduce`: one file each (or a folder: `mod.rs` the settings and the run,
//! `report.rs` the results, tables, checks, verdict and files), behind one small interface ([`Experiment`]) and one
//! runner.
//!
//! An experiment is a settings struct (at once its command-line arguments, its defaults and its report's `config`,
//! see [`crate::experiments::settings`]), a results struct that renders as tables ([`Tables`]), and a `run` function that trains
//! and evaluates with the core's kernels (for the input dimension its settings name), writes its files
//! through [`Run`] and returns its results; the named checks and the verdict sentence are functions of the settings
//! and results alone ([`Experiment::checks`], [`Experiment::verdict`]), so a saved report can be judged again.
//! The runner does the rest for every experiment alike: parses and validates the settings (`--quick` included),
//! builds the thread pool, opens the all-or-nothing output folder, writes `report.json` ([`Report`](crate::output::report::Report)), prints the
//! tables and the verdict, and commits the folder.
//!
//! **Adding an experiment** is adding its file beside the others and one line, `module::Type,`, to the list that
//! declares the modules and fills [`REGISTRY`]; every test and name list iterates the registry. `reproduce all`
//! runs every registered experiment in registry order and writes `index.html` beside their folders; models that
//! several experiments train with the same settings (the single layer, the deep stacks) are trained once per
//! `reproduce all` and shared through [`Run::cached`].

mod index;
mod runner;
pub mod settings;
pub mod trained;

pub use runner::{overview, run_experiment, Cache, Progress, Run, Summary};

use crate::experiments::settings::{Common, Shared, TaskArgs};
use crate::output::report::{Check, Tables};
use crate::HarnessError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::marker::PhantomData;

/// Declares each experiment's module and lists it in [`REGISTRY`], in the order `reproduce all` runs them.
macro_rules! registry {
    ($($module:ident :: $experiment:ident,)+) => {
        $(pub mod $module;)+

        /// Every experiment, in the order `reproduce all` runs them.
        pub static REGISTRY: &[&dyn Entry] = &[$(&Registered::<$module::$experiment>(PhantomData)),+];
    };
}

// Adding an experiment: its file (or folder) beside the others and one line here, `module::Type,`.
registry! {
    single_layer::SingleLayer,
    preconditioned::Preconditioned,
    multi_layer::MultiLayer,
    recurrent::Recurrent,
    gd_plus_plus::GdPlusPlus,
    interpolate::Interpolate,
    ood::Ood,
    softmax::SoftmaxExperiment,
    dai::Dai,
    mlp_sine::MlpSine,
    attention_zoo::AttentionZoo,
    sweep::Sweep,
}

/// A set of `--quick` defaults: `(argument id, value)`.
pub type QuickSet = &'static [(&'static str, &'static str)];

/// An experiment's settings: clap arguments, serde config, the `--quick` defaults and validation.
pub trait Settings:
    clap::Args + clap::FromArgMatches + Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// Argument defaults that `--quick` replaces, in sets: a named set shared with the experiments whose cached
    /// model this one uses (such as [`trained::QUICK_LAYER`]), then its own.
    const QUICK: &'static [QuickSet];
    /// The `--quick` defaults, every set in order (a later value wins).
    fn quick() -> Vec<(&'static str, &'static str)> {
        Self::QUICK.iter().flat_map(|set| set.iter().copied()).collect()
    }
    /// The shared groups and the task distribution (for an experiment that has one).
    fn groups(&self) -> Groups<'_>;
    /// Checks the experiment's own fields; the message names the flag.
    fn check(&self) -> Result<(), HarnessError> {
        Ok(())
    }
    /// Checks every field: the shared groups, the task, then the experiment's own.
    fn validate(&self) -> Result<(), HarnessError> {
        let groups = self.groups();
        groups.shared.validate()?;
        if let Some(task) = groups.task {
            task.validate()?;
        }
        self.check()
    }
    /// The arguments every experiment takes.
    fn common(&self) -> &Common {
        &self.groups().shared.common
    }
}

/// The groups of settings the runner reads: those every experiment has, and the task distribution.
#[derive(Clone, Copy, Debug)]
pub struct Groups<'a> {
    /// Every experiment's.
    pub shared: &'a Shared,
    /// The task distribution, for an experiment that has one.
    pub task: Option<&'a TaskArgs>,
}

impl<'a> Groups<'a> {
    /// An experiment without a task distribution of [`TaskArgs`].
    pub fn new(shared: &'a Shared) -> Self {
        Self { shared, task: None }
    }

    /// An experiment with one.
    pub fn with_task(shared: &'a Shared, task: &'a TaskArgs) -> Self {
        Self { shared, task: Some(task) }
    }
}

/// One experiment of `dualform reproduce`.
pub trait Experiment: 'static {
    /// The name after `dualform reproduce`, also the name of its output folder.
    const NAME: &'static str;
    /// One line for `--help` and the index page.
    const ABOUT: &'static str;
    /// Argument defaults this experiment sets over its settings type's own: `(argument id, value)` (for an
    /// experiment that reuses another's settings and code on other defaults, like `preconditioned`).
    const DEFAULTS: &'static [(&'static str, &'static str)] = &[];
    /// Its settings.
    type Settings: Settings;
    /// Its results.
    type Results: Serialize + DeserializeOwned + Tables + Clone + Send + 'static;
    /// Runs with validated settings inside the runner's thread pool, writing files through `run`; shapes (the
    /// input dimension d, the context length N) are the settings', chosen at run time.
    fn run(settings: &Self::Settings, run: &mut Run<'_>) -> Result<Self::Results, HarnessError>;
    /// The named criteria of the verdict (it passes when all do), from the settings and results alone: a saved
    /// report can be judged again.
    fn checks(settings: &Self::Settings, results: &Self::Results) -> Vec<Check>;
    /// The verdict sentence.
    fn verdict(settings: &Self::Settings, results: &Self::Results, checks: &[Check]) -> String;
}

/// A registered experiment, as the runner sees it.
pub trait Entry: Sync {
    /// `Experiment::NAME`.
    fn name(&self) -> &'static str;
    /// `Experiment::ABOUT`.
    fn about(&self) -> &'static str;
    /// Parses `args` (the words after `reproduce NAME`), runs, writes and commits; returns what happened.
    fn run(&self, args: &[String], cache: &mut Cache) -> Result<Summary, HarnessError>;
    /// The validated default settings (`quick`: with `--quick`) as the report's `config` would show them; an error
    /// names a `--quick` default that is not one of the experiment's arguments, or a default that does not validate.
    fn defaults(&self, quick: bool) -> Result<serde_json::Value, HarnessError>;
    /// The checks and the verdict of a saved `report.json` of this experiment, computed again from its `config` and
    /// `results`.
    fn judge(&self, report: &serde_json::Value) -> Result<(Vec<Check>, String), HarnessError>;
}

/// The registry's handle on an experiment type.
pub struct Registered<X>(pub PhantomData<fn() -> X>);

impl<X: Experiment> Entry for Registered<X> {
    fn name(&self) -> &'static str {
        X::NAME
    }

    fn about(&self) -> &'static str {
        X::ABOUT
    }

    fn run(&self, args: &[String], cache: &mut Cache) -> Result<Summary, HarnessError> {
        run_experiment::<X>(args, cache)
    }

    fn judge(&self, report: &serde_json::Value) -> Result<(Vec<Check>, String), HarnessError> {
        let part = |key: &str| {
            report
                .get(key)
                .cloned()
                .ok_or_else(|| HarnessError::BadInput(format!("{}: the report has no {key}", X::NAME)))
        };
        let bad = |e: serde_json::Error| HarnessError::BadInput(format!("{}: report: {e}", X::NAME));
        let settings: X::Settings = serde_json::from_value(part("config")?).map_err(bad)?;
        let results: X::Results = serde_json::from_value(part("results")?).map_err(bad)?;
        let checks = X::checks(&settings, &results);
        let verdict = X::verdict(&settings, &results, &checks);
        Ok((checks, verdict))
    }

    fn defaults(&self, quick: bool) -> Result<serde_json::Value, HarnessError> {
        let quick_defaults = &<X::Settings as Settings>::quick();
        let command = <X::Settings as clap::Args>::augment_args(clap::Command::new(X::NAME));
        for (id, _) in quick_defaults.iter().chain(X::DEFAULTS.iter()) {
            if !command.get_arguments().any(|a| a.get_id() == *id) {
                return Err(HarnessError::Usage(format!("{}: a default names no argument: {id}", X::NAME)));
            }
        }
        let s: X::Settings = settings::defaults(X::NAME, own_defaults::<X>, quick_defaults, quick)?;
        s.validate()?;
        serde_json::to_value(&s).map_err(|e| HarnessError::Io(format!("{}: settings as JSON: {e}", X::NAME)))
    }
}

/// `command` with experiment `X`'s own defaults ([`Experiment::DEFAULTS`]) set over its settings type's.
fn own_defaults<X: Experiment>(command: clap::Command) -> clap::Command {
    X::DEFAULTS.iter().fold(command, |c, (id, v)| c.mut_arg(*id, |a| a.default_value(*v)))
}

/// The names `reproduce` accepts: every registered experiment, and `all`.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name()).chain(["all"]).collect()
}

/// `dualform reproduce NAME ARGS...`: runs one experiment, or all of them. Each finished experiment's summary is
/// passed to `done` as soon as it is committed.
pub fn reproduce(name: &str, args: &[String], done: impl FnMut(&Summary)) -> Result<Vec<Summary>, HarnessError> {
    reproduce_in(REGISTRY, name, args, done)
}

/// [`reproduce`] over another list of experiments than [`REGISTRY`] (a test adds its own experiment this way).
pub fn reproduce_in(
    registry: &[&dyn Entry],
    name: &str,
    args: &[String],
    mut done: impl FnMut(&Summary),
) -> Result<Vec<Summary>, HarnessError> {
    let mut cache = Cache::default();
    if name == "all" {
        return runner::run_all(registry, args, &mut cache, done);
    }
    let names = || registry.iter().map(|e| e.name()).chain(["all"]).collect::<Vec<_>>().join(", ");
    let entry = registry
        .iter()
        .find(|e| e.name() == name)
        .ok_or_else(|| HarnessError::Usage(format!("unknown experiment {name:?} (one of: {})", names())))?;
    let summary = entry.run(args, &mut cache)?;
    done(&summary);
    Ok(vec![summary])
}
