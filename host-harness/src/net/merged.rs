//! [`Net`], the forward structure of every LSA model and reference: merged LSA heads (`A = W_K^T W_Q`, `B = P W_V`)
//! applied to the tokens in a schedule, with one update rule, and the prediction read from the query, at a token
//! width chosen at run time.
//!
//! K distinct layers are K heads applied once each; a recurrent model is one head applied K times; the GD
//! references are the core's constructions in merged form. Everything runs on the core's kernels
//! ([`dualform::MergedRef`], the same code the fixed-width `MergedHead` of a firmware runs):
//! - one application whose rule is the plain residual (the single layer): only the query's output is read, so the
//!   core's query-only kernel ([`MergedRef::query_forward`] and [`MergedRef::query_backward`], O(N E + E^2)) runs;
//! - otherwise every token is updated by every application ([`MergedRef::layer_forward`], with `G`, `G A` and
//!   `C = B G A` kept per application) and differentiated back through all of them
//!   ([`MergedRef::layer_backward`]); gradients of applications that share a head add up in that head.
//!
//! The prediction is `y_hat = -h_query[last]`; [`Forward::forward_backward`] also returns `dL/dh_query` for a seed
//! `dL/dy_hat`, so the sensitivity `d y_hat / d x_q` of the reference's metrics is its first d entries for seed 1.

use super::lanes::{LaneWorkspace, LANES};
use super::simd;
use super::{tasks_gradient, tasks_predict, tasks_prediction_grads, Forward};
use crate::tasks::Group;
use dualform::merged_ref::{CacheMut, CacheRef, GradMut};
use dualform::{MergedHead, MergedRef, Update};

/// One merged head `(A, B)` of width `e` (each `e x e`, column-major), or its gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct Merged {
    e: usize,
    /// `A = W_K^T W_Q`, column-major.
    pub a: Vec<f32>,
    /// `B = P W_V`, column-major.
    pub b: Vec<f32>,
}

impl Merged {
    /// Zero matrices of width `e` (an identity layer; also an empty gradient).
    pub fn zeros(e: usize) -> Self {
        Self { e, a: vec![0.0; e * e], b: vec![0.0; e * e] }
    }

    /// The head of a fixed-width [`MergedHead`].
    pub fn from_fixed<const E: usize>(h: &MergedHead<f32, E>) -> Self {
        Self { e: E, a: h.a.as_slice().to_vec(), b: h.b.as_slice().to_vec() }
    }

    /// The width E.
    pub fn width(&self) -> usize {
        self.e
    }

    /// The core's view of this head.
    pub fn view(&self) -> MergedRef<'_, f32> {
        // `a` and `b` hold e * e values by construction; a zero width gives an empty head that the kernels refuse.
        MergedRef::new(self.e, &self.a, &self.b).unwrap_or_else(|_| unreachable!("a merged head of width {}", self.e))
    }

    /// `self += other` entry by entry. (Two loops: one over a chain of the two would not be vectorised, and the
    /// batch's chunk gradients are summed with it one after another, outside the parallel part of a step.)
    pub fn add(&mut self, other: &Merged) {
        for (x, y) in self.a.iter_mut().zip(&other.a) {
            *x += *y;
        }
        for (x, y) in self.b.iter_mut().zip(&other.b) {
            *x += *y;
        }
    }

    fn grad_mut(&mut self) -> GradMut<'_, f32> {
        GradMut { a: &mut self.a, b: &mut self.b }
    }
}

/// Merged heads, the order they are applied in, and the update rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Net {
    e: usize,
    heads: Vec<Merged>,
    schedule: Vec<usize>,
    update: Update<f32>,
}

/// Why a [`Net`] cannot be built.
#[derive(Clone, Debug, PartialEq)]
pub enum NetError {
    /// No application, or an application of a head that does not exist.
    Schedule(String),
    /// The update rule is invalid for width E.
    Update(dualform::Error),
    /// A head of another width than the net's, or a width of 0.
    Width(String),
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Schedule(m) | NetError::Width(m) => write!(f, "{m}"),
            NetError::Update(e) => write!(f, "update rule: {e}"),
        }
    }
}

