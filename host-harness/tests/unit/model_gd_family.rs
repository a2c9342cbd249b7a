//! Unit tests of `model::gd_family` (`src/model/gd_family.rs`).

use dualform::nalgebra::SMatrix;
use dualform_harness::model::Model;
use dualform_harness::model::*;
use dualform_harness::net::Forward;
use dualform_harness::tasks::TaskSampler;

#[test]
fn gd_references_predict_what_the_core_primal_gd_predicts() {
    // The merged constructions against the core's primal GD / GD++ on W and x, an independent implementation.
    let sampler = TaskSampler::new(4, 6, 1.0);
    let mut m = GdFamily::new(4, GdKind::PlusPlus, 3, 6, 1.0).unwrap();
    m.set_params(&[2.0, 3.0, 1.5, 0.4, -0.2, 0.1]);
    let per = GdFamily::new(4, GdKind::PerStep, 3, 6, 1.0).unwrap().with_etas(&[2.0, 3.0, 1.5]).unwrap();
    let rows = sampler.par_chunks_fixed::<5, Vec<(f32, f32, f32, f32)>>(11, 0, 20, Vec::new, |acc, c, q, _| {
        let xs: [[f32; 4]; 6] = core::array::from_fn(|j| core::array::from_fn(|i| c[j][i]));
        let ys: [[f32; 1]; 6] = core::array::from_fn(|j| [c[j][4]]);
        let mut xq: [f32; 4] = core::array::from_fn(|i| q[i]);
        // Plain GD with a rate per step: W_{k+1} = W_k - eta_k grad, then W_3 x_q.
        let mut w = SMatrix::<f32, 1, 4>::zeros();
        for eta in [2.0, 3.0, 1.5] {
            w = dualform::gd::gd_step(&w, &xs, &ys, eta).unwrap();
        }
        let gd = dualform::gd::predict(&w, &xq)[0];
        // GD++: the dual step on the targets and the input transformation, per step.
        let (mut xs2, mut ys2, mut yq) = (xs, ys, [0.0f32]);
        for (eta, gamma) in [(2.0, 0.4), (3.0, -0.2), (1.5, 0.1)] {
            dualform::gd::gdpp_step(&SMatrix::zeros(), &mut xs2, &mut ys2, &mut xq, &mut yq, eta, gamma).unwrap();
        }
        let mut ws = m.net().workspace(6);
        let mut ws2 = per.net().workspace(6);
        let (c, q) = (c.as_flattened(), &q[..]);
        acc.push((per.net().predict(c, q, &mut ws2, None), gd, m.net().predict(c, q, &mut ws, None), -yq[0]));
    });
    for (per_step, gd, pp, gdpp) in rows.into_iter().flatten() {
        assert!((per_step - gd).abs() < 1e-4 * (1.0 + gd.abs()), "GD: {per_step} vs {gd}");
        assert!((pp - gdpp).abs() < 1e-4 * (1.0 + gdpp.abs()), "GD++: {pp} vs {gdpp}");
    }
}
