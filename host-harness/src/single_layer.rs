//! `dualform reproduce single-layer`: train one LSA layer on in-context regression and verify it against one step
//! of gradient descent, with the baselines needed to read the match.
//!
//! Writes `DIR/single-layer/{report.json, curves.csv, curves.png, weights.safetensors, gd_weights.safetensors}`,
//! all or nothing (see [`crate::output`]).

use crate::eval::{compare, gd_model, ols_loss, tune_gd_rate, Comparison, Stat};
use crate::output::{write, Staged};
use crate::params;
use crate::plot::{curves_png, CurvePoint};
use crate::tasks::{stream_rng, ClosedForm, TaskSampler};
use crate::train::{train, TrainConfig};
use crate::{with_d, HarnessError, SUPPORTED_D};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Streams of the evaluation seed: held-out tasks, the GD-rate tuning tasks and the curve probe are disjoint.
const EVAL_STREAM: u64 = 0;
const TUNE_STREAM: u64 = 1 << 40;
const PROBE_STREAM: u64 = 2 << 40;
/// The stream of the training seed that draws the initial weights (training batches never reach it).
const INIT_STREAM: u64 = u64::MAX;

/// Everything a single-layer run depends on.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Config {
    /// Input dimension d.
    pub d: usize,
    /// Context pairs N.
    pub n: usize,
    /// Inputs are uniform on (-r/2, r/2)^d.
    pub input_range: f64,
    /// Training seed (tasks and initialisation).
    pub seed: u64,
    /// Seed of the held-out tasks, the rate-tuning tasks and the curve probe.
    pub eval_seed: u64,
    /// Training steps.
    pub steps: u64,
    /// Tasks per step.
    pub batch: usize,
    /// Held-out evaluation tasks (also the number of rate-tuning tasks).
    pub eval_tasks: usize,
    /// Worker threads (0 = one per core).
    pub threads: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// Global-norm gradient clip.
    pub clip: f64,
    /// Log curves every this many steps.
    pub log_every: u64,
    /// Tasks of the curve probe.
    pub probe_tasks: usize,
    /// Also train a second model from seed + 1 and report seed-to-seed agreement.
    pub second_seed: bool,
    /// Reduced run (CI).
    pub quick: bool,
}

impl Default for Config {
    /// The reference setting (shared/DESIGN.md): d = N = 10, input range 1, AdamW lr 1e-3, clip 1e-3, batch 2048,
    /// 5000 steps, 10 000 evaluation tasks from a separate seed.
    fn default() -> Self {
        Self {
            d: 10,
            n: 10,
            input_range: 1.0,
            seed: 0,
            eval_seed: 1_000_003,
            steps: 5000,
            batch: 2048,
            eval_tasks: 10_000,
            threads: 0,
            lr: 1e-3,
            clip: 1e-3,
            log_every: 100,
            probe_tasks: 1024,
            second_seed: true,
            quick: false,
        }
    }
}

impl Config {
    /// The reduced run for CI: 600 steps, 2000 evaluation tasks, 512 probe tasks, every 50 steps.
    pub fn quick(mut self) -> Self {
        self.steps = 600;
        self.eval_tasks = 2000;
        self.probe_tasks = 512;
        self.log_every = 50;
        self.quick = true;
        self
    }

    /// Checks every field; the message names the flag.
    pub fn validate(&self) -> Result<(), HarnessError> {
        let bad = |m: String| Err(HarnessError::Usage(m));
        if !SUPPORTED_D.contains(&self.d) {
            return bad(format!(
                "--d must be between {} and {} (got {})",
                SUPPORTED_D.start(),
                SUPPORTED_D.end(),
                self.d
            ));
        }
        if !(1..=4096).contains(&self.n) {
            return bad(format!("--n must be between 1 and 4096 (got {})", self.n));
        }
        if !(self.input_range.is_finite() && self.input_range > 0.0) {
            return bad(format!("--input-range must be a positive number (got {})", self.input_range));
        }
        if !(1..=10_000_000).contains(&self.steps) {
            return bad(format!("--steps must be between 1 and 10000000 (got {})", self.steps));
        }
        if !(1..=1 << 20).contains(&self.batch) {
            return bad(format!("--batch must be between 1 and 1048576 (got {})", self.batch));
        }
        if !(2..=10_000_000).contains(&self.eval_tasks) {
            return bad(format!("--eval-tasks must be between 2 and 10000000 (got {})", self.eval_tasks));
        }
        if self.threads > 1024 {
            return bad(format!("--threads must be at most 1024 (got {})", self.threads));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad(format!("--lr must be a positive number (got {})", self.lr));
        }
        if !(self.clip.is_finite() && self.clip > 0.0) {
            return bad(format!("--clip must be a positive number (got {})", self.clip));
        }
        if self.log_every == 0 || self.probe_tasks < 2 {
            return bad("curve logging needs log_every >= 1 and probe_tasks >= 2".into());
        }
        Ok(())
    }

