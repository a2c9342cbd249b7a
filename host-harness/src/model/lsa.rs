//! [`Lsa`]: trained LSA weights `W_Q, W_K, W_V, P` per distinct layer, applied in a schedule (one layer, K distinct
//! layers, or one layer applied K times), with the reference initialisation and the `dualform-lsa-v1` file format,
//! at a token width chosen at run time.

use super::Model;
use crate::net::{Forward, Merged, Net};
use crate::HarnessError;
use dualform::merged_ref::{merge, pullback, HeadShape};
use dualform::{Head, Update};
use dualform_tensors::{LsaFile, Tensor};
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::path::Path;

/// One LSA head with key and value size E: `W_Q, W_K, W_V, P`, each `E x E`, column-major.
#[derive(Clone, Debug, PartialEq)]
pub struct LsaHead {
    e: usize,
    mats: [Vec<f32>; 4],
}

impl LsaHead {
    /// A head of width `e` whose four matrices are zero.
    pub fn zeros(e: usize) -> Self {
        Self { e, mats: std::array::from_fn(|_| vec![0.0; e * e]) }
    }

    /// The token width E.
    pub fn width(&self) -> usize {
        self.e
    }

    /// `[W_Q, W_K, W_V, P]`, column-major.
    pub fn mats(&self) -> [&[f32]; 4] {
        let [q, k, v, p] = &self.mats;
        [q, k, v, p]
    }

    /// `[W_Q, W_K, W_V, P]`, column-major, to write.
    pub fn mats_mut(&mut self) -> [&mut [f32]; 4] {
        let [q, k, v, p] = &mut self.mats;
        [q, k, v, p]
    }

    /// Entry `(row, col)` of matrix `m` (0 = `W_Q`, 1 = `W_K`, 2 = `W_V`, 3 = `P`).
    pub fn get(&self, m: usize, row: usize, col: usize) -> f32 {
        self.mats[m][col * self.e + row]
    }

    /// A head of a width fixed at compile time.
    pub fn from_fixed<const E: usize>(h: &Head<f32, E, E, E>) -> Self {
        Self { e: E, mats: [&h.w_q, &h.w_k, &h.w_v, &h.p].map(|m| m.as_slice().to_vec()) }
    }

    /// This head at a width fixed at compile time, or `None` if its width is not `E`.
    pub fn to_fixed<const E: usize>(&self) -> Option<Head<f32, E, E, E>> {
        if self.e != E {
            return None;
        }
        let mut h: Head<f32, E, E, E> = Head::zeros();
        for (dst, src) in [&mut h.w_q, &mut h.w_k, &mut h.w_v, &mut h.p].into_iter().zip(&self.mats) {
            dst.as_mut_slice().copy_from_slice(src);
        }
        Some(h)
    }

    /// A head with these merged matrices: `W_K = W_V = I`, `W_Q = A`, `P = B` (one of the many factorisations;
    /// [`LsaHead::merged`] of it gives back `A` and `B` exactly).
    pub fn from_merged(m: &Merged) -> Self {
        let e = m.width();
        let mut eye = vec![0.0; e * e];
        for i in 0..e {
            eye[i * e + i] = 1.0;
        }
        Self { e, mats: [m.a.clone(), eye.clone(), eye, m.b.clone()] }
    }

    /// The merged head `A = W_K^T W_Q`, `B = P W_V`, by the core's kernels.
    pub fn merged(&self) -> Merged {
        let mut m = Merged::zeros(self.e);
        let mut scratch = vec![0.0; HeadShape::square(self.e).scratch()];
        // Every matrix has the head's width, so the merge cannot refuse it.
        let _ = merge(HeadShape::square(self.e), self.mats(), &mut m.a, &mut m.b, &mut scratch);
        m
    }

    /// Adds into `grad` the gradient of this head's weights implied by the merged gradient `dm` (the core's chain rule
    /// through `A = W_K^T W_Q` and `B = P W_V`).
    pub fn pullback(&self, dm: &Merged, grad: &mut LsaHead) {
        let mut scratch = vec![0.0; HeadShape::square(self.e).scratch()];
        let _ = pullback(HeadShape::square(self.e), self.mats(), &dm.a, &dm.b, grad.mats_mut(), &mut scratch);
    }
}

/// The tensor names of an LSA layer, in the order of the flat parameters.
pub use dualform_tensors::LSA_NAMES;

/// Full LSA weights per distinct layer, applied in a schedule: one layer, K distinct layers, or one layer K times.
#[derive(Clone, Debug, PartialEq)]
pub struct Lsa {
    layers: Vec<LsaHead>,
    net: Net,
}

/// Row-major values of a column-major `e x e` matrix.
pub(crate) fn row_major(e: usize, col_major: &[f32]) -> Vec<f32> {
    (0..e * e).map(|k| col_major[(k % e) * e + k / e]).collect()
}

impl Lsa {
    /// `layers` applied in `schedule` order with `update` (every layer of one width).
    pub fn new(layers: Vec<LsaHead>, schedule: Vec<usize>, update: Update<f32>) -> Result<Self, HarnessError> {
        let heads = layers.iter().map(LsaHead::merged).collect();
        let net = Net::new(heads, schedule, update)?;
        Ok(Self { layers, net })
    }

    /// One layer, applied once with the plain residual rule.
    pub fn single(head: LsaHead) -> Result<Self, HarnessError> {
        Self::new(vec![head], vec![0], Update::residual())
    }

