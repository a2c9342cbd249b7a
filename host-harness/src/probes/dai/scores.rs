//! The scores of Dai et al.'s comparison on one task and over tasks (the metrics of the module documentation of
//! [`super`]), and the tuning of the fine-tuning rate.

use super::{relaxed_map, sub, unit, Subject};
use crate::judge::eval::cosine;
use crate::judge::stats::Stat;
use crate::judge::verdict::over_seeds;
use crate::tasks::TaskSampler;
use dualform::linalg::slices::dot;
use dualform::rng::SplitMix64;
use serde::{Deserialize, Serialize};

/// One task's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskScore {
    /// Squared errors / 2 of ZS, ICL, FT.
    pub errors: [f64; 3],
    /// The query's label (the yardstick of "right" in Rec2FTP is the labels' spread over the tasks scored).
    pub label: f64,
    /// ICL's prediction.
    pub icl: f64,
    /// The label of the context token (ICL's, prompt included) whose input is most aligned with the query's: what
    /// a retrieval mechanism predicts.
    pub nearest_label: f64,
    /// SimAOU, and its uniform and Gaussian random baselines.
    pub sim_aou: [Option<f64>; 3],
    /// Per head with scores: SimAM ICL-FT and ICL-ZS.
    pub sim_am: Vec<(f64, f64)>,
    /// `cos(M_ICL, M_FT)`.
    pub map_cos: Option<f64>,
    /// `cos(ICL's implied predictor, sum_i y_i x_i)`.
    pub readout_cos: Option<f64>,
    /// `cos(d(ICL - ZS)/dx_q, sum_i y_i x_i)`.
    pub sensitivity_cos: Option<f64>,
    /// Cosine over the demonstrations of ICL's attribution (the prediction with all of them minus without demonstration
    /// `i`, the prompt kept) and one GD step's (`y_i (x_i . x_q)`, true labels).
    pub attribution_cos: Option<f64>,
}

/// The step of the central differences of the sensitivity.
const SENSITIVITY_STEP: f64 = 1e-5;

/// A per-task seed from the task's numbers (for the random baselines).
fn task_seed(query: &[f32], y: f32) -> u64 {
    query
        .iter()
        .chain([&y])
        .fold(0x9E37_79B9_7F4A_7C15, |h, v| (h ^ u64::from(v.to_bits())).wrapping_mul(0x100_0000_01B3))
}