    fn train_config(&self, seed: u64) -> TrainConfig {
        TrainConfig {
            steps: self.steps,
            batch: self.batch,
            lr: self.lr,
            b1: 0.9,
            b2: 0.98,
            eps: 1e-8,
            weight_decay: 0.0,
            clip: self.clip,
            seed,
        }
    }
}

/// What a run found; also the basis of the printed table.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The folder the results are in.
    pub dir: PathBuf,
    /// The full report.
    pub report: serde_json::Value,
    /// Human-readable table and verdict.
    pub summary: String,
}

/// Runs the experiment into `out/single-layer`, on a pool of `cfg.threads` threads. `progress` shows training
/// progress (pass `ProgressBar::hidden()` for none).
pub fn run(cfg: &Config, out: &Path, progress: &indicatif::ProgressBar) -> Result<Outcome, HarnessError> {
    cfg.validate()?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(cfg.threads)
        .build()
        .map_err(|e| HarnessError::Usage(format!("--threads {}: {e}", cfg.threads)))?;
    let staged = Staged::new(out, "single-layer")?;
    let d = cfg.d;
    let result = pool.install(|| with_d!(d, run_d(cfg, &staged, progress)))?;
    let dir = staged.commit()?;
    Ok(Outcome { dir, report: result.0, summary: result.1 })
}

/// Per-task statistic as `(mean, [lo, hi])` fields.
fn stat_fields(name: &str, s: &Stat) -> [(String, serde_json::Value); 2] {
    [(name.to_string(), json!(s.mean)), (format!("{name}_ci95"), json!([s.mean - s.ci95, s.mean + s.ci95]))]
}

fn run_d<const D: usize, const E: usize>(
    cfg: &Config,
    staged: &Staged,
    progress: &indicatif::ProgressBar,
) -> Result<(serde_json::Value, String), HarnessError> {
    let sampler = TaskSampler { d: cfg.d, n: cfg.n, input_range: cfg.input_range as f32 };
    let closed = ClosedForm::new(cfg.d, cfg.n, cfg.input_range);
    let eta = tune_gd_rate::<D, E>(&sampler, cfg.eval_seed, TUNE_STREAM, cfg.eval_tasks)?;
    let gd = gd_model::<D, E>(eta as f32, cfg.n)?;

    // Train, logging curves on the probe tasks.
    let mut curves: Vec<CurvePoint> = Vec::new();
    progress.set_length(cfg.steps);
    let started = Instant::now();
    let init = params::init::<E>(&mut stream_rng(cfg.seed, INIT_STREAM), 1);
    let (trained, timing) = train(init, &sampler, &cfg.train_config(cfg.seed), |step, p, loss| {
        progress.inc(1);
        if step % cfg.log_every == 0 || step == cfg.steps {
            let c = compare(p, &gd, &sampler, cfg.eval_seed, PROBE_STREAM, cfg.probe_tasks);
            curves.push(CurvePoint {
                step,
                train_loss: loss,
                probe_loss: c.loss_a.mean,
                gd_probe_loss: c.loss_b.mean,
                model_cos: c.model_cos.mean,
                preds_diff: c.preds_diff.mean,
            });
            let rate = step as f64 / started.elapsed().as_secs_f64();
            progress.set_message(format!("loss {loss:.4}  model cos {:.4}  {rate:.0} steps/s", c.model_cos.mean));
            if progress.is_hidden() && step % (cfg.log_every * 10) == 0 {
                eprintln!(
                    "step {step}/{}: loss {loss:.4}, model cos {:.4}, {rate:.0} steps/s",
                    cfg.steps, c.model_cos.mean
                );
            }
        }
        Ok(())
    })?;
    progress.finish_and_clear();

    // Held-out evaluation.
    let cmp = compare(&trained, &gd, &sampler, cfg.eval_seed, EVAL_STREAM, cfg.eval_tasks);
    let ols = ols_loss::<E>(&sampler, cfg.eval_seed, EVAL_STREAM, cfg.eval_tasks);
    let fit = dualform::read_gd::<f32, E, E, E, D, 1>(&trained.heads[0], cfg.n)?;
    let second = if cfg.second_seed {
        let init2 = params::init::<E>(&mut stream_rng(cfg.seed + 1, INIT_STREAM), 1);
        let (t2, _) = train(init2, &sampler, &cfg.train_config(cfg.seed + 1), |_, _, _| Ok(()))?;
        Some((
            compare(&trained, &t2, &sampler, cfg.eval_seed, EVAL_STREAM, cfg.eval_tasks),
            compare(&t2, &gd, &sampler, cfg.eval_seed, EVAL_STREAM, cfg.eval_tasks),
        ))
    } else {
        None
    };

    let steps = cfg.steps as f64;
    let ms_per_step = timing.step_time.as_secs_f64() * 1e3 / steps;
    let verdict = Verdict::new(&cmp, fit.residual as f64);
    let report = report_json(
        cfg,
        &closed,
        eta,
        &cmp,
        &ols,
        &fit,
        second.as_ref(),
        timing.wall.as_secs_f64(),
        ms_per_step,
        &verdict,
    );

    // Files.
    let dir = staged.path();
    write(
        &dir.join("report.json"),
        &serde_json::to_string_pretty(&report).map_err(|e| HarnessError::Io(e.to_string()))?,
    )?;
    let mut csv = String::from("step,train_loss,probe_loss,gd_probe_loss,model_cos,preds_diff\n");
    for p in &curves {
        csv.push_str(&format!(
            "{},{},{},{},{},{}\n",
            p.step, p.train_loss, p.probe_loss, p.gd_probe_loss, p.model_cos, p.preds_diff
        ));
    }
    write(&dir.join("curves.csv"), &csv)?;
    let meta = |what: &str| vec![("d", cfg.d.to_string()), ("n", cfg.n.to_string()), ("model", what.to_string())];
    params::save(
        &trained,
        &meta(&format!("trained single-layer LSA, seed {}", cfg.seed)),
        &dir.join("weights.safetensors"),
    )?;
    params::save(&gd, &meta(&format!("one GD step from W0 = 0, eta = {eta}")), &dir.join("gd_weights.safetensors"))?;
    let plot_note = match curves_png(&curves, closed.zero_loss, &dir.join("curves.png")) {
        Ok(()) => None,
        Err(e) => Some(format!("curves.png not written: {e}")),
    };
    let summary = summary_table(
        cfg,
        &closed,
        eta,
        &cmp,
        &ols,
        fit.residual as f64,
        second.as_ref(),
        timing.wall.as_secs_f64(),
        ms_per_step,
        &verdict,
        staged.dest(),
        plot_note,
    );
    Ok((report, summary))
}