    /// The reference initialisation (docs/conventions.md): `layers` distinct layers of width `e` applied in
    /// `schedule`, every entry a truncated normal (two standard deviations) with variance scaling
    /// `0.002 / applications`, fan-in E, the standard deviation corrected for the truncation as the reference code
    /// does (`sqrt(scale / E) / 0.8796`, about 0.0153 per entry for one layer at E = 11).
    pub fn init(
        rng: &mut impl rand::Rng,
        e: usize,
        layers: usize,
        schedule: Vec<usize>,
        update: Update<f32>,
    ) -> Result<Self, HarnessError> {
        let std = (0.002 / schedule.len().max(1) as f64 / e as f64).sqrt() / 0.879_625_661_034_239_8;
        let mut heads = vec![LsaHead::zeros(e); layers];
        for h in heads.iter_mut() {
            for s in h.mats_mut() {
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
        Self::new(heads, schedule, update)
    }

    /// The layers' weights.
    pub fn layers(&self) -> &[LsaHead] {
        &self.layers
    }

    /// The token width E.
    pub fn width(&self) -> usize {
        self.net.width()
    }

    /// Reads a model written by [`save`](crate::model::save) of an [`Lsa`] (format `dualform-lsa-v1`): tensors
    /// `w_q, w_k, w_v, p` of shape `[E, E]` (one layer) or `[L, E, E]`, and the schedule and rule from the metadata.
    /// Metadata a file does not have takes the single layer's values: one layer, applied once per layer in order,
    /// plain residual update. With `want = Some(E)`, a file of another width is refused, naming both.
    pub fn from_file(f: &dualform_tensors::TensorFile, want: Option<usize>) -> Result<Self, HarnessError> {
        let file = LsaFile::from_file(f)?;
        let e = file.e;
        if let Some(w) = want.filter(|&w| w != e) {
            let shape = f.tensor("w_q").map(|t| t.shape.clone()).unwrap_or_default();
            let expected: Vec<usize> = if file.layers.len() == 1 { vec![w, w] } else { vec![file.layers.len(), w, w] };
            return Err(HarnessError::BadInput(format!(
                "{}: w_q: shape {shape:?}, expected {expected:?} (E = {e}, this command takes E = {w})",
                f.path.display(),
            )));
        }
        let mut heads = vec![LsaHead::zeros(e); file.layers.len()];
        for (h, mats) in heads.iter_mut().zip(&file.layers) {
            for (dst, v) in h.mats_mut().into_iter().zip(mats) {
                for (k, &x) in v.iter().enumerate() {
                    dst[(k % e) * e + k / e] = x;
                }
            }
        }
        let update = Update { scale: file.damping, first: file.first, clip: file.clip };
        Self::new(heads, file.schedule, update)
            .map_err(|err| HarnessError::BadInput(format!("{}: {err}", f.path.display())))
    }
}

/// A single-layer weight file's one head (of width `e`), validated by the shared loader, and the file's SHA-256.
pub fn load_head(path: &Path, e: usize) -> Result<(LsaHead, String), HarnessError> {
    let f = dualform_tensors::TensorFile::read(path)?;
    let model = Lsa::from_file(&f, Some(e))?;
    match model.layers() {
        [head] => Ok((head.clone(), f.sha256.clone())),
        layers => Err(HarnessError::BadInput(format!(
            "{}: {} layers, the golden run takes one",
            path.display(),
            layers.len()
        ))),
    }
}

/// The format name of [`Lsa`] files.
pub use dualform_tensors::LSA_FORMAT;

impl Model for Lsa {
    type Net = Net;

    fn net(&self) -> &Net {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        self.layers.iter().flat_map(|h| h.mats().concat()).collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        let mut it = p.iter();
        for h in self.layers.iter_mut() {
            for s in h.mats_mut() {
                for (v, n) in s.iter_mut().zip(it.by_ref()) {
                    *v = *n;
                }
            }
        }
        for (m, h) in self.net.heads_mut().iter_mut().zip(self.layers.iter()) {
            *m = h.merged();
        }
    }

    fn pullback(&self, merged: &[Merged], out: &mut [f32]) {
        let e = self.width();
        for ((h, dm), chunk) in self.layers.iter().zip(merged).zip(out.chunks_mut(4 * e * e)) {
            let mut g = LsaHead::zeros(e);
            h.pullback(dm, &mut g);
            for (o, v) in chunk.iter_mut().zip(g.mats().concat()) {
                *o += v;
            }
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        let (l, e) = (self.layers.len(), self.width());
        LSA_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let data: Vec<f32> = self.layers.iter().flat_map(|h| row_major(e, h.mats()[i])).collect();
                let shape = if l == 1 { vec![e, e] } else { vec![l, e, e] };
                Tensor::new(*name, shape, data)
            })
            .collect()
    }

    fn meta(&self) -> BTreeMap<String, String> {
        let u = self.net.update();
        let schedule: Vec<String> = self.net.schedule().iter().map(|k| k.to_string()).collect();
        BTreeMap::from([
            ("format".to_string(), LSA_FORMAT.to_string()),
            ("layers".to_string(), self.layers.len().to_string()),
            ("applications".to_string(), self.net.applications().to_string()),
            ("schedule".to_string(), schedule.join(",")),
            ("damping".to_string(), u.scale.to_string()),
            ("first".to_string(), u.first.to_string()),
            ("clip".to_string(), u.clip.map_or("none".to_string(), |c| c.to_string())),
        ])
    }
}
