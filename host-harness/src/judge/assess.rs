//! One-layer models against every reference the verdict rules need ([`crate::judge::verdict`]): plain GD (tuned rate),
//! preconditioned GD (closed form where the inputs have zero mean, else the fitted diagonal), the class optimum
//! (fitted), least squares and ridge on the context, two GD steps; with the functional GD-family residual. Used by
//! `reproduce single-layer` (trained models, one per seed) and by `dualform inspect` (any model's weights).

use crate::fit::references::{shared_rate, FitSpec};
use crate::judge::attribution::{AttributionAgreement, Attributor, Subject};
use crate::judge::baselines::{diagonal, fit_m, m_net, tune_ridge, Class, Predictor};
use crate::judge::eval::fit_scale;
use crate::judge::eval::{evaluate, gd_net, tune_gd_rate, Agreement as EvalAgreement, Comparison, Metric};
use crate::judge::stats::Stat;
use crate::judge::verdict::{over_seeds, rule, Agreement, Outcome, Role, Ruling, RESIDUAL_BOUND};
use crate::model::Model;
use crate::net::{Merged, Net};
use crate::output::report::Check;
use crate::tasks::{streams, ClosedForm, TaskSampler};
use crate::HarnessError;
use dualform::{read_gd_slices, GdFitScalars};
use serde::{Deserialize, Serialize};

/// The references, built on the evaluation seed's tuning tasks.
#[derive(Clone)]
pub struct References {
    /// What the references are (for the report).
    pub summary: ReferenceSummary,
    gd: Net,
    preconditioned: Net,
    optimum: Net,
    two_step: Net,
    d: usize,
    n: usize,
}

/// The references' parameters, as the report shows them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReferenceSummary {
    /// The closed form on this distribution (`None` with a non-zero input mean).
    pub closed_form: Option<ClosedForm>,
    /// Rate of the tuned GD step.
    pub gd_eta: f64,
    /// The preconditioner the candidate uses (closed form, or fitted when there is none).
    pub preconditioner: Vec<f64>,
    /// Whether that preconditioner is the closed form.
    pub preconditioner_closed_form: bool,
    /// The fitted diagonal preconditioner (the closed form's check).
    pub preconditioner_fitted: Vec<f64>,
    /// The fitted class optimum `M` (row-major `d x d`).
    pub optimum: Vec<f64>,
    /// Its functional GD-family residual (the yardstick of how far the best one-layer model is from plain GD).
    pub optimum_residual: f64,
    /// The functional GD-family residual of the preconditioned step.
    pub preconditioned_residual: f64,
    /// The tuned ridge penalty.
    pub ridge_lambda: f64,
    /// The tuned shared rate of two GD steps.
    pub two_step_eta: f64,
}

impl References {
    /// Builds every reference for `sampler` on `tasks` tuning tasks of `eval_seed` (the class optimum and the
    /// fitted preconditioner, which have d^2 and d free numbers, on ten times as many; the two-step rate on a fifth,
    /// validated).
    pub fn build(sampler: &TaskSampler, eval_seed: u64, tasks: usize) -> Result<Self, HarnessError> {
        let (d, n) = (sampler.d, sampler.n);
        let gd_eta = tune_gd_rate(sampler, eval_seed, streams::TUNE, tasks)?;
        let closed_form = ClosedForm::of(sampler);
        let many = tasks.saturating_mul(10).min(1 << 20);
        let fitted = fit_m(sampler, Class::Diagonal, eval_seed, streams::TUNE, many);
        let preconditioner_fitted: Vec<f64> = (0..sampler.d).map(|i| fitted[(i, i)]).collect();
        let (preconditioner, closed) = match &closed_form {
            Some(cf) => (cf.preconditioner.clone(), true),
            None => (preconditioner_fitted.clone(), false),
        };
        let m = fit_m(sampler, Class::Full, eval_seed, streams::TUNE, many);
        let preconditioned = m_net(d, &diagonal(&preconditioner), n);
        let optimum = m_net(d, &m, n);
        let spec = FitSpec { sampler, eval_seed, tasks: (tasks / 5).max(200), iters: 20 };
        let two = shared_rate(2, spec)?;
        let two_step_eta = two.model.etas()[0] as f64;
        let residual = |net: &Net| functional_residual(d, &net.heads()[0], n).unwrap_or(f64::NAN);
        let summary = ReferenceSummary {
            closed_form,
            gd_eta,
            preconditioner_closed_form: closed,
            preconditioner_fitted,
            optimum: m.transpose().as_slice().to_vec(),
            optimum_residual: residual(&optimum),
            preconditioned_residual: residual(&preconditioned),
            preconditioner,
            ridge_lambda: tune_ridge(sampler, eval_seed, streams::TUNE, tasks.min(4000)),
            two_step_eta,
        };
        Ok(Self {
            summary,
            gd: gd_net(d, gd_eta as f32, n)?,
            preconditioned,
            optimum,
            two_step: two.model.net().clone(),
            d,
            n,
        })
    }

