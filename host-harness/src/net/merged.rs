//! [`Net`], the forward structure of every LSA model and reference: merged LSA heads (`A = W_K^T W_Q`, `B = P W_V`)
//! applied to the tokens in a schedule, with one update rule, and the prediction read from the query.
//!
//! K distinct layers are K heads applied once each; a recurrent model is one head applied K times; the GD
//! references are the core's constructions in merged form. Everything runs on the core's kernels:
//! - one application whose rule is the plain residual (the single layer): only the query's output is read, so the
//!   core's query-only kernel ([`MergedHead::query_forward_backward`], O(N E + E^2)) runs;
//! - otherwise every token is updated by every application ([`MergedHead::layer_forward`], with `G`, `G A` and
//!   `C = B G A` kept per application) and differentiated back through all of them
//!   ([`MergedHead::layer_backward`]); gradients of applications that share a head add up in that head.
//!
//! The prediction is `y_hat = -h_query[last]`; [`Net::forward_backward`] also returns `dL/dh_query` for a seed
//! `dL/dy_hat`, so the sensitivity `d y_hat / d x_q` of the reference's metrics is its first d entries for seed 1.

use super::{Forward, Workspace};
use dualform::{LayerCache, MergedHead, Update};

/// Merged heads, the order they are applied in, and the update rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Net<const E: usize> {
    heads: Vec<MergedHead<f32, E>>,
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
}

impl std::fmt::Display for NetError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NetError::Schedule(m) => write!(f, "{m}"),
            NetError::Update(e) => write!(f, "update rule: {e}"),
        }
    }
}

impl<const E: usize> Net<E> {
    /// Heads applied in `schedule` order (entry k: the head of application k) with rule `update`.
    pub fn new(heads: Vec<MergedHead<f32, E>>, schedule: Vec<usize>, update: Update<f32>) -> Result<Self, NetError> {
        if schedule.is_empty() {
            return Err(NetError::Schedule("a net needs at least one application".into()));
        }
        if let Some(&k) = schedule.iter().find(|&&k| k >= heads.len()) {
            return Err(NetError::Schedule(format!("application of head {k}, but there are {}", heads.len())));
        }
        update.validate(E).map_err(NetError::Update)?;
        Ok(Self { heads, schedule, update })
    }

    /// One head applied once with the plain residual rule (the single layer).
    pub fn single(head: MergedHead<f32, E>) -> Self {
        Self { heads: vec![head], schedule: vec![0], update: Update::residual() }
    }

    /// The distinct heads.
    pub fn heads(&self) -> &[MergedHead<f32, E>] {
        &self.heads
    }

    /// Mutable heads (the schedule and rule stay valid whatever the weights).
    pub fn heads_mut(&mut self) -> &mut [MergedHead<f32, E>] {
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

    fn query_only(&self) -> bool {
        self.schedule.len() == 1 && self.update == Update::residual()
    }

    /// Runs every application on a copy of the tokens; afterwards application `k`'s output tokens are
    /// `ws.tokens[(k + 1) * (n + 1)..][..n + 1]` (context, then query). Returns false if the rule was refused
    /// (impossible for a net built by [`Net::new`]).
    fn run_all(&self, ctx: &[[f32; E]], query: &[f32; E], ws: &mut Workspace<E>) -> bool {
        let (n, k) = (ctx.len(), self.schedule.len());
        let stride = n + 1;
        if ws.tokens.len() < (k + 1) * stride
            || ws.caches.len() < k
            || ws.grads.len() < stride
            || ws.spare.len() < self.heads.len()
        {
            *ws = self.workspace(n);
        }
        ws.tokens[..n].copy_from_slice(ctx);
        ws.tokens[n] = *query;
        for (app, &h) in self.schedule.iter().enumerate() {
            let (done, rest) = ws.tokens.split_at_mut((app + 1) * stride);
            let next = &mut rest[..stride];
            next.copy_from_slice(&done[app * stride..]);
            let Some((q, c)) = next.split_last_mut() else { return false };
            if self.heads[h].layer_forward(&self.update, c, q, &mut ws.caches[app]).is_err() {
                return false;
            }
        }
        true
    }
}

impl<const E: usize> Forward<E> for Net<E> {
    type Grad = MergedHead<f32, E>;

    fn zero_grads(&self) -> Vec<MergedHead<f32, E>> {
        vec![MergedHead::zeros(); self.heads.len()]
    }