/// Per-task scratch of a [`Net`]: the tokens after every application, the caches of the backward, token gradients
/// and the kernels' scratch. It grows to any context length it meets.
#[derive(Clone, Debug, Default)]
pub struct NetWorkspace {
    tokens: Vec<f32>,
    caches: Vec<f32>,
    grads: Vec<f32>,
    spare: Vec<Merged>,
    mats: Vec<f32>,
    vecs: Vec<f32>,
    lanes: LaneWorkspace<LANES>,
}

impl NetWorkspace {
    /// After a run of `k` applications over contexts of `n` pairs (tokens of application `a` at
    /// `(a + 1) * (n + 1)..`, width `e`): the prediction `-h_query[last]` after each application into `readout` (its
    /// first `k` entries, when given), and the final prediction.
    fn predictions(&self, e: usize, n: usize, k: usize, readout: Option<&mut [f32]>) -> f32 {
        let stride = (n + 1) * e;
        let at = |app: usize| self.tokens.get((app + 2) * stride - 1).map_or(f32::NAN, |t| -t);
        if let Some(r) = readout {
            for (app, slot) in r.iter_mut().take(k).enumerate() {
                *slot = at(app);
            }
        }
        k.checked_sub(1).map_or(f32::NAN, at)
    }
}

impl Net {
    /// Heads applied in `schedule` order (entry k: the head of application k) with rule `update`.
    pub fn new(heads: Vec<Merged>, schedule: Vec<usize>, update: Update<f32>) -> Result<Self, NetError> {
        if schedule.is_empty() {
            return Err(NetError::Schedule("a net needs at least one application".into()));
        }
        if let Some(&k) = schedule.iter().find(|&&k| k >= heads.len()) {
            return Err(NetError::Schedule(format!("application of head {k}, but there are {}", heads.len())));
        }
        let e = heads.first().map_or(0, Merged::width);
        if e == 0 || heads.iter().any(|h| h.width() != e) {
            return Err(NetError::Width(format!(
                "heads of widths {:?}: all must have one width of at least 1",
                heads.iter().map(Merged::width).collect::<Vec<_>>()
            )));
        }
        update.validate(e).map_err(NetError::Update)?;
        Ok(Self { e, heads, schedule, update })
    }

    /// One head applied once with the plain residual rule (the single layer). A head of width 0 is refused.
    pub fn single(head: Merged) -> Result<Self, NetError> {
        Self::new(vec![head], vec![0], Update::residual())
    }

    /// The distinct heads.
    pub fn heads(&self) -> &[Merged] {
        &self.heads
    }

    /// Mutable heads (the schedule and rule stay valid whatever the weights; the widths must not change).
    pub fn heads_mut(&mut self) -> &mut [Merged] {
        &mut self.heads
    }

    /// Which head each application uses.
    pub fn schedule(&self) -> &[usize] {
        &self.schedule
    }

    /// The update rule.
    pub fn update(&self) -> &Update<f32> {
        &self.update
    }

    /// The same heads applied `applications` times in a cycle, with another rule (for example the trained layer
    /// iterated with damping).
    pub fn repeated(&self, applications: usize, update: Update<f32>) -> Result<Self, NetError> {
        let schedule = (0..applications).map(|k| self.schedule[k % self.schedule.len()]).collect();
        Self::new(self.heads.clone(), schedule, update)
    }

    /// One application (of the head `schedule[0]`) with the plain residual rule: only the query's prediction is
    /// read, so the query-only kernel runs.
    pub(super) fn query_only(&self) -> bool {
        self.schedule.len() == 1 && self.update == Update::residual()
    }

