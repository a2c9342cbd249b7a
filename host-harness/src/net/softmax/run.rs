//! The forward and backward of softmax layers over any scalar: [`SoftmaxWorkspace`], [`run_layers`] and
//! [`backward_layers`], run by a [`SoftmaxNet`](super::SoftmaxNet) on one task (`f32`) and by
//! [`crate::net::lanes`] on eight tasks side by side (`Lanes<8>`).

use super::{SoftmaxLayer, VectorsBuf, SOFTMAX_HEADS};
use dualform::head_ref::{HeadMut, HeadRef, Vectors, Widths};
use dualform::softmax_ref::{self, Projection, Work};
use dualform::{Error, Mask, Real, Update};

/// Per-task scratch of a [`SoftmaxNet`](super::SoftmaxNet) (`T = f32`), or of eight tasks in lanes (`T = Lanes<8>`, inside the
/// `f32` one): the tokens after every application, token gradients, every layer's projected keys and values (and
/// every layer's but the last's logit maxima and sums, queries and logits, all kept by the forward for the
/// backward), their gradients, and the kernels' small vectors. It grows to any context length it meets.
#[derive(Clone, Debug, Default)]
pub struct SoftmaxWorkspace<T = f32> {
    pub(super) tokens: Vec<T>,
    pub(super) grads: Vec<T>,
    /// Layer after layer, `SOFTMAX_HEADS * n * e` values each.
    keys: Vec<T>,
    values: Vec<T>,
    /// Layer after layer, `(n + 1) * SOFTMAX_HEADS * 2` values each.
    stats: Vec<T>,
    /// Layer after layer, `(n + 1) * SOFTMAX_HEADS * (e + n)` values each (core `softmax_ref::Work::scores`).
    scores: Vec<T>,
    g_keys: Vec<T>,
    g_values: Vec<T>,
    /// Two tokens' softmax weights (kept between the backward's passes; it runs tokens in pairs).
    weights: Vec<T>,
    vecs: VectorsBuf<T>,
    u: Vec<T>,
    /// The training gradient's scratch for tasks in lanes ([`crate::net::lanes`]), made on first use.
    pub(in crate::net) lanes: Option<Box<crate::net::lanes::SoftmaxLanes>>,
}

impl<T: Real> SoftmaxWorkspace<T> {
    /// Scratch for `layers` layers of width `e` over contexts of `n` pairs.
    pub(in crate::net) fn new(e: usize, layers: usize, n: usize) -> Self {
        let entries = SOFTMAX_HEADS * n * e;
        Self {
            tokens: vec![T::ZERO; (layers + 1) * (n + 1) * e],
            grads: vec![T::ZERO; (n + 1) * e],
            keys: vec![T::ZERO; layers * entries],
            values: vec![T::ZERO; layers * entries],
            stats: vec![T::ZERO; layers * (n + 1) * SOFTMAX_HEADS * 2],
            scores: vec![T::ZERO; layers * (n + 1) * SOFTMAX_HEADS * (e + n)],
            g_keys: vec![T::ZERO; entries],
            g_values: vec![T::ZERO; entries],
            weights: vec![T::ZERO; 2 * n],
            vecs: VectorsBuf::new(Widths { e, dk: e, dv: e }, SOFTMAX_HEADS),
            u: vec![T::ZERO; e],
            lanes: None,
        }
    }

    /// Sized for `layers` layers of width `e` over `n` pairs (made anew when it is not).
    pub(in crate::net) fn fit(&mut self, e: usize, layers: usize, n: usize) {
        let stride = (n + 1) * e;
        if self.tokens.len() < (layers + 1) * stride
            || self.grads.len() < stride
            || self.g_keys.len() != SOFTMAX_HEADS * n * e
            || self.keys.len() < layers * SOFTMAX_HEADS * n * e
            || self.stats.len() < layers * (n + 1) * SOFTMAX_HEADS * 2
            || self.scores.len() < layers * (n + 1) * SOFTMAX_HEADS * (e + n)
        {
            let lanes = self.lanes.take();
            *self = Self::new(e, layers, n);
            self.lanes = lanes;
        }
    }