    /// The same references with plain GD at rate `eta` instead of the tuned one (a wrong reference, for tests that
    /// the comparison detects it).
    pub fn with_gd_eta(mut self, eta: f64) -> Result<Self, HarnessError> {
        self.gd = gd_net(self.d, eta as f32, self.n)?;
        Ok(self)
    }

    /// The same references with candidate `role`'s step scaled by `c`: plain GD at `c` times the tuned rate, or the
    /// preconditioned step with `c` times the preconditioner (a one-step prediction from `W0 = 0` is linear in
    /// either, so the candidate's predictions scale by `c`). Other roles are not candidates and are left as they are.
    pub fn rescaled(&self, role: Role, c: f64) -> Result<Self, HarnessError> {
        let mut out = self.clone();
        match role {
            Role::Gd => {
                out.summary.gd_eta = c * self.summary.gd_eta;
                out.gd = gd_net(self.d, out.summary.gd_eta as f32, self.n)?;
            }
            Role::Preconditioned => {
                let scaled: Vec<f64> = self.summary.preconditioner.iter().map(|g| c * g).collect();
                out.preconditioned = m_net(self.d, &diagonal(&scaled), self.n);
                out.summary.preconditioner = scaled;
            }
            _ => {}
        }
        Ok(out)
    }

    /// The GD reference.
    pub fn gd(&self) -> &Net {
        &self.gd
    }

    /// The preconditioned-GD reference.
    pub fn preconditioned(&self) -> &Net {
        &self.preconditioned
    }

    /// The fitted class optimum.
    pub fn optimum(&self) -> &Net {
        &self.optimum
    }

    /// Every reference's attribution, in the order of [`References::list`]: GD and two GD steps by the dual form,
    /// the one-layer nets by their terms, least squares and ridge by leaving one demonstration out.
    fn attributors(&self) -> Vec<Attributor<'_>> {
        let ridge = |lambda: f64| Attributor::LeaveOneOut(Predictor::Ridge { lambda, d: self.d });
        vec![
            Attributor::Gd { eta: self.summary.gd_eta, steps: 1 },
            Attributor::of_net(&self.preconditioned),
            Attributor::of_net(&self.optimum),
            ridge(0.0),
            ridge(self.summary.ridge_lambda),
            Attributor::Gd { eta: self.summary.two_step_eta, steps: 2 },
        ]
    }

    /// Every reference with its name and role, in the order of the report's table.
    fn list(&self) -> Vec<(String, Role, Predictor<'_>)> {
        let pgd = if self.summary.preconditioner_closed_form {
            "preconditioned GD (closed form)"
        } else {
            "preconditioned GD (fitted)"
        };
        vec![
            ("GD".into(), Role::Gd, Predictor::Net(&self.gd)),
            (pgd.into(), Role::Preconditioned, Predictor::Net(&self.preconditioned)),
            ("class optimum (fitted)".into(), Role::Optimum, Predictor::Net(&self.optimum)),
            ("least squares".into(), Role::LeastSquares, Predictor::Ridge { lambda: 0.0, d: self.d }),
            (
                format!("ridge (lambda {:.3})", self.summary.ridge_lambda),
                Role::Ridge,
                Predictor::Ridge { lambda: self.summary.ridge_lambda, d: self.d },
            ),
            ("two GD steps".into(), Role::TwoStepGd, Predictor::Net(&self.two_step)),
        ]
    }
}

/// The relative residual of `head` against the GD family over the blocks that reach the prediction.
pub fn functional_residual(d: usize, head: &Merged, n: usize) -> Result<f64, dualform::Error> {
    Ok(read_gd_f64(d, head, n)?.0.functional)
}

/// The closest GD step to an f32 head with `d` inputs and one target, read in f64 ([`read_gd_slices`]): the
/// scalars of the fit and `W0` (d values).
pub fn read_gd_f64(d: usize, head: &Merged, n: usize) -> Result<(GdFitScalars<f64>, Vec<f64>), dualform::Error> {
    let widen = |m: &[f32]| m.iter().map(|&v| v as f64).collect::<Vec<f64>>();
    let mut w0 = vec![0.0; d];
    let fit = read_gd_slices(head.width(), d, &widen(&head.a), &widen(&head.b), n, &mut w0)?;
    Ok((fit, w0))
}

/// Where the assessment is measured.
#[derive(Clone, Copy, Debug)]
pub struct Held<'a> {
    /// The task distribution.
    pub sampler: &'a TaskSampler,
    /// The evaluation seed.
    pub seed: u64,
    /// Held-out tasks.
    pub count: usize,
}

