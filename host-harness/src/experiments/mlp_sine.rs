//! `dualform reproduce mlp-sine`: in-context regression of sine waves, `y = a sin(x + b)` with `x ~ U(-5, 5)`, `N`
//! pairs, amplitude `a ~ U(0.1, 5)` and phase `b ~ U(0, pi)` drawn independently per task (the reference code drew
//! both from one random key, so they were correlated). The model is a learned feature map of the input (an
//! embedding and a residual GELU block, [`dualform::mlp::ScalarMlp`], width [`FEATURES`]) followed by one LSA
//! layer, trained with the core's kernels; it is compared with the same trained feature map followed by one GD step
//! from 0 on the features, its rate tuned on separate tasks.
//!
//! Agreement: loss, Preds diff, and sensitivities `d y_hat / d x_q`. With a one-dimensional query the reference's
//! Model cos is a cosine of two scalars, i.e. a sign agreement; it is reported as such, and beside it a real vector
//! cosine: the sensitivities at [`Settings::grid`] query points across the input range for the same context.
//!
//! Files: `report.json`, `curves.csv`, `mlp-sine.png`, `mlp-sine.safetensors` (first seed, `dualform-mlp-lsa-v1`).

use super::{Experiment, Outcome, Run};
use crate::eval::{best_scale, loss, zero_loss};
use crate::model::{save, MlpLsa, Model};
use crate::net::{FixedForward, MlpLsaNet, Workspace};
use crate::plot::{Panel, Series};
use crate::report::{Check, Table, Tables};
use crate::settings::{Common, CurveArgs, EvalArgs, TrainArgs};
use crate::stats::Stat;
use crate::tasks::{stream_rng, streams, Family, TaskSampler};
use crate::train::{train, TrainTiming};
use crate::verdict::over_seeds;
use crate::HarnessError;
use dualform::{read_gd, GdFit};
use serde::{Deserialize, Serialize};

/// Width of the feature map.
pub const FEATURES: usize = 16;
/// Hidden width of the residual block.
pub const HIDDEN: usize = 32;
const W: usize = FEATURES + 1;
type SineNet = MlpLsaNet<FEATURES, HIDDEN, W>;

/// Width of the input interval: `x ~ U(-5, 5)`.
const INPUT_RANGE: f32 = 10.0;

/// The experiment.
pub struct MlpSine;

/// Settings of `reproduce mlp-sine`.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    #[command(flatten)]
    pub common: Common,
    /// Context pairs N.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub n: usize,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Models, from seeds seed, seed + 1, ... (intervals over seeds).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub seeds: usize,
    /// Query points across the input range at which sensitivities are compared as one vector.
    #[arg(long, default_value_t = 21, allow_negative_numbers = true)]
    pub grid: usize,
    #[command(flatten)]
    pub curves: CurveArgs,
}

impl super::Settings for Settings {
    const QUICK: &'static [(&'static str, &'static str)] =
        &[("steps", "600"), ("batch", "256"), ("eval_tasks", "1000"), ("seeds", "2"), ("probe_tasks", "512")];

    fn common(&self) -> &Common {
        &self.common
    }

    fn d(&self) -> usize {
        1
    }

    fn validate(&self) -> Result<(), HarnessError> {
        self.train.validate()?;
        self.eval.validate()?;
        self.curves.validate()?;
        let usage = |m: String| Err(HarnessError::Usage(m));
        if !(2..=4096).contains(&self.n) {
            return usage(format!("--n must be between 2 and 4096 (got {})", self.n));
        }
        if !(1..=16).contains(&self.seeds) {
            return usage(format!("--seeds must be between 1 and 16 (got {})", self.seeds));
        }
        if !(2..=1000).contains(&self.grid) {
            return usage(format!("--grid must be between 2 and 1000 (got {})", self.grid));
        }
        Ok(())
    }
}

/// One trained model against its features' GD step, on the held-out tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    /// The training seed.
    pub seed: u64,
    /// Held-out loss of the trained model.
    pub loss: Stat,
    /// Held-out loss of the same features + one tuned GD step.
    pub gd_loss: Stat,
    /// GD's tuned rate on the features.
    pub gd_eta: f64,
    /// The closest GD step to the trained head (the core's reader): its rate, the norm of its `W0`, and the relative
    /// residual over the blocks that reach the prediction (0 = the head is exactly a GD step on its features).
    pub read: (f64, f64, f64),
    /// Held-out loss of that closest GD step (from its `W0`, at its rate) on the same features.
    pub read_loss: Stat,
    /// `|y_hat - y_hat_GD|`.
    pub preds_diff: Stat,
    /// The reference's Model cos with a scalar query: `sign(s * s_GD)` (1 agree, -1 disagree, 0 where one is 0).
    pub sign_agreement: Stat,
    /// Cosine of the sensitivity vectors over the grid of query points (same context).
    pub grid_cos: Stat,
    /// `|f - f_GD| / |f_GD|` of the prediction vectors over the grid.
    pub grid_diff: Stat,
    /// Training time.
    pub timing: TrainTiming,
    /// `(step, batch loss, probe loss)` during training.
    pub curve: Vec<(u64, f64, f64)>,
}

