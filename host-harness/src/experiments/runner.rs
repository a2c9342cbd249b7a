//! The runner every experiment goes through: parse its flags (with `--quick`'s defaults), validate them, build the
//! thread pool, open the all-or-nothing output folder, run it, write `report.json`, render the printed tables and
//! the verdict, commit the folder; and `reproduce all` with its index page. Also what a running experiment sees of
//! it ([`Run`]): output files, plots, progress, and the models shared within one command ([`Cache`]).

use super::{index, Entry, Experiment, Settings};
use crate::experiments::settings::{self, Common};
use crate::fit::train::{train, TrainSpec, TrainTiming};
use crate::model::Model;
use crate::output::report::{self, Check, Report, Table, Tables, Verdict};
use crate::output::staged::Staged;
use crate::tasks::TaskSampler;
use crate::HarnessError;
use std::any::Any;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

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

    /// Writes `table` as the CSV file `name` ([`Table::csv`]).
    pub fn csv(&mut self, name: &str, table: &Table) -> Result<(), HarnessError> {
        crate::output::staged::write(&self.file(name), &table.csv())
    }

    /// Draws `panels` into the image `name` with `caption` (shown on the index page). A plot that cannot be drawn
    /// (no font) is noted in the output instead of failing the run.
    pub fn plot(&mut self, name: &str, caption: &str, panels: &[crate::output::plot::Panel]) {
        match crate::output::plot::draw(&self.dir.join(name), panels) {
            Ok(()) => {
                self.files.push(name.to_string());
                self.images.push((name.to_string(), caption.to_string()));
            }
            Err(e) => self.notes.push(format!("{name} not written: {e}")),
        }
    }

    /// Draws the image `name` with `draw` (given its path) and shows it with `caption` on the index page, for a
    /// picture that is not line charts ([`Run::plot`]); one that cannot be drawn is noted instead of failing the run.
    pub fn image(&mut self, name: &str, caption: &str, draw: impl FnOnce(&Path) -> Result<(), HarnessError>) {
        match draw(&self.dir.join(name)) {
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

    /// Trains `model` (see [`train`]) with a progress display labelled `label`; every `log_every` steps and at the
    /// last, `log(step, model, batch loss)` records what the caller probes (`None`: no log).
    pub fn train<M: Model>(
        &self,
        label: &str,
        model: &mut M,
        sampler: &TaskSampler,
        spec: &TrainSpec,
        log_every: Option<u64>,
        mut log: impl FnMut(u64, &M, f64),
    ) -> Result<TrainTiming, HarnessError> {
        let progress = self.progress(spec.steps, label);
        let timing = train(model, sampler, spec, |step, m, loss| {
            if log_every.is_some_and(|every| step % every == 0 || step == spec.steps) {
                log(step, m, loss);
            }
            progress.step(step, || format!("loss {loss:.4}"));
            Ok(())
        });
        progress.finish();
        timing
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
            if step.is_multiple_of(every) || step == self.len {
                eprintln!("{} {step}/{}: {}", self.label, self.len, msg());
            }
        } else if step.is_multiple_of(20) || step == self.len {
            self.bar.set_message(msg());
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        self.bar.finish_and_clear();
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
            let quick: Vec<String> = <X::Settings as Settings>::quick()
                .iter()
                .map(|(id, v)| format!("--{} {v}", id.replace('_', "-")))
                .collect();
            let c = super::own_defaults::<X>(c);
            c.about(X::ABOUT).bin_name(format!("dualform reproduce {}", X::NAME)).arg(out_arg()).after_help(format!(
                "--quick sets the defaults {} (flags given explicitly still win).",
                quick.join(", ")
            ))
        },
        &<X::Settings as Settings>::quick(),
        args,
    )
    .map_err(clap_error)?;
    let out = matches.get_one::<PathBuf>("out").cloned().unwrap_or_default();
    s.validate()?;
    crate::net::simd::chosen().map_err(HarnessError::Usage)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(s.common().threads)
        .build()
        .map_err(|e| HarnessError::Usage(format!("--threads {}: {e}", s.common().threads)))?;
    let staged = Staged::new(&out, X::NAME)?;
    let started = Instant::now();
    let mut run = Run { dir: staged.path().to_path_buf(), cache, files: vec![], images: vec![], notes: vec![] };
    let results = pool.install(|| X::run(&s, &mut run))?;
    let checks = X::checks(&s, &results);
    let verdict = X::verdict(&s, &results, &checks);
    let passed = checks.iter().all(|c| c.passed);
    let mut files = run.files.clone();
    files.insert(0, "report.json".into());
    let report = Report {
        experiment: X::NAME.to_string(),
        config: s.clone(),
        results,
        checks,
        verdict: Verdict { passed, text: verdict },
        wall_seconds: started.elapsed().as_secs_f64(),
        simd: crate::net::simd::current().name().to_string(),
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

pub(crate) fn run_all(
    registry: &[&dyn Entry],
    args: &[String],
    cache: &mut Cache,
    mut done: impl FnMut(&Summary),
) -> Result<Vec<Summary>, HarnessError> {
    use clap::Parser;
    let a =
        AllArgs::try_parse_from(std::iter::once("all".to_string()).chain(args.iter().cloned())).map_err(clap_error)?;
    a.common.validate()?;
    let started = Instant::now();
    let mut summaries = Vec::new();
    for entry in registry {
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
    crate::output::staged::write(&tmp, &html)?;
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