/// The one-line verdict: a match needs the loss within 3% of GD's, model cos >= 0.99 (its lower 95% bound), and the
/// trained weights within 0.1 of the GD family (relative residual).
#[derive(Clone, Debug)]
pub struct Verdict {
    /// All three criteria hold.
    pub matches_gd: bool,
    /// The sentence printed and stored.
    pub text: String,
}

impl Verdict {
    fn new(c: &Comparison, residual: f64) -> Self {
        let rel = (c.loss_a.mean - c.loss_b.mean) / c.loss_b.mean;
        let cos_lo = c.model_cos.mean - c.model_cos.ci95;
        let checks = [
            (rel.abs() <= 0.03, format!("loss {:+.1}% vs GD (needs within 3%)", rel * 100.0)),
            (cos_lo >= 0.99, format!("model cos {:.4} (lower 95% bound {cos_lo:.4}, needs >= 0.99)", c.model_cos.mean)),
            (residual <= 0.1, format!("GD-family residual {residual:.3} (needs <= 0.1)")),
        ];
        let matches_gd = checks.iter().all(|(ok, _)| *ok);
        let failed: Vec<&str> = checks.iter().filter(|(ok, _)| !ok).map(|(_, s)| s.as_str()).collect();
        let all: Vec<&str> = checks.iter().map(|(_, s)| s.as_str()).collect();
        let text = if matches_gd {
            format!("MATCHES one step of GD: {}", all.join("; "))
        } else {
            format!("DOES NOT match one step of GD: {}", failed.join("; "))
        };
        Self { matches_gd, text }
    }
}

