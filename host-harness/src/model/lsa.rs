//! [`Lsa`]: trained LSA weights `W_Q, W_K, W_V, P` per distinct layer, applied in a schedule (one layer, K distinct
//! layers, or one layer applied K times), with the reference initialisation and the `dualform-lsa-v1` file format.

use super::Model;
use crate::net::{Forward, Net};
use crate::HarnessError;
use dualform::{Head, MergedHead, Update};
use dualform_tensors::{LsaFile, Tensor};
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;
use std::path::Path;

/// One LSA head with key and value size E: `W_Q, W_K, W_V, P`.
pub type LsaHead<const E: usize> = Head<f32, E, E, E>;

/// The tensor names of an LSA layer, in the order of the flat parameters.
pub use dualform_tensors::LSA_NAMES;

/// Full LSA weights per distinct layer, applied in a schedule: one layer, K distinct layers, or one layer K times.
#[derive(Clone, Debug, PartialEq)]
pub struct Lsa<const E: usize> {
    layers: Vec<LsaHead<E>>,
    net: Net<E>,
}

fn head_slices<const E: usize>(h: &LsaHead<E>) -> [&[f32]; 4] {
    [h.w_q.as_slice(), h.w_k.as_slice(), h.w_v.as_slice(), h.p.as_slice()]
}

fn head_slices_mut<const E: usize>(h: &mut LsaHead<E>) -> [&mut [f32]; 4] {
    let Head { w_q, w_k, w_v, p } = h;
    [w_q.as_mut_slice(), w_k.as_mut_slice(), w_v.as_mut_slice(), p.as_mut_slice()]
}

/// Row-major values of a column-major E x E matrix.
pub(crate) fn row_major<const E: usize>(col_major: &[f32]) -> Vec<f32> {
    (0..E * E).map(|k| col_major[(k % E) * E + k / E]).collect()
}

impl<const E: usize> Lsa<E> {
    /// `layers` applied in `schedule` order with `update`.
    pub fn new(layers: Vec<LsaHead<E>>, schedule: Vec<usize>, update: Update<f32>) -> Result<Self, HarnessError> {
        let heads = layers.iter().map(MergedHead::from_head).collect();
        let net = Net::new(heads, schedule, update)?;
        Ok(Self { layers, net })
    }

    /// One layer, applied once with the plain residual rule.
    pub fn single(head: LsaHead<E>) -> Self {
        let net = Net::single(MergedHead::from_head(&head));
        Self { layers: vec![head], net }
    }

