//! [`GdFamily`]: the core's GD and GD++ constructions with a few free scalars (one shared rate, a rate per step, or a
//! rate and an input transformation per step): the references the trained models are compared with.

use super::{LsaHead, Model};
use crate::net::{Forward, Merged, Net};
use crate::HarnessError;
use dualform::{gd_head_into, Update};
use dualform_tensors::Tensor;
use std::collections::BTreeMap;

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
pub struct GdFamily {
    d: usize,
    kind: GdKind,
    n: usize,
    etas: Vec<f32>,
    gammas: Vec<f32>,
    net: Net,
}

impl GdFamily {
    /// `steps` steps of kind `kind` over `n` pairs of `d` inputs, every rate `eta` and every `gamma` 0.
    pub fn new(d: usize, kind: GdKind, steps: usize, n: usize, eta: f32) -> Result<Self, HarnessError> {
        if d == 0 {
            return Err(HarnessError::Usage("a GD reference needs at least one input".into()));
        }
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
        let heads = vec![Merged::zeros(d + 1); distinct];
        let net = Net::new(heads, schedule, Update::residual())?;
        let mut m = Self { d, kind, n, etas: vec![eta; distinct], gammas, net };
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
        let (d, w0) = (self.d, vec![0.0f32; self.d]);
        let mut head = LsaHead::zeros(d + 1);
        for (k, m) in self.net.heads_mut().iter_mut().enumerate() {
            gd_head_into(d, 1, &w0, self.etas[k], self.gammas.get(k).copied(), self.n, head.mats_mut())?;
            *m = head.merged();
        }
        Ok(())
    }
}

impl Model for GdFamily {
    type Net = Net;

    fn net(&self) -> &Net {
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
                m.b.fill(f32::NAN);
            }
        }
    }

    /// `B[(d, d)] = -eta / N` and `B[(i, i)] = -gamma` for `i < d`: `dL/deta = -dB[(d, d)] / N`,
    /// `dL/dgamma = -sum_i dB[(i, i)]`.
    fn pullback(&self, merged: &[Merged], out: &mut [f32]) {
        let (k, d, e) = (self.etas.len(), self.d, self.d + 1);
        let inv_n = 1.0 / self.n as f32;
        for (i, dm) in merged.iter().enumerate().take(k) {
            if let Some(o) = out.get_mut(i) {
                *o -= dm.b[d * e + d] * inv_n;
            }
            if !self.gammas.is_empty() {
                if let Some(o) = out.get_mut(k + i) {
                    *o -= (0..d).map(|j| dm.b[j * e + j]).sum::<f32>();
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
