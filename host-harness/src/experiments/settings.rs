//! Settings groups shared by experiments. Each experiment's settings struct is at once its command-line arguments
//! (clap derive; the `#[arg]` defaults are the defaults), its defaults in code ([`defaults`]), and the `config` of
//! its report (serde). Groups here are flattened into those structs.

use crate::tasks::TaskSampler;
use crate::{HarnessError, SUPPORTED_D};
use serde::{Deserialize, Serialize};
use std::fmt::Display;
use std::ops::RangeInclusive;

/// `Ok` when `value` lies in `range`; else the usage error of every range check, naming the flag:
/// "`flag` must be between LO and HI (got VALUE)".
pub fn in_range<T: PartialOrd + Display>(flag: &str, value: T, range: RangeInclusive<T>) -> Result<(), HarnessError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(HarnessError::Usage(format!("{flag} must be between {} and {} (got {value})", range.start(), range.end())))
}

/// `Ok` when `values` lists at least one value and each lies in `range`; else the usage error of every list check:
/// "`flag` must list `what` from LO to HI (got `[values]`)".
pub fn all_in_range<T: PartialOrd + Display + std::fmt::Debug>(
    flag: &str,
    what: &str,
    values: &[T],
    range: RangeInclusive<T>,
) -> Result<(), HarnessError> {
    if !values.is_empty() && values.iter().all(|v| range.contains(v)) {
        return Ok(());
    }
    Err(HarnessError::Usage(format!(
        "{flag} must list {what} from {} to {} (got {values:?})",
        range.start(),
        range.end()
    )))
}

/// Arguments every experiment takes.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Common {
    /// Training seed (tasks and initialisation).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: u64,
    /// Seed of the held-out evaluation, tuning and probe tasks.
    #[arg(long, default_value_t = 1_000_003, allow_negative_numbers = true)]
    pub eval_seed: u64,
    /// Worker threads (0 = one per core).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub threads: usize,
    /// Reduced run for CI: fewer steps and tasks (each experiment's help lists what changes).
    #[arg(long)]
    pub quick: bool,
}

impl Common {
    /// Checks the thread count.
    pub fn validate(&self) -> Result<(), HarnessError> {
        in_range("--threads", self.threads, 0..=1024)
    }
}

/// The groups every experiment has: the common flags, the training budget, the evaluation budget and the training
/// curves. Each experiment's settings flatten it in, so its flags and its `config` keys stay at the top level.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Shared {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub eval: EvalArgs,
    #[command(flatten)]
    pub curves: CurveArgs,
}

impl Shared {
    /// Checks every group; the message names the flag.
    pub fn validate(&self) -> Result<(), HarnessError> {
        self.common.validate()?;
        self.train.validate()?;
        self.eval.validate()?;
        self.curves.validate()
    }
}

/// The task distribution: `w ~ N(0, I_d)`, inputs with independent coordinates `x_i = mu + c_i U(-r/2, r/2)`,
/// `y = w . x + sigma z`, N context pairs (the reference: `c_i = 1`, `mu = 0`, `sigma = 0`, N = d = 10, r = 1).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskArgs {
    /// Input dimension d (1 to 256).
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub d: usize,
    /// Context pairs per task N.
    #[arg(long, default_value_t = 10, allow_negative_numbers = true)]
    pub n: usize,
    /// Inputs are uniform on (-r/2, r/2)^d.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub input_range: f64,
    /// Anisotropic inputs: coordinate variances falling geometrically from the largest to the smallest by this
    /// ratio (1, 4, 10, 100 ...), mean variance unchanged.
    #[arg(long, allow_negative_numbers = true, conflicts_with = "input_scales")]
    pub variance_ratio: Option<f64>,
    /// Anisotropic inputs: the scale c_i of each coordinate, d comma-separated positive numbers.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    pub input_scales: Option<Vec<f64>>,
    /// Mean mu of every input coordinate.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    #[serde(default)]
    pub input_mean: f64,
    /// Standard deviation sigma of the label noise (context and query targets).
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    #[serde(default)]
    pub noise: f64,
}