/// Every metric on one task (`ctx`: demonstrations then `hidden` prompt tokens, flat), or `None` when a run failed.
pub fn score_task(
    subject: &Subject,
    (ctx, query, y): (&[f32], &[f32], f32),
    hidden: usize,
    lr: f64,
    shuffled: bool,
) -> Option<TaskScore> {
    let e = subject.width();
    if e < 2 || query.len() != e || ctx.len() % e != 0 {
        return None;
    }
    let tokens: Vec<f64> = ctx.iter().map(|&t| f64::from(t)).collect();
    let q: Vec<f64> = query.iter().map(|&t| f64::from(t)).collect();
    let (y, m) = (f64::from(y), (ctx.len() / e).checked_sub(hidden).filter(|&m| m > 0)?);
    let (demos, prompt) = tokens.split_at(m * e);
    let mut icl_ctx = tokens.clone();
    if shuffled {
        for j in 0..m {
            icl_ctx[j * e + e - 1] = demos[((j + 1) % m) * e + e - 1];
        }
    }
    let layer = &subject.layer;
    let ft = subject.fine_tune(prompt, demos, lr)?;
    let outs =
        [subject.output(layer, prompt, &q)?, subject.output(layer, &icl_ctx, &q)?, subject.output(&ft, prompt, &q)?];
    let errors = [0, 1, 2].map(|i| 0.5 * (-(q[e - 1] + outs[i][e - 1]) - y).powi(2));
    let [zs, icl, ftu] = [0, 1, 2].map(|i| unit(&outs[i]));
    let d_icl = sub(&icl, &zs);
    let mut rng = SplitMix64::new(task_seed(query, y as f32));
    let uniform: Vec<f64> = (0..e).map(|_| rng.next_open01()).collect();
    let gaussian: Vec<f64> = (0..e).map(|_| rng.next_normal()).collect();
    let sim_aou = [cosine(&d_icl, &sub(&ftu, &zs)), cosine(&d_icl, &uniform), cosine(&d_icl, &gaussian)];
    let w = layer.widths();
    let sim_am = layer
        .heads()
        .into_iter()
        .zip(ft.heads())
        .filter_map(|(h, hf)| {
            let s_icl = subject.scores(w, h, &icl_ctx[m * e..], &q);
            let s_ft = subject.scores(w, hf, prompt, &q);
            let s_zs = subject.scores(w, h, prompt, &q);
            Some((cosine(&s_icl, &s_ft)?, cosine(&s_icl, &s_zs)?))
        })
        .collect();
    let m_icl = relaxed_map(layer, &icl_ctx[..m * e]);
    let m_ft: Vec<f64> = sub(&relaxed_map(&ft, prompt), &relaxed_map(layer, prompt));
    // Row E - 1 of the column-major map, minus, on the inputs.
    let implied: Vec<f64> = (0..e - 1).map(|j| -m_icl[j * e + e - 1]).collect();
    let mut gradient = vec![0.0; e - 1];
    for t in demos.chunks_exact(e) {
        for (g, x) in gradient.iter_mut().zip(t) {
            *g += t[e - 1] * x;
        }
    }
    // The demonstrations' effect on the prediction as a function of the query's input, by central differences.
    let effect = |x: &[f64]| Some(subject.predict(layer, &icl_ctx, x)? - subject.predict(layer, prompt, x)?);
    let mut sensitivity = vec![0.0; e - 1];
    for (i, v) in sensitivity.iter_mut().enumerate() {
        let (mut plus, mut minus) = (q.clone(), q.clone());
        plus[i] += SENSITIVITY_STEP;
        minus[i] -= SENSITIVITY_STEP;
        *v = (effect(&plus)? - effect(&minus)?) / (2.0 * SENSITIVITY_STEP);
    }
    // Which demonstrations ICL draws on: leave each out (the prompt stays), against one GD step's terms.
    let all = subject.predict(layer, &icl_ctx, &q)?;
    let mut attribution = Vec::with_capacity(m);
    let mut rest = Vec::with_capacity(icl_ctx.len());
    for j in 0..m {
        rest.clear();
        rest.extend_from_slice(&icl_ctx[..j * e]);
        rest.extend_from_slice(&icl_ctx[(j + 1) * e..]);
        attribution.push(all - subject.predict(layer, &rest, &q)?);
    }
    let gd_terms: Vec<f64> = demos.chunks_exact(e).map(|t| t[e - 1] * dot(&t[..e - 1], &q[..e - 1])).collect();
    // What retrieval would predict: the label of the most aligned context token (ICL's labels; the prompt's are 0).
    let nearest_label = icl_ctx
        .chunks_exact(e)
        .map(|t| (dot(&t[..e - 1], &q[..e - 1]), t[e - 1]))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map_or(f64::NAN, |(_, label)| label);
    Some(TaskScore {
        errors,
        label: y,
        icl: -(q[e - 1] + outs[1][e - 1]),
        nearest_label,
        attribution_cos: cosine(&attribution, &gd_terms),
        sensitivity_cos: cosine(&sensitivity, &gradient),
        sim_aou,
        sim_am,
        map_cos: cosine(&m_icl, &m_ft),
        readout_cos: cosine(&implied, &gradient),
    })
}

/// Every metric over tasks (see the module documentation).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// Loss (squared error / 2) of ZS, ICL and FT.
    pub loss: [Stat; 3],
    /// SimAOU `cos(ICL - ZS, FT - ZS)`.
    pub sim_aou: Stat,
    /// SimAOU against a non-centred uniform random vector (their baseline).
    pub sim_aou_uniform: Stat,
    /// SimAOU against a centred Gaussian random vector.
    pub sim_aou_gaussian: Stat,
    /// SimAM, ICL against FT (per head and task).
    pub sim_am: Stat,
    /// SimAM, ICL against ZS (their baseline).
    pub sim_am_zs: Stat,
    /// Rec2FTP as Dai et al. count it, at [`RIGHT`]: `#(ZS wrong, FT right, ICL right) / #(ZS wrong, FT right)`,
    /// a prediction "right" when its error is at most [`RIGHT`] times the labels' standard deviation.
    pub rec2ftp: Stat,
    /// `#(ZS wrong, ICL right) / #(ZS wrong)` at [`RIGHT`]: how often ICL is right where ZS is wrong whatever FT
    /// does (the rate Rec2FTP is read against).
    pub icl_right: Stat,
    /// Both at every threshold of [`RIGHT_THRESHOLDS`]: `(threshold, Rec2FTP, P(ICL right | ZS wrong))`.
    #[serde(default)]
    pub rec2ftp_sweep: Vec<(f64, Stat, Stat)>,
    /// The fraction of tasks where ICL predicts the label of the most aligned context token, within
    /// [`RETRIEVAL_WITHIN`] label standard deviations (what a retrieval mechanism does; a check of the controls).
    #[serde(default = "Stat::missing")]
    pub retrieves: Stat,
    /// `cos(M_ICL, M_FT)`.
    pub map_cos: Stat,
    /// `cos(ICL's implied predictor, minus the least-squares gradient)`.
    pub readout_cos: Stat,
    /// `cos(d(ICL - ZS)/dx_q, minus the least-squares gradient)`: what the layer does, not its relaxation.
    pub sensitivity_cos: Stat,
    /// Cosine over the demonstrations of ICL's attribution (leaving one out) and one GD step's.
    #[serde(default = "Stat::missing")]
    pub attribution_cos: Stat,
    /// FT's SGD rate (per seed when combined).
    pub ft_lr: Vec<f64>,
    /// Tasks scored (over seeds when combined).
    pub scored: usize,
    /// Tasks left out because a run failed (non-finite).
    pub skipped: usize,
}

