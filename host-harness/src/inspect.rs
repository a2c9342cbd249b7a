//! `dualform inspect MODEL.safetensors`: any one-layer LSA's weights against GD, preconditioned GD, the class
//! optimum and the other alternatives, with the verdict of the written rules ([`crate::judge::verdict`]).
//!
//! Accepted files: this project's weight files (`dualform-lsa-v1`, one layer applied once), or four `[E, E]` f32
//! tensors `W_Q`, `W_K`, `W_V`, `P` (the reference layout, no metadata needed) acting on column vectors as in the
//! layer `h <- h + P sum_j (W_Q h . W_K e_j) W_V e_j`, prediction `-h_query[last]`: PyTorch's `Linear.weight`
//! layout. A matrix used as `x @ w` (haiku, flax) is exported transposed. The README shows a three-line export.

use crate::experiments::settings::in_range;
use crate::experiments::settings::TaskArgs;
use crate::judge::assess::{assess, read_gd_f64, Assessment, Held, References};
use crate::judge::baselines::Predictor;
use crate::judge::eval::{compare_predictors, Comparison};
use crate::model::{Lsa, LsaHead, Model};
use crate::net::{Merged, Net};
use crate::output::report::{fmt_num, Table};
use crate::tasks::streams;
use crate::HarnessError;
use dualform_tensors::TensorFile;
use std::path::{Path, PathBuf};

/// The arguments of `dualform inspect`.
#[derive(clap::Args, Clone, Debug)]
pub struct InspectArgs {
    /// The model: a dualform weight file, or W_Q, W_K, W_V, P as [E, E] f32 tensors.
    pub model: PathBuf,
    /// The reference to report agreement with first: gd, pgd (preconditioned GD), optimum (the fitted class
    /// optimum), or another model's weight file. The verdict always uses every reference.
    #[arg(long, default_value = "gd")]
    pub against: String,
    #[command(flatten)]
    pub task: TaskArgs,
    /// Seed of the held-out and tuning tasks.
    #[arg(long, default_value_t = 1_000_003, allow_negative_numbers = true)]
    pub eval_seed: u64,
    /// Held-out tasks (also the tuning tasks of the references).
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true)]
    pub eval_tasks: usize,
}

/// A one-layer model read from a file.
#[derive(Clone, Debug)]
pub struct LoadedModel {
    /// Its merged head.
    pub head: Merged,
    /// Which layout it was read as.
    pub layout: &'static str,
    /// SHA-256 of the file.
    pub sha256: String,
    /// The context size N its metadata names, if any.
    pub n: Option<usize>,
    /// The task distribution its metadata names, if any.
    pub distribution: Option<String>,
}

/// The reference layout's tensor names.
pub const REFERENCE_NAMES: [&str; 4] = ["W_Q", "W_K", "W_V", "P"];

/// The token width of the model in `path` (from its `W_Q` / `w_q` tensor), to pick the input dimension.
pub fn token_width(path: &Path) -> Result<usize, HarnessError> {
    let f = TensorFile::read_foreign(path)?;
    let t = f.tensor("W_Q").or_else(|_| f.tensor("w_q")).map_err(|_| {
        HarnessError::BadInput(format!(
            "{}: W_Q: tensor missing (expected a dualform weight file or tensors {})",
            path.display(),
            REFERENCE_NAMES.join(", ")
        ))
    })?;
    match t.shape[..] {
        [e, e2] if e == e2 && e >= 2 => Ok(e),
        _ => Err(HarnessError::BadInput(format!(
            "{}: {}: shape {:?}, expected [E, E] with E = d + 1 >= 2",
            path.display(),
            t.name,
            t.shape
        ))),
    }
}

/// Reads a one-layer model of token width `e` from `path` (see the module docs).
pub fn load_model(path: &Path, e: usize) -> Result<LoadedModel, HarnessError> {
    let f = TensorFile::read_foreign(path)?;
    if f.meta.contains_key("format") {
        let lsa = Lsa::from_file(&f, Some(e))?;
        let one = lsa.net().schedule().len() == 1 && *lsa.net().update() == dualform::Update::residual();
        return match (lsa.layers(), one) {
            ([head], true) => Ok(LoadedModel {
                head: head.merged(),
                layout: "dualform-lsa-v1",
                sha256: f.sha256.clone(),
                n: f.meta.get("n").and_then(|v| v.parse().ok()),
                distribution: f.meta.get("distribution").cloned(),
            }),
            _ => Err(HarnessError::BadInput(format!(
                "{}: a model of {} layers applied {} times; inspect reads one layer applied once",
                path.display(),
                lsa.layers().len(),
                lsa.net().schedule().len()
            ))),
        };
    }
    let mut head = LsaHead::zeros(e);
    for (name, dst) in REFERENCE_NAMES.iter().zip(head.mats_mut()) {
        let v = f.values(name, &[e, e])?;
        // Row-major [E, E] into column-major.
        for (k, x) in v.iter().enumerate() {
            dst[(k % e) * e + k / e] = *x;
        }
    }
    Ok(LoadedModel {
        head: head.merged(),
        layout: "reference (W_Q, W_K, W_V, P)",
        sha256: f.sha256,
        n: None,
        distribution: None,
    })
}