impl TaskArgs {
    /// Checks every field; the message names the flag.
    pub fn validate(&self) -> Result<(), HarnessError> {
        in_range("--d", self.d, SUPPORTED_D)?;
        in_range("--n", self.n, 1..=4096)?;
        if !(self.input_range.is_finite() && self.input_range > 0.0 && self.input_range <= 1e6) {
            return Err(HarnessError::Usage(format!(
                "--input-range must be a positive number up to 1e6 (got {})",
                self.input_range
            )));
        }
        if let Some(r) = self.variance_ratio {
            in_range("--variance-ratio", r, 1.0..=1e6)?;
        }
        if let Some(c) = &self.input_scales {
            if c.len() != self.d {
                return Err(HarnessError::Usage(format!(
                    "--input-scales needs one scale per input coordinate: {} given for d = {}",
                    c.len(),
                    self.d
                )));
            }
            if let Some(bad) = c.iter().find(|v| !(v.is_finite() && **v > 0.0 && **v <= 1e3)) {
                return Err(HarnessError::Usage(format!(
                    "--input-scales must be positive numbers up to 1e3 (got {bad})"
                )));
            }
        }
        if !(self.input_mean.is_finite() && self.input_mean.abs() <= 1e3) {
            return Err(HarnessError::Usage(format!(
                "--input-mean must be a number between -1000 and 1000 (got {})",
                self.input_mean
            )));
        }
        in_range("--noise", self.noise, 0.0..=1e3)?;
        Ok(())
    }

    /// The reference distribution with `d` inputs and `n` pairs at variance ratio `ratio` (1: isotropic).
    pub fn anisotropic(d: usize, n: usize, ratio: f64) -> Self {
        Self { d, n, input_range: 1.0, variance_ratio: Some(ratio), input_scales: None, input_mean: 0.0, noise: 0.0 }
    }

    /// The per-coordinate input scales `c_i` these arguments name (all 1 unless anisotropic).
    pub fn scales(&self) -> Vec<f64> {
        match (&self.input_scales, self.variance_ratio) {
            (Some(c), _) => c.clone(),
            (None, Some(r)) => crate::tasks::geometric_scales(self.d, r),
            (None, None) => vec![1.0; self.d],
        }
    }

    /// The sampler of this distribution (weight scale 1).
    pub fn sampler(&self) -> TaskSampler {
        let mut s = TaskSampler::new(self.d, self.n, self.input_range as f32);
        for (c, v) in s.scales.iter_mut().zip(self.scales()) {
            *c = v as f32;
        }
        s.mean = self.input_mean as f32;
        s.noise = self.noise as f32;
        s
    }

    /// One line naming the distribution, for tables and plots.
    pub fn describe(&self) -> String {
        let mut parts = vec![format!("d = {}, N = {}", self.d, self.n)];
        if self.input_range != 1.0 {
            parts.push(format!("input range {}", self.input_range));
        }
        match (&self.input_scales, self.variance_ratio) {
            (Some(_), _) => parts.push("input scales given".into()),
            (None, Some(r)) if r != 1.0 => parts.push(format!("variance ratio {r}")),
            _ => parts.push("isotropic".into()),
        }
        if self.input_mean != 0.0 {
            parts.push(format!("input mean {}", self.input_mean));
        }
        if self.noise != 0.0 {
            parts.push(format!("label noise {}", self.noise));
        }
        parts.join(", ")
    }
}

/// The training budget and optimiser overrides.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainArgs {
    /// Training steps per model.
    #[arg(long, default_value_t = 5000, allow_negative_numbers = true)]
    pub steps: u64,
    /// Tasks per training step.
    #[arg(long, default_value_t = 2048, allow_negative_numbers = true)]
    pub batch: usize,
    /// Adam learning rate [default: the reference rule, 1e-3 up to 3 layers and 5e-4 beyond].
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Global-norm gradient clip [default: the reference rule, 1e-3 up to 2 layers and 10 beyond].
    #[arg(long, allow_negative_numbers = true)]
    pub clip: Option<f64>,
}

