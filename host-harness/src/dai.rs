//! Dai et al.'s comparison of in-context learning (ICL) with fine-tuning (FT), computed as their method computes it,
//! on one attention layer whose mechanism is known ([`Subject`]).
//!
//! A task's context is `m` demonstrations `(x_i, y_i)` followed by the zero-shot prompt: `u` inputs whose labels are
//! not shown ([`TaskSampler::hidden`]). Three runs of the layer at the query `(x_q, 0)`:
//! - zero-shot (ZS): the query attends to the prompt alone;
//! - in-context (ICL): to the demonstrations and the prompt;
//! - fine-tuned (FT): `W_K` and `W_V` of every head trained by SGD with batch 1, one pass over the demonstrations in
//!   order, each presented zero-shot (the prompt, then `(x_i, 0)` as the query; loss `(y_hat - y_i)^2 / 2`), then
//!   zero-shot on the query. The rate is the one of a grid that gives FT the lowest loss on tuning tasks.
//!
//! Per task, then means with 95% intervals over tasks ([`Scores`]):
//! - SimAOU: the attention outputs at the query (after `P`, before the residual), each scaled to unit length;
//!   `cos(ICL - ZS, FT - ZS)`. Their random baseline, `cos(ICL - ZS, r)` with `r` non-centred uniform on `[0, 1)^E`,
//!   and the same with `r` a centred Gaussian (`r` drawn per task from a seed made of the task's numbers);
//! - SimAM: per head, the cosine of the query's pre-softmax scores to the prompt tokens, ICL against FT, and their
//!   baseline ICL against ZS. In one layer the prompt's keys do not depend on the demonstrations, so ICL's scores to
//!   them are ZS's and the baseline is 1 by construction; it is computed, not assumed;
//! - Rec2FTP for regression: among the tasks where ZS is bad (squared error above the median over tasks) and FT
//!   improves on ZS (a smaller squared error), the fraction where ICL improves too; beside it the fraction where ICL
//!   improves among all tasks where ZS is bad, and the lift (their ratio);
//! - the weight-space comparison Dai et al. did not make: the map the demonstrations add to the query's output in
//!   their relaxation, `M_ICL = sum_h P_h (sum_i (W_V e_i)(W_K e_i)^T) W_Q` over the demonstrations, against the
//!   change FT makes to the zero-shot map, `M_FT = sum_h P_h (sum_z (W_V' z)(W_K' z)^T) W_Q - (the same before FT)`
//!   over the prompt: cosine of the two `E x E` maps; and the linear predictor `M_ICL` implies (minus its `y` row on
//!   the inputs) against minus the gradient at 0 of the in-context least-squares loss, `sum_i y_i x_i`: cosine. The
//!   relaxation drops the softmax, so beside it what the layer actually does: the sensitivity of the
//!   demonstrations' effect on the prediction to the query's input, `d(ICL - ZS)/dx_q` (central differences),
//!   against the same gradient (for one GD step from 0 the two are the same vector).
//!
//! Shuffled labels: the same with ICL's demonstrations relabelled (labels rotated by one position, so every input
//! has another's label); FT and the reference gradient keep the true labels. Everything runs in f64 on the core's
//! kernels (`softmax_token_update` / `softmax_token_backward`, `query_forward` / `lsa_query_backward`).

use crate::net::{SoftmaxLayer, VectorsBuf, SOFTMAX_HEADS};
use crate::stats::Stat;
use crate::tasks::TaskSampler;
use crate::verdict::over_seeds;
use dualform::head_ref::{HeadRef, Vectors, Widths};
use dualform::linalg::slices::{add_outer, dot, matmul, matvec};
use dualform::rng::SplitMix64;
use dualform::{linear_ref, softmax_ref};
use serde::{Deserialize, Serialize};

/// One layer under Dai's method: [`SOFTMAX_HEADS`] heads in f64 (a one-head construction leaves the second zero).
pub type DaiLayer = SoftmaxLayer<f64>;

/// How a layer attends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attention {
    /// Linear self-attention: `sum_j (W_V e_j)(W_K e_j . W_Q h)`, no normaliser.
    Linear,
    /// Softmax attention with logits scaled by `1/sqrt(E)`.
    Softmax,
}

/// A layer and how it attends.
#[derive(Clone, Debug, PartialEq)]
pub struct Subject {
    /// Linear or softmax.
    pub kind: Attention,
    /// The weights.
    pub layer: DaiLayer,
}

/// `cos(a, b)`, or `None` when either is zero (or not finite).
pub fn cosine(a: &[f64], b: &[f64]) -> Option<f64> {
    let (ab, aa, bb) = a.iter().zip(b).fold((0.0, 0.0, 0.0), |s, (x, y)| (s.0 + x * y, s.1 + x * x, s.2 + y * y));
    let c = ab / (aa * bb).sqrt();
    (aa > 0.0 && bb > 0.0 && c.is_finite()).then_some(c)
}

fn unit(v: &[f64]) -> Vec<f64> {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 {
        v.iter().map(|x| x / norm).collect()
    } else {
        vec![0.0; v.len()]
    }
}

