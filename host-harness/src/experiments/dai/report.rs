//! The report of `reproduce dai`: its results, tables, the reading of each metric against the controls, the checks,
//! the verdict and the files.

use crate::cells;
use crate::experiments::Run;
use crate::fit::train::TrainTiming;
use crate::judge::stats::Stat;
use crate::output::plot::{Panel, Series};
use crate::output::report::{naming_failures, Check, Table, Tables};
use super::readings::{Reading, VersusNegative, METRICS};
use crate::probes::dai::{Scores, RIGHT, RIGHT_THRESHOLDS};
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// What a model is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// ICL is GD by construction.
    Positive,
    /// The model under study.
    Trained,
    /// A mechanism other than GD.
    Negative,
}

/// One model (over seeds) under Dai's method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// The model.
    pub model: String,
    /// Its role.
    pub role: Role,
    /// ICL on shuffled labels.
    pub shuffled: bool,
    /// Scored on the picker's pool of tasks (else on the regression tasks).
    #[serde(default)]
    pub on_pool: bool,
    /// Every metric.
    pub scores: Scores,
    /// The in-context loss of each seed's model (one entry for a construction).
    pub icl_loss_per_seed: Vec<f64>,
}

impl Row {
    pub(super) fn name(&self) -> String {
        if self.shuffled {
            format!("{}, ICL on shuffled labels", self.model)
        } else {
            self.model.clone()
        }
    }
}

/// What `reproduce dai` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// The task distribution in words.
    pub distribution: String,
    /// Demonstrations and prompt tokens per task.
    pub demos: usize,
    /// Prompt tokens.
    pub prompt: usize,
    /// The picker's pool size.
    pub pool: usize,
    /// The GD construction's rate (tuned on the demonstrations).
    pub gd_eta: f64,
    /// The retrieval head's logit sharpness `beta`.
    pub retrieval_beta: f64,
    /// Every model, then every model with shuffled labels.
    pub rows: Vec<Row>,
    /// Per metric: does it separate GD from the negatives?
    pub readings: Vec<Reading>,
    /// Training time of the trained and picker models (per seed).
    pub training: Vec<(String, Vec<TrainTiming>)>,
    /// Loss of predicting 0 on the tasks, and on the picker's pool tasks.
    pub zero: [Stat; 2],
}