impl TrainArgs {
    /// Checks every field; the message names the flag.
    pub fn validate(&self) -> Result<(), HarnessError> {
        in_range("--steps", self.steps, 1..=10_000_000)?;
        in_range("--batch", self.batch, 1..=1 << 20)?;
        for (flag, v) in [("--lr", self.lr), ("--clip", self.clip)] {
            if let Some(v) = v {
                if !(v.is_finite() && v > 0.0) {
                    return Err(HarnessError::Usage(format!("{flag} must be a positive number (got {v})")));
                }
            }
        }
        Ok(())
    }

    /// The training spec for a model applied `depth` times, by the reference rules unless overridden.
    pub fn spec(&self, depth: usize, seed: u64) -> crate::fit::train::TrainSpec {
        use crate::fit::train::reference;
        crate::fit::train::TrainSpec {
            steps: self.steps,
            batch: self.batch,
            seed,
            adam: crate::fit::optim::AdamW::reference(self.lr.unwrap_or(reference::lr(depth))),
            clip: self.clip.unwrap_or(reference::grad_clip(depth)),
        }
    }
}

/// Training curves: how often, and on how many probe tasks, the loss is logged while a model trains. Experiments
/// that share a trained model share these too (they are part of what the model's cache key spells).
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CurveArgs {
    /// Log training curves every this many steps.
    #[arg(long, default_value_t = 100, allow_negative_numbers = true)]
    pub log_every: u64,
    /// Tasks of the curve probe.
    #[arg(long, default_value_t = 1024, allow_negative_numbers = true)]
    pub probe_tasks: usize,
}

impl CurveArgs {
    /// Checks both; the message names the flags.
    pub fn validate(&self) -> Result<(), HarnessError> {
        in_range("--log-every", self.log_every, 1..=u64::MAX)?;
        in_range("--probe-tasks", self.probe_tasks, 2..=usize::MAX)
    }
}

/// The evaluation budget.
#[derive(clap::Args, Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalArgs {
    /// Held-out evaluation tasks (also the number of tuning tasks for the references).
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true)]
    pub eval_tasks: usize,
}

impl EvalArgs {
    /// Checks the count.
    pub fn validate(&self) -> Result<(), HarnessError> {
        in_range("--eval-tasks", self.eval_tasks, 2..=10_000_000)?;
        Ok(())
    }
}

/// The settings `S` would have from the command line `args` (without the program and experiment names), with
/// `quick` applied when `--quick` is among them: `quick` lists `(argument id, value)` defaults that `--quick`
/// replaces; a value given on the command line still wins.
pub fn parse<S: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    extra: impl Fn(clap::Command) -> clap::Command,
    quick: &[(&str, &str)],
    args: &[String],
) -> Result<(S, clap::ArgMatches), clap::Error> {
    let command = || extra(S::augment_args(clap::Command::new(name))).no_binary_name(true).args_override_self(true);
    let matches = command().try_get_matches_from(args)?;
    let matches = if matches.get_flag("quick") && !quick.is_empty() {
        let mut cmd = command();
        for (id, value) in quick {
            let value: &'static str = Box::leak(value.to_string().into_boxed_str());
            cmd = cmd.mut_arg(*id, |a| a.default_value(value));
        }
        cmd.try_get_matches_from(args)?
    } else {
        matches
    };
    Ok((S::from_arg_matches(&matches)?, matches))
}

/// The default settings of `S` named `name` (`quick`: with `--quick`), `extra` applied to its command first (an
/// experiment's own defaults over its settings type's).
pub fn defaults<S: clap::Args + clap::FromArgMatches>(
    name: &'static str,
    extra: impl Fn(clap::Command) -> clap::Command,
    quick_defaults: &[(&str, &str)],
    quick: bool,
) -> Result<S, HarnessError> {
    let args: Vec<String> = if quick { vec!["--quick".into()] } else { vec![] };
    parse::<S>(name, extra, quick_defaults, &args).map(|(s, _)| s).map_err(|e| {
        HarnessError::Usage(format!("{name}: invalid defaults: {}", e.to_string().lines().next().unwrap_or("")))
    })
}