/// What `inspect` found.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The model against every reference.
    pub assessment: Assessment,
    /// The model against the `--against` file, when one was given.
    pub against_file: Option<Comparison>,
    /// The closest GD step's rate (from the trace of the merged matrices), and the functional and dead parts of the
    /// GD-family residual.
    pub eta: f64,
    /// The printed tables.
    pub text: String,
}

/// Runs `dualform inspect` on validated arguments.
fn inspect_model(args: &InspectArgs) -> Result<Inspection, HarnessError> {
    let (d, e) = (args.task.d, args.task.d + 1);
    let model = load_model(&args.model, e)?;
    if let Some(n) = model.n {
        if n != args.task.n {
            return Err(HarnessError::Usage(format!(
                "{}: the model was trained with N = {n} context pairs (metadata n); pass --n {n}",
                args.model.display()
            )));
        }
    }
    let sampler = args.task.sampler();
    let net = Net::single(model.head.clone())?;
    let refs = References::build(&sampler, args.eval_seed, args.eval_tasks)?;
    let held = Held { sampler: &sampler, seed: args.eval_seed, count: args.eval_tasks };
    let assessment = assess(&[&net], &refs, held)?;
    let other = match args.against.as_str() {
        "gd" | "pgd" | "optimum" => None,
        path => {
            let p = Path::new(path);
            if !p.is_file() {
                return Err(HarnessError::Usage(format!(
                    "--against must be gd, pgd, optimum or a weight file (got {path:?}, not a file)"
                )));
            }
            Some(load_model(p, e)?)
        }
    };
    let against_file = match &other {
        None => None,
        Some(o) => {
            let o = Net::single(o.head.clone())?;
            let c = compare_predictors(
                Predictor::Net(&net),
                &[Predictor::Net(&o)],
                &sampler,
                args.eval_seed,
                streams::EVAL,
                args.eval_tasks,
            );
            Some(c[0])
        }
    };
    let eta = read_gd_f64(d, &model.head, args.task.n).map_or(f64::NAN, |f| f.0.eta);

    let mut head = Table::new(
        format!("{} ({}, sha256 {}…)", args.model.display(), model.layout, &model.sha256[..12]),
        &["quantity", "value"],
    );
    head.row(vec!["tasks".into(), format!("{} held-out, {}", args.eval_tasks, args.task.describe())]);
    if let Some(trained) = &model.distribution {
        head.row(vec!["trained on (its metadata)".into(), trained.clone()]);
    }
    head.row(vec!["loss".into(), assessment.loss.show()]);
    head.row(vec!["closest GD rate".into(), fmt_num(eta)]);
    head.row(vec!["functional GD-family residual".into(), fmt_num(assessment.residual.unwrap_or(f64::NAN))]);
    head.row(vec![
        "dead blocks (never reach the prediction)".into(),
        fmt_num(assessment.dead_per_seed.first().copied().unwrap_or(f64::NAN)),
    ]);
    head.row(vec!["class optimum's functional residual (yardstick)".into(), fmt_num(refs.summary.optimum_residual)]);
    let first = match args.against.as_str() {
        "pgd" => 1,
        "optimum" => 2,
        _ => 0,
    };
    let mut order: Vec<usize> = vec![first];
    order.extend((0..assessment.agreements.len()).filter(|&i| i != first));
    let mut t = Table::new(
        "against each reference (95% intervals over tasks)",
        &["reference", "its loss", "preds diff", "model cos", "model diff", "model diff / |g_ref|"],
    );
    let row = |name: String,
               loss: String,
               c: (
        &crate::judge::stats::Stat,
        &crate::judge::stats::Stat,
        &crate::judge::stats::Stat,
        &crate::judge::stats::Stat,
    )| { vec![name, loss, c.0.show(), c.1.show(), c.2.show(), c.3.show()] };
    if let (Some(c), Some(_)) = (&against_file, &other) {
        t.row(row(
            format!("{} (--against)", args.against),
            c.loss_b.show(),
            (&c.preds_diff, &c.model_cos, &c.model_diff, &c.model_diff_rel),
        ));
    }
    for i in order {
        let a = &assessment.agreements[i];
        t.row(row(a.reference.clone(), a.loss.show(), (&a.preds_diff, &a.model_cos, &a.model_diff, &a.model_diff_rel)));
    }
    let mut text = head.text();
    text.push_str(&t.text());
    text.push_str("checks\n");
    for c in &assessment.ruling.checks {
        text.push_str(&format!("  [{}] {}\n", if c.passed { "pass" } else { "FAIL" }, c.line()));
    }
    text.push_str(&format!("verdict: {}\n", assessment.ruling.sentence));
    Ok(Inspection { assessment, against_file, eta, text })
}

/// `dualform inspect`: validates the arguments, reads the model's width, and judges the model.
pub fn inspect(args: &InspectArgs) -> Result<Inspection, HarnessError> {
    in_range("--eval-tasks", args.eval_tasks, 2..=10_000_000)?;
    let e = token_width(&args.model)?;
    if e - 1 != args.task.d {
        return Err(HarnessError::Usage(format!(
            "{}: the model's tokens have width {e}, so d = {}; pass --d {}",
            args.model.display(),
            e - 1,
            e - 1
        )));
    }
    args.task.validate()?;
    inspect_model(args)
}
