//! [`MlpLsa`]: a trained feature map and LSA layer ([`MlpLsaNet`]), format `dualform-mlp-lsa-v1`.

use super::Model;
use crate::net::MlpLsaNet;
use dualform_tensors::Tensor;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

/// The format name of [`MlpLsa`] files.
pub const MLP_LSA_FORMAT: &str = "dualform-mlp-lsa-v1";

/// The parameter groups in their fixed order, with their tensor names and shapes (row-major in files; the flat
/// parameter vector takes each group in its storage order, matrices column-major).
const GROUPS: [&str; 10] = ["mlp_w_e", "mlp_b_e", "mlp_w_1", "mlp_b_1", "mlp_w_2", "mlp_b_2", "w_q", "w_k", "w_v", "p"];

/// A trained [`MlpLsaNet`].
#[derive(Clone, Debug, PartialEq)]
pub struct MlpLsa<const F: usize, const M: usize, const W: usize> {
    net: MlpLsaNet<F, M, W>,
}

fn groups<const F: usize, const M: usize, const W: usize>(n: &MlpLsaNet<F, M, W>) -> [&[f32]; 10] {
    let h = &n.layer.heads[0];
    let m = &n.mlp;
    [
        &m.w_e,
        &m.b_e,
        m.w_1.as_slice(),
        &m.b_1,
        m.w_2.as_slice(),
        &m.b_2,
        h.w_q.as_slice(),
        h.w_k.as_slice(),
        h.w_v.as_slice(),
        h.p.as_slice(),
    ]
}

fn groups_mut<const F: usize, const M: usize, const W: usize>(n: &mut MlpLsaNet<F, M, W>) -> [&mut [f32]; 10] {
    let h = &mut n.layer.heads[0];
    let m = &mut n.mlp;
    [
        &mut m.w_e,
        &mut m.b_e,
        m.w_1.as_mut_slice(),
        &mut m.b_1,
        m.w_2.as_mut_slice(),
        &mut m.b_2,
        h.w_q.as_mut_slice(),
        h.w_k.as_mut_slice(),
        h.w_v.as_mut_slice(),
        h.p.as_mut_slice(),
    ]
}

impl<const F: usize, const M: usize, const W: usize> MlpLsa<F, M, W> {
    /// A model around `net`.
    pub fn new(net: MlpLsaNet<F, M, W>) -> Self {
        Self { net }
    }

    /// Initialised for inputs of standard deviation `input_std`: the embedding so that its pre-activations have unit
    /// scale (weights `N(0, 1/input_std^2)`, biases `N(0, 1)`), the block's layers `N(0, 1/fan_in)` with zero biases,
    /// and the LSA layer as the LSA models are (normal, variance `0.002 / W`), so training starts near predicting 0.
    pub fn init(rng: &mut impl rand::Rng, input_std: f64) -> Self {
        let mut net = MlpLsaNet::<F, M, W>::zeros();
        let lsa_std = (0.002 / W as f64).sqrt();
        let stds = [1.0 / input_std, 1.0, (1.0 / F as f64).sqrt(), 0.0, (1.0 / M as f64).sqrt(), 0.0];
        for (i, g) in groups_mut(&mut net).into_iter().enumerate() {
            let std = stds.get(i).copied().unwrap_or(lsa_std);
            for v in g.iter_mut() {
                let z: f64 = StandardNormal.sample(rng);
                *v = (z * std) as f32;
            }
        }
        Self { net }
    }
}

impl<const F: usize, const M: usize, const W: usize> Model for MlpLsa<F, M, W> {
    type Net = MlpLsaNet<F, M, W>;

    fn net(&self) -> &Self::Net {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        groups(&self.net).into_iter().flatten().copied().collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        let mut it = p.iter();
        for g in groups_mut(&mut self.net) {
            for (v, n) in g.iter_mut().zip(it.by_ref()) {
                *v = *n;
            }
        }
    }

    fn pullback(&self, grads: &[Self::Net], out: &mut [f32]) {
        for g in grads {
            for (o, v) in out.iter_mut().zip(groups(g).into_iter().flatten()) {
                *o += *v;
            }
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        let shapes: [(usize, usize); 10] =
            [(F, 1), (F, 1), (M, F), (M, 1), (F, M), (F, 1), (W, W), (W, W), (W, W), (W, W)];
        GROUPS
            .iter()
            .zip(groups(&self.net))
            .zip(shapes)
            .map(|((name, data), (rows, cols))| {
                // Column-major storage to row-major file order.
                let row_major: Vec<f32> = (0..rows).flat_map(|r| (0..cols).map(move |c| data[c * rows + r])).collect();
                Tensor::new(*name, vec![rows, cols], row_major)
            })
            .collect()
    }

    fn meta(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("format".to_string(), MLP_LSA_FORMAT.to_string()),
            ("features".to_string(), F.to_string()),
            ("hidden".to_string(), M.to_string()),
            (
                "model".to_string(),
                "phi(x) = h0 + W_2 gelu(W_1 h0 + b_1) + b_2, h0 = w_e x + b_e; one LSA head".to_string(),
            ),
        ])
    }
}