/// Rec2FTP's primary threshold: a prediction is "right" when `|y_hat - y|` is at most this many standard deviations
/// of the labels (over the tasks scored).
pub const RIGHT: f64 = 0.5;
/// The thresholds of the sweep ([`Scores::rec2ftp_sweep`]).
pub const RIGHT_THRESHOLDS: [f64; 3] = [0.25, 0.5, 1.0];
/// How close, in label standard deviations, ICL's prediction must be to the most aligned token's label to count as
/// retrieving it ([`Scores::retrieves`]).
pub const RETRIEVAL_WITHIN: f64 = 0.1;

impl Scores {
    /// Rec2FTP over `P(ICL right | ZS wrong)`: above 1 when ICL is right more often where FT is.
    pub fn lift(&self) -> f64 {
        self.rec2ftp.mean / self.icl_right.mean
    }

    /// Every metric over `tasks` (one model), with `skipped` tasks left out and FT rate `lr`.
    pub fn of_tasks(tasks: &[TaskScore], skipped: usize, lr: f64) -> Self {
        let stat = |f: &dyn Fn(&TaskScore) -> Option<f64>| {
            let v: Vec<f64> = tasks.iter().filter_map(f).collect();
            Stat::of(v.iter().copied())
        };
        let spread = Stat::of(tasks.iter().map(|t| t.label));
        let sd = if tasks.len() > 1 {
            (tasks.iter().map(|t| (t.label - spread.mean).powi(2)).sum::<f64>() / (tasks.len() - 1) as f64).sqrt()
        } else {
            f64::NAN
        };
        // Dai's counting with "right" = error within `k` label standard deviations (`errors` are squared / 2).
        let counted = |k: f64| {
            let right = |t: &TaskScore, i: usize| (2.0 * t.errors[i]).sqrt() <= k * sd;
            let indicator = |b: bool| f64::from(u8::from(b));
            let rec = stat(&|t| (!right(t, 0) && right(t, 2)).then(|| indicator(right(t, 1))));
            let icl = stat(&|t| (!right(t, 0)).then(|| indicator(right(t, 1))));
            (rec, icl)
        };
        let (rec2ftp, icl_right) = counted(RIGHT);
        let retrieves = stat(&|t| Some(f64::from(u8::from((t.icl - t.nearest_label).abs() <= RETRIEVAL_WITHIN * sd))));
        let pairs = |f: &dyn Fn((f64, f64)) -> f64| {
            let v: Vec<f64> = tasks.iter().flat_map(|t| t.sim_am.iter().map(|&p| f(p))).collect();
            Stat::of(v.iter().copied())
        };
        Self {
            loss: [0, 1, 2].map(|i| stat(&|t| Some(t.errors[i]))),
            sim_aou: stat(&|t| t.sim_aou[0]),
            sim_aou_uniform: stat(&|t| t.sim_aou[1]),
            sim_aou_gaussian: stat(&|t| t.sim_aou[2]),
            sim_am: pairs(&|p| p.0),
            sim_am_zs: pairs(&|p| p.1),
            rec2ftp,
            icl_right,
            retrieves,
            rec2ftp_sweep: RIGHT_THRESHOLDS
                .iter()
                .map(|&k| {
                    let (r, i) = counted(k);
                    (k, r, i)
                })
                .collect(),
            map_cos: stat(&|t| t.map_cos),
            readout_cos: stat(&|t| t.readout_cos),
            sensitivity_cos: stat(&|t| t.sensitivity_cos),
            attribution_cos: stat(&|t| t.attribution_cos),
            ft_lr: vec![lr],
            scored: tasks.len(),
            skipped,
        }
    }

