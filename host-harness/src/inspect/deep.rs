//! Models of more than one layer application, judged as `reproduce multi-layer`, `recurrent` and `softmax` judge
//! the ones they train: against K steps of GD with one shared rate, a rate per step, and K layers of GD++ (one LSA
//! layer looped K times: repeated GD and repeated GD++), each fitted on tuning tasks ([`crate::fit::references`]);
//! with the loss after every application beside each reference's after every step. A reference is matched by the
//! rule of every deep report ([`crate::judge::verdict::matches`]: loss within 3%, lower bound of Model cos at least
//! 0.99). Softmax layers are judged on behaviour alone, and the verdict says so.

use super::load::{LoadedModel, Weights};
use super::{header, InspectArgs, Inspection};
use crate::fit::references::{fit_all, fit_looped, FitSpec, FittedParams};
use crate::judge::attribution::{AttributionAgreement, Attributor};
use crate::judge::baselines::Predictor;
use crate::judge::eval::{evaluate, matches, Agreement, Comparison, Metric, Readout};
use crate::judge::stats::Stat;
use crate::model::Model;
use crate::net::Forward;
use crate::output::report::Table;
use crate::tasks::streams;
use crate::HarnessError;

/// A deep model against its fitted references.
#[derive(Clone, Debug)]
pub struct DeepFinding {
    /// Layer applications K.
    pub applications: usize,
    /// Whether it is one layer applied K times (the references are then repeated GD and repeated GD++).
    pub looped: bool,
    /// Whether the verdict rests on behaviour alone (softmax attention).
    pub behaviour_only: bool,
    /// The model's loss after each application.
    pub readout: Vec<Stat>,
    /// The model against each reference.
    pub references: Vec<DeepReference>,
}

/// The model against one fitted reference.
#[derive(Clone, Debug)]
pub struct DeepReference {
    /// Its fitted scalars.
    pub params: FittedParams,
    /// The model (a) against it (b).
    pub vs: Comparison,
    /// Its loss after each step.
    pub readout: Vec<Stat>,
    /// Whether the model matches it.
    pub matched: bool,
    /// Cosine over demonstrations of the model's attribution and the reference's, both by leaving one out.
    pub attribution_cos: Stat,
}

impl DeepFinding {
    /// The model's held-out loss.
    pub fn loss(&self) -> Stat {
        self.references.first().map_or_else(Stat::missing, |r| r.vs.loss_a)
    }

    /// The names of the references it matches.
    pub fn matched(&self) -> Vec<&str> {
        self.references.iter().filter(|r| r.matched).map(|r| r.params.name.as_str()).collect()
    }

    /// The verdict sentence.
    pub fn sentence(&self) -> String {
        let k = self.applications;
        let closest = self
            .references
            .iter()
            .min_by(|a, b| a.vs.preds_diff.mean.total_cmp(&b.vs.preds_diff.mean))
            .map_or("-".to_string(), |r| format!("{} (preds diff {:.4})", r.params.name, r.vs.preds_diff.mean));
        let matched = self.matched();
        let what = if matched.is_empty() {
            format!("MATCHES NO {k}-STEP REFERENCE")
        } else {
            format!("MATCHES {}", matched.join(" AND ").to_uppercase())
        };
        let how = if self.looped { format!("one layer applied {k} times") } else { format!("{k} layers") };
        let behaviour = if self.behaviour_only { "; softmax attention, so this rests on behaviour alone" } else { "" };
        format!(
            "{what} ({how}; loss {:.4}; a match is the loss within 3% and Model cos at least 0.99); closest by preds \
             diff: {closest}{behaviour}",
            self.loss().mean
        )
    }
}

