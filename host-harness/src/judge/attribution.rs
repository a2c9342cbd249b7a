//! Which demonstrations a prediction draws on: per prediction, one number per context pair, so that a model and GD
//! can be compared on *how* they use the context, not only on what they predict.
//!
//! - One LSA layer applied once (the residual rule): exact, the layer's own terms
//!   `-(e_j . A h)(B e_j)_last` from the core ([`dualform::MergedRef::attribution`], O(N E) per prediction, the
//!   prediction is `-h_y` plus their sum).
//! - K steps of GD from `W0 = 0` with rates `eta_k` (Irie et al.'s dual form): the prediction is
//!   `W_K x_q = sum_j (sum_k e_j^(k)) (x_j . x_q)` with error signals `e_j^(k) = -eta_k/N (W_(k-1) x_j - y_j)`, so
//!   demonstration `j` contributes `(sum_k e_j^(k)) (x_j . x_q)` (exact, in f64). From the second step on this
//!   is not what leaving `j` out changes (without `j` the other demonstrations' error signals change too): for two
//!   steps at d = N = 10 the two attributions of GD itself have cosine 0.81. Comparisons of deep models therefore
//!   attribute both sides by leaving one out.
//! - Any model: leaving demonstration `j` out, `y_hat(all) - y_hat(all but j)` (N + 1 predictions). For one LSA
//!   layer this is its exact term again (the layer is a sum over its context, with no normaliser); for deeper or
//!   softmax models it is the first-order view a practitioner would take.
//!
//! The agreement of two attributions is their cosine over the N demonstrations of a task (scale-free: GD at any
//! rate agrees with GD at the tuned one), averaged over tasks with a 95% interval ([`AttributionAgreement`]).

use crate::judge::baselines::Predictor;
use crate::judge::eval::{cosine, evaluate, Metric, Scratch};
use crate::judge::stats::Stat;
use crate::net::Net;
use crate::tasks::TaskSampler;

/// How one predictor's attribution is computed.
#[derive(Clone, Copy)]
pub enum Attributor<'a> {
    /// One merged LSA layer applied once with the residual rule: its exact terms.
    Layer(&'a Net),
    /// `steps` steps of GD from zero at rate `eta` over the tasks' `d` inputs: the dual form's exact terms.
    Gd {
        /// The rate.
        eta: f64,
        /// The steps.
        steps: usize,
    },

    /// Any predictor, by leaving one demonstration out.
    LeaveOneOut(Predictor<'a>),
}

impl<'a> Attributor<'a> {
    /// The exact attribution where the net is one layer applied once with the residual rule, else leave one out.
    pub fn of_net(net: &'a Net) -> Self {
        if net.schedule().len() == 1 && *net.update() == dualform::Update::residual() {
            Attributor::Layer(net)
        } else {
            Attributor::LeaveOneOut(Predictor::Net(net))
        }
    }

    /// The contribution of each of the `ctx.len() / (d + 1)` demonstrations to the prediction for `query`, into
    /// `out` (resized).
    pub fn attribute(
        &self,
        ctx: &[f32],
        query: &[f32],
        out: &mut Vec<f64>,
        ws: &mut Option<Box<dyn std::any::Any + Send>>,
    ) {
        let e = query.len();
        let n = ctx.len() / e.max(1);
        out.clear();
        match *self {
            Attributor::Layer(net) => {
                let mut terms = vec![0.0f32; n];
                let mut saved = vec![0.0f32; 2 * e];
                let ok = net.heads()[0].view().attribution(ctx, query, &mut terms, &mut saved).is_ok();
                out.extend(terms.iter().map(|&t| if ok { f64::from(t) } else { f64::NAN }));
            }
            Attributor::Gd { eta, steps } => gd_terms(ctx, query, &vec![eta; steps], out),

            Attributor::LeaveOneOut(p) => {
                let all = p.predict(ctx, query, ws);
                let mut rest = Vec::with_capacity(ctx.len());
                for j in 0..n {
                    rest.clear();
                    rest.extend_from_slice(&ctx[..j * e]);
                    rest.extend_from_slice(&ctx[(j + 1) * e..]);
                    let without = p.predict(&rest, query, ws);
                    out.push(all - without);
                }
            }
        }
    }
}

/// The dual form's terms of GD from zero with rate `etas[k]` at step `k` (see the module docs), in f64.
pub fn gd_terms(ctx: &[f32], query: &[f32], etas: &[f64], out: &mut Vec<f64>) {
    let e = query.len();
    let d = e.saturating_sub(1);
    let n = ctx.len() / e.max(1);
    let x = |j: usize| &ctx[j * e..j * e + d];
    let y = |j: usize| f64::from(ctx[j * e + d]);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&u, &v)| f64::from(u) * f64::from(v)).sum::<f64>();
    let mut w = vec![0.0f64; d];
    let mut total = vec![0.0f64; n];
    let mut signal = vec![0.0f64; n];
    for &eta in etas {
        for (j, s) in signal.iter_mut().enumerate() {
            let pred: f64 = w.iter().zip(x(j)).map(|(wi, &xi)| wi * f64::from(xi)).sum();
            *s = -eta / n as f64 * (pred - y(j));
        }
        for (j, s) in signal.iter().enumerate() {
            total[j] += s;
            for (wi, &xi) in w.iter_mut().zip(x(j)) {
                *wi += s * f64::from(xi);
            }
        }
    }
    out.clear();
    out.extend((0..n).map(|j| total[j] * dot(x(j), &query[..d])));
}

