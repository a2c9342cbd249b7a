//! Models the harness trains, fits and compares: a parameterisation of a [`Net`].
//!
//! A [`Model`] exposes its parameters as one flat `f32` vector (what Adam, clipping and the least-squares fitter
//! work on), maps the per-head merged gradients `(dL/dA, dL/dB)` of its net back to that vector ([`Model::pullback`],
//! the chain rule written once per parameterisation), and lists its tensors for saving. Two parameterisations:
//! - [`Lsa`]: full LSA weights `W_Q, W_K, W_V, P` per distinct layer (the trained models: one layer, K distinct
//!   layers, or one layer applied K times);
//! - [`GdFamily`]: the core's GD / GD++ constructions with a few free scalars (one shared rate, a rate per step,
//!   or a rate and an input-transformation `gamma` per step), the references the trained models are compared with.

use crate::net::Net;
use crate::HarnessError;
use dualform::nalgebra::SMatrix;
use dualform::{gd_layer, gdpp_layer, Head, MergedHead, Update};
use dualform_tensors::Tensor;
use rand_distr::{Distribution, StandardNormal};
use std::collections::BTreeMap;

/// A trainable or fittable parameterisation of a [`Net`].
pub trait Model<const E: usize>: Clone + Send + Sync + 'static {
    /// The forward structure with the current parameters.
    fn net(&self) -> &Net<E>;
    /// The parameters, flat, in the model's fixed order.
    fn params(&self) -> Vec<f32>;
    /// Sets the parameters (a slice as long as [`Model::params`]; extra values are ignored, missing ones keep
    /// their value) and rebuilds the net.
    fn set_params(&mut self, p: &[f32]);
    /// Adds into `out` (as long as [`Model::params`]) the gradient of the parameters given the gradients of the
    /// net's merged heads.
    fn pullback(&self, merged: &[MergedHead<f32, E>], out: &mut [f32]);
    /// The tensors that describe the model, for saving.
    fn tensors(&self) -> Vec<Tensor>;
    /// Facts a reader of the saved file needs (merged into the file's metadata).
    fn meta(&self) -> BTreeMap<String, String>;
}

/// One LSA head with key and value size E: `W_Q, W_K, W_V, P`.
pub type LsaHead<const E: usize> = Head<f32, E, E, E>;

/// The tensor names of an LSA layer, in the order of the flat parameters.
pub const LSA_NAMES: [&str; 4] = ["w_q", "w_k", "w_v", "p"];

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
fn row_major<const E: usize>(col_major: &[f32]) -> Vec<f32> {
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
        f.expect_format(LSA_FORMAT)?;
        let bad = |key: &str, v: &str| HarnessError::BadInput(format!("{}: {key}: bad value {v:?}", f.path.display()));
        let get = |key: &str| f.meta.get(key).map(String::as_str);
        let num = |key: &str, default: usize| -> Result<usize, HarnessError> {
            get(key).map_or(Ok(default), |v| v.parse().map_err(|_| bad(key, v)))
        };
        let layers = num("layers", 1)?;
        let applications = num("applications", layers)?;
        let schedule: Vec<usize> = match get("schedule") {
            Some(s) => {
                s.split(',').map(|v| v.trim().parse().map_err(|_| bad("schedule", s))).collect::<Result<_, _>>()?
            }
            None => (0..applications).map(|k| k % layers.max(1)).collect(),
        };
        let update = Update {
            scale: get("damping").map_or(Ok(1.0), |v| v.parse().map_err(|_| bad("damping", v)))?,
            first: num("first", 0)?,
            clip: match get("clip") {
                None | Some("none") => None,
                Some(c) => Some(c.parse().map_err(|_| bad("clip", c))?),
            },
        };
        if !(1..=64).contains(&layers) {
            return Err(HarnessError::BadInput(format!(
                "{}: layers: {layers} is out of range 1..=64",
                f.path.display()
            )));
        }
        let mut heads = vec![Head::zeros(); layers];
        for (i, name) in LSA_NAMES.iter().enumerate() {
            let shape: Vec<usize> = if layers == 1 { vec![E, E] } else { vec![layers, E, E] };
            let v = f.values(name, &shape)?;
            for (l, h) in heads.iter_mut().enumerate() {
                let dst = &mut head_slices_mut(h)[i];
                for k in 0..E * E {
                    dst[(k % E) * E + k / E] = v[l * E * E + k];
                }
            }
        }
        Self::new(heads, schedule, update).map_err(|e| HarnessError::BadInput(format!("{}: {e}", f.path.display())))
    }
}