fn judge_net<F: Forward + Sync>(
    args: &InspectArgs,
    net: &F,
    looped: bool,
    behaviour_only: bool,
) -> Result<DeepFinding, HarnessError> {
    let sampler = args.task.sampler();
    let k = net.applications();
    let spec = FitSpec { sampler: &sampler, eval_seed: args.eval_seed, tasks: args.eval_tasks, iters: args.fit_iters };
    let refs = if looped { fit_looped(k, spec)? } else { fit_all(k, spec)? };
    let agreement =
        Agreement { a: Predictor::Net(net), refs: refs.iter().map(|r| Predictor::Net(r.model.net())).collect() };
    let readout = Readout(net);
    // Like with like: from the second step on, GD's dual-form terms and its leave-one-out differences are different
    // quantities (cosine 0.81 between them for two steps at d = N = 10), so the model and every reference are
    // attributed by leaving one demonstration out.
    let attributors: Vec<Attributor<'_>> =
        refs.iter().map(|r| Attributor::LeaveOneOut(Predictor::Net(r.model.net()))).collect();
    let attribution = AttributionAgreement { a: Attributor::LeaveOneOut(Predictor::Net(net)), refs: attributors };
    let ref_readouts: Vec<Readout<'_, _>> = refs.iter().map(|r| Readout(r.model.net())).collect();
    let mut metrics: Vec<&dyn Metric> = vec![&agreement, &readout, &attribution];
    metrics.extend(ref_readouts.iter().map(|r| r as &dyn Metric));
    let mut stats = evaluate(&metrics, &sampler, args.eval_seed, streams::EVAL, args.eval_tasks).into_iter();
    let comparisons = Agreement::comparisons(&stats.next().unwrap_or_default());
    let readout = stats.next().unwrap_or_default();
    let attribution = stats.next().unwrap_or_default();
    let references = refs
        .iter()
        .zip(comparisons)
        .zip(stats)
        .zip(attribution)
        .map(|(((r, vs), readout), attribution_cos)| DeepReference {
            params: FittedParams::from(r),
            matched: matches(&vs),
            vs,
            readout,
            attribution_cos,
        })
        .collect();
    Ok(DeepFinding { applications: k, looped, behaviour_only, readout, references })
}

/// Judges a model of more than one application (or one application with another update rule).
pub fn judge(args: &InspectArgs, model: &LoadedModel) -> Result<Inspection, HarnessError> {
    let finding = match &model.weights {
        Weights::Lsa(m) => {
            let looped = m.layers().len() == 1 && m.net().applications() > 1;
            judge_net(args, m.net(), looped, false)?
        }
        Weights::Softmax(m) => judge_net(args, m.net(), false, true)?,
    };
    let mut head = header(args, model);
    head.row(vec![
        "applications".into(),
        match &model.weights {
            Weights::Lsa(m) => format!(
                "{} of {} distinct layer(s), schedule {:?}",
                m.net().applications(),
                m.layers().len(),
                m.net().schedule()
            ),
            Weights::Softmax(m) => format!("{} softmax layer(s), each once", m.layers().len()),
        },
    ]);
    head.row(vec!["loss".into(), finding.loss().show()]);
    let mut t = Table::new(
        format!("against {}-step references fitted on tuning tasks (95% intervals over tasks)", finding.applications),
        &[
            "reference",
            "eta per step",
            "gamma per step",
            "its loss",
            "preds diff",
            "model cos",
            "attribution cos",
            "matches",
        ],
    );
    let list = |v: &[f32]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ")
        }
    };
    for r in &finding.references {
        t.row(vec![
            r.params.name.clone(),
            list(&r.params.etas),
            list(&r.params.gammas),
            r.vs.loss_b.show(),
            r.vs.preds_diff.show(),
            r.vs.model_cos.show(),
            r.attribution_cos.show(),
            if r.matched { "yes".into() } else { "no".into() },
        ]);
    }
    let mut r = Table::new(
        "loss after each application (model) and after each step (references)",
        &["model", "after 1, 2, ..."],
    );
    let row = |v: &[Stat]| v.iter().map(|s| format!("{:.4}", s.mean)).collect::<Vec<_>>().join("  ");
    r.row(vec!["the model".into(), row(&finding.readout)]);
    for x in &finding.references {
        r.row(vec![x.params.name.clone(), row(&x.readout)]);
    }
    let verdict = finding.sentence();
    let text = format!("{}{}{}verdict: {verdict}\n", head.text(), t.text(), r.text());
    Ok(Inspection { finding: super::Finding::Deep(finding), against_file: None, verdict, text })
}