/// A model under assessment: how it predicts and how its predictions are attributed.
#[derive(Clone, Copy)]
pub struct Subject<'a> {
    /// Its predictions.
    pub predictor: Predictor<'a>,
    /// Its attribution.
    pub attributor: Attributor<'a>,
}

impl<'a> Subject<'a> {
    /// A merged LSA net (exact attribution where it is one layer applied once).
    pub fn net(net: &'a Net) -> Self {
        Self { predictor: Predictor::Net(net), attributor: Attributor::of_net(net) }
    }

    /// Any predictor (attribution by leaving one demonstration out).
    pub fn any(predictor: Predictor<'a>) -> Self {
        Self { predictor, attributor: Attributor::LeaveOneOut(predictor) }
    }
}

/// Per task, the cosine over demonstrations of `a`'s attribution with each reference's (0 where either is all
/// zero): one column per reference.
pub struct AttributionAgreement<'a> {
    /// The model.
    pub a: Attributor<'a>,
    /// The references.
    pub refs: Vec<Attributor<'a>>,
}

/// A worker's scratch: a workspace per attributor (the model first), and the attributions.
type Space = (Vec<Option<Box<dyn std::any::Any + Send>>>, Vec<f64>, Vec<f64>);

impl Metric for AttributionAgreement<'_> {
    fn columns(&self) -> usize {
        self.refs.len()
    }

    fn scratch(&self, _: usize) -> Scratch {
        Box::new(((0..=self.refs.len()).map(|_| None).collect(), Vec::new(), Vec::new()) as Space)
    }

    fn measure(&self, scratch: &mut Scratch, ctx: &[f32], query: &[f32], _: f32, row: &mut Vec<f64>) {
        if !scratch.is::<Space>() {
            *scratch = self.scratch(0);
        }
        let Some((spaces, ta, tb)) = scratch.downcast_mut::<Space>() else { return };
        let (wa, wb) = spaces.split_at_mut(1);
        self.a.attribute(ctx, query, ta, &mut wa[0]);
        for (r, ws) in self.refs.iter().zip(wb.iter_mut()) {
            r.attribute(ctx, query, tb, ws);
            row.push(cosine(ta, tb).unwrap_or(0.0));
        }
    }
}

/// The attribution agreement of `a` with each of `refs` on `count` tasks of the streams `(seed, first_stream +
/// chunk)`.
pub fn attribution_agreement(
    a: Attributor<'_>,
    refs: Vec<Attributor<'_>>,
    sampler: &TaskSampler,
    seed: u64,
    first_stream: u64,
    count: usize,
) -> Vec<Stat> {
    evaluate(&[&AttributionAgreement { a, refs }], sampler, seed, first_stream, count)
        .into_iter()
        .next()
        .unwrap_or_default()
}