/// The format name of [`Lsa`] files.
pub const LSA_FORMAT: &str = "dualform-lsa-v1";

impl<const E: usize> Model<E> for Lsa<E> {
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

/// Which scalars of the GD construction are free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GdKind {
    /// K steps of plain GD with one shared rate.
    SharedRate,
    /// K steps of plain GD, a rate per step.
    PerStep,
    /// K steps of GD++ (von Oswald et al.): a rate and an input transformation `gamma` per step.
    PlusPlus,
    /// One GD++ step applied K times: a shared rate and a shared `gamma`.
    PlusPlusShared,
}

/// The GD / GD++ constructions of the core (from `W0 = 0`, over N context pairs) with free rates `eta` and, for
/// GD++, free `gamma`: the few-parameter references. In merged form each step's head is
/// `A = [[I, 0], [0, 0]]`, `B = [[-gamma I, 0], [0, -eta / N]]` (gamma = 0 for plain GD).
#[derive(Clone, Debug, PartialEq)]
pub struct GdFamily<const D: usize, const E: usize> {
    kind: GdKind,
    n: usize,
    etas: Vec<f32>,
    gammas: Vec<f32>,
    net: Net<E>,
}

impl<const D: usize, const E: usize> GdFamily<D, E> {
    /// `steps` steps of kind `kind` over `n` pairs, every rate `eta` and every `gamma` 0.
    pub fn new(kind: GdKind, steps: usize, n: usize, eta: f32) -> Result<Self, HarnessError> {
        if steps == 0 || n == 0 {
            return Err(HarnessError::Usage("a GD reference needs at least one step and one context pair".into()));
        }
        let distinct = match kind {
            GdKind::SharedRate | GdKind::PlusPlusShared => 1,
            GdKind::PerStep | GdKind::PlusPlus => steps,
        };
        let schedule = (0..steps).map(|k| k % distinct).collect();
        let gammas = match kind {
            GdKind::PlusPlus | GdKind::PlusPlusShared => vec![0.0; distinct],
            _ => vec![],
        };
        let heads = vec![MergedHead::zeros(); distinct];
        let net = Net::new(heads, schedule, Update::residual())?;
        let mut m = Self { kind, n, etas: vec![eta; distinct], gammas, net };
        m.rebuild()?;
        Ok(m)
    }

    /// The kind.
    pub fn kind(&self) -> GdKind {
        self.kind
    }

    /// The rate of each distinct step.
    pub fn etas(&self) -> &[f32] {
        &self.etas
    }

    /// The `gamma` of each distinct step (empty for plain GD).
    pub fn gammas(&self) -> &[f32] {
        &self.gammas
    }

    /// Sets the rates (and gammas) from a template: all rates `eta`, gammas kept.
    pub fn with_etas(mut self, etas: &[f32]) -> Result<Self, HarnessError> {
        for (d, s) in self.etas.iter_mut().zip(etas) {
            *d = *s;
        }
        self.rebuild()?;
        Ok(self)
    }

