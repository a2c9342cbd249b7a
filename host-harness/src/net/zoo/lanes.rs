//! A [`ZooNet`]'s training gradient with [`LANES`] tasks side by side (the attention-zoo models, every kind): its
//! layers and Performer projection broadcast to every lane, the kernels of [`Stack`] instantiated on [`Lanes`]
//! ([`crate::net::lanes`] explains the layout and the order of the sums). Each task's gradient is computed from zero
//! in its lane and added into the sum task by task, the order of [`crate::net::tasks_gradient_from_zero`].
//!
//! For the feature-map models ([`crate::net::MlpZooNet`]) the lanes also hand back every task's gradient with respect
//! to its input tokens, which the feature map's backward reads.

use super::{Stack, PERFORMER_FEATURES, ZOO_HEADS};
use crate::net::lanes::{seeds, LANES, V};
use crate::net::simd::{self, Simd};
use crate::net::{Workspace, ZooLayer, ZooNet};
use crate::tasks::Group;
use dualform::lanes::Lanes;
use dualform::{Head, Layer, PositiveRandomFeatures, Real};

/// Eight tasks of a [`ZooNet`] in lanes: its layers and Performer projection broadcast to every lane, their
/// gradients per lane, the lane workspace. Kept in the net's `f32` workspace, made on first use.
#[derive(Clone, Debug)]
pub struct ZooLanes<const E: usize> {
    layers: Vec<Layer<V, E, E, E, ZOO_HEADS>>,
    grads: Vec<Layer<V, E, E, E, ZOO_HEADS>>,
    features: PositiveRandomFeatures<V, E, PERFORMER_FEATURES>,
    ws: Workspace<E, V>,
}

impl<const E: usize> Default for ZooLanes<E> {
    fn default() -> Self {
        let features = PositiveRandomFeatures { w: [[V::ZERO; E]; PERFORMER_FEATURES], scale: V::ZERO };
        Self { layers: Vec::new(), grads: Vec::new(), features, ws: Workspace::default() }
    }
}

/// `layer` in every lane.
fn broadcast<const E: usize>(layer: &ZooLayer<E>) -> Layer<V, E, E, E, ZOO_HEADS> {
    let head = |h: &Head<f32, E, E, E>| Head {
        w_q: h.w_q.map(V::splat),
        w_k: h.w_k.map(V::splat),
        w_v: h.w_v.map(V::splat),
        p: h.p.map(V::splat),
    };
    Layer { heads: layer.heads.each_ref().map(head) }
}

impl<const E: usize> ZooNet<E> {
    /// [`crate::net::Forward::group_gradient`] in lanes for a group of at most [`LANES`] tasks of width `E`, on the
    /// vector unit `simd` (the same bits on every unit): each task's gradient from zero, added into `grads` task by
    /// task (the order of [`crate::net::tasks_gradient_from_zero`]). Returns false, having added nothing, when the
    /// group does not fit or some lane meets a kernel error (a non-finite logit, a zero normaliser).
    pub fn lanes_gradient(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut ZooLanes<E>,
        grads: &mut [ZooLayer<E>],
        loss: &mut f64,
    ) -> bool {
        simd::run_any_width(simd, ZooGroup { simd, net: self, group, ws, grads, loss, inputs: None })
    }

    /// [`ZooNet::lanes_gradient`], and each task's gradient with respect to its input tokens (`dL/dh` of its N
    /// context tokens, then of its query: `N + 1` tokens per task, task after task) into `inputs`, which is cleared
    /// first. `inputs` is left empty when the lanes refuse the group.
    pub fn lanes_gradient_inputs(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut ZooLanes<E>,
        grads: &mut [ZooLayer<E>],
        loss: &mut f64,
        inputs: &mut Vec<[f32; E]>,
    ) -> bool {
        inputs.clear();
        simd::run_any_width(simd, ZooGroup { simd, net: self, group, ws, grads, loss, inputs: Some(inputs) })
    }

    /// [`ZooNet::lanes_gradient_inputs`], inlined into the caller.
    #[inline(always)]
    fn lanes_gradient_in(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut ZooLanes<E>,
        grads: &mut [ZooLayer<E>],
        loss: &mut f64,
        inputs: Option<&mut Vec<[f32; E]>>,
    ) -> bool {
        let (n, e) = group.shape();
        let k = self.layers().len();
        if e != E || group.count == 0 || group.count > LANES || grads.len() != k {
            return false;
        }
        ws.layers.clear();
        ws.layers.extend(self.layers().iter().map(broadcast));
        ws.grads.clear();
        ws.grads.resize(k, Layer::zeros());
        let f = self.features();
        ws.features = PositiveRandomFeatures { w: f.w.map(|row| row.map(V::splat)), scale: V::splat(f.scale) };
        let stack = Stack { kind: self.kind(), layers: &ws.layers, features: &ws.features };
        simd::load_tasks(simd, group, stack.input(n, &mut ws.ws).as_flattened_mut());
        if !stack.forward(n, &mut ws.ws) {
            return false;
        }
        let last = stack.last(n, &ws.ws);
        let y_hat: [f32; LANES] = core::array::from_fn(|l| -last.0[l]);
        if stack.backward(n, &mut ws.ws, seeds(group, &y_hat), &mut ws.grads).is_none() {
            return false;
        }
        // Task by task into every matrix's sum (the sums are independent of each other; the shapes match, so none
        // is refused).
        for (into, from) in grads.iter_mut().zip(&ws.grads) {
            for (a, b) in into.heads.iter_mut().zip(&from.heads) {
                simd::add_lanes(simd, a.w_q.as_mut_slice(), &[b.w_q.as_slice()], group.count);
                simd::add_lanes(simd, a.w_k.as_mut_slice(), &[b.w_k.as_slice()], group.count);
                simd::add_lanes(simd, a.w_v.as_mut_slice(), &[b.w_v.as_slice()], group.count);
                simd::add_lanes(simd, a.p.as_mut_slice(), &[b.p.as_slice()], group.count);
            }
        }
        for (l, y_hat) in y_hat.iter().enumerate().take(group.count) {
            *loss += 0.5 * ((y_hat - group.task(l).2) as f64).powi(2);
        }
        if let Some(out) = inputs {
            let tokens = ws.ws.grads.get(..n + 1).unwrap_or_default();
            for l in 0..group.count {
                out.extend(tokens.iter().map(|t| t.map(|v: Lanes<LANES>| v.0.get(l).copied().unwrap_or(f32::NAN))));
            }
        }
        true
    }
}

/// One group's gradient of a [`ZooNet`] as work on lanes ([`simd::InLanes`]; its width is the net's constant `E`).
struct ZooGroup<'a, const E: usize> {
    simd: Simd,
    net: &'a ZooNet<E>,
    group: &'a Group,
    ws: &'a mut ZooLanes<E>,
    grads: &'a mut [ZooLayer<E>],
    loss: &'a mut f64,
    inputs: Option<&'a mut Vec<[f32; E]>>,
}

impl<const E: usize> simd::InLanes for ZooGroup<'_, E> {
    type Out = bool;
    #[inline(always)]
    fn run<const W: usize>(self) -> bool {
        self.net.lanes_gradient_in(self.simd, self.group, self.ws, self.grads, self.loss, self.inputs)
    }
}