/// One or more models (one per training seed) against every reference, with the rules' ruling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Assessment {
    /// The models' loss (interval over seeds and tasks).
    pub loss: Stat,
    /// Each model's loss.
    pub loss_per_seed: Vec<Stat>,
    /// Agreement with every reference.
    pub agreements: Vec<Agreement>,
    /// Functional GD-family residual of each model (empty for models without LSA weights).
    pub residual_per_seed: Vec<f64>,
    /// Norm of the dead blocks of each model, relative like the residual (empty likewise).
    pub dead_per_seed: Vec<f64>,
    /// The functional residual, mean over seeds (`None` for models without LSA weights: the weight rule does not
    /// apply).
    pub residual: Option<f64>,
    /// The rules' answer.
    pub ruling: Ruling,
}

/// Assesses `models` (one-layer nets, one per seed) against `refs` on held-out tasks.
pub fn assess(models: &[&Net], refs: &References, held: Held<'_>) -> Result<Assessment, HarnessError> {
    let fits: Vec<(f64, f64)> = models
        .iter()
        .map(|m| match read_gd_f64(held.sampler.d, &m.heads()[0], held.sampler.n) {
            Ok((fit, _)) => (fit.functional, fit.dead),
            Err(_) => (f64::NAN, f64::NAN),
        })
        .collect();
    let subjects: Vec<Subject<'_>> = models.iter().map(|m| Subject::net(m)).collect();
    Ok(assess_predictors(&subjects, Some(&fits), refs, held))
}

/// Assesses any one-layer models (one per seed) against `refs`; `weights` holds each model's functional residual
/// and dead-block norm where the model has LSA weights to read (`None`: the weight rule does not apply, and no
/// residuals are reported).
pub fn assess_predictors(
    models: &[Subject<'_>],
    weights: Option<&[(f64, f64)]>,
    refs: &References,
    held: Held<'_>,
) -> Assessment {
    let Held { sampler, seed, count } = held;
    let list = refs.list();
    let preds: Vec<Predictor<'_>> = list.iter().map(|(_, _, p)| *p).collect();
    // One pass over the held-out tasks: every seed's model, GD and preconditioned GD, each against every reference.
    let subjects: Vec<Predictor<'_>> = models
        .iter()
        .map(|m| m.predictor)
        .chain([Predictor::Net(&refs.gd), Predictor::Net(&refs.preconditioned)])
        .collect();
    let metrics: Vec<EvalAgreement<'_>> =
        subjects.iter().map(|a| EvalAgreement { a: *a, refs: preds.clone() }).collect();
    let attributions: Vec<AttributionAgreement<'_>> =
        models.iter().map(|m| AttributionAgreement { a: m.attributor, refs: refs.attributors() }).collect();
    let dyn_metrics: Vec<&dyn Metric> =
        metrics.iter().map(|m| m as &dyn Metric).chain(attributions.iter().map(|m| m as &dyn Metric)).collect();
    let mut columns = evaluate(&dyn_metrics, sampler, seed, streams::EVAL, count);
    let attribution_per_seed = columns.split_off(metrics.len());
    let mut compared: Vec<Vec<Comparison>> = columns.iter().map(|c| EvalAgreement::comparisons(c)).collect();
    let to_pgd = compared.pop().unwrap_or_default();
    let to_gd = compared.pop().unwrap_or_default();
    let per_seed = compared;
    let agreements = list
        .iter()
        .enumerate()
        .map(|(i, (name, role, _))| {
            let over = |f: fn(&Comparison) -> Stat| over_seeds(&per_seed.iter().map(|c| f(&c[i])).collect::<Vec<_>>());
            Agreement {
                reference: name.clone(),
                role: *role,
                loss: to_gd[i].loss_b,
                preds_diff: over(|c| c.preds_diff),
                model_cos: over(|c| c.model_cos),
                model_diff: over(|c| c.model_diff),
                model_diff_rel: over(|c| c.model_diff_rel),
                attribution_cos: over_seeds(
                    &attribution_per_seed
                        .iter()
                        .map(|a| a.get(i).copied().unwrap_or_else(Stat::missing))
                        .collect::<Vec<_>>(),
                ),
                ref_scale: to_gd[i].scale_b,
                ref_to_gd: to_gd[i].preds_diff,
                ref_to_preconditioned: to_pgd[i].preds_diff,
            }
        })
        .collect::<Vec<_>>();
    let loss_per_seed: Vec<Stat> = per_seed.iter().map(|c| c[0].loss_a).collect();
    let (residual_per_seed, dead_per_seed): (Vec<f64>, Vec<f64>) = weights.unwrap_or_default().iter().copied().unzip();
    let residual = weights.map(|_| residual_per_seed.iter().sum::<f64>() / residual_per_seed.len().max(1) as f64);
    let loss = over_seeds(&loss_per_seed);
    let ruling = rule(&loss, &agreements, residual);
    Assessment { loss, loss_per_seed, agreements, residual_per_seed, dead_per_seed, residual, ruling }
}

/// A model that implements a candidate at a rate other than the tuned one: its direction is the candidate's, its
/// step length is not.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OtherRate {
    /// The candidate (plain GD or preconditioned GD).
    pub role: Role,
    /// The multiple of the tuned candidate's predictions closest to the model's (fitted on the tuning tasks).
    pub scale: f64,
    /// The candidate's rate at that multiple: for plain GD `scale` times the tuned rate; for preconditioned GD the
    /// multiple of the tuned preconditioner (`scale`).
    pub rate: f64,
    /// The tuned rate (plain GD), or 1 (the tuned preconditioner).
    pub tuned: f64,
    /// The assessment with the candidate at the model's rate in place of the tuned one (every other reference as
    /// before): its ruling identifies the candidate.
    pub assessment: Assessment,
    /// That the sensitivities are the rescaled candidate's in size as well as direction (rule 2 of the assessment
    /// checks Model cos): the upper end of the relative Model diff at most [`RESIDUAL_BOUND`] (passes).
    pub direction: Vec<Check>,
}