    fn rebuild(&mut self) -> Result<(), HarnessError> {
        let w0 = SMatrix::<f32, 1, D>::zeros();
        for (k, m) in self.net.heads_mut().iter_mut().enumerate() {
            let eta = self.etas[k];
            let layer = match self.gammas.get(k) {
                Some(&gamma) => gdpp_layer::<f32, D, 1, E>(&w0, eta, gamma, self.n)?,
                None => gd_layer::<f32, D, 1, E>(&w0, eta, self.n)?,
            };
            *m = MergedHead::from_head(&layer.heads[0]);
        }
        Ok(())
    }
}

impl<const D: usize, const E: usize> Model<E> for GdFamily<D, E> {
    fn net(&self) -> &Net<E> {
        &self.net
    }

    fn params(&self) -> Vec<f32> {
        self.etas.iter().chain(self.gammas.iter()).copied().collect()
    }

    fn set_params(&mut self, p: &[f32]) {
        let k = self.etas.len();
        for (d, s) in self.etas.iter_mut().zip(p) {
            *d = *s;
        }
        for (d, s) in self.gammas.iter_mut().zip(p.iter().skip(k)) {
            *d = *s;
        }
        // Non-finite parameters give non-finite heads (and losses) rather than an error here.
        if self.rebuild().is_err() {
            for m in self.net.heads_mut() {
                m.b = m.b.map(|_| f32::NAN);
            }
        }
    }

    /// `B[(D, D)] = -eta / N` and `B[(i, i)] = -gamma` for `i < D`: `dL/deta = -dB[(D, D)] / N`,
    /// `dL/dgamma = -sum_i dB[(i, i)]`.
    fn pullback(&self, merged: &[MergedHead<f32, E>], out: &mut [f32]) {
        let k = self.etas.len();
        let inv_n = 1.0 / self.n as f32;
        for (i, dm) in merged.iter().enumerate().take(k) {
            if let Some(o) = out.get_mut(i) {
                *o -= dm.b[(D, D)] * inv_n;
            }
            if !self.gammas.is_empty() {
                if let Some(o) = out.get_mut(k + i) {
                    *o -= (0..D).map(|j| dm.b[(j, j)]).sum::<f32>();
                }
            }
        }
    }

    fn tensors(&self) -> Vec<Tensor> {
        let mut t = vec![Tensor::new("eta", vec![self.etas.len()], self.etas.clone())];
        if !self.gammas.is_empty() {
            t.push(Tensor::new("gamma", vec![self.gammas.len()], self.gammas.clone()));
        }
        t
    }

    fn meta(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("format".to_string(), "dualform-gd-v1".to_string()),
            ("kind".to_string(), format!("{:?}", self.kind)),
            ("steps".to_string(), self.net.applications().to_string()),
        ])
    }
}

