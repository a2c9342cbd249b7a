//! Seeded in-context regression tasks, and the closed-form optimum of one GD step on them.
//!
//! A task: `w ~ N(0, s^2 I_d)` (s = `weight_scale`, 1 in the reference), inputs with independent coordinates
//! `x_i = mu + c_i u_i`, `u_i ~ U(-r/2, r/2)` (r = `input_range`; the scales `c_i` are 1 and the mean `mu` 0 in the
//! reference), targets `y = w . x + sigma z`, `z ~ N(0, 1)` (label noise `sigma`, 0 in the reference); N context
//! tokens `(x_j, y_j)` and a query `(x_q, 0)` whose target is `y_q` (noisy like the context's).
//!
//! Determinism: tasks come in chunks of [`CHUNK`]; chunk `c` of a batch draws from its own Xoshiro256++ stream seeded
//! from `(seed, stream id)`, so a batch is the same whatever the number of threads, and reductions over chunks run
//! in chunk order. [`TaskSampler::par_groups`] draws up to four chunks side by side, their generators stepped
//! together on the vector unit (`lockstep`), with the numbers and tasks of one chunk at a time. Which stream ids a
//! run uses for what is decided in one place, [`streams`].

use dualform::linalg::dot_slice;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;

mod closed_form;
mod lockstep;
mod parallel;
mod ziggurat;
pub use closed_form::ClosedForm;
pub use lockstep::{Lane, Xoshiro4, STREAMS};
pub use parallel::Pool;

/// Tasks per random stream and per parallel work unit.
pub const CHUNK: usize = 64;

/// Consecutive tasks of one chunk ([`TaskSampler::par_groups`]), stored one after another: task `t`'s context
/// (N tokens of width E) at `t * N * E..`, its query at `t * E..`, its label `y[t]`. Only the first `count` are
/// tasks of this group (the buffers keep the group's full size).
#[derive(Clone, Debug)]
pub struct Group {
    /// Tasks in the group.
    pub count: usize,
    /// Contexts, task after task.
    pub ctx: Vec<f32>,
    /// Queries, task after task.
    pub query: Vec<f32>,
    /// Labels.
    pub y: Vec<f32>,
    n: usize,
    e: usize,
}

impl Group {
    /// Room for `size` tasks of `n` pairs of width `e`, every value zero, no task yet (`count` 0).
    pub fn zeros(n: usize, e: usize, size: usize) -> Self {
        Group { count: 0, ctx: vec![0.0; size * n * e], query: vec![0.0; size * e], y: vec![0.0; size], n, e }
    }

    /// Context pairs N and token width E.
    pub fn shape(&self) -> (usize, usize) {
        (self.n, self.e)
    }

    /// Task `t`: context, query, label (empty slices and NaN past the buffers).
    pub fn task(&self, t: usize) -> (&[f32], &[f32], f32) {
        let (ne, e) = (self.n * self.e, self.e);
        let ctx = self.ctx.get(t * ne..(t + 1) * ne).unwrap_or_default();
        let query = self.query.get(t * e..(t + 1) * e).unwrap_or_default();
        (ctx, query, self.y.get(t).copied().unwrap_or(f32::NAN))
    }
}

/// The stream ids of a run. Two seeds: the training seed (initial weights, training batches) and the evaluation seed
/// (held-out tasks, tuning tasks, curve probes), with disjoint stream ranges inside each.
pub mod streams {
    use super::CHUNK;

    /// Evaluation seed: the held-out tasks every reported figure is measured on.
    pub const EVAL: u64 = 0;
    /// Evaluation seed: the tasks references are tuned or fitted on (never the held-out ones).
    pub const TUNE: u64 = 1 << 40;
    /// Evaluation seed: the tasks the training curves are logged on.
    pub const PROBE: u64 = 2 << 40;
    /// Evaluation seed: the tasks a fitted reference is validated on (early stopping, choice among starts).
    pub const VALIDATE: u64 = 3 << 40;
    /// Training seed: the initial weights (training batches never reach it).
    pub const INIT: u64 = u64::MAX;

    /// Training seed: the first stream of the batch of `step` (0-based) when batches hold `batch` tasks.
    pub fn batch(step: u64, batch: usize) -> u64 {
        step * batch.div_ceil(CHUNK) as u64
    }
}

/// Two uniform values in [-0.5, 0.5) from 64 random bits: 23 bits each, placed in the mantissa of a float in
/// [1, 2) (exact, no rounding), minus 1.5.
#[inline(always)]
pub fn uniform_pair(bits: u64) -> (f32, f32) {
    let lo = f32::from_bits(0x3F80_0000 | ((bits as u32) >> 9)) - 1.5;
    let hi = f32::from_bits(0x3F80_0000 | ((bits >> 41) as u32)) - 1.5;
    (lo, hi)
}