/// What `reproduce mlp-sine` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The task distribution in words.
    pub distribution: String,
    /// Feature and hidden widths.
    pub widths: (usize, usize),
    /// Every seed.
    pub seeds: Vec<SeedResult>,
    /// Over seeds: model loss, GD loss, preds diff, sign agreement, grid cosine, grid difference.
    pub over_seeds: [Stat; 6],
    /// Loss of predicting 0.
    pub zero: Stat,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut main = Table::new(
            format!(
                "trained feature map ({} features, hidden {}) + LSA against the same features + one tuned GD step; {}",
                self.widths.0, self.widths.1, self.distribution
            ),
            &[
                "seed",
                "loss",
                "GD loss",
                "GD rate",
                "preds diff",
                "sign agreement",
                "grid sensitivity cos",
                "grid rel. diff",
            ],
        );
        for r in &self.seeds {
            main.row(vec![
                r.seed.to_string(),
                r.loss.show(),
                r.gd_loss.show(),
                format!("{:.3}", r.gd_eta),
                r.preds_diff.show(),
                r.sign_agreement.show(),
                r.grid_cos.show(),
                r.grid_diff.show(),
            ]);
        }
        let o = &self.over_seeds;
        main.row(vec![
            "all".into(),
            o[0].show(),
            o[1].show(),
            "-".into(),
            o[2].show(),
            o[3].show(),
            o[4].show(),
            o[5].show(),
        ]);
        let mut read = Table::new(
            "the trained head read back as the closest GD step on its features (rate, |W0|, functional residual), and \
             that step's loss",
            &["seed", "rate", "|W0|", "functional residual", "loss of that step"],
        );
        for r in &self.seeds {
            read.row(vec![
                r.seed.to_string(),
                format!("{:.3}", r.read.0),
                format!("{:.3}", r.read.1),
                format!("{:.3}", r.read.2),
                r.read_loss.show(),
            ]);
        }
        let mut time = Table::new("training", &["seed", "ms/step"]);
        for r in &self.seeds {
            time.row(vec![r.seed.to_string(), format!("{:.2}", r.timing.ms_per_step)]);
        }
        let mut base = Table::new("baseline", &["model", "loss"]);
        base.row(vec!["predict 0".into(), self.zero.show()]);
        vec![main, read, time, base]
    }
}

/// Sound when every seed learned (loss at most 0.5 of predicting 0) and GD on the features helps (its loss below
/// predicting 0).
pub fn checks(r: &Results) -> Vec<Check> {
    let worst = r.seeds.iter().map(|x| x.loss.mean).fold(f64::NAN, f64::max);
    let worst_gd = r.seeds.iter().map(|x| x.gd_loss.mean).fold(f64::NAN, f64::max);
    vec![
        Check::at_most("learns", "worst seed: loss / loss of predicting 0", worst / r.zero.mean, 0.5),
        Check::at_most(
            "gd_helps",
            "worst seed: GD on the features, loss / loss of predicting 0",
            worst_gd / r.zero.mean,
            1.0,
        ),
    ]
}

/// Whether the trained layer matches GD on its own features (loss within 3%, grid sensitivity cosine's lower bound
/// at least 0.99), with the figures.
pub fn verdict(r: &Results, checks: &[Check]) -> String {
    let o = &r.over_seeds;
    let gap = (o[0].mean - o[1].mean) / o[1].mean;
    let matches = gap.abs() <= 0.03 && o[4].lo() >= 0.99;
    let head = if matches {
        "matches one GD step on its own features"
    } else {
        "DOES NOT MATCH one GD step on its own features"
    };
    let failed: Vec<&str> = checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    let tail = if failed.is_empty() { String::new() } else { format!(" (failed: {})", failed.join(", ")) };
    format!(
        "{head}: loss {:.4} against {:.4} ({:+.1}%), preds diff {:.4}, sensitivity cosine over the grid {:.4} (the \
         scalar Model cos is a sign agreement: {:.4}){tail}",
        o[0].mean,
        o[1].mean,
        100.0 * gap,
        o[2].mean,
        o[4].mean,
        o[3].mean
    )
}

