//! Verdicts by written rules: does a one-layer model implement GD, implement preconditioned GD, only match GD's
//! loss, or not match at all? The rules (also in the README, "How to read a verdict"):
//!
//! A model **implements** a candidate algorithm C (plain GD, or preconditioned GD) when
//! 1. its loss is within 3% of C's;
//! 2. it is close to C in absolute terms, by a yardstick that does not move with the model: the lower end of its
//!    Model cos to C is at least 0.99, and the upper end of its Preds diff to C is at most a tenth of C's mean
//!    absolute prediction (without this, a model far from C would have few alternatives left to beat in rule 3);
//! 3. it agrees with C better than with every alternative, by more than the intervals: the upper end of the
//!    interval of its Preds diff to C is below the lower end of its Preds diff to each alternative. Alternatives that
//!    are themselves closer to C than the model is (their Preds diff to C below the upper end of the model's, which
//!    rule 2 caps at a tenth of C's predictions) cannot be told apart from C at this precision and are set aside
//!    (they are listed in the verdict);
//! 4. for plain GD only: its functional GD-family residual (the weight blocks that reach the prediction) is at most
//!    0.1. This rule reads LSA weights; for a model that has none to read (softmax attention) it does not apply, and
//!    the verdict says that its identification rests on behaviour alone.
//!
//! The outcome is the first that holds of: implements GD; implements preconditioned GD; "matches GD's loss,
//! algorithm not identified" (loss within 3% of GD's or below it); "does not match". Intervals combine training
//! seeds and tasks (see [`over_seeds`]).

use crate::judge::stats::Stat;
use crate::output::report::Check;
use serde::{Deserialize, Serialize};

/// What a reference is, for the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// One step of plain GD with a tuned rate (a candidate).
    Gd,
    /// One step of GD with the optimal diagonal preconditioner (a candidate).
    Preconditioned,
    /// The best one-layer model of the class, fitted.
    Optimum,
    /// Least squares on the context.
    LeastSquares,
    /// Ridge regression on the context, tuned penalty.
    Ridge,
    /// Two steps of GD with a tuned rate (not reachable by one layer; an alternative of a different depth).
    TwoStepGd,
}

/// The model under test against one reference, on the same held-out tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    /// The reference's name.
    pub reference: String,
    /// Its role in the rules.
    pub role: Role,
    /// The reference's loss.
    pub loss: Stat,
    /// Preds diff `|y_hat - y_hat_ref|` (interval over seeds and tasks).
    pub preds_diff: Stat,
    /// Model cos of the sensitivities `d y_hat / d x_q`.
    pub model_cos: Stat,
    /// Model diff `|g - g_ref|`.
    pub model_diff: Stat,
    /// Model diff relative to the reference's sensitivity, `|g - g_ref| / |g_ref|`.
    pub model_diff_rel: Stat,
    /// Cosine over the demonstrations of the model's attribution and the reference's (which demonstrations each
    /// prediction draws on, and in what proportion; [`crate::judge::attribution`]).
    #[serde(default = "Stat::missing")]
    pub attribution_cos: Stat,
    /// The reference's mean absolute prediction `|y_hat_ref|` (the yardstick of rule 2; missing in reports written
    /// before it was measured, where rule 2 fails).
    #[serde(default = "Stat::missing")]
    pub ref_scale: Stat,
    /// Preds diff of the reference itself against plain GD (how distinct it is from GD).
    pub ref_to_gd: Stat,
    /// Preds diff of the reference against preconditioned GD.
    pub ref_to_preconditioned: Stat,
}

/// The outcome of the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Implements plain GD.
    ImplementsGd,
    /// Implements preconditioned GD (and not plain GD).
    ImplementsPreconditionedGd,
    /// Matches or beats GD's loss, but agrees with no candidate more than with the alternatives.
    MatchesLossOnly,
    /// Neither.
    DoesNotMatch,
}

/// The rules' answer: the outcome, its sentence, and the checks behind it (those of the identified candidate, or
/// of both candidates when none was identified).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ruling {
    /// The outcome.
    pub outcome: Outcome,
    /// One sentence from the numbers.
    pub sentence: String,
    /// The named checks of the candidate the sentence is about.
    pub checks: Vec<Check>,
}

impl Ruling {
    /// Whether an algorithm was identified (the verdict "passes").
    pub fn identified(&self) -> bool {
        matches!(self.outcome, Outcome::ImplementsGd | Outcome::ImplementsPreconditionedGd)
    }
}