/// A sine task's amplitude `a ~ U(0.1, 5)` and phase `b ~ U(0, pi)` from 64 random bits, 23 independent bits each
/// ([`uniform_pair`]).
pub fn sine_parameters(bits: u64) -> (f32, f32) {
    let (u, v) = uniform_pair(bits);
    (0.1 + 4.9 * (u + 0.5), core::f32::consts::PI * (v + 0.5))
}

/// The generator of stream `stream` under `seed` (seeds mixed by SplitMix64 so nearby seeds are unrelated).
pub fn stream_rng(seed: u64, stream: u64) -> Xoshiro256PlusPlus {
    let mut mix = dualform::rng::SplitMix64::new(seed ^ stream.wrapping_mul(0xD1B5_4A32_D192_ED03));
    Xoshiro256PlusPlus::seed_from_u64(mix.next_u64())
}

/// The task distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskSampler {
    /// Input dimension d.
    pub d: usize,
    /// Context pairs N.
    pub n: usize,
    /// Width r of the input interval (-r/2, r/2).
    pub input_range: f32,
    /// Standard deviation of the task weights `w`.
    pub weight_scale: f32,
    /// Per-coordinate scale `c_i` of the inputs (standard deviation relative to the isotropic one; the first `d`
    /// entries are used).
    pub scales: [f32; MAX_D],
    /// Mean `mu` of every input coordinate.
    pub mean: f32,
    /// Standard deviation `sigma` of the label noise.
    pub noise: f32,
    /// The last `hidden` context pairs come without their labels (`y` set to 0 in the token): a prompt of inputs
    /// the query sees besides the demonstrations (0 in the reference).
    pub hidden: usize,
    /// `w` is one of `pool` fixed task vectors, chosen uniformly per task (0 in the reference: `w` drawn afresh).
    pub pool: usize,
    /// The seed the pool's vectors are drawn from (vector `m` from stream `m`; unused without a pool).
    pub pool_seed: u64,
    /// The target function family.
    pub family: Family,
}

/// What a task's targets are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `y = w . x` (plus noise).
    Linear,
    /// `y = a sin(x_1 + b)` (plus noise) with amplitude `a ~ U(0.1, 5)` and phase `b ~ U(0, pi)` drawn independently
    /// per task (d = 1 in use; the other coordinates are ignored).
    Sine,
    /// Associative recall: N pairs of a key (d standard normals scaled to unit length) and a value `y ~ N(0, 1)`;
    /// the query is the key of a uniformly chosen pair and its target that pair's value. The input range, weight
    /// scale, shape and noise do not apply.
    Recall,
}

/// The largest input dimension a sampler supports.
pub const MAX_D: usize = 256;

impl TaskSampler {
    /// The reference distribution with `d` inputs, `n` pairs and input range `input_range` (weight scale 1,
    /// isotropic, zero mean, noiseless).
    pub fn new(d: usize, n: usize, input_range: f32) -> Self {
        Self {
            d,
            n,
            input_range,
            weight_scale: 1.0,
            scales: [1.0; MAX_D],
            mean: 0.0,
            noise: 0.0,
            hidden: 0,
            pool: 0,
            pool_seed: 0,
            family: Family::Linear,
        }
    }

    /// Whether every input coordinate has the same scale.
    pub fn isotropic(&self) -> bool {
        self.scales[..self.d].iter().all(|&c| c == 1.0)
    }

    /// The variance of input coordinate `i` about its mean: `(r c_i)^2 / 12`.
    pub fn variance(&self, i: usize) -> f64 {
        (self.input_range as f64 * self.scales[i] as f64).powi(2) / 12.0
    }
}

/// Input scales whose variances fall geometrically from the largest to the smallest by `ratio`, normalised so that
/// the mean variance is the isotropic one (the trace of the covariance is unchanged): `c_i^2 ∝ ratio^(-i/(d-1))`.
pub fn geometric_scales(d: usize, ratio: f64) -> Vec<f64> {
    if d <= 1 {
        return vec![1.0; d];
    }
    let v: Vec<f64> = (0..d).map(|i| ratio.powf(-(i as f64) / (d as f64 - 1.0))).collect();
    let mean = v.iter().sum::<f64>() / d as f64;
    v.iter().map(|x| (x / mean).sqrt()).collect()
}

impl TaskSampler {
    /// The token width `E = d + 1` (inputs, then the scalar target).
    pub fn width(&self) -> usize {
        self.d + 1
    }