    fn add_grad(into: &mut MergedHead<f32, E>, from: &MergedHead<f32, E>) {
        into.a += from.a;
        into.b += from.b;
    }

    fn applications(&self) -> usize {
        self.schedule.len()
    }

    /// A workspace for contexts of `n` pairs.
    fn workspace(&self, n: usize) -> Workspace<E> {
        let k = self.schedule.len();
        Workspace {
            tokens: vec![[0.0; E]; (k + 1) * (n + 1)],
            caches: vec![LayerCache::zeros(); k],
            grads: vec![[0.0; E]; n + 1],
            spare: vec![MergedHead::zeros(); self.heads.len()],
            ..Workspace::default()
        }
    }

    /// The prediction for one task; when `readout` is given, it receives the prediction after each application
    /// (its first `applications()` entries).
    fn predict(&self, ctx: &[[f32; E]], query: &[f32; E], ws: &mut Workspace<E>, readout: Option<&mut [f32]>) -> f32 {
        if self.query_only() {
            let y = self.heads[0].predict::<1>(ctx, query)[0];
            if let Some(first) = readout.and_then(|r| r.first_mut()) {
                *first = y;
            }
            return y;
        }
        if !self.run_all(ctx, query, ws) {
            return f32::NAN;
        }
        ws.predictions(ctx.len(), self.schedule.len(), readout)
    }