/// The same feature map followed by the core's GD construction on the features at rate `eta`.
fn gd_on_features(net: &SineNet, eta: f32, n: usize) -> Result<SineNet, dualform::Error> {
    let layer = dualform::gd_layer::<f32, FEATURES, 1, W>(&nalgebra::SMatrix::zeros(), eta, n)?;
    Ok(MlpLsaNet { mlp: net.mlp.clone(), layer })
}

/// Prediction and sensitivity `d y_hat / d x_q` of `net` at `x` for `ctx`.
fn probe(net: &SineNet, ctx: &[[f32; 2]], x: f32, ws: &mut Workspace<2>) -> (f64, f64) {
    let (y, g) = FixedForward::<2>::forward_backward(net, ctx, &[x, 0.0], ws, |_| 1.0, None);
    (f64::from(y), f64::from(g[0]))
}

/// Per task: model and GD at the query, and over the grid.
fn compare(model: &SineNet, gd: &SineNet, sampler: &TaskSampler, s: &Settings) -> [Stat; 6] {
    let grid: Vec<f32> =
        (0..s.grid).map(|k| -INPUT_RANGE / 2.0 + INPUT_RANGE * k as f32 / (s.grid - 1) as f32).collect();
    let parts = sampler.par_chunks_fixed::<2, (Vec<[f64; 6]>, Workspace<2>)>(
        s.common.eval_seed,
        streams::EVAL,
        s.eval.eval_tasks,
        Default::default,
        |(acc, ws), ctx, q, y| {
            let (ym, sm) = probe(model, ctx, q[0], ws);
            let (yg, sg) = probe(gd, ctx, q[0], ws);
            let y = f64::from(y);
            let (mut fm, mut fg, mut gm, mut gg) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for &x in &grid {
                let (a, b) = probe(model, ctx, x, ws);
                let (c, d) = probe(gd, ctx, x, ws);
                fm.push(a);
                gm.push(b);
                fg.push(c);
                gg.push(d);
            }
            let diff: f64 = fm.iter().zip(&fg).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
            let norm: f64 = fg.iter().map(|b| b * b).sum::<f64>().sqrt();
            acc.push([
                0.5 * (ym - y).powi(2),
                0.5 * (yg - y).powi(2),
                (ym - yg).abs(),
                (sm * sg).signum() * f64::from(u8::from(sm * sg != 0.0)),
                crate::dai::cosine(&gm, &gg).unwrap_or(0.0),
                if norm > 0.0 { diff / norm } else { f64::NAN },
            ]);
        },
    );
    let rows: Vec<[f64; 6]> = parts.into_iter().flat_map(|p| p.0).collect();
    core::array::from_fn(|i| Stat::of(rows.iter().map(|r| r[i]).filter(|v| v.is_finite())))
}

fn write_files(
    run: &mut Run<'_>,
    r: &Results,
    first: &SineNet,
    sampler: &TaskSampler,
    gd: &SineNet,
) -> Result<(), HarnessError> {
    let mut curves = String::from("seed,step,batch_loss,probe_loss\n");
    for sr in &r.seeds {
        for (step, b, p) in &sr.curve {
            curves.push_str(&format!("{},{step},{b},{p}\n", sr.seed));
        }
    }
    crate::output::write(&run.file("curves.csv"), &curves)?;
    let mut training = Panel::new("Training (probe loss)", "training step", "loss").log_y();
    for sr in &r.seeds {
        training = training
            .with(Series::line(format!("seed {}", sr.seed), sr.curve.iter().map(|c| (c.0 as f64, c.2)).collect()));
    }
    // One held-out task: the truth is unknown to the plot, so it shows the context and both predictors.
    let mut rng = stream_rng(run_seed(r), streams::EVAL);
    let mut ctx = vec![[0.0f32; 2]; sampler.n];
    sampler.sample(&mut rng, &mut ctx);
    let xs: Vec<f32> = (0..101).map(|k| -5.0 + 0.1 * k as f32).collect();
    let mut ws = Workspace::default();
    let curve = |net: &SineNet, ws: &mut Workspace<2>| -> Vec<(f64, f64)> {
        xs.iter()
            .map(|&x| (f64::from(x), f64::from(FixedForward::<2>::predict(net, &ctx, &[x, 0.0], ws, None))))
            .collect()
    };
    let function = Panel::new("One held-out task", "x", "prediction")
        .with(Series::line("trained (first seed)", curve(first, &mut ws)))
        .with(Series::dashed("its features + one GD step", curve(gd, &mut ws)))
        .with(Series::points("context", ctx.iter().map(|t| (f64::from(t[0]), f64::from(t[1]))).collect()));
    run.plot("mlp-sine.png", "Sine regression in context: training, and one task's predictions", &[training, function]);
    Ok(())
}