/// The fraction of tasks on which the retrieval head must retrieve ([`checks`]): most of them. Its softmax at the
/// chosen sharpness still gives the runner-up some weight where two inputs are almost equally aligned with the
/// query, so it is not 1 (0.74 in a quick run, where the GD construction's is 0.12).
pub const RETRIEVAL_BOUND: f64 = 0.5;

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let mut behaviour = Table::new(
            format!(
                "{} demonstrations, a prompt of {} unlabelled inputs: loss of zero-shot, in-context, fine-tuned \
                 (W_K, W_V; SGD, batch 1, one pass); Rec2FTP as Dai count it (right: error at most {} label standard \
                 deviations) and P(ICL right | ZS wrong)",
                self.demos, self.prompt, RIGHT
            ),
            &[
                "model",
                "ZS loss",
                "ICL loss",
                "ICL loss per seed",
                "FT loss",
                "FT rate",
                "Rec2FTP",
                "P(ICL right | ZS wrong)",
                "lift",
            ],
        );
        let mut sweep_head = vec!["model".to_string()];
        for k in RIGHT_THRESHOLDS {
            sweep_head.push(format!("Rec2FTP, right within {k} sd"));
            sweep_head.push(format!("P(ICL right | ZS wrong), {k} sd"));
        }
        let sweep_head: Vec<&str> = sweep_head.iter().map(String::as_str).collect();
        let mut sweep = Table::new(
            "Rec2FTP at every threshold of \"right\" (error at most k standard deviations of the labels)",
            &sweep_head,
        );
        let mut similarity = Table::new(
            "Dai's similarities (per task, 95% CI): SimAOU and its random baselines, SimAM and its baseline",
            &["model", "SimAOU", "random, uniform [0,1)", "random, Gaussian", "SimAM ICL-FT", "SimAM ICL-ZS"],
        );
        let mut weights = Table::new(
            "weight space (Dai's relaxed maps): cos(M_ICL, M_FT), and ICL's implied predictor against minus the \
             least-squares gradient; function: the demonstrations' effect d(ICL - ZS)/dx_q against the same, and \
             which demonstrations ICL draws on (leaving one out) against one GD step's terms",
            &[
                "model",
                "cos(M_ICL, M_FT)",
                "cos(implied, -gradient)",
                "cos(sensitivity, -gradient)",
                "attribution cos",
                "retrieves",
                "skipped",
            ],
        );
        for r in &self.rows {
            let s = &r.scores;
            let rates: Vec<String> = s.ft_lr.iter().map(|x| format!("{x:.0e}")).collect();
            let seeds: Vec<String> = r.icl_loss_per_seed.iter().map(|x| format!("{x:.4}")).collect();
            behaviour.row(vec![
                r.name(),
                s.loss[0].show(),
                s.loss[1].show(),
                seeds.join(", "),
                s.loss[2].show(),
                rates.join(", "),
                s.rec2ftp.show(),
                s.icl_right.show(),
                format!("{:.3}", s.lift()),
            ]);
            let mut cells = vec![r.name()];
            for (_, rec, icl) in &s.rec2ftp_sweep {
                cells.push(rec.show());
                cells.push(icl.show());
            }
            sweep.row(cells);
            similarity.row(vec![
                r.name(),
                s.sim_aou.show(),
                s.sim_aou_uniform.show(),
                s.sim_aou_gaussian.show(),
                s.sim_am.show(),
                s.sim_am_zs.show(),
            ]);
            weights.row(vec![
                r.name(),
                s.map_cos.show(),
                s.readout_cos.show(),
                s.sensitivity_cos.show(),
                s.attribution_cos.show(),
                s.retrieves.show(),
                s.skipped.to_string(),
            ]);
        }
        let mut reading = Table::new(
            "does the metric tell GD from the negatives? (the positive control's mean, and its interval, above every \
             negative's, each against GD scored on the same tasks)",
            &["metric", "GD construction", "strongest negative (GD on its tasks)", "by mean", "by interval", "trained softmax"],
        );
        let mut versus = Table::new(
            "every negative against GD scored on the same tasks, per metric",
            &["metric", "negative", "its value", "GD on its tasks", "GD above by mean", "by interval"],
        );
        let yes = |b: bool| if b { "yes" } else { "no" }.to_string();
        for r in &self.readings {
            let strongest = r.strongest().map_or("none".into(), |n| {
                format!("{} ({}; GD {})", n.value.show(), n.negative, n.positive.show())
            });
            reading.row(vec![
                r.metric.clone(),
                r.positive.show(),
                strongest,
                yes(r.separates_by_mean),
                yes(r.separates),
                r.trained.show(),
            ]);
            for n in &r.negatives {
                versus.row(vec![
                    r.metric.clone(),
                    n.negative.clone(),
                    n.value.show(),
                    n.positive.show(),
                    yes(n.by_mean),
                    yes(n.by_interval),
                ]);
            }
        }
        let mut base = Table::new("baselines", &["tasks", "predict 0"]);
        base.row(vec!["regression tasks".into(), self.zero[0].show()]);
        base.row(vec![format!("the picker's {} tasks", self.pool), self.zero[1].show()]);
        vec![behaviour, sweep, similarity, weights, reading, versus, base]
    }
}

/// The experiment is sound when the positive control is GD (its implied predictor is the gradient direction on
/// every task, to rounding), every seed of the trained and picker models learned (in-context loss at most 80% of
/// predicting 0 on their tasks), the controls compute what they stand for (the retrieval head retrieves the most
/// aligned token's label on most tasks; the picker's loss on its pool is at most three quarters of GD's on the same
/// tasks, so it uses the tasks it memorised; random weights' function does not follow the gradient), and every model was scored on at least 99%
/// of the tasks.
pub fn checks(r: &Results) -> Vec<Check> {
    let mut out = Vec::new();
    let find = |role: Role| r.rows.iter().find(|x| x.role == role && !x.shuffled && !x.on_pool);
    let named = |part: &str| r.rows.iter().find(|x| x.model.contains(part) && !x.shuffled);
    if let Some(p) = find(Role::Positive) {
        out.push(Check::at_least(
            "positive_is_gd",
            "GD construction: cos(implied predictor, -gradient)",
            p.scores.readout_cos.mean,
            1.0 - 1e-9,
        ));
    }
    // Every seed, not their mean: a seed left on the plateau of uniform attention would be scored as "trained".
    let worst_seed = |x: &Row| x.icl_loss_per_seed.iter().copied().fold(f64::NAN, f64::max);
    if let Some(t) = find(Role::Trained) {
        out.push(Check::at_most(
            "trained_learns",
            "trained softmax, worst seed: ICL loss / loss of predicting 0",
            worst_seed(t) / r.zero[0].mean,
            0.8,
        ));
    }
    if let Some(p) = r.rows.iter().find(|x| x.model.starts_with("picker") && !x.shuffled) {
        out.push(Check::at_most(
            "picker_learns",
            "picker, worst seed: ICL loss / loss of predicting 0 on its pool",
            worst_seed(p) / r.zero[1].mean,
            0.8,
        ));
        if let Some(gd) = r.rows.iter().find(|x| x.role == Role::Positive && x.on_pool && !x.shuffled) {
            out.push(Check::at_most(
                "picker_uses_its_pool",
                "picker, worst seed: ICL loss / GD's ICL loss on the same pool tasks",
                worst_seed(p) / gd.scores.loss[1].mean,
                0.75,
            ));
        }
    }
    if let Some(x) = named("retrieval") {
        out.push(Check::at_least(
            "retrieval_retrieves",
            "retrieval head: fraction of tasks where ICL predicts the most aligned token's label",
            x.scores.retrieves.mean,
            RETRIEVAL_BOUND,
        ));
    }
    if let Some(x) = named("random") {
        out.push(Check::at_most(
            "random_is_not_gd",
            "random weights: |cos(ICL sensitivity, -gradient)|",
            x.scores.sensitivity_cos.mean.abs(),
            0.1,
        ));
    }
    let worst = r.rows.iter().map(|x| x.scores.skipped as f64 / (x.scores.skipped + x.scores.scored).max(1) as f64);
    out.push(Check::at_most(
        "scored",
        "largest fraction of tasks a model was not scored on",
        worst.fold(0.0, f64::max),
        0.01,
    ));
    out
}

