//! The recipe of the README's "Experiments as a framework", followed from outside the crate: one experiment in one
//! file (this one: GD's held-out loss over a grid of step sizes, against predicting zero), and one line in a registry
//! (here the test's own list beside [`REGISTRY`]'s first entry). The runner gives it flags, `--quick`, validation,
//! `--help`, its output folder and report, and a section of the `reproduce all` index page.

use dualform_harness::experiments::settings::{in_range, Shared, TaskArgs};
use dualform_harness::experiments::{reproduce_in, Entry, Experiment, Groups, QuickSet, Registered, Run, REGISTRY};
use dualform_harness::judge::eval::{gd_net, loss, tune_gd_rate, zero_loss};
use dualform_harness::judge::stats::Stat;
use dualform_harness::output::plot::{Panel, Series};
use dualform_harness::output::report::{Check, Table, Tables};
use dualform_harness::tasks::streams;
use dualform_harness::{cells, HarnessError};
use serde::{Deserialize, Serialize};
use std::marker::PhantomData;

/// The experiment.
pub struct GdRates;

/// Settings of `reproduce gd-rates`: flags, defaults and the report's `config` at once (the groups every experiment
/// has, the task distribution, and its own flag).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    #[serde(flatten)]
    pub shared: Shared,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Step sizes on the grid, as multiples of the tuned rate.
    #[arg(long, default_value_t = 9, allow_negative_numbers = true)]
    pub rates: usize,
}

impl dualform_harness::experiments::Settings for Settings {
    const QUICK: &'static [QuickSet] = &[&[("eval_tasks", "500"), ("rates", "5")]];

    fn groups(&self) -> Groups<'_> {
        Groups::with_task(&self.shared, &self.task)
    }

    fn check(&self) -> Result<(), HarnessError> {
        in_range("--rates", self.rates, 3..=101)
    }
}

/// GD's loss at each rate, and predicting zero.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The rate tuned on the tuning tasks.
    pub tuned: f64,
    /// `(rate, held-out loss)` over the grid, the tuned rate in the middle.
    pub curve: Vec<(f64, Stat)>,
    /// Predicting zero.
    pub zero: Stat,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut t = Table::new("GD's held-out loss over step sizes", &["rate", "loss"]);
        for (rate, l) in &self.curve {
            t.row(vec![format!("{rate:.3}"), l.show()]);
        }
        t.row(vec!["predict 0".into(), self.zero.show()]);
        vec![t]
    }
}

impl Experiment for GdRates {
    const NAME: &'static str = "gd-rates";
    const ABOUT: &'static str = "One GD step's held-out loss over a grid of step sizes around the tuned one";
    type Settings = Settings;
    type Results = Results;

    fn checks(_: &Settings, r: &Results) -> Vec<Check> {
        let best = r.curve.iter().map(|(_, l)| l.mean).fold(f64::INFINITY, f64::min);
        let middle = r.curve.get(r.curve.len() / 2).map_or(f64::NAN, |(_, l)| l.mean);
        vec![
            Check::at_most("tuned_is_best", "loss at the tuned rate / best on the grid", middle / best, 1.0 + 1e-9),
            Check::at_most("gd_beats_zero", "GD's loss / predicting zero's", middle / r.zero.mean, 1.0),
        ]
    }

    fn verdict(_: &Settings, r: &Results, _: &[Check]) -> String {
        format!("the tuned rate {:.3} is the best on the grid", r.tuned)
    }

    fn run(s: &Settings, run: &mut Run<'_>) -> Result<Results, HarnessError> {
        let sampler = s.task.sampler();
        let seed = s.shared.common.eval_seed;
        let tuned = tune_gd_rate(&sampler, seed, streams::TUNE, s.shared.eval.eval_tasks)?;
        let mut curve = Vec::new();
        for i in 0..s.rates {
            let rate = tuned * 2.0 * i as f64 / (s.rates - 1) as f64;
            let net = gd_net(s.task.d, rate as f32, s.task.n)?;
            curve.push((rate, loss(&net, &sampler, seed, streams::EVAL, s.shared.eval.eval_tasks)));
        }
        let zero = zero_loss(&sampler, seed, streams::EVAL, s.shared.eval.eval_tasks);
        let mut csv = Table::new("curve", &["rate", "loss"]);
        for (rate, l) in &curve {
            csv.row(cells![rate, l.mean]);
        }
        run.csv("curve.csv", &csv)?;
        let points = curve.iter().map(|(r, l)| (*r, l.mean)).collect();
        run.plot(
            "gd-rates.png",
            "GD's loss over step sizes",
            &[Panel::new("One GD step", "rate", "loss").with(Series::line("GD", points).with_markers())],
        );
        Ok(Results { tuned, curve, zero })
    }
}

/// The one registry line.
static WITH_GD_RATES: &[&dyn Entry] = &[&Registered::<GdRates>(PhantomData)];

fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[test]
fn an_experiment_in_one_file_and_one_registry_line_runs_through_the_runner() {
    let entry = WITH_GD_RATES[0];
    let quick = entry.defaults(true).unwrap();
    assert_eq!((quick["rates"].as_u64(), quick["eval"]["eval_tasks"].as_u64()), (Some(5), Some(500)));

    // Its flags are validated with the shared message shape.
    let err = reproduce_in(WITH_GD_RATES, "gd-rates", &words(&["--rates", "2", "--out", "x"]), |_| {}).unwrap_err();
    assert_eq!(err.to_string(), "--rates must be between 3 and 101 (got 2)");
    // --help lists its own flag.
    match reproduce_in(WITH_GD_RATES, "gd-rates", &words(&["--help"]), |_| {}) {
        Err(HarnessError::Help(text)) => assert!(text.contains("--rates"), "{text}"),
        other => panic!("{other:?}"),
    }

    // `reproduce all` over a registry with it runs it beside a registered experiment and indexes both.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results");
    std::fs::create_dir(&out).unwrap();
    let registry: Vec<&dyn Entry> = vec![REGISTRY[0], WITH_GD_RATES[0]];
    let args = words(&["--quick", "--out", out.to_str().unwrap()]);
    let summaries = reproduce_in(&registry, "all", &args, |_| {}).unwrap();
    assert_eq!(summaries.iter().map(|s| s.name).collect::<Vec<_>>(), ["single-layer", "gd-rates"]);
    let gd_rates = &summaries[1];
    assert!(gd_rates.verdict.passed, "{}", gd_rates.text);
    for file in ["report.json", "curve.csv", "gd-rates.png"] {
        assert!(out.join("gd-rates").join(file).is_file(), "{file}");
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("gd-rates/report.json")).unwrap()).unwrap();
    assert_eq!(report["config"]["rates"], 5);
    assert_eq!(report["results"]["curve"].as_array().unwrap().len(), 5);
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    assert!(html.contains("id=\"gd-rates\"") && html.contains("src=\"gd-rates/gd-rates.png\""));
    assert!(html.contains("id=\"single-layer\""));
    // The main registry does not know it.
    assert!(reproduce_in(REGISTRY, "gd-rates", &words(&["--out", "x"]), |_| {}).is_err());
}