    /// The input tokens (context, then query: `(n + 1) * e` values), to be written before [`run_layers`].
    pub(in crate::net) fn input(&mut self, stride: usize) -> &mut [T] {
        &mut self.tokens[..stride]
    }

    /// The output gradient of the last layer's query (coordinate `e - 1`, the prediction's), every other token
    /// gradient zero, before [`backward_layers`].
    pub(in crate::net) fn seed(&mut self, stride: usize, g: T) {
        let grads = &mut self.grads[..stride];
        grads.fill(T::ZERO);
        grads[stride - 1] = g;
    }

    /// The final query's last coordinate after a run of `k` layers over `stride` values per application.
    pub(in crate::net) fn last(&self, k: usize, stride: usize) -> T {
        self.tokens[(k + 1) * stride - 1]
    }
}

/// Runs every layer but the last on all tokens and the last on the query, from the input in `ws` (sized by
/// [`SoftmaxWorkspace::fit`]); afterwards layer `k`'s output tokens are `ws.tokens[(k + 1) * stride..][..stride]` with
/// `stride = (n + 1) * e` (for the last, only the query). False on a non-finite logit. Generic over the scalar:
/// the `f32` net and eight tasks in lanes run this same code. Inlined whole into its caller, no closures on the path
/// (see [`crate::net::simd`]).
#[inline(always)]
pub(in crate::net) fn run_layers<T: Real>(
    layers: &[SoftmaxLayer<T>],
    e: usize,
    n: usize,
    ws: &mut SoftmaxWorkspace<T>,
) -> bool {
    let (k, stride) = (layers.len(), (n + 1) * e);
    // The widths from `e`, not from each layer (a layer of another width is refused by the kernels either way): a
    // caller that passes a constant `e` gets loops of constant length.
    let w = Widths { e, dk: e, dv: e };
    let SoftmaxWorkspace { tokens, keys, values, stats, scores, vecs, u, .. } = ws;
    for (app, layer) in layers.iter().enumerate() {
        let Some([keys, values, stats, scores]) = kept_by_layer([keys, values, stats, scores], app, e, n) else {
            return false;
        };
        let (done, rest) = tokens.split_at_mut((app + 1) * stride);
        let (c_in, q_in) = done[app * stride..].split_at(n * e);
        let (c_out, q_out) = rest[..stride].split_at_mut(n * e);
        let hs = layer.heads();
        let ok = if app + 1 == k {
            // The last layer updates the query only; its keys and values stay in its `keys` and `values` for the
            // backward.
            last_forward(w, &hs, c_in, q_in, q_out, keys, values, u, &mut vecs.vectors())
        } else {
            // Its keys, values, logit statistics, queries and logits stay for the backward.
            let (g_keys, g_values, weights) = (&mut [][..], &mut [][..], &mut [][..]);
            let mut work = Work { keys, values, g_keys, g_values, weights, stats, scores, kept: false };
            let upd = Update::residual();
            let vecs = &mut vecs.vectors();
            softmax_ref::attention(w, &hs, Mask::Full, &upd, c_in, q_in, c_out, q_out, &mut work, vecs)
        };
        if ok.is_err() {
            return false;
        }
    }
    true
}