#[allow(clippy::too_many_arguments)]
fn report_json<const D: usize>(
    cfg: &Config,
    closed: &ClosedForm,
    eta: f64,
    cmp: &Comparison,
    ols: &Stat,
    fit: &dualform::GdFit<f32, D, 1>,
    second: Option<&(Comparison, Comparison)>,
    train_seconds: f64,
    ms_per_step: f64,
    verdict: &Verdict,
) -> serde_json::Value {
    let mut top = serde_json::Map::new();
    top.insert("experiment".into(), json!("single-layer"));
    top.insert(
        "config".into(),
        json!({
            "d": cfg.d, "n": cfg.n, "input_range": cfg.input_range, "seed": cfg.seed, "eval_seed": cfg.eval_seed,
            "steps": cfg.steps, "batch": cfg.batch, "eval_tasks": cfg.eval_tasks, "threads": cfg.threads,
            "quick": cfg.quick, "optimizer": {"name": "adamw", "lr": cfg.lr, "b1": 0.9, "b2": 0.98, "eps": 1e-8,
            "weight_decay": 0.0, "clip_global_norm": cfg.clip},
            "init": {"variance_scaling": 0.002, "distribution": "truncated_normal", "mode": "fan_in"},
            "model": {"layers": 1, "heads": 1, "key_size": cfg.d + 1, "value_size": cfg.d + 1},
        }),
    );
    top.insert("closed_form".into(), json!(closed));
    let field = |s: &Stat| json!({"loss": s.mean, "loss_ci95": [s.mean - s.ci95, s.mean + s.ci95]});
    let mut gd = field(&cmp.loss_b);
    gd["eta"] = json!(eta);
    gd["eta_closed_form"] = json!(closed.eta);
    gd["eta_relative_to_closed_form"] = json!(eta / closed.eta - 1.0);
    top.insert("gd".into(), gd);
    top.insert("trained".into(), field(&cmp.loss_a));
    top.insert("zero".into(), field(&cmp.loss_zero));
    top.insert("ols".into(), field(ols));
    for (k, v) in stat_fields("preds_diff", &cmp.preds_diff)
        .into_iter()
        .chain(stat_fields("model_cos", &cmp.model_cos))
        .chain(stat_fields("model_diff", &cmp.model_diff))
    {
        top.insert(k, v);
    }
    top.insert("gd_family_residual".into(), json!(fit.residual));
    top.insert(
        "gd_family".into(),
        json!({"eta": fit.eta, "scale": fit.scale, "residual": fit.residual, "w0": fit.w0.as_slice()}),
    );
    if let Some((s2s, other)) = second {
        top.insert(
            "seed_to_seed".into(),
            json!({
                "second_seed": cfg.seed + 1,
                "model_cos": s2s.model_cos.mean, "model_cos_ci95": [s2s.model_cos.mean - s2s.model_cos.ci95, s2s.model_cos.mean + s2s.model_cos.ci95],
                "preds_diff": s2s.preds_diff.mean,
                "second_model_cos_vs_gd": other.model_cos.mean,
                "second_loss": other.loss_a.mean,
            }),
        );
    }
    top.insert("train_seconds".into(), json!(train_seconds));
    top.insert("ms_per_step".into(), json!(ms_per_step));
    top.insert("verdict".into(), json!({"matches_gd": verdict.matches_gd, "text": verdict.text}));
    serde_json::Value::Object(top)
}

#[allow(clippy::too_many_arguments)]
fn summary_table(
    cfg: &Config,
    closed: &ClosedForm,
    eta: f64,
    cmp: &Comparison,
    ols: &Stat,
    residual: f64,
    second: Option<&(Comparison, Comparison)>,
    train_seconds: f64,
    ms_per_step: f64,
    verdict: &Verdict,
    dest: &Path,
    plot_note: Option<String>,
) -> String {
    let pm = |s: &Stat| format!("{:.4} ± {:.4}", s.mean, s.ci95);
    let mut t = String::new();
    t.push_str(&format!(
        "single-layer LSA, d = {}, N = {}, input range {}, {} steps x {} tasks, {} held-out tasks (95% CI)\n",
        cfg.d, cfg.n, cfg.input_range, cfg.steps, cfg.batch, cfg.eval_tasks
    ));
    t.push_str(&format!("  {:<34} {}\n", "loss, trained LSA", pm(&cmp.loss_a)));
    t.push_str(&format!(
        "  {:<34} {}   (eta = {eta:.3}; closed form {:.4} at eta = {:.3})\n",
        "loss, one GD step (tuned)",
        pm(&cmp.loss_b),
        closed.loss,
        closed.eta
    ));
    t.push_str(&format!("  {:<34} {}\n", "loss, predict 0", pm(&cmp.loss_zero)));
    t.push_str(&format!("  {:<34} {}\n", "loss, least squares on the context", pm(ols)));
    t.push_str(&format!("  {:<34} {}\n", "preds diff (trained vs GD)", pm(&cmp.preds_diff)));
    t.push_str(&format!("  {:<34} {}\n", "model cos (trained vs GD)", pm(&cmp.model_cos)));
    t.push_str(&format!("  {:<34} {}\n", "model diff (trained vs GD)", pm(&cmp.model_diff)));
    t.push_str(&format!("  {:<34} {residual:.4}\n", "GD-family residual of the weights"));
    if let Some((s2s, other)) = second {
        t.push_str(&format!(
            "  {:<34} {}   (second model vs GD: {:.4})\n",
            "model cos (seed vs seed + 1)",
            pm(&s2s.model_cos),
            other.model_cos.mean
        ));
    }
    t.push_str(&format!("  {:<34} {train_seconds:.1} s, {ms_per_step:.3} ms/step\n", "training time"));
    t.push_str(&format!("  results in {}\n", dest.display()));
    if let Some(note) = plot_note {
        t.push_str(&format!("  note: {note}\n"));
    }
    t.push_str(&format!("verdict: {}\n", verdict.text));
    t
}
