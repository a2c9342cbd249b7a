//! The experiments of `dualform reproduce`: one file each, behind one small interface ([`Experiment`]) and one
//! runner.
//!
//! An experiment is a settings struct (at once its command-line arguments, its defaults and its report's `config`,
//! see [`crate::settings`]), a results struct that renders as tables ([`Tables`]), and a `run` function that trains
//! and evaluates with the core's kernels, writes its files through [`Run`] and returns its results and named checks.
//! The runner does the rest for every experiment alike: parses and validates the settings (`--quick` included),
//! builds the thread pool, opens the all-or-nothing output folder, writes `report.json` ([`Report`]), prints the
//! tables and the verdict, and commits the folder.
//!
//! **Adding an experiment** is adding its file beside the others and one line to [`REGISTRY`]. `reproduce all`
//! runs every registered experiment in registry order and writes `index.html` beside their folders; models that
//! several experiments train with the same settings (the single layer, the deep stacks) are trained once per
//! `reproduce all` and shared through [`Run::cached`].

pub mod gd_plus_plus;
mod index;
pub mod interpolate;
pub mod multi_layer;
pub mod ood;
pub mod recurrent;
pub mod single_layer;

use crate::output::Staged;
use crate::report::{self, Check, Report, Table, Tables, Verdict};
use crate::settings::{self, Common};
use crate::HarnessError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::any::Any;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Every experiment, in the order `reproduce all` runs them. Adding an experiment: one line here.
#[rustfmt::skip]
pub static REGISTRY: &[&dyn Entry] = &[
    &Registered::<single_layer::SingleLayer>(PhantomData),
    &Registered::<multi_layer::MultiLayer>(PhantomData),
    &Registered::<recurrent::Recurrent>(PhantomData),
    &Registered::<gd_plus_plus::GdPlusPlus>(PhantomData),
    &Registered::<interpolate::Interpolate>(PhantomData),
    &Registered::<ood::Ood>(PhantomData),
];

/// An experiment's settings: clap arguments, serde config, the `--quick` defaults and validation.
pub trait Settings:
    clap::Args + clap::FromArgMatches + Serialize + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static
{
    /// Argument defaults that `--quick` replaces: `(argument id, value)`.
    const QUICK: &'static [(&'static str, &'static str)];
    /// The arguments every experiment has.
    fn common(&self) -> &Common;
    /// Checks every field; the message names the flag.
    fn validate(&self) -> Result<(), HarnessError>;
}

/// One experiment of `dualform reproduce`.
pub trait Experiment: 'static {
    /// The name after `dualform reproduce`, also the name of its output folder.
    const NAME: &'static str;
    /// One line for `--help` and the index page.
    const ABOUT: &'static str;
    /// Its settings.
    type Settings: Settings;
    /// Its results.
    type Results: Serialize + DeserializeOwned + Tables + Clone + Send + 'static;
    /// Runs with validated settings inside the runner's thread pool, writing files through `run`.
    fn run(settings: &Self::Settings, run: &mut Run<'_>) -> Result<Outcome<Self::Results>, HarnessError>;
}

/// What an experiment returns to the runner.
#[derive(Clone, Debug)]
pub struct Outcome<R> {
    /// Its results.
    pub results: R,
    /// The named criteria of its verdict (the verdict passes when all do).
    pub checks: Vec<Check>,
    /// The verdict sentence.
    pub verdict: String,
}

/// Models trained during one command, by a key that spells everything they depend on.
#[derive(Default)]
pub struct Cache {
    models: HashMap<String, Box<dyn Any + Send + Sync>>,
}

/// What a running experiment can do: name its files, show progress, share trained models.
pub struct Run<'a> {
    dir: PathBuf,
    cache: &'a mut Cache,
    files: Vec<String>,
    images: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Run<'_> {
    /// The path of output file `name` (recorded in the report's file list).
    pub fn file(&mut self, name: &str) -> PathBuf {
        self.files.push(name.to_string());
        self.dir.join(name)
    }

    /// Draws `panels` into the image `name` with `caption` (shown on the index page). A plot that cannot be drawn
    /// (no font) is noted in the output instead of failing the run.
    pub fn plot(&mut self, name: &str, caption: &str, panels: &[crate::plot::Panel]) {
        match crate::plot::draw(&self.dir.join(name), panels) {
            Ok(()) => {
                self.files.push(name.to_string());
                self.images.push((name.to_string(), caption.to_string()));
            }
            Err(e) => self.notes.push(format!("{name} not written: {e}")),
        }
    }

    /// A progress display for `len` steps of `label`.
    pub fn progress(&self, len: u64, label: &str) -> Progress {
        Progress::new(len, label)
    }

    /// The model cached under `key` in this command, or `make`'s, cached. The key must spell everything the model
    /// depends on (kind, shape, distribution, optimiser, steps, seed).
    pub fn cached<T: Any + Clone + Send + Sync>(
        &mut self,
        key: &str,
        make: impl FnOnce(&mut Self) -> Result<T, HarnessError>,
    ) -> Result<T, HarnessError> {
        if let Some(v) = self.cache.models.get(key).and_then(|b| b.downcast_ref::<T>()) {
            return Ok(v.clone());
        }
        let v = make(self)?;
        self.cache.models.insert(key.to_string(), Box::new(v.clone()));
        Ok(v)
    }
}