fn run_seed(r: &Results) -> u64 {
    r.seeds.first().map_or(0, |s| s.seed) ^ 0xF00D
}

fn run(s: &Settings, run: &mut Run<'_>) -> Result<Outcome<Results>, HarnessError> {
    let sampler = TaskSampler { family: Family::Sine, ..TaskSampler::new(1, s.n, INPUT_RANGE) };
    let input_std = f64::from(INPUT_RANGE) / 12f64.sqrt();
    let mut seeds = Vec::new();
    let mut nets = Vec::new();
    for k in 0..s.seeds as u64 {
        let seed = s.common.seed.wrapping_add(k);
        let spec = s.train.spec(1, seed);
        let mut model = MlpLsa::<FEATURES, HIDDEN, W>::init(&mut stream_rng(seed, streams::INIT), input_std);
        let progress = run.progress(spec.steps, &format!("feature map + LSA, seed {seed}"));
        let mut curve = Vec::new();
        let timing = train(&mut model, &sampler, &spec, |step, m, batch_loss| {
            if step % s.curves.log_every == 0 || step == spec.steps {
                let probe = loss(m.net(), &sampler, s.common.eval_seed, streams::PROBE, s.curves.probe_tasks);
                curve.push((step, batch_loss, probe.mean));
            }
            progress.step(step, || format!("loss {batch_loss:.4}"));
            Ok(())
        })?;
        progress.finish();
        let unit = gd_on_features(model.net(), 1.0, s.n)?;
        let eta = best_scale(&unit, &sampler, s.common.eval_seed, streams::TUNE, s.eval.eval_tasks);
        let gd = gd_on_features(model.net(), eta as f32, s.n)?;
        let [l, gl, pd, sign, gc, gdiff] = compare(model.net(), &gd, &sampler, s);
        let fit: GdFit<f32, FEATURES, 1> = read_gd(&model.net().layer.heads[0], s.n)?;
        let closest = MlpLsaNet {
            mlp: model.net().mlp.clone(),
            layer: dualform::gd_layer::<f32, FEATURES, 1, W>(&fit.w0, fit.eta, s.n)?,
        };
        let read_loss = loss(&closest, &sampler, s.common.eval_seed, streams::EVAL, s.eval.eval_tasks);
        seeds.push(SeedResult {
            seed,
            loss: l,
            gd_loss: gl,
            gd_eta: eta,
            read: (f64::from(fit.eta), f64::from(fit.w0.norm()), f64::from(fit.functional)),
            read_loss,
            preds_diff: pd,
            sign_agreement: sign,
            grid_cos: gc,
            grid_diff: gdiff,
            timing,
            curve,
        });
        nets.push((model, gd));
    }
    let over: [Stat; 6] = core::array::from_fn(|i| {
        let per: Vec<Stat> = seeds
            .iter()
            .map(|x| [x.loss, x.gd_loss, x.preds_diff, x.sign_agreement, x.grid_cos, x.grid_diff][i])
            .collect();
        over_seeds(&per)
    });
    let results = Results {
        distribution: format!(
            "x ~ U(-5, 5), y = a sin(x + b), a ~ U(0.1, 5) and b ~ U(0, pi) drawn independently (the reference code \
             drew both from one random key, so they were correlated), N = {}",
            s.n
        ),
        widths: (FEATURES, HIDDEN),
        seeds,
        over_seeds: over,
        zero: zero_loss(&sampler, s.common.eval_seed, streams::EVAL, s.eval.eval_tasks),
    };
    if let Some((model, gd)) = nets.first() {
        let meta = vec![("n", s.n.to_string()), ("model", format!("feature map + LSA, seed {}", s.common.seed))];
        save(model, &meta, &run.file("mlp-sine.safetensors"))?;
        write_files(run, &results, model.net(), &sampler, gd)?;
    }
    let checks = checks(&results);
    let verdict = verdict(&results, &checks);
    Ok(Outcome { results, checks, verdict })
}

impl Experiment for MlpSine {
    const NAME: &'static str = "mlp-sine";
    const ABOUT: &'static str =
        "Sine regression in context: a learned feature map + one LSA layer against GD on its features";
    type Settings = Settings;
    type Results = Results;

    fn run(s: &Settings, r: &mut Run<'_>) -> Result<Outcome<Results>, HarnessError> {
        run(s, r)
    }
}
