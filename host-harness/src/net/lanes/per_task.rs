//! A [`Net`]'s predictions and each task's own gradient of its prediction, [`LANES`] tasks side by side: what the
//! least-squares fits of the references ask for task by task (their losses and Jacobian rows:
//! [`Forward::group_predict`](crate::net::Forward::group_predict),
//! [`Forward::group_prediction_grads`](crate::net::Forward::group_prediction_grads)), with the bits of the one-task
//! path (the forward and backward of [`Net::lanes_gradient`]; each lane's gradient read out alone).

use super::{LaneWorkspace, Merged, Net, LANES, V};
use crate::net::simd::{self, Simd};
use crate::tasks::Group;
use dualform::lanes::Lanes;

impl Net {
    /// [`Forward::group_predict`](crate::net::Forward::group_predict) in lanes for a group of at most [`LANES`]
    /// tasks of this net's width, on the vector unit `simd`: each task's prediction into `out` (the bits of
    /// [`Forward::predict`](crate::net::Forward::predict)). Returns false, having written nothing, when the group
    /// does not fit or a kernel refused (then the caller goes task by task).
    pub fn lanes_predict(&self, simd: Simd, group: &Group, ws: &mut LaneWorkspace<LANES>, out: &mut [f32]) -> bool {
        simd::run(simd, group.shape().1, NetPredict { simd, net: self, group, ws, out })
    }

    /// [`Forward::group_prediction_grads`](crate::net::Forward::group_prediction_grads) in lanes for a group of
    /// at most [`LANES`] tasks of this net's width, on the vector unit `simd`: task `t`'s prediction into
    /// `y_hat[t]` and the gradient of that prediction alone into `grads[t * heads..][..heads]`, the bits of
    /// [`Forward::forward_backward`](crate::net::Forward::forward_backward) with seed 1 into zero gradients.
    /// Returns false, having written nothing it vouches for, when the group does not fit or a kernel refused.
    pub fn lanes_prediction_grads(
        &self,
        simd: Simd,
        group: &Group,
        ws: &mut LaneWorkspace<LANES>,
        y_hat: &mut [f32],
        grads: &mut [Merged],
    ) -> bool {
        simd::run(simd, group.shape().1, NetTaskGrads { simd, net: self, group, ws, y_hat, grads })
    }
}

/// One group's predictions of a [`Net`] as work on lanes ([`simd::InLanes`]).
struct NetPredict<'a> {
    simd: Simd,
    net: &'a Net,
    group: &'a Group,
    ws: &'a mut LaneWorkspace<LANES>,
    out: &'a mut [f32],
}

impl simd::InLanes for NetPredict<'_> {
    type Out = bool;
    #[inline(always)]
    fn run<const W: usize>(self) -> bool {
        let Some(y_hat) = self.net.lanes_forward_on::<W>(self.simd, self.group, self.ws) else { return false };
        for (o, y) in self.out.iter_mut().zip(y_hat).take(self.group.count) {
            *o = y;
        }
        true
    }
}

/// Each task's gradient of its prediction, of a [`Net`], as work on lanes ([`simd::InLanes`]).
struct NetTaskGrads<'a> {
    simd: Simd,
    net: &'a Net,
    group: &'a Group,
    ws: &'a mut LaneWorkspace<LANES>,
    y_hat: &'a mut [f32],
    grads: &'a mut [Merged],
}

impl simd::InLanes for NetTaskGrads<'_> {
    type Out = bool;
    #[inline(always)]
    fn run<const W: usize>(self) -> bool {
        let Self { simd, net, group, ws, y_hat, grads } = self;
        let (heads, schedule, count) = (net.heads().len(), net.schedule(), group.count);
        if grads.len() < count * heads || y_hat.len() < count {
            return false;
        }
        let Some(predicted) = net.lanes_forward_on::<W>(simd, group, ws) else { return false };
        // `dL/dy_hat = 1`; the prediction is minus the query's last coordinate.
        let seed = Lanes(core::array::from_fn(|l| if l < count { -1.0 } else { 0.0 }));
        if !net.lanes_backward_on::<W>(group, ws, seed) {
            return false;
        }
        let ee = group.shape().1 * group.shape().1;
        let per_app: &[V] = &ws.per_app;
        for (l, (task, y)) in grads.chunks_exact_mut(heads).zip(y_hat.iter_mut()).take(count).enumerate() {
            *y = predicted[l];
            // From zero, the head's applications last to first: the additions of the one-task path.
            for (h, m) in task.iter_mut().enumerate() {
                m.a.fill(0.0);
                m.b.fill(0.0);
                for app in (0..schedule.len()).rev().filter(|&app| schedule[app] == h) {
                    let (da, db) = per_app[2 * ee * app..][..2 * ee].split_at(ee);
                    for (x, v) in m.a.iter_mut().zip(da).chain(m.b.iter_mut().zip(db)) {
                        *x += v.0[l];
                    }
                }
            }
        }
        true
    }
}
