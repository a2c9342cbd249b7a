//! Four chunks' tasks drawn side by side, the same tasks as one chunk at a time.
//!
//! Each chunk of a batch has its own xoshiro256++ stream ([`super::stream_rng`]), so one chunk's draws form a serial
//! chain. [`TaskSampler::par_groups`] takes the chunks [`STREAMS`] at a time and steps their generators together
//! ([`Xoshiro4`]: word `k` of every stream in one array, so that one step of all four is a few vector
//! instructions); the inputs of task `t` of each chunk are drawn in the same step, converted lane by lane and their
//! labels summed lane by lane in the order of [`dualform::linalg::dot_slice`]. What does not run in step (the task
//! vectors' normals, whose rejection sampling takes a varying number of draws, label noise, sine phases,
//! associative-recall tasks) draws from one lane at a time ([`Lane`]), which advances that stream alone. Every
//! stream therefore gives out the same numbers in the same order as [`TaskSampler::sample_into`] called task by
//! task on it, and every task has the same bits (the tests compare the two).

mod tokens;

use super::{sine_parameters, uniform_pair, Family, Group, TaskSampler};
use crate::net::simd::{self, Simd};
use rand::rand_core::utils::fill_bytes_via_next_word;
use rand::TryRng;
use rand_distr::{Distribution, StandardNormal};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::convert::Infallible;

/// Streams (chunks) drawn side by side.
pub const STREAMS: usize = 4;

/// [`STREAMS`] xoshiro256++ generators stepped together: word `k` of stream `l` is `s[k][l]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Xoshiro4 {
    s: [[u64; STREAMS]; 4],
}

impl Xoshiro4 {
    /// The four generators' current states side by side.
    pub fn new(rngs: &[Xoshiro256PlusPlus; STREAMS]) -> Self {
        let mut s = [[0; STREAMS]; 4];
        for (l, rng) in rngs.iter().enumerate() {
            let state = rng.state();
            for (k, word) in state.as_chunks::<8>().0.iter().enumerate() {
                s[k][l] = u64::from_le_bytes(*word);
            }
        }
        Self { s }
    }

    /// Stream `l`'s generator as it stands now.
    pub fn stream(&self, l: usize) -> Xoshiro256PlusPlus {
        use rand::SeedableRng;
        let mut seed = [0u8; 32];
        for (k, word) in seed.as_chunks_mut::<8>().0.iter_mut().enumerate() {
            *word = self.s[k][l].to_le_bytes();
        }
        Xoshiro256PlusPlus::from_seed(seed)
    }

    /// The next 64 bits of every stream (xoshiro256++, as `Xoshiro256PlusPlus::next_u64`).
    pub fn next_u64s(&mut self) -> [u64; STREAMS] {
        let mut out = [[0u64; STREAMS]];
        self.fill(Simd::Portable, &mut out);
        out[0]
    }

    /// The next `out.len()` steps of every stream into `out`, on `simd`'s registers (the same numbers on every unit).
    pub fn fill(&mut self, simd: Simd, out: &mut [[u64; STREAMS]]) {
        simd::xoshiro4(simd, &mut self.s, out);
    }

    /// Stream `l` put back where it stood in `earlier` (the other streams as they are).
    pub(super) fn put_back(&mut self, l: usize, earlier: &Xoshiro4) {
        for (word, old) in self.s.iter_mut().zip(&earlier.s) {
            if let (Some(w), Some(&o)) = (word.get_mut(l), old.get(l)) {
                *w = o;
            }
        }
    }

    /// Stream `l` alone, as a generator the `rand` distributions can draw from.
    pub fn lane(&mut self, l: usize) -> Lane<'_> {
        Lane { s: &mut self.s, l: l % STREAMS }
    }
}

/// One stream of a [`Xoshiro4`]: drawing from it advances that stream only, exactly as its own
/// `Xoshiro256PlusPlus` would (`next_u32` the high half of `next_u64`, bytes from whole words, as there).
#[derive(Debug)]
pub struct Lane<'a> {
    s: &'a mut [[u64; STREAMS]; 4],
    l: usize,
}

impl Lane<'_> {
    fn step(&mut self) -> u64 {
        let (l, s) = (self.l, &mut *self.s);
        let out = s[0][l].wrapping_add(s[3][l]).rotate_left(23).wrapping_add(s[0][l]);
        let t = s[1][l] << 17;
        s[2][l] ^= s[0][l];
        s[3][l] ^= s[1][l];
        s[1][l] ^= s[2][l];
        s[0][l] ^= s[3][l];
        s[2][l] ^= t;
        s[3][l] = s[3][l].rotate_left(45);
        out
    }
}