/// The verdict: per metric, whether it detects GD here, and the trained model's value.
pub fn verdict(r: &Results, checks: &[Check]) -> String {
    let parts: Vec<String> = r
        .readings
        .iter()
        .map(|x| {
            let names = |keep: fn(&VersusNegative) -> bool| {
                x.negatives.iter().filter(|n| !keep(n)).map(|n| n.negative.clone()).collect::<Vec<_>>().join(", ")
            };
            let how = if x.separates {
                "separates GD from the negatives".to_string()
            } else if x.separates_by_mean {
                format!("separates GD from the negatives by mean only (intervals overlap for {})", names(|n| n.by_interval))
            } else {
                format!("does NOT separate GD from {} (mean at or above GD's on the same tasks)", names(|n| n.by_mean))
            };
            format!("{}: {how} (GD {:.3}, trained softmax {:.3})", x.metric, x.positive.mean, x.trained.mean)
        })
        .collect();
    naming_failures(parts.join("; "), checks)
}

pub(super) fn write_files(run: &mut Run<'_>, r: &Results) -> Result<(), HarnessError> {
    let mut csv = Table::new("csv", &["model", "role", "shuffled", "metric", "mean", "ci95", "n"]);
    for row in &r.rows {
        let s = &row.scores;
        let named = [
            ("zs_loss", s.loss[0]),
            ("icl_loss", s.loss[1]),
            ("ft_loss", s.loss[2]),
            ("sim_aou", s.sim_aou),
            ("sim_aou_uniform", s.sim_aou_uniform),
            ("sim_aou_gaussian", s.sim_aou_gaussian),
            ("sim_am", s.sim_am),
            ("sim_am_zs", s.sim_am_zs),
            ("rec2ftp", s.rec2ftp),
            ("icl_right_zs_wrong", s.icl_right),
            ("map_cos", s.map_cos),
            ("readout_cos", s.readout_cos),
            ("sensitivity_cos", s.sensitivity_cos),
            ("attribution_cos", s.attribution_cos),
            ("retrieves", s.retrieves),
        ];
        let swept = s.rec2ftp_sweep.iter().flat_map(|(k, rec, icl)| {
            [(format!("rec2ftp_{k}sd"), *rec), (format!("icl_right_zs_wrong_{k}sd"), *icl)]
        });
        for (m, v) in named.into_iter().map(|(m, v)| (m.to_string(), v)).chain(swept) {
            csv.row(cells![row.name(), format!("{:?}", row.role), row.shuffled, m, v.mean, v.ci95, v.n]);
        }
    }
    run.csv("scores.csv", &csv)?;
    let mut panel = Panel::new("Every metric per model (true labels)", "metric (see the caption)", "value");
    for row in r.rows.iter().filter(|x| !x.shuffled) {
        let pts = METRICS.iter().enumerate().map(|(i, (_, f))| (i as f64, f(&row.scores).mean)).collect();
        panel = panel.with(Series::line(row.model.clone(), pts).with_markers());
    }
    let names: Vec<String> = METRICS.iter().enumerate().map(|(i, m)| format!("{i} = {}", m.0)).collect();
    run.plot("dai.png", &format!("Dai's metrics and the GD cosines, metric {}", names.join(", ")), &[panel]);
    Ok(())
}