    /// Scores of several models of one kind (seeds): every interval over seeds and tasks ([`over_seeds`]).
    pub fn combine(per_seed: &[Scores]) -> Scores {
        let over = |f: &dyn Fn(&Scores) -> Stat| over_seeds(&per_seed.iter().map(f).collect::<Vec<_>>());
        Self {
            loss: [0, 1, 2].map(|i| over(&|s| s.loss[i])),
            sim_aou: over(&|s| s.sim_aou),
            sim_aou_uniform: over(&|s| s.sim_aou_uniform),
            sim_aou_gaussian: over(&|s| s.sim_aou_gaussian),
            sim_am: over(&|s| s.sim_am),
            sim_am_zs: over(&|s| s.sim_am_zs),
            rec2ftp: over(&|s| s.rec2ftp),
            icl_right: over(&|s| s.icl_right),
            retrieves: over(&|s| s.retrieves),
            rec2ftp_sweep: RIGHT_THRESHOLDS
                .iter()
                .enumerate()
                .map(|(i, &k)| {
                    let at = |f: fn(&(f64, Stat, Stat)) -> Stat| {
                        over(&|s| s.rec2ftp_sweep.get(i).map_or_else(Stat::missing, f))
                    };
                    (k, at(|x| x.1), at(|x| x.2))
                })
                .collect(),
            map_cos: over(&|s| s.map_cos),
            readout_cos: over(&|s| s.readout_cos),
            sensitivity_cos: over(&|s| s.sensitivity_cos),
            attribution_cos: over(&|s| s.attribution_cos),
            ft_lr: per_seed.iter().flat_map(|s| s.ft_lr.iter().copied()).collect(),
            scored: per_seed.iter().map(|s| s.scored).sum(),
            skipped: per_seed.iter().map(|s| s.skipped).sum(),
        }
    }
}

/// Where the tasks come from: `count` tasks of the streams `(seed, first_stream + chunk)` of `sampler`.
#[derive(Clone, Copy, Debug)]
pub struct Tasks<'a> {
    /// The distribution (its `hidden` tokens are the prompt).
    pub sampler: &'a TaskSampler,
    /// The seed.
    pub seed: u64,
    /// The first stream.
    pub first_stream: u64,
    /// How many.
    pub count: usize,
}

/// Every metric of `subject` on `tasks` with FT rate `lr` (ICL on shuffled labels when `shuffled`).
pub fn evaluate(subject: &Subject, tasks: Tasks<'_>, lr: f64, shuffled: bool) -> Scores {
    let hidden = tasks.sampler.hidden;
    let parts = tasks.sampler.par_chunks::<(Vec<TaskScore>, usize)>(
        tasks.seed,
        tasks.first_stream,
        tasks.count,
        Default::default,
        |(acc, skipped), ctx, query, y| match score_task(subject, (ctx, query, y), hidden, lr, shuffled) {
            Some(s) => acc.push(s),
            None => *skipped += 1,
        },
    );
    let skipped = parts.iter().map(|p| p.1).sum();
    let all: Vec<TaskScore> = parts.into_iter().flat_map(|p| p.0).collect();
    Scores::of_tasks(&all, skipped, lr)
}

/// The FT rates tried: `10^(k/2)` for `k = -10..=4`.
pub fn rate_grid() -> Vec<f64> {
    (-10..=4).map(|k| 10f64.powf(k as f64 / 2.0)).collect()
}

/// The rate of [`rate_grid`] with the lowest mean FT loss on `tasks` (a rate that fails on any task loses).
pub fn tune_ft_rate(subject: &Subject, tasks: Tasks<'_>) -> f64 {
    let hidden = tasks.sampler.hidden;
    let e = subject.width();
    let loss = |lr: f64| {
        let sums = tasks.sampler.par_chunks::<f64>(
            tasks.seed,
            tasks.first_stream,
            tasks.count,
            || 0.0,
            |acc, ctx, q, y| {
                let m = (ctx.len() / e.max(1)).saturating_sub(hidden);
                let tokens: Vec<f64> = ctx.iter().map(|&t| f64::from(t)).collect();
                let (demos, prompt) = tokens.split_at(m * e);
                let q: Vec<f64> = q.iter().map(|&t| f64::from(t)).collect();
                *acc += subject
                    .fine_tune(prompt, demos, lr)
                    .and_then(|ft| subject.predict(&ft, prompt, &q))
                    .map_or(f64::INFINITY, |p| 0.5 * (p - f64::from(y)).powi(2));
            },
        );
        let total: f64 = sums.iter().sum();
        if total.is_finite() {
            total
        } else {
            f64::INFINITY
        }
    };
    rate_grid().into_iter().map(|lr| (lr, loss(lr))).min_by(|a, b| a.1.total_cmp(&b.1)).map_or(1.0, |b| b.0)
}