    /// Forward and backward for one task: computes `y_hat`, takes `dl = seed(y_hat)` as `dL/dy_hat`, adds each head's
    /// `(dL/dA, dL/dB)` into `grads` (one entry per head) when given, and returns `(y_hat, dL/dh_query)`.
    fn forward_backward(
        &self,
        ctx: &[[f32; E]],
        query: &[f32; E],
        ws: &mut Workspace<E>,
        seed: impl FnOnce(f32) -> f32,
        grads: Option<&mut [MergedHead<f32, E>]>,
    ) -> (f32, [f32; E]) {
        if self.query_only() {
            let mut scratch = MergedHead::zeros();
            let mut y_hat = f32::NAN;
            let into = match grads {
                Some(g) => g.first_mut(),
                None => None,
            };
            // No context gradients are asked for, so the length check cannot fail.
            let Ok((_, dh)) = self.heads[0].query_forward_backward(
                ctx,
                query,
                |out| {
                    y_hat = -out[E - 1];
                    let mut g = [0.0f32; E];
                    g[E - 1] = -seed(y_hat);
                    g
                },
                into.unwrap_or(&mut scratch),
                None,
            ) else {
                return (f32::NAN, [f32::NAN; E]);
            };
            return (y_hat, dh);
        }
        if !self.run_all(ctx, query, ws) {
            return (f32::NAN, [f32::NAN; E]);
        }
        let (n, k) = (ctx.len(), self.schedule.len());
        let stride = n + 1;
        let Workspace { tokens, caches, grads: g, spare, .. } = ws;
        let y_hat = -tokens[(k + 1) * stride - 1][E - 1];
        let g = &mut g[..stride];
        g.fill([0.0; E]);
        g[n][E - 1] = -seed(y_hat);
        let grads = match grads {
            Some(gr) => gr,
            None => &mut spare[..],
        };
        for app in (0..k).rev() {
            let h = self.schedule[app];
            let (Some((q_in, c_in)), Some((gq, gc))) =
                (tokens[app * stride..(app + 1) * stride].split_last(), g.split_last_mut())
            else {
                return (f32::NAN, [f32::NAN; E]);
            };
            if self.heads[h].layer_backward(&self.update, &caches[app], c_in, q_in, gc, gq, &mut grads[h]).is_err() {
                return (f32::NAN, [f32::NAN; E]);
            }
        }
        (y_hat, g[n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dualform::{gd_layer, lsa_associative, run_stack, Layer, Mask};

    fn tokens(seed: u64) -> ([[f32; 4]; 5], [f32; 4]) {
        let mut s = dualform::rng::SplitMix64::new(seed);
        let mut u = || (s.next_open01() as f32) - 0.5;
        let ctx = core::array::from_fn(|_| [u(), u(), u(), u()]);
        (ctx, [u(), u(), u(), 0.0])
    }

    fn random_layer(seed: u64) -> Layer<f32, 4, 4, 4, 1> {
        let mut s = dualform::rng::SplitMix64::new(seed);
        let mut l = Layer::<f32, 4, 4, 4, 1>::zeros();
        let h = &mut l.heads[0];
        for m in [&mut h.w_q, &mut h.w_k, &mut h.w_v, &mut h.p] {
            for v in m.iter_mut() {
                *v = (s.next_normal() * 0.5) as f32;
            }
        }
        l
    }

    #[test]
    fn a_net_predicts_what_the_core_stack_predicts() {
        let layers = [random_layer(1), random_layer(2)];
        let (ctx, query) = tokens(3);
        for upd in [Update::residual(), Update { scale: 0.75, first: 3, clip: None }] {
            let net = Net::new(layers.iter().map(|l| MergedHead::from_head(&l.heads[0])).collect(), vec![0, 1, 0], upd)
                .unwrap();
            let mut ws = net.workspace(5);
            let mut readout = [0.0f32; 3];
            let y = net.predict(&ctx, &query, &mut ws, Some(&mut readout));
            // The core's stack with the associative kernel: equal up to rounding (the kernels sum differently).
            let (mut c, mut q) = (ctx, query);
            let mut want = [[0.0f32; 1]; 3];
            let mut blocks = [&layers[0], &layers[1], &layers[0]];
            run_stack(&mut blocks, 1, &upd, &mut c, &mut q, Some(&mut want)).unwrap();
            for (got, w) in readout.iter().zip(want.iter()) {
                assert!((got - w[0]).abs() < 1e-5 * (1.0 + w[0].abs()), "{readout:?} vs {want:?}");
            }
            assert_eq!(y, readout[2]);
        }
    }

    #[test]
    fn the_single_layer_path_is_the_query_output_of_the_full_layer() {
        let layer = random_layer(4);
        let (ctx, query) = tokens(5);
        let net = Net::single(MergedHead::from_head(&layer.heads[0]));
        let y = net.predict(&ctx, &query, &mut net.workspace(5), None);
        let (mut c, mut q) = (ctx, query);
        lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
        assert!((y + q[3]).abs() < 1e-5);
    }

    #[test]
    fn gradients_of_shared_heads_add_up_and_match_finite_differences() {
        // Two applications of one head: dL/dB must be the sum over both applications, checked numerically.
        let head = MergedHead::from_head(&random_layer(6).heads[0]);
        let (ctx, query) = tokens(7);
        let upd = Update { scale: 0.8, first: 0, clip: None };
        let net = Net::new(vec![head.clone()], vec![0, 0], upd).unwrap();
        let mut ws = net.workspace(5);
        let mut g = vec![MergedHead::zeros()];
        let (_, dh) = net.forward_backward(&ctx, &query, &mut ws, |_| 1.0, Some(&mut g));
        let f = |h: &MergedHead<f32, 4>, q: &[f32; 4]| {
            let n = Net::new(vec![h.clone()], vec![0, 0], upd).unwrap();
            n.predict(&ctx, q, &mut n.workspace(5), None) as f64
        };
        let step = 1e-2f32;
        for i in [0usize, 5, 10, 15] {
            let (mut p, mut m) = (head.clone(), head.clone());
            p.b.as_mut_slice()[i] += step;
            m.b.as_mut_slice()[i] -= step;
            let num = (f(&p, &query) - f(&m, &query)) / (2.0 * step as f64);
            let ana = g[0].b.as_slice()[i] as f64;
            assert!((num - ana).abs() < 2e-3 * (1.0 + ana.abs()), "dB[{i}]: {ana} vs {num}");
        }
        for i in 0..3 {
            let (mut p, mut m) = (query, query);
            p[i] += step;
            m[i] -= step;
            let num = (f(&head, &p) - f(&head, &m)) / (2.0 * step as f64);
            assert!((num - dh[i] as f64).abs() < 2e-3 * (1.0 + num.abs()), "dh[{i}]: {} vs {num}", dh[i]);
        }
    }

    #[test]
    fn a_schedule_naming_a_missing_head_or_a_bad_rule_is_refused() {
        let h = MergedHead::<f32, 4>::zeros();
        assert!(Net::new(vec![h.clone()], vec![], Update::residual()).is_err());
        assert!(Net::new(vec![h.clone()], vec![0, 1], Update::residual()).is_err());
        assert!(Net::new(vec![h], vec![0], Update { scale: f32::NAN, first: 0, clip: None }).is_err());
        let gd = gd_layer::<f32, 3, 1, 4>(&nalgebra::SMatrix::zeros(), 1.0, 5).unwrap();
        let net = Net::single(MergedHead::from_head(&gd.heads[0]));
        assert_eq!(net.repeated(4, Update::residual()).unwrap().applications(), 4);
    }
}