fn sub(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// The small vectors and the `E x E` matrix the kernels of one width need.
#[derive(Clone, Debug)]
struct Scratch {
    vecs: VectorsBuf<f64>,
    map: Vec<f64>,
}

impl Scratch {
    fn new(e: usize) -> Self {
        Self { vecs: VectorsBuf::new(Widths { e, dk: e, dv: e }, SOFTMAX_HEADS), map: vec![0.0; e * e] }
    }

    fn vectors(&mut self) -> (Vectors<'_, f64>, &mut [f64]) {
        (self.vecs.vectors(), &mut self.map)
    }
}

impl Subject {
    /// The token width E.
    pub fn width(&self) -> usize {
        self.layer.width()
    }

    /// A trained softmax layer, in f64.
    pub fn softmax(layer: &SoftmaxLayer) -> Self {
        Self { kind: Attention::Softmax, layer: layer.cast() }
    }

    /// The positive control: the core's construction of one GD step from `W0 = 0` at rate `eta` over `m`
    /// demonstrations in `d` dimensions, as linear attention (the prompt's values are 0, so it adds nothing).
    pub fn gd(d: usize, eta: f64, m: usize) -> Result<Self, dualform::Error> {
        let mut layer = DaiLayer::zeros(d + 1);
        let [head, _] = layer.heads_mut();
        dualform::gd_head_into(d, 1, &vec![0.0; d], eta, None, m, [head.w_q, head.w_k, head.w_v, head.p])?;
        Ok(Self { kind: Attention::Linear, layer })
    }

    /// A sharp retrieval head of width `e`: softmax attention with logits `beta x_q . x_j / sqrt(E)` on the inputs
    /// and value `y_j`, so the prediction is the label of the demonstration whose input is most aligned with the
    /// query's (`beta` large). The prompt's labels are 0, so attending to the prompt predicts 0.
    pub fn retrieval(e: usize, beta: f64) -> Self {
        let mut layer = DaiLayer::zeros(e);
        for i in 0..e - 1 {
            layer.matrix_mut(0, 0)[i * e + i] = beta;
            layer.matrix_mut(0, 1)[i * e + i] = 1.0;
        }
        let last = (e - 1) * e + (e - 1);
        layer.matrix_mut(0, 2)[last] = 1.0;
        layer.matrix_mut(0, 3)[last] = -1.0;
        Self { kind: Attention::Softmax, layer }
    }

    /// Softmax attention of width `e` with independent `N(0, 1/E)` weights.
    pub fn random(e: usize, seed: u64) -> Self {
        let mut s = SplitMix64::new(seed);
        let mut layer = DaiLayer::zeros(e);
        let scale = 1.0 / (e as f64).sqrt();
        for v in layer.params_mut() {
            *v = s.next_normal() * scale;
        }
        Self { kind: Attention::Softmax, layer }
    }

    /// The attention output at `q` over `ctx` (after `P`, before the residual); `None` on a non-finite logit.
    pub fn output(&self, layer: &DaiLayer, ctx: &[f64], q: &[f64]) -> Option<Vec<f64>> {
        let (w, heads) = (layer.widths(), layer.heads());
        let mut sc = Scratch::new(w.e);
        let (mut vecs, map) = sc.vectors();
        let mut u = vec![0.0; w.e];
        match self.kind {
            Attention::Softmax => softmax_ref::token_update(w, &heads, ctx, q, &mut u, &mut vecs).ok()?,
            Attention::Linear => linear_ref::token_update(w, &heads, ctx, q, &mut u, &mut vecs, map).ok()?,
        }
        Some(u)
    }

    /// The prediction `-(q + output)[y]`.
    pub fn predict(&self, layer: &DaiLayer, ctx: &[f64], q: &[f64]) -> Option<f64> {
        let y = q.len().checked_sub(1)?;
        self.output(layer, ctx, q).map(|o| -(q[y] + o[y]))
    }

    /// One head's pre-softmax scores of `q` to `ctx` (`W_Q q . W_K e`, scaled by `1/sqrt(E)` for softmax).
    pub fn scores(&self, w: Widths, head: HeadRef<'_, f64>, ctx: &[f64], q: &[f64]) -> Vec<f64> {
        let scale = match self.kind {
            Attention::Softmax => 1.0 / (w.e as f64).sqrt(),
            Attention::Linear => 1.0,
        };
        let (mut qv, mut k) = (vec![0.0; w.dk], vec![0.0; w.dk]);
        matvec(&mut qv, head.w_q, q);
        ctx.chunks_exact(w.e)
            .map(|e| {
                matvec(&mut k, head.w_k, e);
                dot(&qv, &k) * scale
            })
            .collect()
    }

    /// FT: `W_K` and `W_V` by SGD with batch 1 and rate `lr`, one pass over `demos` in order, each presented
    /// zero-shot after `prompt`. `None` when a step fails or the weights stop being finite.
    pub fn fine_tune(&self, prompt: &[f64], demos: &[f64], lr: f64) -> Option<DaiLayer> {
        let mut layer = self.layer.clone();
        let e = layer.width();
        let w = layer.widths();
        let mut sc = Scratch::new(e);
        let (mut dh, mut grad) = (vec![0.0; e], DaiLayer::zeros(e));
        for demo in demos.chunks_exact(e) {
            let mut q = demo.to_vec();
            q[e - 1] = 0.0;
            let y_hat = self.predict(&layer, prompt, &q)?;
            let mut g = vec![0.0; e];
            g[e - 1] = -(y_hat - demo[e - 1]);
            grad.params_mut().fill(0.0);
            let (heads, mut gh) = (layer.heads(), grad.heads_mut());
            let (mut vecs, map) = sc.vectors();
            let step = match self.kind {
                Attention::Softmax => {
                    softmax_ref::token_backward(w, &heads, prompt, &q, &g, &mut gh, &mut dh, None, &mut vecs)
                }
                Attention::Linear => {
                    linear_ref::token_backward(w, &heads, prompt, &q, &g, &mut gh, &mut dh, None, &mut vecs, map)
                }
            };
            step.ok()?;
            for h in 0..SOFTMAX_HEADS {
                for which in [1, 2] {
                    for (v, d) in layer.matrix_mut(h, which).iter_mut().zip(grad.matrix(h, which)) {
                        *v -= *d * lr;
                    }
                }
            }
        }
        let finite =
            (0..SOFTMAX_HEADS).all(|h| [1, 2].iter().all(|&m| layer.matrix(h, m).iter().all(|v| v.is_finite())));
        finite.then_some(layer)
    }
}

/// Dai's relaxed map of `tokens` through `layer`: `sum_h P_h (sum_j (W_V e_j)(W_K e_j)^T) W_Q`, `E x E`
/// column-major.
pub fn relaxed_map(layer: &DaiLayer, tokens: &[f64]) -> Vec<f64> {
    let e = layer.width();
    let (mut m, mut s, mut ps, mut t) = (vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e], vec![0.0; e * e]);
    let (mut k, mut v) = (vec![0.0; e], vec![0.0; e]);
    for h in layer.heads() {
        s.fill(0.0);
        for tok in tokens.chunks_exact(e) {
            matvec(&mut v, h.w_v, tok);
            matvec(&mut k, h.w_k, tok);
            add_outer(&mut s, &v, &k);
        }
        matmul(&mut ps, h.p, &s, e, e);
        matmul(&mut t, &ps, h.w_q, e, e);
        for (a, b) in m.iter_mut().zip(&t) {
            *a += b;
        }
    }
    m
}

