//! Training gradients with [`LANES`] tasks side by side: the core's kernels instantiated on [`Lanes`] (a [`Net`]'s
//! merged layers, [`dualform::MergedRef`], or for the single layer its query-only kernel; a [`SoftmaxNet`]'s
//! layers, [`dualform::softmax_ref`]; a [`ZooNet`](super::ZooNet)'s layers of every attention kind, in
//! `zoo/lanes.rs`), tokens stored lane-minor (coordinate `i` of every task in one vector, loaded by
//! [`simd::load_tasks`]), the weights broadcast to every lane. Lane `l` performs exactly the
//! `f32` kernel's operations on task `l` (the core's tests hold the lanes to those bits), and each task's gradient
//! is added to the sum in the order the one-task path adds it (task by task; for a `Net` applications last to
//! first, for the others each task's gradient from zero, then added layer by layer), so a training step gives the
//! same bits either way; only the vector units are fuller. A group the lanes refuse (a non-finite value in some
//! lane) goes task by task.

use super::merged::{cache_mut, cache_ref, Merged, Net};
use super::simd::{self, Simd};
use super::softmax::{backward_layers, run_layers, SoftmaxWorkspace};
use super::{Forward, SoftmaxLayer, SoftmaxNet};
use crate::tasks::Group;
use dualform::lanes::Lanes;
use dualform::merged_ref::GradMut;
use dualform::{MergedRef, Real, Update};

mod per_task;

/// Tasks per group on the portable build: eight `f32` lanes, one 256-bit vector or two 128-bit ones.
pub const LANES: usize = 8;
pub(super) type V = Lanes<LANES>;

/// The lanes' scratch: broadcast weights, tokens after every application, caches, token gradients, each
/// application's weight gradient, and the kernels' scratch. It grows to the shapes it meets.
#[derive(Clone, Debug, Default)]
pub struct LaneWorkspace<const L: usize> {
    heads: Vec<Lanes<L>>,
    tokens: Vec<Lanes<L>>,
    caches: Vec<Lanes<L>>,
    grads: Vec<Lanes<L>>,
    per_app: Vec<Lanes<L>>,
    mats: Vec<Lanes<L>>,
    vecs: Vec<Lanes<L>>,
    /// The weights `heads` holds broadcast (the groups of a batch share them: broadcast once, compared after).
    source: Vec<f32>,
}

/// The seed `dL/dy_hat = y_hat - y` of each task, negated (the prediction is `-h_query[last]`), in its lane; 0 in the
/// lanes past the group's tasks.
#[inline(always)]
pub(super) fn seeds<const L: usize>(group: &Group, y_hat: &[f32; L]) -> Lanes<L> {
    Lanes(core::array::from_fn(|l| if l < group.count { -(y_hat[l] - group.task(l).2) } else { 0.0 }))
}

/// Whether `source` holds exactly the bits of the heads' `A` and `B`, one after another (NaN compared by its bits).
#[inline(always)]
fn same_weights(source: &[f32], heads: &[Merged]) -> bool {
    let (mut same, mut at) = (true, 0);
    for part in heads.iter().flat_map(|m| [&m.a, &m.b]) {
        let Some(s) = source.get(at..at + part.len()) else { return false };
        for (x, y) in s.iter().zip(part) {
            same &= x.to_bits() == y.to_bits();
        }
        at += part.len();
    }
    same && at == source.len()
}

/// Head `h`'s broadcast `A` and `B` in `w` (every head's `A` then `B`, `2 e^2` lane vectors per head) as a kernel
/// view; a length error when `w` has no such head.
#[inline(always)]
fn head_at(w: &[V], e: usize, h: usize) -> Result<MergedRef<'_, V>, dualform::Error> {
    // No closure here: a closure may be kept out of line and compiled for the baseline unit (simd.rs).
    let ee = e * e;
    let a = w.get(2 * ee * h..2 * ee * h + ee).unwrap_or_default();
    let b = w.get(2 * ee * h + ee..2 * ee * (h + 1)).unwrap_or_default();
    MergedRef::new(e, a, b)
}

#[inline(always)]
fn sized<const L: usize>(v: &mut Vec<Lanes<L>>, len: usize) -> &mut [Lanes<L>] {
    v.resize(len, Lanes::ZERO);
    v
}