/// Writes `model` to `path` with its own metadata plus `extra` (for example `d`, `n`, what the model is).
pub fn save<const E: usize, M: Model<E>>(
    model: &M,
    extra: &[(&str, String)],
    path: &std::path::Path,
) -> Result<(), HarnessError> {
    let mut meta = model.meta();
    for (k, v) in extra {
        meta.insert(k.to_string(), v.clone());
    }
    dualform_tensors::TensorFile::write(path, &model.tensors(), &meta)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::{stream_rng, TaskSampler};

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

    /// The pullback of every model against central differences of the mean loss over a few tasks (f32, so a loose
    /// bound, but a wrong chain rule is off by far more).
    fn check_pullback<const E: usize, M: Model<E>>(mut m: M, label: &str) {
        let sampler = TaskSampler::new(E - 1, 6, 1.0);
        let tasks = sampler.par_chunks::<E, Vec<(Vec<[f32; E]>, [f32; E], f32)>>(9, 0, 16, Vec::new, |acc, c, q, y| {
            acc.push((c.to_vec(), *q, y))
        });
        let tasks: Vec<_> = tasks.into_iter().flatten().collect();
        let loss = |m: &M| -> f64 {
            let mut ws = m.net().workspace(6);
            tasks.iter().map(|(c, q, y)| 0.5 * ((m.net().predict(c, q, &mut ws, None) - y) as f64).powi(2)).sum()
        };
        let mut merged = vec![MergedHead::zeros(); m.net().heads().len()];
        let mut ws = m.net().workspace(6);
        for (c, q, y) in &tasks {
            m.net().forward_backward(c, q, &mut ws, |yh| yh - y, Some(&mut merged));
        }
        let p = m.params();
        let mut grad = vec![0.0f32; p.len()];
        m.pullback(&merged, &mut grad);
        let step = 1e-2f32;
        for i in (0..p.len()).step_by((p.len() / 12).max(1)) {
            let (mut plus, mut minus) = (p.clone(), p.clone());
            plus[i] += step;
            minus[i] -= step;
            m.set_params(&plus);
            let lp = loss(&m);
            m.set_params(&minus);
            let lm = loss(&m);
            let num = (lp - lm) / (2.0 * step as f64);
            assert!(
                (num - grad[i] as f64).abs() <= 0.02 * num.abs().max(1e-2),
                "{label}: parameter {i}: {} vs {num}",
                grad[i]
            );
        }
        m.set_params(&p);
    }

    #[test]
    fn every_pullback_matches_central_differences() {
        let mut rng = stream_rng(5, 0);
        let scale = |m: &mut Lsa<5>| {
            let p: Vec<f32> = m.params().iter().map(|v| v * 30.0).collect();
            m.set_params(&p);
        };
        let mut single = Lsa::<5>::init(&mut rng, 1, vec![0], Update::residual()).unwrap();
        scale(&mut single);
        check_pullback(single, "single layer");
        let mut stack = Lsa::<5>::init(&mut rng, 2, vec![0, 1], Update::residual()).unwrap();
        scale(&mut stack);
        check_pullback(stack, "two layers");
        let mut rec = Lsa::<5>::init(&mut rng, 1, vec![0, 0, 0], Update { scale: 0.75, first: 4, clip: None }).unwrap();
        scale(&mut rec);
        check_pullback(rec, "recurrent, y only, damped");
        for kind in [GdKind::SharedRate, GdKind::PerStep, GdKind::PlusPlus, GdKind::PlusPlusShared] {
            let mut m = GdFamily::<4, 5>::new(kind, 3, 6, 2.0).unwrap();
            let p: Vec<f32> =
                m.params().iter().enumerate().map(|(i, v)| if i < 3 { *v + i as f32 * 0.5 } else { 0.3 }).collect();
            m.set_params(&p);
            check_pullback(m, &format!("{kind:?}"));
        }
    }

    #[test]
    fn gd_references_predict_what_the_core_primal_gd_predicts() {
        // The merged constructions against the core's primal GD / GD++ on W and x, an independent implementation.
        let sampler = TaskSampler::new(4, 6, 1.0);
        let mut m = GdFamily::<4, 5>::new(GdKind::PlusPlus, 3, 6, 1.0).unwrap();
        m.set_params(&[2.0, 3.0, 1.5, 0.4, -0.2, 0.1]);
        let per = GdFamily::<4, 5>::new(GdKind::PerStep, 3, 6, 1.0).unwrap().with_etas(&[2.0, 3.0, 1.5]).unwrap();
        let rows = sampler.par_chunks::<5, Vec<(f32, f32, f32, f32)>>(11, 0, 20, Vec::new, |acc, c, q, _| {
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
            acc.push((per.net().predict(c, q, &mut ws2, None), gd, m.net().predict(c, q, &mut ws, None), -yq[0]));
        });
        for (per_step, gd, pp, gdpp) in rows.into_iter().flatten() {
            assert!((per_step - gd).abs() < 1e-4 * (1.0 + gd.abs()), "GD: {per_step} vs {gd}");
            assert!((pp - gdpp).abs() < 1e-4 * (1.0 + gdpp.abs()), "GD++: {pp} vs {gdpp}");
        }
    }
}