/// Training progress: a bar on a terminal, otherwise a line on stderr every tenth of the run.
pub struct Progress {
    bar: indicatif::ProgressBar,
    label: String,
    len: u64,
}

impl Progress {
    fn new(len: u64, label: &str) -> Self {
        let bar = indicatif::ProgressBar::new(len);
        bar.set_style(
            indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {prefix} {pos}/{len}  {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        Self { bar, label: label.to_string(), len }
    }

    /// Marks step `step` (1-based) done; `msg` is shown with it.
    pub fn step(&self, step: u64, msg: impl FnOnce() -> String) {
        self.bar.set_position(step);
        let every = (self.len / 10).max(1);
        if self.bar.is_hidden() {
            if step % every == 0 || step == self.len {
                eprintln!("{} {step}/{}: {}", self.label, self.len, msg());
            }
        } else if step % 20 == 0 || step == self.len {
            self.bar.set_message(msg());
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

/// A registered experiment, as the runner sees it.
pub trait Entry: Sync {
    /// `Experiment::NAME`.
    fn name(&self) -> &'static str;
    /// `Experiment::ABOUT`.
    fn about(&self) -> &'static str;
    /// Parses `args` (the words after `reproduce NAME`), runs, writes and commits; returns what happened.
    fn run(&self, args: &[String], cache: &mut Cache) -> Result<Summary, HarnessError>;
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
}

/// What a finished run reports to the command line and to the index page.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The experiment.
    pub name: &'static str,
    /// Its one-line description.
    pub about: &'static str,
    /// Where its files are.
    pub dest: PathBuf,
    /// Its verdict.
    pub verdict: Verdict,
    /// Its checks.
    pub checks: Vec<Check>,
    /// Its tables.
    pub tables: Vec<Table>,
    /// Its images `(file, caption)`.
    pub images: Vec<(String, String)>,
    /// Wall time in seconds.
    pub wall_seconds: f64,
    /// The printed text.
    pub text: String,
    /// Whether it ran with `--quick`.
    pub quick: bool,
}

fn out_arg() -> clap::Arg {
    clap::Arg::new("out")
        .long("out")
        .required(true)
        .value_parser(clap::value_parser!(PathBuf))
        .help("Output folder (created if its parent exists); results go to OUT/<experiment>/")
}

/// A clap error as a harness error: help and version text pass through, errors become their first line.
fn clap_error(e: clap::Error) -> HarnessError {
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            HarnessError::Help(e.to_string())
        }
        _ => {
            // clap's message, up to its usage block, on one line.
            let text = e.to_string();
            let head = text.split("\n\n").next().unwrap_or("invalid arguments");
            HarnessError::Usage(
                head.split_whitespace().collect::<Vec<_>>().join(" ").trim_start_matches("error: ").to_string(),
            )
        }
    }
}

/// Runs experiment `X` from its command-line words.
pub fn run_experiment<X: Experiment>(args: &[String], cache: &mut Cache) -> Result<Summary, HarnessError> {
    let (s, matches) = settings::parse::<X::Settings>(
        X::NAME,
        |c| {
            let quick: Vec<String> = <X::Settings as Settings>::QUICK
                .iter()
                .map(|(id, v)| format!("--{} {v}", id.replace('_', "-")))
                .collect();
            c.about(X::ABOUT).bin_name(format!("dualform reproduce {}", X::NAME)).arg(out_arg()).after_help(format!(
                "--quick sets the defaults {} (flags given explicitly still win).",
                quick.join(", ")
            ))
        },
        <X::Settings as Settings>::QUICK,
        args,
    )
    .map_err(clap_error)?;
    let out = matches.get_one::<PathBuf>("out").cloned().unwrap_or_default();
    s.common().validate()?;
    s.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(s.common().threads)
        .build()
        .map_err(|e| HarnessError::Usage(format!("--threads {}: {e}", s.common().threads)))?;
    let staged = Staged::new(&out, X::NAME)?;
    let started = Instant::now();
    let mut run = Run { dir: staged.path().to_path_buf(), cache, files: vec![], images: vec![], notes: vec![] };
    let outcome = pool.install(|| X::run(&s, &mut run))?;
    let passed = outcome.checks.iter().all(|c| c.passed);
    let mut files = run.files.clone();
    files.insert(0, "report.json".into());
    let report = Report {
        experiment: X::NAME.to_string(),
        config: s.clone(),
        results: outcome.results,
        checks: outcome.checks,
        verdict: Verdict { passed, text: outcome.verdict },
        wall_seconds: started.elapsed().as_secs_f64(),
        files,
    };
    report::write(&report, &staged.path().join("report.json"))?;
    let dest = staged.commit()?;
    let mut text = format!("== {}: {}{}\n", X::NAME, X::ABOUT, if s.common().quick { " (quick)" } else { "" });
    text.push_str(&report.text());
    for note in &run.notes {
        text.push_str(&format!("note: {note}\n"));
    }
    text.push_str(&format!("results in {} ({:.1} s)\n", dest.display(), report.wall_seconds));
    Ok(Summary {
        name: X::NAME,
        about: X::ABOUT,
        dest,
        verdict: report.verdict.clone(),
        checks: report.checks.clone(),
        tables: report.results.tables(),
        images: run.images,
        wall_seconds: report.wall_seconds,
        text,
        quick: s.common().quick,
    })
}

/// The names `reproduce` accepts: every registered experiment, and `all`.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|e| e.name()).chain(["all"]).collect()
}

/// `dualform reproduce NAME ARGS...`: runs one experiment, or all of them. Each finished experiment's summary is
/// passed to `done` as soon as it is committed.
pub fn reproduce(name: &str, args: &[String], mut done: impl FnMut(&Summary)) -> Result<Vec<Summary>, HarnessError> {
    let mut cache = Cache::default();
    if name == "all" {
        return run_all(args, &mut cache, done);
    }
    let entry = REGISTRY
        .iter()
        .find(|e| e.name() == name)
        .ok_or_else(|| HarnessError::Usage(format!("unknown experiment {name:?} (one of: {})", names().join(", "))))?;
    let summary = entry.run(args, &mut cache)?;
    done(&summary);
    Ok(vec![summary])
}

/// The arguments of `reproduce all`.
#[derive(clap::Parser, Debug)]
#[command(
    name = "all",
    bin_name = "dualform reproduce all",
    about = "Every experiment in turn, and OUT/index.html showing all their tables and plots"
)]
struct AllArgs {
    #[arg(long, help = "Output folder (created if its parent exists)")]
    out: PathBuf,
    #[command(flatten)]
    common: Common,
}