impl Net {
    /// [`super::Forward::group_gradient`] in lanes for a group of at most [`LANES`] tasks of this net's width, on
    /// the vector unit `simd` (the same bits on every unit): deep and looped nets layer by layer, the single layer
    /// (one application of the plain residual rule) through the query-only kernel. Returns false, having added
    /// nothing, when the group does not fit (then the caller goes task by task).
    pub fn lanes_gradient(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut LaneWorkspace<LANES>,
        grads: &mut [Merged],
        loss: &mut f64,
    ) -> bool {
        simd::run(simd, group.shape().1, NetGroup { simd, net: self, group, ws, grads, loss })
    }

    /// The forward of [`Net::lanes_gradient_on`] and [`Net::lanes_predict`] at the token width `W` (0: the run-time
    /// width), inlined into the caller: the heads broadcast into `ws.heads` (unless they already hold these
    /// weights), the group's tasks loaded into `ws.tokens`, every application run (its tokens and cache kept). The
    /// predictions, or `None` when the group does not fit or a kernel refused.
    #[inline(always)]
    fn lanes_forward_on<const W: usize>(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut LaneWorkspace<LANES>,
    ) -> Option<[f32; LANES]> {
        let (n, e) = group.shape();
        let (heads, schedule, k) = (self.heads(), self.schedule(), self.schedule().len());
        if e != heads[0].width() || group.count == 0 || group.count > LANES {
            return None;
        }
        let (ee, stride) = (e * e, (n + 1) * e);
        let (_, vs) = MergedRef::<V>::layer_backward_scratch(e);
        let w = sized(&mut ws.heads, 2 * ee * heads.len());
        if !same_weights(&ws.source, heads) {
            ws.source.clear();
            for (h, m) in w.chunks_exact_mut(2 * ee).zip(heads) {
                for (x, &v) in h.iter_mut().zip(m.a.iter().chain(&m.b)) {
                    *x = V::splat(v);
                }
                ws.source.extend_from_slice(&m.a);
                ws.source.extend_from_slice(&m.b);
            }
        }
        let tokens = sized(&mut ws.tokens, (k + 1) * stride);
        simd::load_tasks(simd, group, &mut tokens[..stride]);
        let upd = self.lane_update();
        let caches = sized(&mut ws.caches, 3 * ee * k);
        let vecs = sized(&mut ws.vecs, vs.max(e));
        if self.query_only() {
            // The single layer's query-only kernel (the one-task path's): `A h` and `z` kept for the backward.
            let (c, q, h) = (&tokens[..n * e], &tokens[n * e..stride], schedule[0]);
            let head = head_at(w, e, h).ok()?;
            head.query_forward_inlined::<W>(c, q, &mut vecs[..e], &mut caches[..2 * e]).ok()?;
            return Some(core::array::from_fn(|l| -vecs[e - 1].0[l]));
        }
        for (app, &h) in schedule.iter().enumerate() {
            let (done, rest) = tokens.split_at_mut((app + 1) * stride);
            let next = &mut rest[..stride];
            next.copy_from_slice(&done[app * stride..]);
            let (c, q) = next.split_at_mut(n * e);
            // No closures on this path: a closure is a function of its own, which the compiler may keep out of line,
            // and then compile for the baseline unit instead of the caller's (simd.rs).
            let head = head_at(w, e, h).ok()?;
            head.layer_forward_inlined::<W>(&upd, c, q, cache_mut(caches, e, app), &mut vecs[..e]).ok()?;
        }
        Some(core::array::from_fn(|l| -tokens[(k + 1) * stride - 1].0[l]))
    }