/// The backward of [`run_layers`] (which ran last on `ws`) from the gradient set by [`SoftmaxWorkspace::seed`]:
/// each layer's parameter gradients added into `grads` (last layer first); afterwards `ws.grads[n * e..][..e]` is
/// `dL/dh_query`. False on a non-finite logit. Inlined whole, as [`run_layers`].
#[inline(always)]
pub(in crate::net) fn backward_layers<T: Real>(
    layers: &[SoftmaxLayer<T>],
    e: usize,
    n: usize,
    ws: &mut SoftmaxWorkspace<T>,
    grads: &mut [SoftmaxLayer<T>],
) -> bool {
    let (k, stride) = (layers.len(), (n + 1) * e);
    let w = Widths { e, dk: e, dv: e };
    let SoftmaxWorkspace { tokens, grads: g, keys, values, stats, scores, g_keys, g_values, weights, vecs, u, .. } = ws;
    let g = &mut g[..stride];
    for app in (0..k).rev() {
        let (c_in, q_in) = tokens[app * stride..(app + 1) * stride].split_at(n * e);
        let (gc, gq) = g.split_at_mut(n * e);
        let (Some(grad), Some(layer)) = (grads.get_mut(app), layers.get(app)) else {
            return false;
        };
        let Some([keys, values, stats, scores]) = kept_by_layer([keys, values, stats, scores], app, e, n) else {
            return false;
        };
        let (hs, mut gh) = (layer.heads(), grad.heads_mut());
        let mut vecs = vecs.vectors();
        let ok = if app + 1 == k {
            // Only the query's output carries a gradient: the context's comes through keys and values alone
            // (projected by the forward, which ran this layer last).
            gc.fill(T::ZERO);
            last_backward(w, &hs, [c_in, q_in], [gc, gq], &mut gh, [keys, values], weights, u, &mut vecs)
        } else {
            // The forward's keys, values, logit statistics, queries and logits of this layer (`run_layers` ran last
            // on `ws`).
            let mut work = Work { keys, values, g_keys, g_values, weights, stats, scores, kept: true };
            softmax_ref::backward(w, &hs, Mask::Full, c_in, q_in, gc, gq, &mut gh, &mut work, &mut vecs)
        };
        if ok.is_err() {
            return false;
        }
    }
    true
}

/// Layer `app`'s part of the workspace's keys, values, logit statistics and scores (laid out layer after layer, for
/// tokens of width `e` over `n` pairs), if the workspace has room for it.
#[inline(always)]
fn kept_by_layer<T>(
    [keys, values, stats, scores]: [&mut [T]; 4],
    app: usize,
    e: usize,
    n: usize,
) -> Option<[&mut [T]; 4]> {
    let (entries, per_layer) = (SOFTMAX_HEADS * n * e, (n + 1) * SOFTMAX_HEADS * 2);
    let per_scores = (n + 1) * SOFTMAX_HEADS * (e + n);
    Some([
        keys.get_mut(app * entries..(app + 1) * entries)?,
        values.get_mut(app * entries..(app + 1) * entries)?,
        stats.get_mut(app * per_layer..(app + 1) * per_layer)?,
        scores.get_mut(app * per_scores..(app + 1) * per_scores)?,
    ])
}

/// The last layer's forward: `q_out = q_in` updated over the context `c_in`, whose keys and values are projected into
/// `keys` and `values` (kept for the backward); `u` is scratch.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn last_forward<T: Real>(
    w: Widths,
    hs: &[HeadRef<'_, T>],
    c_in: &[T],
    q_in: &[T],
    q_out: &mut [T],
    keys: &mut [T],
    values: &mut [T],
    u: &mut [T],
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    let p = softmax_ref::project(w, hs, c_in, keys, values)?;
    softmax_ref::token_update_projected(w, hs, &p, q_in, u, vecs)?;
    q_out.copy_from_slice(q_in);
    Update::residual().apply_slice(q_out, u);
    Ok(())
}

/// The last layer's backward over the keys and values [`last_forward`] kept: the query's output gradient `gq`
/// becomes its input gradient, the context's is added into `gc`, the parameters' into `gh`; `u` is scratch.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn last_backward<T: Real>(
    w: Widths,
    hs: &[HeadRef<'_, T>],
    [c_in, q_in]: [&[T]; 2],
    [gc, gq]: [&mut [T]; 2],
    gh: &mut [HeadMut<'_, T>],
    [keys, values]: [&[T]; 2],
    weights: &mut [T],
    u: &mut [T],
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    let n = c_in.len() / w.e.max(1);
    let p = Projection::written(w, SOFTMAX_HEADS, n, keys, values)?;
    // One token here: the first `n` of the workspace's weights.
    let found = weights.len();
    let weights = weights.get_mut(..n).ok_or(Error::BufferTooSmall { needed: n, found })?;
    softmax_ref::token_backward_projected(w, hs, &p, c_in, q_in, gq, gh, u, Some(gc), weights, vecs)?;
    gq.copy_from_slice(u);
    Ok(())
}