/// The bound on the loss gap and on the functional residual.
pub const LOSS_TOLERANCE: f64 = 0.03;
/// The lower 95% bound of Model cos from which a model's sensitivities count as a reference's.
pub const MODEL_COS_BOUND: f64 = 0.99;

/// A loss's relative gap to a reference's: `|loss - reference| / reference`.
pub fn loss_gap(loss: f64, reference: f64) -> f64 {
    ((loss - reference) / reference).abs()
}

/// The rule behind every "matches" in the reports: the loss within [`LOSS_TOLERANCE`] of the reference's, and the
/// lower 95% bound of Model cos to it at least [`MODEL_COS_BOUND`].
pub fn matches(loss: f64, reference: f64, model_cos_lo: f64) -> bool {
    loss_gap(loss, reference) <= LOSS_TOLERANCE && model_cos_lo >= MODEL_COS_BOUND
}

/// Rule 2's bound on a model's Preds diff to a candidate (upper end), as a fraction of the candidate's mean absolute
/// prediction.
pub const CLOSENESS_BOUND: f64 = 0.1;

/// The largest functional GD-family residual of a model that implements GD.
pub const RESIDUAL_BOUND: f64 = 0.1;
/// The class optimum's relative gain over GD below which GD counts as the optimum of its class.
pub const OPTIMUM_GAIN: f64 = 0.01;

/// The checks of candidate `role` (see the module docs): the loss, the absolute closeness, one per distinguishable
/// alternative, and for GD the residual. Also returns the names of the alternatives set aside.
fn candidate(
    role: Role,
    model_loss: &Stat,
    agreements: &[Agreement],
    functional_residual: Option<f64>,
) -> Option<(Vec<Check>, Vec<String>)> {
    let c = agreements.iter().find(|a| a.role == role)?;
    let tag = role.id();
    let mut checks = vec![Check::at_most(
        &format!("loss_vs_{tag}"),
        &format!("|loss - loss of {}| / its loss", c.reference),
        loss_gap(model_loss.mean, c.loss.mean),
        LOSS_TOLERANCE,
    )];
    checks.push(Check::at_least(
        &format!("model_cos_to_{tag}"),
        &format!("Model cos to {} (lower end)", c.reference),
        c.model_cos.lo(),
        MODEL_COS_BOUND,
    ));
    checks.push(Check::at_most(
        &format!("preds_diff_to_{tag}_relative"),
        &format!("Preds diff to {} (upper end) / its mean |prediction|", c.reference),
        c.preds_diff.hi() / c.ref_scale.mean,
        CLOSENESS_BOUND,
    ));
    let mut set_aside = Vec::new();
    let to_c = |a: &Agreement| if role == Role::Gd { a.ref_to_gd } else { a.ref_to_preconditioned };
    for alt in agreements.iter().filter(|a| a.role != role) {
        if to_c(alt).mean <= c.preds_diff.hi() {
            set_aside.push(alt.reference.clone());
            continue;
        }
        checks.push(Check::at_least(
            &format!("{tag}_closer_than_{}", alt.role.id()),
            &format!("Preds diff to {} (lower end) minus Preds diff to {} (upper end)", alt.reference, c.reference),
            alt.preds_diff.lo() - c.preds_diff.hi(),
            0.0,
        ));
    }
    if let (Role::Gd, Some(functional_residual)) = (role, functional_residual) {
        checks.push(Check::at_most(
            "functional_residual",
            "functional GD-family residual of the weights",
            functional_residual,
            RESIDUAL_BOUND,
        ));
    }
    Some((checks, set_aside))
}

impl Role {
    /// The role as a check identifier.
    pub fn id(self) -> &'static str {
        match self {
            Role::Gd => "gd",
            Role::Preconditioned => "pgd",
            Role::Optimum => "optimum",
            Role::LeastSquares => "least_squares",
            Role::Ridge => "ridge",
            Role::TwoStepGd => "two_step_gd",
        }
    }
}