    /// Runs every application on a copy of the tokens; afterwards application `k`'s output tokens are
    /// `ws.tokens[(k + 1) * (n + 1) * e..][..(n + 1) * e]` (context, then query). Returns false if a kernel refused
    /// (a query or context of the wrong width).
    fn run_all(&self, ctx: &[f32], query: &[f32], ws: &mut NetWorkspace) -> bool {
        let e = self.e;
        if query.len() != e || !ctx.len().is_multiple_of(e) {
            return false;
        }
        let (n, k) = (ctx.len() / e, self.schedule.len());
        let stride = (n + 1) * e;
        let (mats, vecs) = MergedRef::<f32>::layer_backward_scratch(e);
        if ws.tokens.len() < (k + 1) * stride
            || ws.caches.len() < 3 * e * e * k
            || ws.grads.len() < stride
            || ws.spare.len() < self.heads.len()
            || ws.mats.len() < mats
            || ws.vecs.len() < vecs
        {
            *ws = self.workspace(n);
        }
        ws.tokens[..n * e].copy_from_slice(ctx);
        ws.tokens[n * e..stride].copy_from_slice(query);
        for (app, &h) in self.schedule.iter().enumerate() {
            let (done, rest) = ws.tokens.split_at_mut((app + 1) * stride);
            let next = &mut rest[..stride];
            next.copy_from_slice(&done[app * stride..]);
            let (c, q) = next.split_at_mut(n * e);
            let cache = cache_mut(&mut ws.caches, e, app);
            if self.heads[h].view().layer_forward(&self.update, c, q, cache, &mut ws.vecs[..e]).is_err() {
                return false;
            }
        }
        true
    }
}

/// Application `app`'s cache (`G`, `F`, `C`) in the flat caches of a workspace.
pub(super) fn cache_mut<T>(caches: &mut [T], e: usize, app: usize) -> CacheMut<'_, T> {
    let ee = e * e;
    let (gram, rest) = caches[3 * ee * app..3 * ee * (app + 1)].split_at_mut(ee);
    let (ga, c) = rest.split_at_mut(ee);
    CacheMut { gram, ga, c }
}

pub(super) fn cache_ref<T>(caches: &[T], e: usize, app: usize) -> CacheRef<'_, T> {
    let ee = e * e;
    let all = &caches[3 * ee * app..3 * ee * (app + 1)];
    CacheRef { gram: &all[..ee], ga: &all[ee..2 * ee], c: &all[2 * ee..] }
}

impl Forward for Net {
    type Grad = Merged;
    type Workspace = NetWorkspace;

    fn width(&self) -> usize {
        self.e
    }

    fn zero_grads(&self) -> Vec<Merged> {
        vec![Merged::zeros(self.e); self.heads.len()]
    }

    fn add_grad(into: &mut Merged, from: &Merged) {
        into.add(from);
    }

    fn applications(&self) -> usize {
        self.schedule.len()
    }

    /// A workspace for contexts of `n` pairs.
    fn workspace(&self, n: usize) -> NetWorkspace {
        let (e, k) = (self.e, self.schedule.len());
        let (mats, vecs) = MergedRef::<f32>::layer_backward_scratch(e);
        NetWorkspace {
            tokens: vec![0.0; (k + 1) * (n + 1) * e],
            caches: vec![0.0; 3 * e * e * k],
            grads: vec![0.0; (n + 1) * e],
            spare: self.zero_grads(),
            mats: vec![0.0; mats],
            // The query-only path needs 6 e: its output, the saved `A h` and `z`, `dL/dh`, and the backward's scratch.
            vecs: vec![0.0; vecs.max(3 * e + MergedRef::<f32>::query_scratch(e) + e)],
            lanes: LaneWorkspace::default(),
        }
    }

    /// The prediction for one task; when `readout` is given, it receives the prediction after each application
    /// (its first `applications()` entries).
    fn predict(&self, ctx: &[f32], query: &[f32], ws: &mut NetWorkspace, readout: Option<&mut [f32]>) -> f32 {
        let e = self.e;
        if self.query_only() {
            if ws.vecs.len() < 4 * e {
                ws.vecs = vec![0.0; 4 * e];
            }
            let (out, saved) = ws.vecs.split_at_mut(e);
            if self.heads[self.schedule[0]].view().query_forward(ctx, query, out, saved).is_err() {
                return f32::NAN;
            }
            let y = -out[e - 1];
            if let Some(first) = readout.and_then(|r| r.first_mut()) {
                *first = y;
            }
            return y;
        }
        if !self.run_all(ctx, query, ws) {
            return f32::NAN;
        }
        ws.predictions(e, ctx.len() / e, self.schedule.len(), readout)
    }