impl TryRng for Lane<'_> {
    type Error = Infallible;

    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.step() >> 32) as u32)
    }

    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.step())
    }

    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        fill_bytes_via_next_word(dst, || Ok(self.step()))
    }
}

/// The per-lane values of one task while its tokens are drawn: the task vectors and one token, entry `i` of lane
/// `l` at `[i][l]`.
#[derive(Clone, Debug)]
pub(super) struct Side {
    w: Vec<[f32; STREAMS]>,
    x: Vec<[f32; STREAMS]>,
    scratch: Vec<f32>,
    bits: Vec<[u64; STREAMS]>,
}

impl Side {
    /// Room for tasks of `n` pairs of width `e`.
    pub(super) fn new(n: usize, e: usize) -> Self {
        let bits = vec![[0; STREAMS]; (n + 1) * (e - 1).div_ceil(2)];
        Side { w: vec![[0.0; STREAMS]; e], x: vec![[0.0; STREAMS]; e], scratch: vec![0.0; e], bits }
    }
}

/// Tasks `0..tasks` of the [`STREAMS`] groups of a block of chunks, as work for
/// [`crate::net::simd::run_at_main_widths`]: the inputs' conversion, the label sums and the transposes compiled for
/// the chosen unit (and for tokens of width 11 apart), the generators stepped by [`simd::xoshiro4`] on it.
pub(super) struct Draw<'a> {
    pub(super) sampler: &'a TaskSampler,
    pub(super) rng: &'a mut Xoshiro4,
    pub(super) groups: &'a mut [Group],
    pub(super) side: &'a mut Side,
    pub(super) simd: Simd,
    pub(super) tasks: usize,
}

impl crate::net::simd::InLanes for Draw<'_> {
    type Out = ();

    #[inline(always)]
    fn run<const W: usize>(self) {
        let Draw { sampler, rng, groups, side, simd, tasks } = self;
        // Inputs scaled or shifted: decided once here, not once per task.
        let shaped = !sampler.isotropic() || sampler.mean != 0.0;
        for t in 0..tasks {
            sampler.sample_side_by_side::<W>(simd, rng, groups, t, side, shaped);
        }
    }
}