/// One task's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TaskScore {
    /// Squared errors / 2 of ZS, ICL, FT.
    pub errors: [f64; 3],
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
    Some(TaskScore {
        errors,
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
    /// Rec2FTP: `P(ICL improves | FT improves, ZS bad)`.
    pub rec2ftp: Stat,
    /// `P(ICL improves | ZS bad)`.
    pub icl_improves: Stat,
    /// `cos(M_ICL, M_FT)`.
    pub map_cos: Stat,
    /// `cos(ICL's implied predictor, minus the least-squares gradient)`.
    pub readout_cos: Stat,
    /// `cos(d(ICL - ZS)/dx_q, minus the least-squares gradient)`: what the layer does, not its relaxation.
    pub sensitivity_cos: Stat,
    /// FT's SGD rate (per seed when combined).
    pub ft_lr: Vec<f64>,
    /// Tasks scored (over seeds when combined).
    pub scored: usize,
    /// Tasks left out because a run failed (non-finite).
    pub skipped: usize,
}

impl Scores {
    /// Rec2FTP over `P(ICL improves | ZS bad)`.
    pub fn lift(&self) -> f64 {
        self.rec2ftp.mean / self.icl_improves.mean
    }

    fn of(tasks: &[TaskScore], skipped: usize, lr: f64) -> Self {
        let stat = |f: &dyn Fn(&TaskScore) -> Option<f64>| {
            let v: Vec<f64> = tasks.iter().filter_map(f).collect();
            Stat::of(v.iter().copied())
        };
        let mut zs: Vec<f64> = tasks.iter().map(|t| t.errors[0]).collect();
        zs.sort_by(f64::total_cmp);
        let median = zs.get(zs.len() / 2).copied().unwrap_or(f64::NAN);
        let improves = |t: &TaskScore, i: usize| f64::from(u8::from(t.errors[i] < t.errors[0]));
        let bad = |t: &TaskScore| t.errors[0] > median;
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
            rec2ftp: stat(&|t| (bad(t) && improves(t, 2) > 0.0).then(|| improves(t, 1))),
            icl_improves: stat(&|t| bad(t).then(|| improves(t, 1))),
            map_cos: stat(&|t| t.map_cos),
            readout_cos: stat(&|t| t.readout_cos),
            sensitivity_cos: stat(&|t| t.sensitivity_cos),
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
            icl_improves: over(&|s| s.icl_improves),
            map_cos: over(&|s| s.map_cos),
            readout_cos: over(&|s| s.readout_cos),
            sensitivity_cos: over(&|s| s.sensitivity_cos),
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
    Scores::of(&all, skipped, lr)
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