    /// Forward and backward for one task: computes `y_hat`, takes `dl = seed(y_hat)` as `dL/dy_hat`, adds each head's
    /// `(dL/dA, dL/dB)` into `grads` (one entry per head) when given, writes `dL/dh_query` into `dh` when given, and
    /// returns `y_hat`.
    fn forward_backward(
        &self,
        ctx: &[f32],
        query: &[f32],
        ws: &mut NetWorkspace,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [Merged]>,
        dh: Option<&mut [f32]>,
    ) -> f32 {
        let e = self.e;
        if self.query_only() {
            let h = self.schedule[0];
            if ws.vecs.len() < 6 * e || ws.spare.len() < self.heads.len() {
                ws.vecs = vec![0.0; 6 * e];
                ws.spare = self.zero_grads();
            }
            let head = self.heads[h].view();
            let (out, rest) = ws.vecs.split_at_mut(e);
            let (saved, rest) = rest.split_at_mut(2 * e);
            let (d, scratch) = rest.split_at_mut(e);
            if head.query_forward(ctx, query, out, saved).is_err() {
                return f32::NAN;
            }
            let y_hat = -out[e - 1];
            out.fill(0.0);
            out[e - 1] = -seed(y_hat);
            let into = match grads.and_then(|g| g.get_mut(h)) {
                Some(g) => g,
                None => &mut ws.spare[h],
            };
            if head.query_backward(ctx, query, saved, out, into.grad_mut(), None, d, scratch).is_err() {
                return f32::NAN;
            }
            if let Some(dh) = dh {
                dh.copy_from_slice(d);
            }
            return y_hat;
        }
        if !self.run_all(ctx, query, ws) {
            return f32::NAN;
        }
        let (n, k) = (ctx.len() / e, self.schedule.len());
        let stride = (n + 1) * e;
        let NetWorkspace { tokens, caches, grads: g, spare, mats, vecs, .. } = ws;
        let y_hat = -tokens[(k + 1) * stride - 1];
        let g = &mut g[..stride];
        g.fill(0.0);
        g[stride - 1] = -seed(y_hat);
        let grads = match grads {
            Some(gr) => gr,
            None => &mut spare[..],
        };
        for app in (0..k).rev() {
            let h = self.schedule[app];
            let (c_in, q_in) = tokens[app * stride..(app + 1) * stride].split_at(n * e);
            let (gc, gq) = g.split_at_mut(n * e);
            let cache = cache_ref(caches, e, app);
            let head = self.heads[h].view();
            if head.layer_backward(&self.update, cache, c_in, q_in, gc, gq, grads[h].grad_mut(), mats, vecs).is_err() {
                return f32::NAN;
            }
        }
        if let Some(dh) = dh {
            dh.copy_from_slice(&g[n * e..]);
        }
        y_hat
    }

    /// [`LANES`] tasks side by side ([`super::lanes`], on the unit [`simd::current`]), the single layer's
    /// query-only kernel as the deep and recurrent nets' layers.
    fn group_size(&self) -> usize {
        LANES
    }

    fn group_gradient(&self, group: &Group, ws: &mut NetWorkspace, grads: &mut [Merged], loss: &mut f64) {
        if !self.lanes_gradient(simd::current(), group, &mut ws.lanes, grads, loss) {
            tasks_gradient(self, group, ws, grads, loss);
        }
    }

    fn group_predict(&self, group: &Group, ws: &mut NetWorkspace, out: &mut [f32]) {
        if !self.lanes_predict(simd::current(), group, &mut ws.lanes, out) {
            tasks_predict(self, group, ws, out);
        }
    }

    fn group_prediction_grads(&self, group: &Group, ws: &mut NetWorkspace, y_hat: &mut [f32], grads: &mut [Merged]) {
        if !self.lanes_prediction_grads(simd::current(), group, &mut ws.lanes, y_hat, grads) {
            tasks_prediction_grads(self, group, ws, y_hat, grads);
        }
    }
}
