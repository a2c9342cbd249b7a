//! `dualform inspect MODEL`: any model's weights judged as the experiments judge the models they train.
//!
//! - One LSA layer applied once: against GD, preconditioned GD, the class optimum and the other alternatives, with
//!   the verdict of the written rules ([`crate::judge::verdict`]); when no candidate is identified at its tuned rate,
//!   the candidate at the model's own rate ([`crate::judge::assess::at_own_rate`]).
//! - K LSA layers, or one layer applied K times: against K steps of GD with a shared rate, a rate per step and GD++
//!   (or, looped, repeated GD and repeated GD++), fitted on tuning tasks, with the loss after each application
//!   ([`deep`]), as `reproduce multi-layer` and `recurrent` do.
//! - Softmax attention: as `reproduce softmax` does, on behaviour alone (the weight rule reads LSA weights).
//!
//! The layouts it reads (this project's files, the reference layout, haiku / flax names; safetensors or `.npz`) are
//! in [`mod@load`].

pub mod deep;
pub mod load;

use crate::experiments::settings::in_range;
use crate::experiments::settings::TaskArgs;
use crate::judge::assess::{assess_predictors, at_own_rate, read_gd_f64, Assessment, Held, OtherRate, References};
use crate::judge::attribution::Subject;
use crate::judge::baselines::Predictor;
use crate::judge::eval::{compare_predictors, Comparison};
use crate::judge::stats::Stat;
use crate::judge::verdict::Role;
use crate::model::Model;
use crate::net::Forward;
use crate::output::report::{fmt_num, Table};
use crate::tasks::streams;
use crate::HarnessError;
use load::{load, LoadedModel, Weights};
use std::path::{Path, PathBuf};

pub use load::REFERENCE_NAMES;

/// The arguments of `dualform inspect`.
#[derive(clap::Args, Clone, Debug)]
pub struct InspectArgs {
    /// The model: a dualform weight file, tensors W_Q, W_K, W_V, P, or haiku / flax names; safetensors or .npz.
    pub model: PathBuf,
    /// The reference to report agreement with first (one-layer models): gd, pgd (preconditioned GD), optimum (the
    /// fitted class optimum), or another one-layer model's file. The verdict always uses every reference.
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
    /// Gauss-Newton iterations per fitted reference (models of more than one application).
    #[arg(long, default_value_t = 30, allow_negative_numbers = true)]
    pub fit_iters: usize,
}

/// The verdict `inspect` reached.
#[derive(Clone, Debug)]
pub enum Finding {
    /// A model of one application, by the written rules.
    OneLayer {
        /// The model against every reference at its tuned rate.
        assessment: Box<Assessment>,
        /// The candidate at the model's own rate, when the tuned candidates are not identified but that one is.
        other_rate: Option<Box<OtherRate>>,
    },
    /// A model of several applications against the fitted K-step references.
    Deep(deep::DeepFinding),
}

/// What `inspect` found.
#[derive(Clone, Debug)]
pub struct Inspection {
    /// The verdict and the numbers behind it.
    pub finding: Finding,
    /// The one-layer model against the `--against` file, when one was given.
    pub against_file: Option<Comparison>,
    /// The verdict sentence.
    pub verdict: String,
    /// The printed tables.
    pub text: String,
}

fn header(args: &InspectArgs, model: &LoadedModel) -> Table {
    let mut head = Table::new(
        format!("{} ({}, sha256 {}…)", args.model.display(), model.layout, &model.sha256[..12]),
        &["quantity", "value"],
    );
    head.row(vec!["tasks".into(), format!("{} held-out, {}", args.eval_tasks, args.task.describe())]);
    if let Some(trained) = &model.distribution {
        head.row(vec!["trained on (its metadata)".into(), trained.clone()]);
    }
    head
}

/// The rows of every reference's agreement, `first` on top.
fn agreement_rows(t: &mut Table, a: &Assessment, first: usize) {
    let mut order: Vec<usize> = vec![first];
    order.extend((0..a.agreements.len()).filter(|&i| i != first));
    for i in order {
        let g = &a.agreements[i];
        t.row(vec![
            g.reference.clone(),
            g.loss.show(),
            g.preds_diff.show(),
            g.model_cos.show(),
            g.model_diff_rel.show(),
            g.attribution_cos.show(),
            g.model_diff.show(),
        ]);
    }
}

const AGREEMENT_COLUMNS: [&str; 7] =
    ["reference", "its loss", "preds diff", "model cos", "model diff / |g_ref|", "attribution cos", "model diff"];

