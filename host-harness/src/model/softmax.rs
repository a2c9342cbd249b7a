//! [`Softmax`]: trained softmax attention layers (each [`SOFTMAX_HEADS`] heads of `W_Q, W_K, W_V, P`), applied once
//! each in order, with the LSA models' initialisation and the `dualform-softmax-v1` file format.

use super::lsa::row_major;
use super::Model;
use crate::net::{SoftmaxLayer, SoftmaxNet, SOFTMAX_HEADS};
use dualform::Head;
use dualform_tensors::Tensor;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

/// The format name of [`Softmax`] files.
pub const SOFTMAX_FORMAT: &str = "dualform-softmax-v1";

/// Softmax attention layers, trained.
#[derive(Clone, Debug, PartialEq)]
pub struct Softmax<const E: usize> {
    net: SoftmaxNet<E>,
}

pub(crate) fn slices<const E: usize>(h: &Head<f32, E, E, E>) -> [&[f32]; 4] {
    [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()]
}

pub(crate) fn slices_mut<const E: usize>(h: &mut Head<f32, E, E, E>) -> [&mut [f32]; 4] {
    let Head { w_q, w_k, w_v, p } = h;
    [w_q.as_mut_slice(), w_k.as_mut_slice(), w_v.as_mut_slice(), p.as_mut_slice()]
}

/// Every parameter of `layers` in the fixed order: layer, head, then `W_Q, W_K, W_V, P` column-major.
pub(crate) fn flat<const E: usize>(layers: &[SoftmaxLayer<E>]) -> impl Iterator<Item = f32> + '_ {
    layers.iter().flat_map(|l| l.heads.iter()).flat_map(|h| slices(h).into_iter().flatten().copied())
}

/// `layers` layers (at least one) of truncated-normal weights with variance `0.002 / layers / E`, as the LSA models
/// start: near-uniform attention for every kind.
pub(crate) fn init_layers<const E: usize>(rng: &mut impl rand::Rng, layers: usize) -> Vec<SoftmaxLayer<E>> {
    let std = (0.002 / layers.max(1) as f64 / E as f64).sqrt() / 0.879_625_661_034_239_8;
    let mut all = vec![SoftmaxLayer::<E>::zeros(); layers.max(1)];
    for h in all.iter_mut().flat_map(|l| l.heads.iter_mut()) {
        for s in slices_mut(h) {
            for v in s.iter_mut() {
                let z = loop {
                    let z: f64 = StandardNormal.sample(rng);
                    if z.abs() <= 2.0 {
                        break z;
                    }
                };
                *v = (z * std) as f32;
            }
        }
    }
    all
}

/// The tensors `w_q, w_k, w_v, p` of softmax-shaped layers, `[layers, heads, E, E]` row-major.
pub(crate) fn layer_tensors<const E: usize>(layers: &[SoftmaxLayer<E>]) -> Vec<Tensor> {
    crate::model::LSA_NAMES
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let data: Vec<f32> =
                layers.iter().flat_map(|l| l.heads.iter()).flat_map(|h| row_major(E, slices(h)[i])).collect();
            Tensor::new(*name, vec![layers.len(), SOFTMAX_HEADS, E, E], data)
        })
        .collect()
}

impl<const E: usize> Softmax<E> {
    /// These layers.
    pub fn new(layers: Vec<SoftmaxLayer<E>>) -> Self {
        Self { net: SoftmaxNet::new(layers) }
    }

    /// `layers` layers initialised as the LSA models are (truncated normal, variance `0.002 / layers / E`), so
    /// training starts from near-uniform attention.
    pub fn init(rng: &mut impl rand::Rng, layers: usize) -> Self {
        Self::new(init_layers(rng, layers))
    }

    /// The layers.
    pub fn layers(&self) -> &[SoftmaxLayer<E>] {
        self.net.layers()
    }
}

impl<const E: usize> Model for Softmax<E> {
    type Net = SoftmaxNet<E>;

    fn net(&self) -> &SoftmaxNet<E> {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        flat(self.net.layers()).collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        let mut it = p.iter();
        for h in self.net.layers_mut().iter_mut().flat_map(|l| l.heads.iter_mut()) {
            for s in slices_mut(h) {
                for (v, n) in s.iter_mut().zip(it.by_ref()) {
                    *v = *n;
                }
            }
        }
    }

    fn pullback(&self, grads: &[SoftmaxLayer<E>], out: &mut [f32]) {
        for (o, g) in out.iter_mut().zip(flat(grads)) {
            *o += g;
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        layer_tensors(self.net.layers())
    }

    fn meta(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("format".to_string(), SOFTMAX_FORMAT.to_string()),
            ("layers".to_string(), self.net.layers().len().to_string()),
            ("heads".to_string(), SOFTMAX_HEADS.to_string()),
            ("attention".to_string(), "softmax, logits scaled by 1/sqrt(E), residual update".to_string()),
        ])
    }
}