    /// The task vector `w` of a task into `w` (its first d entries; the rest are left at 0): d standard normals
    /// (ziggurat) times the weight scale, from `rng`, or with a pool, the vector of a uniformly chosen index (one
    /// draw from `rng`) from that index's own stream.
    pub fn task_vector<R: Rng + ?Sized>(&self, rng: &mut R, w: &mut [f32]) {
        w.fill(0.0);
        if self.pool == 0 {
            self.normals_into(rng, w);
        } else {
            self.normals_into(&mut stream_rng(self.pool_seed, rng.next_u64() % self.pool as u64), w);
        }
    }

    fn normals_into<R: Rng + ?Sized>(&self, rng: &mut R, w: &mut [f32]) {
        for wi in w.iter_mut().take(self.d) {
            let z: f32 = StandardNormal.sample(rng);
            *wi = if self.weight_scale == 1.0 { z } else { z * self.weight_scale };
        }
    }

    /// Draws one task into `ctx` (its N tokens of width `E = d + 1`, token `j` at `j * E..`) and `query` (E values,
    /// the query token `(x_q, 0)`), and returns `y_q`. `w` is E values of scratch (the task vector). The task comes
    /// first (`w`, from the pool if there is one; for sine tasks, amplitude and phase from one draw of 64 bits,
    /// [`sine_parameters`]), then the inputs token by token, two per 64 random bits ([`uniform_pair`]); the labels of
    /// the last `hidden` context tokens are drawn and then set to 0.
    pub fn sample_into<R: Rng + ?Sized>(&self, rng: &mut R, ctx: &mut [f32], query: &mut [f32], w: &mut [f32]) -> f32 {
        let e = self.width();
        let sine = match self.family {
            Family::Linear => {
                self.task_vector(rng, w);
                None
            }
            Family::Sine => {
                w.fill(0.0);
                Some(sine_parameters(rng.next_u64()))
            }
            Family::Recall => return self.recall(rng, ctx, query),
        };
        let range = self.input_range;
        let shaped = !self.isotropic() || self.mean != 0.0;
        let mut draw = |token: &mut [f32]| {
            let mut pairs = token[..self.d].chunks_exact_mut(2);
            for pair in &mut pairs {
                let (u, v) = uniform_pair(rng.next_u64());
                pair[0] = u * range;
                pair[1] = v * range;
            }
            if let [last] = pairs.into_remainder() {
                *last = uniform_pair(rng.next_u64()).0 * range;
            }
            if shaped {
                for (x, c) in token[..self.d].iter_mut().zip(&self.scales) {
                    *x = *x * c + self.mean;
                }
            }
            token[e - 1] = 0.0;
            let y = match sine {
                None => dot_slice(w, token),
                Some((a, b)) => a * (token[0] + b).sin(),
            };
            if self.noise == 0.0 {
                y
            } else {
                let z: f32 = StandardNormal.sample(rng);
                y + self.noise * z
            }
        };
        let labelled = (ctx.len() / e).saturating_sub(self.hidden);
        for (j, tok) in ctx.chunks_exact_mut(e).enumerate() {
            let y = draw(tok);
            tok[e - 1] = if j < labelled { y } else { 0.0 };
        }
        draw(query)
    }

    /// [`TaskSampler::sample_into`] for tokens of a width fixed at compile time (`E = d + 1`): fills `ctx` and
    /// returns the query token and `y_q`.
    pub fn sample<const E: usize>(&self, rng: &mut Xoshiro256PlusPlus, ctx: &mut [[f32; E]]) -> ([f32; E], f32) {
        let (mut query, mut w) = ([0.0f32; E], [0.0f32; E]);
        let y = self.sample_into(rng, ctx.as_flattened_mut(), &mut query, &mut w);
        (query, y)
    }

    /// An associative-recall task ([`Family::Recall`]): every pair's key then value, in order, then the index of
    /// the queried pair (one draw of 64 bits, modulo N).
    fn recall<R: Rng + ?Sized>(&self, rng: &mut R, ctx: &mut [f32], query: &mut [f32]) -> f32 {
        let e = self.width();
        for tok in ctx.chunks_exact_mut(e) {
            tok.fill(0.0);
            let mut norm = 0.0f32;
            for k in tok[..self.d].iter_mut() {
                *k = StandardNormal.sample(rng);
                norm += *k * *k;
            }
            let scale = if norm > 0.0 { norm.sqrt().recip() } else { 0.0 };
            for k in tok[..self.d].iter_mut() {
                *k *= scale;
            }
            tok[e - 1] = StandardNormal.sample(rng);
        }
        query.fill(0.0);
        let n = ctx.len() / e;
        if n == 0 {
            return 0.0;
        }
        let j = (rng.next_u64() % n as u64) as usize;
        query.copy_from_slice(&ctx[j * e..(j + 1) * e]);
        let y = query[e - 1];
        query[e - 1] = 0.0;
        y
    }
}