/// One application of one LSA layer or one softmax layer: the written rules (see the module docs).
fn one_layer(args: &InspectArgs, model: &LoadedModel) -> Result<Inspection, HarnessError> {
    let sampler = args.task.sampler();
    let (d, n) = (args.task.d, args.task.n);
    let refs = References::build(&sampler, args.eval_seed, args.eval_tasks)?;
    let held = Held { sampler: &sampler, seed: args.eval_seed, count: args.eval_tasks };
    let (subject, fits, head): (Subject<'_>, Option<Vec<(f64, f64)>>, _) = match &model.weights {
        Weights::Lsa(m) => {
            let head = m.net().heads()[0].clone();
            let fit =
                read_gd_f64(d, &head, n).map_or((f64::NAN, f64::NAN, f64::NAN), |(f, _)| (f.functional, f.dead, f.eta));
            (Subject::net(m.net()), Some(vec![(fit.0, fit.1)]), Some(fit))
        }
        Weights::Softmax(m) => (Subject::any(Predictor::Net(m.net())), None, None),
    };
    let assessment = assess_predictors(&[subject], fits.as_deref(), &refs, held);
    let other_rate = at_own_rate(&[subject], fits.as_deref(), &refs, held, &assessment)?;
    let other = match args.against.as_str() {
        "gd" | "pgd" | "optimum" => None,
        path => {
            let p = Path::new(path);
            if !p.is_file() {
                return Err(HarnessError::Usage(format!(
                    "--against must be gd, pgd, optimum or a model file (got {path:?}, not a file)"
                )));
            }
            let o = load(p)?;
            if o.width() != model.width() || o.applications() != 1 {
                return Err(HarnessError::Usage(format!(
                    "--against {path}: a model of width {} and {} application(s); the model has width {} and one",
                    o.width(),
                    o.applications(),
                    model.width()
                )));
            }
            Some(o)
        }
    };
    let against_file = other.as_ref().map(|o| {
        let b = match &o.weights {
            Weights::Lsa(m) => Predictor::Net(m.net()),
            Weights::Softmax(m) => Predictor::Net(m.net()),
        };
        compare_predictors(subject.predictor, &[b], &sampler, args.eval_seed, streams::EVAL, args.eval_tasks)[0]
    });

    let mut head_t = header(args, model);
    head_t.row(vec!["loss".into(), assessment.loss.show()]);
    if let Some((functional, dead, eta)) = head {
        head_t.row(vec!["closest GD rate (from the weights)".into(), fmt_num(eta)]);
        head_t.row(vec!["functional GD-family residual".into(), fmt_num(functional)]);
        head_t.row(vec!["dead blocks (never reach the prediction)".into(), fmt_num(dead)]);
        head_t.row(vec![
            "class optimum's functional residual (yardstick)".into(),
            fmt_num(refs.summary.optimum_residual),
        ]);
    } else {
        head_t.row(vec!["weights".into(), "softmax attention: judged on behaviour alone".into()]);
    }
    head_t.row(vec!["tuned GD rate here".into(), fmt_num(refs.summary.gd_eta)]);
    let first = match args.against.as_str() {
        "pgd" => 1,
        "optimum" => 2,
        _ => 0,
    };
    let mut t = Table::new("against each reference (95% intervals over tasks)", &AGREEMENT_COLUMNS);
    if let Some(c) = &against_file {
        let row = |s: &Stat| s.show();
        t.row(vec![
            format!("{} (--against)", args.against),
            row(&c.loss_b),
            row(&c.preds_diff),
            row(&c.model_cos),
            row(&c.model_diff_rel),
            "-".into(),
            row(&c.model_diff),
        ]);
    }
    agreement_rows(&mut t, &assessment, first);
    let mut text = head_t.text();
    text.push_str(&t.text());
    text.push_str("checks\n");
    for c in &assessment.ruling.checks {
        text.push_str(&format!("  [{}] {}\n", if c.passed { "pass" } else { "FAIL" }, c.line()));
    }
    let behaviour = fits.is_none() && !assessment.ruling.sentence.contains("behaviour alone");
    let verdict = match &other_rate {
        None if behaviour => format!("{} (softmax attention: judged on behaviour alone)", assessment.ruling.sentence),
        None => assessment.ruling.sentence.clone(),
        Some(o) => {
            let tuned_loss = assessment.agreements.iter().find(|a| a.role == o.role).map_or(f64::NAN, |a| a.loss.mean);
            let mut t = Table::new(
                format!(
                    "with {} at the model's own rate ({} x the tuned step's predictions, fitted on the tuning tasks)",
                    if o.role == Role::Gd { "GD" } else { "preconditioned GD" },
                    fmt_num(o.scale)
                ),
                &AGREEMENT_COLUMNS,
            );
            agreement_rows(&mut t, &o.assessment, 0);
            text.push_str(&format!("at the tuned rates: {}\n", assessment.ruling.sentence));
            text.push_str(&t.text());
            text.push_str("checks at the model's own rate\n");
            for c in o.assessment.ruling.checks.iter().chain(&o.direction) {
                text.push_str(&format!("  [{}] {}\n", if c.passed { "pass" } else { "FAIL" }, c.line()));
            }
            o.sentence(tuned_loss)
        }
    };
    text.push_str(&format!("verdict: {verdict}\n"));
    let finding = Finding::OneLayer { assessment: Box::new(assessment), other_rate: other_rate.map(Box::new) };
    Ok(Inspection { finding, against_file, verdict, text })
}

/// `dualform inspect`: validates the arguments, reads the model, and judges it by its kind and depth.
pub fn inspect(args: &InspectArgs) -> Result<Inspection, HarnessError> {
    in_range("--eval-tasks", args.eval_tasks, 2..=10_000_000)?;
    in_range("--fit-iters", args.fit_iters, 1..=1000)?;
    let model = load(&args.model)?;
    let e = model.width();
    if e - 1 != args.task.d {
        return Err(HarnessError::Usage(format!(
            "{}: the model's tokens have width {e}, so d = {}; pass --d {}",
            args.model.display(),
            e - 1,
            e - 1
        )));
    }
    if let Some(n) = model.n.filter(|&n| n != args.task.n) {
        return Err(HarnessError::Usage(format!(
            "{}: the model was trained with N = {n} context pairs (metadata n); pass --n {n}",
            args.model.display()
        )));
    }
    args.task.validate()?;
    let one = match &model.weights {
        Weights::Lsa(m) => m.net().applications() == 1 && *m.net().update() == dualform::Update::residual(),
        Weights::Softmax(m) => m.layers().len() == 1,
    };
    if one {
        one_layer(args, &model)
    } else {
        deep::judge(args, &model)
    }
}