fn run_all(args: &[String], cache: &mut Cache, mut done: impl FnMut(&Summary)) -> Result<Vec<Summary>, HarnessError> {
    use clap::Parser;
    let a =
        AllArgs::try_parse_from(std::iter::once("all".to_string()).chain(args.iter().cloned())).map_err(clap_error)?;
    a.common.validate()?;
    let started = Instant::now();
    let mut summaries = Vec::new();
    for entry in REGISTRY {
        let mut words: Vec<String> = vec![
            "--out".into(),
            a.out.display().to_string(),
            "--seed".into(),
            a.common.seed.to_string(),
            "--eval-seed".into(),
            a.common.eval_seed.to_string(),
            "--threads".into(),
            a.common.threads.to_string(),
        ];
        if a.common.quick {
            words.push("--quick".into());
        }
        let s = entry.run(&words, cache)?;
        done(&s);
        summaries.push(s);
    }
    let total = started.elapsed().as_secs_f64();
    let html = index::page(&summaries, a.common.quick, total);
    let path = a.out.join("index.html");
    let tmp = a.out.join(".index.html.partial");
    crate::output::write(&tmp, &html)?;
    std::fs::rename(&tmp, &path).map_err(|e| HarnessError::Io(format!("writing {}: {e}", path.display())))?;
    Ok(summaries)
}

/// The one-paragraph summary `reproduce all` prints at the end.
pub fn overview(summaries: &[Summary], out: &Path) -> String {
    let mut t = Table::new("all experiments", &["experiment", "verdict", "seconds"]);
    for s in summaries {
        t.row(vec![
            s.name.to_string(),
            if s.verdict.passed { "pass" } else { "FAIL" }.into(),
            format!("{:.1}", s.wall_seconds),
        ]);
    }
    format!("{}index: {}\n", t.text(), out.join("index.html").display())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        check::<multi_layer::MultiLayer>();
        check::<recurrent::Recurrent>();
        check::<gd_plus_plus::GdPlusPlus>(); // the settings of multi-layer
        check::<interpolate::Interpolate>();
        check::<ood::Ood>();
        assert_eq!(REGISTRY.len(), 6);

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
}
