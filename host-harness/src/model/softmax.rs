//! [`Softmax`]: trained softmax attention layers (each [`SOFTMAX_HEADS`] heads of `W_Q, W_K, W_V, P`), applied once
//! each in order, with the LSA models' initialisation and the `dualform-softmax-v1` file format; and the helpers the
//! attention-zoo models share with it (initialisation, weight tensors).

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
pub struct Softmax {
    net: SoftmaxNet,
}

pub(crate) fn slices<const E: usize>(h: &Head<f32, E, E, E>) -> [&[f32]; 4] {
    [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()]
}

pub(crate) fn slices_mut<const E: usize>(h: &mut Head<f32, E, E, E>) -> [&mut [f32]; 4] {
    let Head { w_q, w_k, w_v, p } = h;
    [w_q.as_mut_slice(), w_k.as_mut_slice(), w_v.as_mut_slice(), p.as_mut_slice()]
}

/// Every parameter of fixed-width `layers` in the fixed order: layer, head, then `W_Q, W_K, W_V, P` column-major.
pub(crate) fn flat<const E: usize, const H: usize>(
    layers: &[dualform::Layer<f32, E, E, E, H>],
) -> impl Iterator<Item = f32> + '_ {
    layers.iter().flat_map(|l| l.heads.iter()).flat_map(|h| slices(h).into_iter().flatten().copied())
}

/// Fills `values` in order with truncated-normal draws of variance `0.002 / layers / e`, as the LSA models start:
/// near-uniform attention for every kind.
pub(crate) fn init_values<'a>(
    rng: &mut impl rand::Rng,
    values: impl Iterator<Item = &'a mut f32>,
    layers: usize,
    e: usize,
) {
    let std = (0.002 / layers.max(1) as f64 / e as f64).sqrt() / 0.879_625_661_034_239_8;
    for v in values {
        let z = loop {
            let z: f64 = StandardNormal.sample(rng);
            if z.abs() <= 2.0 {
                break z;
            }
        };
        *v = (z * std) as f32;
    }
}

/// `layers` fixed-width layers (at least one) initialised by [`init_values`].
pub(crate) fn init_layers<const E: usize, const H: usize>(
    rng: &mut impl rand::Rng,
    layers: usize,
) -> Vec<dualform::Layer<f32, E, E, E, H>> {
    let mut all = vec![dualform::Layer::<f32, E, E, E, H>::zeros(); layers.max(1)];
    let values = all.iter_mut().flat_map(|l| l.heads.iter_mut()).flat_map(slices_mut).flat_map(|s| s.iter_mut());
    init_values(rng, values, layers, E);
    all
}

/// The tensors `w_q, w_k, w_v, p` of `layers` layers of `heads` heads, `[layers, heads, E, E]` row-major;
/// `matrix(layer, head, which)` is one matrix column-major.
pub(crate) fn head_tensors<'a>(
    e: usize,
    layers: usize,
    heads: usize,
    matrix: impl Fn(usize, usize, usize) -> &'a [f32],
) -> Vec<Tensor> {
    crate::model::LSA_NAMES
        .iter()
        .enumerate()
        .map(|(which, name)| {
            let data: Vec<f32> = (0..layers)
                .flat_map(|l| (0..heads).map(move |h| (l, h)))
                .flat_map(|(l, h)| row_major(e, matrix(l, h, which)))
                .collect();
            Tensor::new(*name, vec![layers, heads, e, e], data)
        })
        .collect()
}

/// [`head_tensors`] of fixed-width layers.
pub(crate) fn layer_tensors<const E: usize, const H: usize>(
    layers: &[dualform::Layer<f32, E, E, E, H>],
) -> Vec<Tensor> {
    head_tensors(E, layers.len(), H, |l, h, which| slices(&layers[l].heads[h])[which])
}

impl Softmax {
    /// These layers, of token width `e`.
    pub fn new(e: usize, layers: Vec<SoftmaxLayer>) -> Self {
        Self { net: SoftmaxNet::new(e, layers) }
    }

    /// `layers` layers (at least one) of width `e` initialised as the LSA models are (truncated normal, variance `0.002 / layers / E`), so training
    /// starts from near-uniform attention.
    pub fn init(rng: &mut impl rand::Rng, e: usize, layers: usize) -> Self {
        let mut all = vec![SoftmaxLayer::zeros(e); layers.max(1)];
        init_values(rng, all.iter_mut().flat_map(|l| l.params_mut().iter_mut()), layers, e);
        Self::new(e, all)
    }

    /// The layers.
    pub fn layers(&self) -> &[SoftmaxLayer] {
        self.net.layers()
    }
}

impl Model for Softmax {
    type Net = SoftmaxNet;

    fn net(&self) -> &SoftmaxNet {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        self.net.layers().iter().flat_map(|l| l.params().iter().copied()).collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        let mut it = p.iter();
        for v in self.net.layers_mut().iter_mut().flat_map(|l| l.params_mut().iter_mut()) {
            if let Some(n) = it.next() {
                *v = *n;
            }
        }
    }

    fn pullback(&self, grads: &[SoftmaxLayer], out: &mut [f32]) {
        for (o, g) in out.iter_mut().zip(grads.iter().flat_map(|l| l.params().iter())) {
            *o += g;
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        let layers = self.net.layers();
        let e = layers.first().map_or(0, |l| l.width());
        head_tensors(e, layers.len(), SOFTMAX_HEADS, |l, h, which| layers[l].matrix(h, which))
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