impl OtherRate {
    /// The verdict sentence.
    pub fn sentence(&self, tuned_loss: f64) -> String {
        let loss = self.assessment.loss.mean;
        let gap = 100.0 * (loss - tuned_loss) / tuned_loss;
        let what = match self.role {
            Role::Gd => format!("GD AT RATE {:.3}; the tuned rate here is {:.3}", self.rate, self.tuned),
            _ => format!("PRECONDITIONED GD AT {:.3} TIMES THE TUNED PRECONDITIONER'S STEP", self.rate),
        };
        format!(
            "IMPLEMENTS {what} (its loss {loss:.4} is {gap:+.1}% from the tuned step's {tuned_loss:.4}): with the \
             candidate at the model's own rate, {}",
            self.assessment.ruling.sentence
        )
    }
}

/// When `first` (the assessment of `models` against `refs`) identifies no candidate: plain GD, then preconditioned
/// GD, each rescaled to the multiple of its predictions that fits the models' best on the tuning tasks, and the
/// rules applied again with that candidate in place of the tuned one (rule 2 asks for Model cos to it, whatever its
/// scale), with one more check that the sensitivities have its size ([`OtherRate::direction`]). The first candidate the models implement at their own rate, or `None` (also when
/// `first` already identifies one).
pub fn at_own_rate(
    models: &[Subject<'_>],
    weights: Option<&[(f64, f64)]>,
    refs: &References,
    held: Held<'_>,
    first: &Assessment,
) -> Result<Option<OtherRate>, HarnessError> {
    if first.ruling.identified() {
        return Ok(None);
    }
    for (role, outcome) in
        [(Role::Gd, Outcome::ImplementsGd), (Role::Preconditioned, Outcome::ImplementsPreconditionedGd)]
    {
        let candidate = match role {
            Role::Gd => Predictor::Net(&refs.gd),
            _ => Predictor::Net(&refs.preconditioned),
        };
        let scales: Vec<f64> = models
            .iter()
            .map(|m| fit_scale(m.predictor, candidate, held.sampler, held.seed, streams::TUNE, held.count))
            .collect();
        let scale = scales.iter().sum::<f64>() / scales.len().max(1) as f64;
        if !scale.is_finite() || scale <= 0.0 {
            continue;
        }
        let rescaled = refs.rescaled(role, scale)?;
        let assessment = assess_predictors(models, weights, &rescaled, held);
        let Some(to) = assessment.agreements.iter().find(|a| a.role == role) else { continue };
        // Rule 2 already asks for Model cos to the rescaled candidate; the relative Model diff adds that the
        // sensitivities have the candidate's size as well as its direction.
        let direction = vec![Check::at_most(
            &format!("model_diff_rel_to_rescaled_{}", role.id()),
            &format!("|g - g_ref| / |g_ref| to {} at the model's rate (upper end)", to.reference),
            to.model_diff_rel.hi(),
            RESIDUAL_BOUND,
        )];
        if assessment.ruling.outcome == outcome && direction.iter().all(|c| c.passed) {
            let (rate, tuned) = match role {
                Role::Gd => (rescaled.summary.gd_eta, refs.summary.gd_eta),
                _ => (scale, 1.0),
            };
            return Ok(Some(OtherRate { role, scale, rate, tuned, assessment, direction }));
        }
    }
    Ok(None)
}