    /// The reference initialisation (shared/DESIGN.md): `layers` distinct layers applied in `schedule`, every entry
    /// a truncated normal (two standard deviations) with variance scaling `0.002 / applications`, fan-in E, the
    /// standard deviation corrected for the truncation as the reference code does (`sqrt(scale / E) / 0.8796`,
    /// about 0.0153 per entry for one layer at E = 11).
    pub fn init(
        rng: &mut impl rand::Rng,
        layers: usize,
        schedule: Vec<usize>,
        update: Update<f32>,
    ) -> Result<Self, HarnessError> {
        let std = (0.002 / schedule.len().max(1) as f64 / E as f64).sqrt() / 0.879_625_661_034_239_8;
        let mut heads = vec![Head::zeros(); layers];
        for h in heads.iter_mut() {
            for s in head_slices_mut(h) {
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
    pub fn layers(&self) -> &[LsaHead<E>] {
        &self.layers
    }

    /// Reads a model written by [`save`](crate::model::save) of an [`Lsa`] (format `dualform-lsa-v1`): tensors
    /// `w_q, w_k, w_v, p` of shape `[E, E]` (one layer) or `[L, E, E]`, and the schedule and rule from the metadata.
    /// Metadata a file does not have takes the single layer's values: one layer, applied once per layer in order,
    /// plain residual update.
    pub fn from_file(f: &dualform_tensors::TensorFile) -> Result<Self, HarnessError> {
        let file = LsaFile::from_file(f)?;
        if file.e != E {
            let shape = f.tensor("w_q").map(|t| t.shape.clone()).unwrap_or_default();
            let want: Vec<usize> = if file.layers.len() == 1 { vec![E, E] } else { vec![file.layers.len(), E, E] };
            return Err(HarnessError::BadInput(format!(
                "{}: w_q: shape {shape:?}, expected {want:?} (E = {}, this command takes E = {E})",
                f.path.display(),
                file.e
            )));
        }
        let mut heads = vec![Head::zeros(); file.layers.len()];
        for (h, mats) in heads.iter_mut().zip(&file.layers) {
            for (dst, v) in head_slices_mut(h).into_iter().zip(mats) {
                for (k, &x) in v.iter().enumerate() {
                    dst[(k % E) * E + k / E] = x;
                }
            }
        }
        let update = Update { scale: file.damping, first: file.first, clip: file.clip };
        Self::new(heads, file.schedule, update)
            .map_err(|e| HarnessError::BadInput(format!("{}: {e}", f.path.display())))
    }
}

/// A single-layer weight file's one head, validated by the shared loader.
pub fn load_head<const E: usize>(path: &Path) -> Result<(LsaHead<E>, String), HarnessError> {
    let f = dualform_tensors::TensorFile::read(path)?;
    let model = Lsa::<E>::from_file(&f)?;
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

impl<const E: usize> Model<E> for Lsa<E> {
    type Net = Net<E>;

    fn net(&self) -> &Net<E> {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        self.layers.iter().flat_map(|h| head_slices(h).concat()).collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        let mut it = p.iter();
        for h in self.layers.iter_mut() {
            for s in head_slices_mut(h) {
                for (v, n) in s.iter_mut().zip(it.by_ref()) {
                    *v = *n;
                }
            }
        }
        for (m, h) in self.net.heads_mut().iter_mut().zip(self.layers.iter()) {
            *m = MergedHead::from_head(h);
        }
    }

    fn pullback(&self, merged: &[MergedHead<f32, E>], out: &mut [f32]) {
        for ((h, dm), chunk) in self.layers.iter().zip(merged).zip(out.chunks_mut(4 * E * E)) {
            let mut g = Head::zeros();
            MergedHead::pullback(h, dm, &mut g);
            for (o, v) in chunk.iter_mut().zip(head_slices(&g).concat()) {
                *o += v;
            }
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        let l = self.layers.len();
        LSA_NAMES
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let data: Vec<f32> = self.layers.iter().flat_map(|h| row_major::<E>(head_slices(h)[i])).collect();
                let shape = if l == 1 { vec![E, E] } else { vec![l, E, E] };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::save;
    use crate::tasks::stream_rng;

    #[test]
    fn lsa_files_round_trip_bit_for_bit_and_keep_the_single_layer_layout() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = stream_rng(3, 0);
        for (layers, schedule, upd) in [
            (1, vec![0], Update::residual()),
            (3, vec![0, 1, 2], Update { scale: 1.0, first: 0, clip: Some(10.0) }),
            (1, vec![0; 4], Update { scale: 0.75, first: 4, clip: None }),
        ] {
            let m = Lsa::<5>::init(&mut rng, layers, schedule, upd).unwrap();
            let path = dir.path().join("w.safetensors");
            save(&m, &[("d", "4".into())], &path).unwrap();
            let f = dualform_tensors::TensorFile::read(&path).unwrap();
            let back = Lsa::<5>::from_file(&f).unwrap();
            assert_eq!(
                back.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                m.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            assert_eq!(back.net(), m.net());
            if layers == 1 {
                // Row-major [E, E]: entry (0, 1) of W_Q is the second value.
                assert_eq!(f.values("w_q", &[5, 5]).unwrap()[1], m.layers()[0].w_q[(0, 1)]);
            }
        }
    }

    #[test]
    fn init_has_the_reference_scale() {
        let mut rng = stream_rng(4, 0);
        let m = Lsa::<11>::init(&mut rng, 1, vec![0], Update::residual()).unwrap();
        let all = m.params();
        let std = (all.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
        // Truncation at 2 sigma shrinks the corrected std back to about sqrt(0.002 / 11) = 0.0135.
        assert!((std - 0.0135).abs() < 0.0015, "std {std}");
        assert!(all.iter().all(|v| v.abs() <= 2.0 * 0.0154));
    }
}