    /// The backward of [`Net::lanes_gradient_on`] after [`Net::lanes_forward_on`] (whose tokens and caches it reads),
    /// from `dL/d(query's last coordinate) = seed` per lane: each application's `(dA, dB)` from zero into
    /// `ws.per_app` (application `a` at `2 e^2 a..`). False when a kernel refused.
    #[inline(always)]
    fn lanes_backward_on<const W: usize>(&self, group: &Group, ws: &mut LaneWorkspace<LANES>, seed: V) -> bool {
        let (n, e) = group.shape();
        let (schedule, k) = (self.schedule(), self.schedule().len());
        let (ee, stride) = (e * e, (n + 1) * e);
        let (ms, vs) = MergedRef::<V>::layer_backward_scratch(e);
        let upd = self.lane_update();
        let (w, tokens, caches, vecs) = (&ws.heads, &ws.tokens, &ws.caches, &mut ws.vecs);
        let g = sized(&mut ws.grads, stride);
        g.fill(V::ZERO);
        g[stride - 1] = seed;
        let per_app = sized(&mut ws.per_app, 2 * ee * k);
        if self.query_only() {
            let (c, q, h) = (&tokens[..n * e], &tokens[n * e..stride], schedule[0]);
            let (da, db) = per_app.split_at_mut(ee);
            da.fill(V::ZERO);
            db.fill(V::ZERO);
            let (Ok(head), Some(v)) = (head_at(w, e, h), vecs.get_mut(..3 * e)) else { return false };
            let (dh, scratch) = v.split_at_mut(e);
            let g = &g[n * e..];
            let grad = GradMut { a: da, b: db };
            return head.query_backward_inlined::<W>(c, q, &caches[..2 * e], g, grad, None, dh, scratch).is_ok();
        }
        let mats = sized(&mut ws.mats, ms);
        for app in (0..k).rev() {
            let (c_in, q_in) = tokens[app * stride..(app + 1) * stride].split_at(n * e);
            let (gc, gq) = g.split_at_mut(n * e);
            let cache = cache_ref(caches, e, app);
            let (da, db) = per_app[2 * ee * app..][..2 * ee].split_at_mut(ee);
            da.fill(V::ZERO);
            db.fill(V::ZERO);
            let grad = GradMut { a: da, b: db };
            let h = schedule[app];
            let Ok(head) = head_at(w, e, h) else { return false };
            if head.layer_backward_inlined::<W>(&upd, cache, c_in, q_in, gc, gq, grad, mats, &mut vecs[..vs]).is_err() {
                return false;
            }
        }
        true
    }

    /// The net's update rule broadcast to every lane.
    #[inline(always)]
    fn lane_update(&self) -> Update<V> {
        let u = self.update();
        Update { scale: V::splat(u.scale), first: u.first, clip: u.clip.map(V::splat) }
    }

    /// [`Net::lanes_gradient`] on [`LANES`] lanes at the token width `W` (0: the run-time width), inlined into the
    /// caller.
    #[inline(always)]
    fn lanes_gradient_on<const W: usize>(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut LaneWorkspace<LANES>,
        grads: &mut [Merged],
        loss: &mut f64,
    ) -> bool {
        let (heads, schedule, k) = (self.heads(), self.schedule(), self.schedule().len());
        if grads.len() != heads.len() || k > simd::MOST_SOURCES {
            return false;
        }
        let Some(y_hat) = self.lanes_forward_on::<W>(simd, group, ws) else { return false };
        if !self.lanes_backward_on::<W>(group, ws, seeds(group, &y_hat)) {
            return false;
        }
        let e = group.shape().1;
        let ee = e * e;
        let per_app = &ws.per_app;
        // Task by task, applications last to first: the order of the one-task path for every entry of every head
        // (for each task in turn, the head's own applications, last to first; heads are independent of each other).
        let no_part: &[V] = &[];
        for (h, into) in grads.iter_mut().enumerate() {
            let (mut a, mut b, mut count) = ([no_part; simd::MOST_SOURCES], [no_part; simd::MOST_SOURCES], 0);
            for app in (0..k).rev().filter(|&app| schedule[app] == h) {
                let (da, db) = per_app[2 * ee * app..][..2 * ee].split_at(ee);
                if let (Some(sa), Some(sb)) = (a.get_mut(count), b.get_mut(count)) {
                    (*sa, *sb) = (da, db);
                }
                count += 1;
            }
            // At most `k <= MOST_SOURCES` applications (checked above), so neither call refuses.
            simd::add_lanes(simd, &mut into.a, &a[..count], group.count);
            simd::add_lanes(simd, &mut into.b, &b[..count], group.count);
        }
        for (y_hat, &y) in y_hat.iter().zip(&group.y).take(group.count) {
            *loss += 0.5 * ((y_hat - y) as f64).powi(2);
        }
        true
    }
}

/// One group's gradient of a [`Net`] as work on lanes ([`simd::InLanes`]).
struct NetGroup<'a> {
    simd: Simd,
    net: &'a Net,
    group: &'a Group,
    ws: &'a mut LaneWorkspace<LANES>,
    grads: &'a mut [Merged],
    loss: &'a mut f64,
}