/// Applies the rules to a model with loss `model_loss`, its agreement with every reference, and its functional
/// GD-family residual (`None` for a model without LSA weights: rule 3 does not apply).
pub fn rule(model_loss: &Stat, agreements: &[Agreement], functional_residual: Option<f64>) -> Ruling {
    let gd = candidate(Role::Gd, model_loss, agreements, functional_residual);
    let pgd = candidate(Role::Preconditioned, model_loss, agreements, functional_residual);
    let all_pass = |c: &Option<(Vec<Check>, Vec<String>)>| c.as_ref().is_some_and(|(k, _)| k.iter().all(|x| x.passed));
    let aside = |c: &(Vec<Check>, Vec<String>)| {
        if c.1.is_empty() {
            String::new()
        } else {
            format!(" (indistinguishable from it here, so not counted as alternatives: {})", c.1.join(", "))
        }
    };
    let gd_loss = agreements.iter().find(|a| a.role == Role::Gd).map(|a| a.loss.mean);
    if let (true, Some(c)) = (all_pass(&gd), &gd) {
        let optimum_is_gd = agreements
            .iter()
            .find(|a| a.role == Role::Optimum)
            .zip(gd_loss)
            .is_some_and(|(o, l)| o.loss.mean >= l * (1.0 - OPTIMUM_GAIN));
        let note = if optimum_is_gd {
            "; on this distribution GD is itself the optimum of its class (the fitted optimum gains less than 1% \
             over it), so this cannot tell GD from \"the best one-layer model\""
        } else {
            ""
        };
        let behaviour = if functional_residual.is_none() {
            " (by behaviour alone: this model has no LSA weights for the weight rule to read)"
        } else {
            ""
        };
        return Ruling {
            outcome: Outcome::ImplementsGd,
            sentence: format!(
                "IMPLEMENTS GD: closer to one GD step than to every alternative{}{note}{behaviour}",
                aside(c)
            ),
            checks: c.0.clone(),
        };
    }
    if let (true, Some(c)) = (all_pass(&pgd), &pgd) {
        return Ruling {
            outcome: Outcome::ImplementsPreconditionedGd,
            sentence: format!(
                "IMPLEMENTS PRECONDITIONED GD: closer to the preconditioned step than to plain GD and every other \
                 alternative{}",
                aside(c)
            ),
            checks: c.0.clone(),
        };
    }
    // Neither candidate: the checks of both, and the sentence names what failed for each.
    let mut checks = gd.map(|c| c.0).unwrap_or_default();
    checks.extend(pgd.map(|c| c.0).unwrap_or_default());
    let failed: Vec<String> = checks.iter().filter(|c| !c.passed).map(Check::line).collect();
    match gd_loss {
        Some(l) if model_loss.mean <= l * (1.0 + LOSS_TOLERANCE) => Ruling {
            outcome: Outcome::MatchesLossOnly,
            sentence: format!(
                "MATCHES GD'S LOSS, ALGORITHM NOT IDENTIFIED: loss {:.4} against GD's {l:.4}, but {}",
                model_loss.mean,
                failed.join("; ")
            ),
            checks,
        },
        _ => Ruling {
            outcome: Outcome::DoesNotMatch,
            sentence: format!("DOES NOT MATCH: {}", failed.join("; ")),
            checks,
        },
    }
}

/// Per-seed task means and task intervals combined into one interval: the mean of the seeds' means, with the 95%
/// half-widths of its two sources of error added in quadrature, `sqrt(s^2 + t^2)`: `s` over training seeds (Student
/// t on the seeds' means, `k - 1` degrees of freedom), `t` over the held-out tasks (the seeds' mean task
/// half-width; every seed is measured on the same tasks, so this part does not shrink with more seeds). The two are
/// independent (which seeds were trained, which tasks were drawn), so their variances add; the result is at least
/// the larger of the two and at most their sum. With one seed, the task interval alone.
pub fn over_seeds(per_seed: &[Stat]) -> Stat {
    let k = per_seed.len();
    if k == 0 {
        return Stat { mean: f64::NAN, ci95: f64::NAN, n: 0 };
    }
    let mean = per_seed.iter().map(|s| s.mean).sum::<f64>() / k as f64;
    let task = per_seed.iter().map(|s| s.ci95).sum::<f64>() / k as f64;
    let seeds = if k > 1 {
        let var = per_seed.iter().map(|s| (s.mean - mean).powi(2)).sum::<f64>() / (k - 1) as f64;
        student_t95(k - 1) * (var / k as f64).sqrt()
    } else {
        0.0
    };
    Stat { mean, ci95: seeds.hypot(task), n: k }
}

/// The two-sided 95% quantile of Student's t with `df` degrees of freedom.
pub fn student_t95(df: usize) -> f64 {
    const T: [f64; 10] = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228];
    match df {
        0 => f64::INFINITY,
        1..=10 => T[df - 1],
        11..=20 => 2.2,
        21..=30 => 2.06,
        _ => 1.96,
    }
}
