//! [`Zoo`] and [`MlpZoo`]: trained layers of one attention kind ([`ZooNet`]), alone or behind a learned feature map
//! ([`MlpZooNet`]), formats `dualform-zoo-v1` and `dualform-mlp-zoo-v1` (the `attention-zoo` experiment).

use super::softmax::{flat, init_layers, layer_tensors, slices_mut};
use super::Model;
use crate::net::{Attention, MlpZooGrad, MlpZooNet, ZooLayer, ZooNet};
use dualform::mlp::ScalarMlp;
use dualform_tensors::Tensor;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

/// The format name of [`Zoo`] files.
pub const ZOO_FORMAT: &str = "dualform-zoo-v1";
/// The format name of [`MlpZoo`] files.
pub const MLP_ZOO_FORMAT: &str = "dualform-mlp-zoo-v1";

fn set_layers<'a, const E: usize>(layers: &mut [ZooLayer<E>], it: &mut impl Iterator<Item = &'a f32>) {
    for h in layers.iter_mut().flat_map(|l| l.heads.iter_mut()) {
        for s in slices_mut(h) {
            for (v, n) in s.iter_mut().zip(it.by_ref()) {
                *v = *n;
            }
        }
    }
}

fn layer_meta(kind: Attention, layers: usize) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("attention".to_string(), kind.name().to_string()),
        ("layers".to_string(), layers.to_string()),
        ("heads".to_string(), crate::net::ZOO_HEADS.to_string()),
    ])
}

/// Layers of one attention kind, trained.
#[derive(Clone, Debug, PartialEq)]
pub struct Zoo<const E: usize> {
    net: ZooNet<E>,
}

impl<const E: usize> Zoo<E> {
    /// `layers` layers of `kind`, initialised as the LSA models are (near-uniform attention for every kind).
    pub fn init(rng: &mut impl rand::Rng, kind: Attention, layers: usize) -> Self {
        Self { net: ZooNet::new(kind, init_layers(rng, layers)) }
    }
}

impl<const E: usize> Model for Zoo<E> {
    type Net = ZooNet<E>;

    fn net(&self) -> &ZooNet<E> {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        flat(self.net.layers()).collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        set_layers(self.net.layers_mut(), &mut p.iter());
    }

    fn pullback(&self, grads: &[ZooLayer<E>], out: &mut [f32]) {
        for (o, g) in out.iter_mut().zip(flat(grads)) {
            *o += g;
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        layer_tensors(self.net.layers())
    }

    fn meta(&self) -> BTreeMap<String, String> {
        let mut m = layer_meta(self.net.kind(), self.net.layers().len());
        m.insert("format".to_string(), ZOO_FORMAT.to_string());
        m
    }
}

/// A learned feature map of scalar inputs (width F, hidden M) in front of layers of one attention kind on tokens of
/// width `W = F + 1`, trained.
#[derive(Clone, Debug, PartialEq)]
pub struct MlpZoo<const F: usize, const M: usize, const W: usize> {
    net: MlpZooNet<F, M, W>,
}

fn mlp_groups<const F: usize, const M: usize>(m: &ScalarMlp<f32, F, M>) -> [&[f32]; 6] {
    [&m.w_e, &m.b_e, m.w_1.as_slice(), &m.b_1, m.w_2.as_slice(), &m.b_2]
}

fn mlp_groups_mut<const F: usize, const M: usize>(m: &mut ScalarMlp<f32, F, M>) -> [&mut [f32]; 6] {
    [&mut m.w_e, &mut m.b_e, m.w_1.as_mut_slice(), &mut m.b_1, m.w_2.as_mut_slice(), &mut m.b_2]
}

impl<const F: usize, const M: usize, const W: usize> MlpZoo<F, M, W> {
    /// The feature map drawn as `mlp-sine` draws it (embedding scale `1 / input_std`), the layers as [`Zoo::init`].
    pub fn init(rng: &mut impl rand::Rng, kind: Attention, layers: usize, input_std: f64) -> Self {
        let mut net = MlpZooNet::<F, M, W>::new(ZooNet::new(kind, Vec::new()));
        let stds = [1.0 / input_std, 1.0, (1.0 / F as f64).sqrt(), 0.0, (1.0 / M as f64).sqrt(), 0.0];
        for (g, std) in mlp_groups_mut(&mut net.mlp).into_iter().zip(stds) {
            for v in g.iter_mut() {
                let z: f64 = StandardNormal.sample(rng);
                *v = (z * std) as f32;
            }
        }
        net.net = ZooNet::new(kind, init_layers(rng, layers));
        Self { net }
    }
}

impl<const F: usize, const M: usize, const W: usize> Model for MlpZoo<F, M, W> {
    type Net = MlpZooNet<F, M, W>;

    fn net(&self) -> &Self::Net {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        mlp_groups(&self.net.mlp).into_iter().flatten().copied().chain(flat(self.net.net.layers())).collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        let mut it = p.iter();
        for g in mlp_groups_mut(&mut self.net.mlp) {
            for (v, n) in g.iter_mut().zip(it.by_ref()) {
                *v = *n;
            }
        }
        set_layers(self.net.net.layers_mut(), &mut it);
    }

    fn pullback(&self, grads: &[MlpZooGrad<F, M, W>], out: &mut [f32]) {
        for g in grads {
            let all = mlp_groups(&g.mlp).into_iter().flatten().copied().chain(flat(&g.layers));
            for (o, v) in out.iter_mut().zip(all) {
                *o += v;
            }
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        let names = ["mlp_w_e", "mlp_b_e", "mlp_w_1", "mlp_b_1", "mlp_w_2", "mlp_b_2"];
        let shapes: [(usize, usize); 6] = [(F, 1), (F, 1), (M, F), (M, 1), (F, M), (F, 1)];
        let mut out: Vec<Tensor> = names
            .iter()
            .zip(mlp_groups(&self.net.mlp))
            .zip(shapes)
            .map(|((name, data), (rows, cols))| {
                // Column-major storage to row-major file order.
                let row_major: Vec<f32> = (0..rows).flat_map(|r| (0..cols).map(move |c| data[c * rows + r])).collect();
                Tensor::new(*name, vec![rows, cols], row_major)
            })
            .collect();
        out.extend(layer_tensors(self.net.net.layers()));
        out
    }

    fn meta(&self) -> BTreeMap<String, String> {
        let mut m = layer_meta(self.net.net.kind(), self.net.net.layers().len());
        m.insert("format".to_string(), MLP_ZOO_FORMAT.to_string());
        m.insert("features".to_string(), F.to_string());
        m.insert("hidden".to_string(), M.to_string());
        m
    }
}