impl simd::InLanes for NetGroup<'_> {
    type Out = bool;
    #[inline(always)]
    fn run<const W: usize>(self) -> bool {
        self.net.lanes_gradient_on::<W>(self.simd, self.group, self.ws, self.grads, self.loss)
    }
}

/// Eight tasks of a [`SoftmaxNet`] in lanes: its layers broadcast to every lane, their gradients per lane, the lane
/// workspace. Kept in the net's `f32` workspace, made on first use.
#[derive(Clone, Debug, Default)]
pub struct SoftmaxLanes {
    layers: Vec<SoftmaxLayer<V>>,
    grads: Vec<SoftmaxLayer<V>>,
    ws: SoftmaxWorkspace<V>,
}

impl SoftmaxNet {
    /// [`Forward::group_gradient`] in lanes for a group of at most [`LANES`] tasks of this net's width, on the vector
    /// unit `simd` (the same bits on every unit): each task's gradient from zero, added into `grads` task by task,
    /// layer by layer (the order of [`super::tasks_gradient_from_zero`]). Returns false, having added nothing, when
    /// the group does not fit or some lane meets a non-finite logit.
    pub fn lanes_gradient(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut SoftmaxLanes,
        grads: &mut [SoftmaxLayer],
        loss: &mut f64,
    ) -> bool {
        simd::run_at_main_widths(simd, group.shape().1, SoftmaxGroup { simd, net: self, group, ws, grads, loss })
    }

    /// [`SoftmaxNet::lanes_gradient`] at the token width `W` (0: the run-time width), inlined into the caller.
    #[inline(always)]
    fn lanes_gradient_in<const W: usize>(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut SoftmaxLanes,
        grads: &mut [SoftmaxLayer],
        loss: &mut f64,
    ) -> bool {
        let (n, e) = group.shape();
        let (layers, k) = (self.layers(), self.layers().len());
        if e != self.width() || group.count == 0 || group.count > LANES || grads.len() != k || (W != 0 && e != W) {
            return false;
        }
        // The same value, a constant in an instance compiled for one width.
        let e = if W == 0 { e } else { W };
        if layers.iter().chain(grads.iter()).any(|l| l.width() != e) {
            return false;
        }
        if ws.layers.len() != k || ws.layers.first().is_some_and(|l| l.width() != e) {
            ws.layers = vec![SoftmaxLayer::zeros(e); k];
            ws.grads = vec![SoftmaxLayer::zeros(e); k];
        }
        for (to, from) in ws.layers.iter_mut().zip(layers) {
            for (v, &x) in to.params_mut().iter_mut().zip(from.params()) {
                *v = V::splat(x);
            }
        }
        for g in &mut ws.grads {
            g.params_mut().fill(V::ZERO);
        }
        let stride = (n + 1) * e;
        ws.ws.fit(e, k, n);
        simd::load_tasks(simd, group, ws.ws.input(stride));
        if !run_layers(&ws.layers, e, n, &mut ws.ws) {
            return false;
        }
        let last = ws.ws.last(k, stride);
        let y_hat: [f32; LANES] = core::array::from_fn(|l| -last.0[l]);
        ws.ws.seed(stride, seeds(group, &y_hat));
        if !backward_layers(&ws.layers, e, n, &mut ws.ws, &mut ws.grads) {
            return false;
        }
        // Task by task into every layer's sum (the layers' sums are independent of each other; each layer's
        // gradient has its layer's shape, so none is refused).
        for (into, from) in grads.iter_mut().zip(&ws.grads) {
            simd::add_lanes(simd, into.params_mut(), &[from.params()], group.count);
        }
        for (l, y_hat) in y_hat.iter().enumerate().take(group.count) {
            *loss += 0.5 * ((y_hat - group.task(l).2) as f64).powi(2);
        }
        true
    }
}

/// One group's gradient of a [`SoftmaxNet`] as work on lanes ([`simd::InLanes`]; the widths are run-time ones).
struct SoftmaxGroup<'a> {
    simd: Simd,
    net: &'a SoftmaxNet,
    group: &'a Group,
    ws: &'a mut SoftmaxLanes,
    grads: &'a mut [SoftmaxLayer],
    loss: &'a mut f64,
}

impl simd::InLanes for SoftmaxGroup<'_> {
    type Out = bool;
    #[inline(always)]
    fn run<const W: usize>(self) -> bool {
        self.net.lanes_gradient_in::<W>(self.simd, self.group, self.ws, self.grads, self.loss)
    }
}