impl TaskSampler {
    /// Task `t` of each of the [`STREAMS`] groups, group `l` from stream `l` of `rng`: the tasks
    /// [`TaskSampler::sample_into`] would draw from each stream in turn, with the same bits. `W` is the token width
    /// when it is a constant (it must then be [`TaskSampler::width`]), 0 when it is read at run time. `shaped`: the
    /// inputs are scaled or shifted (not [`TaskSampler::isotropic`], or a mean other than 0).
    #[inline(always)]
    pub(super) fn sample_side_by_side<const W: usize>(
        &self,
        simd: Simd,
        rng: &mut Xoshiro4,
        groups: &mut [Group],
        t: usize,
        side: &mut Side,
        shaped: bool,
    ) {
        let e = if W == 0 { self.width() } else { W };
        let d = e - 1;
        let Side { w, x, scratch, bits } = side;
        // Slices of the token width, so that a constant `W` reaches every loop's length.
        let (Some(w), Some(x), Some(scratch)) = (w.get_mut(..e), x.get_mut(..e), scratch.get_mut(..e)) else {
            return;
        };
        let mut sine = [(0.0f32, 0.0f32); STREAMS];
        let n = self.n;
        // Plain task vectors of all four tasks together when all four are drawn (see `ziggurat`).
        let together = self.family == Family::Linear
            && self.pool == 0
            && groups.len() >= STREAMS
            && groups
                .iter()
                .take(STREAMS)
                .all(|g| g.ctx.len() >= (t + 1) * n * e && g.query.len() >= (t + 1) * e && g.y.len() > t)
            && super::ziggurat::normals_side_by_side(simd, rng, w, bits, d, self.weight_scale);
        for (l, group) in groups.iter_mut().enumerate().take(STREAMS) {
            let (Some(ctx), Some(query), Some(y)) = (
                group.ctx.get_mut(t * n * e..(t + 1) * n * e),
                group.query.get_mut(t * e..(t + 1) * e),
                group.y.get_mut(t),
            ) else {
                continue;
            };
            match self.family {
                Family::Recall => *y = self.sample_into(&mut rng.lane(l), ctx, query, scratch),
                Family::Linear if together => {}
                Family::Linear => {
                    self.task_vector(&mut rng.lane(l), scratch);
                    for (wi, &v) in w.iter_mut().zip(scratch.iter()) {
                        wi[l] = v;
                    }
                }
                Family::Sine => sine[l] = sine_parameters(rng.lane(l).step()),
            }
        }
        if self.family == Family::Recall {
            return;
        }
        let range = self.input_range;
        let labelled = self.n.saturating_sub(self.hidden);
        // Two inputs per 64 bits: a token's draws in one go, the whole task's when no noise is drawn between tokens.
        let per_token = d.div_ceil(2);
        let noisy = self.noise != 0.0;
        if !noisy {
            rng.fill(simd, &mut bits[..(self.n + 1) * per_token]);
            if W != 0 && self.family == Family::Linear && !shaped {
                return self.linear_tokens::<W>(w, bits, groups, t);
            }
        }
        for j in 0..=self.n {
            let drawn = if noisy {
                rng.fill(simd, &mut bits[..per_token]);
                &bits[..per_token]
            } else {
                &bits[j * per_token..(j + 1) * per_token]
            };
            let (pairs, odd) = x[..d].as_chunks_mut::<2>();
            for (pair, b) in pairs.iter_mut().zip(drawn) {
                for l in 0..STREAMS {
                    let (u, v) = uniform_pair(b[l]);
                    pair[0][l] = u * range;
                    pair[1][l] = v * range;
                }
            }
            if let ([last], Some(b)) = (odd, drawn.last()) {
                for l in 0..STREAMS {
                    last[l] = uniform_pair(b[l]).0 * range;
                }
            }
            if shaped {
                for (xi, &c) in x[..d].iter_mut().zip(&self.scales) {
                    for v in xi.iter_mut() {
                        *v = *v * c + self.mean;
                    }
                }
            }
            x[e - 1] = [0.0; STREAMS];
            let mut y = match self.family {
                Family::Sine => core::array::from_fn(|l| sine[l].0 * (x[0][l] + sine[l].1).sin()),
                _ => dot_lanes(w, x),
            };
            if noisy {
                for (l, yl) in y.iter_mut().enumerate() {
                    let z: f32 = StandardNormal.sample(&mut rng.lane(l));
                    *yl += self.noise * z;
                }
            }
            // Each lane's token out of the columns of `x`, four entries at a time through a 4 x 4 transpose.
            let mut tokens: [Option<&mut [f32]>; STREAMS] = [None, None, None, None];
            for (slot, group) in tokens.iter_mut().zip(groups.iter_mut()) {
                *slot = if j < self.n {
                    group.ctx.get_mut((t * self.n + j) * e..(t * self.n + j + 1) * e)
                } else {
                    group.query.get_mut(t * e..(t + 1) * e)
                };
            }
            let (blocks, rest) = x.as_chunks::<4>();
            for (b, block) in blocks.iter().enumerate() {
                for (token, row) in tokens.iter_mut().zip(&simd::transpose4(block)) {
                    if let Some(four) = token.as_deref_mut().and_then(|tok| tok.get_mut(4 * b..4 * b + 4)) {
                        four.copy_from_slice(row);
                    }
                }
            }
            for (l, token) in tokens.iter_mut().enumerate() {
                let Some(token) = token.as_deref_mut() else { continue };
                for (v, xi) in token[4 * blocks.len()..].iter_mut().zip(rest) {
                    *v = xi[l];
                }
                if j < self.n {
                    token[e - 1] = if j < labelled { y[l] } else { 0.0 };
                }
            }
            if j == self.n {
                for (group, &yl) in groups.iter_mut().zip(&y) {
                    if let Some(slot) = group.y.get_mut(t) {
                        *slot = yl;
                    }
                }
            }
        }
    }
}

/// `w . x` in every lane, each in the order of [`dualform::linalg::dot_slice`]: partial sum `i mod 4` takes the
/// products of the indices `i` in increasing order, the result is `(p0 + p1) + (p2 + p3)`.
#[inline(always)]
fn dot_lanes(w: &[[f32; STREAMS]], x: &[[f32; STREAMS]]) -> [f32; STREAMS] {
    let mut p = [[0.0f32; STREAMS]; 4];
    let ((wq, wr), (xq, xr)) = (w.as_chunks::<4>(), x.as_chunks::<4>());
    for (w4, x4) in wq.iter().zip(xq) {
        for ((pk, wk), xk) in p.iter_mut().zip(w4).zip(x4) {
            for l in 0..STREAMS {
                pk[l] += wk[l] * xk[l];
            }
        }
    }
    for ((pk, wk), xk) in p.iter_mut().zip(wr).zip(xr) {
        for l in 0..STREAMS {
            pk[l] += wk[l] * xk[l];
        }
    }
    core::array::from_fn(|l| (p[0][l] + p[1][l]) + (p[2][l] + p[3][l]))
}
