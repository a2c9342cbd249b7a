//! Task vectors' normals for four streams side by side, the same numbers as `rand_distr`'s `StandardNormal`.
//!
//! `StandardNormal` samples by the ziggurat method: one 64-bit draw gives a layer `i` (its low 8 bits) and a
//! uniform `u` in [-1, 1) (its high 52 bits), and `x = u X[i]` is the sample whenever `|x| < X[i + 1]`, about 99% of
//! draws; otherwise more draws decide. Here the quick case runs for all four streams from one step of the stepped
//! generators ([`Xoshiro4`]), and a stream that meets any other case is put back, keeps the quick normals before
//! that draw (skipping their draws) and draws the rest of the task's normals with `StandardNormal` itself, so every
//! stream gives out the same numbers in the same order as before.
//!
//! The abscissae `X` are `rand_distr`'s own, read from the distribution once ([`abscissae`]) rather than copied:
//! with `u = 2^-20` exactly, layer `i` returns `u X[i]` (the quick case holds for every layer but the last), which
//! times `2^20` is `X[i]` exactly.

use super::lockstep::{Xoshiro4, STREAMS};
use crate::net::simd::Simd;
use rand::TryRng;
use rand_distr::{Distribution, StandardNormal};
use std::convert::Infallible;
use std::sync::OnceLock;

/// The high bits of a draw whose uniform is `2^-20` (`3 + 2^-20` in [2, 4), less 3), any layer in the low 8 bits.
const PROBE: u64 = (1 << 63) | (1 << 43);

/// A generator that gives the same 64 bits every time (for reading the abscissae).
struct Constant(u64);

impl TryRng for Constant {
    type Error = Infallible;
    fn try_next_u32(&mut self) -> Result<u32, Infallible> {
        Ok((self.0 >> 32) as u32)
    }
    fn try_next_u64(&mut self) -> Result<u64, Infallible> {
        Ok(self.0)
    }
    fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Infallible> {
        rand::rand_core::utils::fill_bytes_via_next_word(dst, || Ok(self.0))
    }
}

/// `StandardNormal`'s ziggurat abscissae `X[0..255]`, with 0 for `X[255]` and `X[256]`: the quick case of the last
/// layer compares with `X[256] = 0` and never holds, so a draw there always goes to `StandardNormal` itself.
pub(super) fn abscissae() -> &'static [f64; 257] {
    static X: OnceLock<[f64; 257]> = OnceLock::new();
    X.get_or_init(|| {
        let mut x = [0.0; 257];
        for (i, xi) in x.iter_mut().enumerate().take(255) {
            let v: f64 = StandardNormal.sample(&mut Constant(PROBE | i as u64));
            *xi = v * (1u64 << 20) as f64;
        }
        x
    })
}

/// The quick case of the ziggurat for one draw per stream: each stream's `u X[i]` (the sample `StandardNormal`
/// returns for a draw that starts with those bits, where the quick case holds) and whether it holds. Branch-free
/// over the four streams, so that their draws share vector instructions.
#[inline(always)]
fn quick(bits: &[u64; STREAMS], x: &[f64; 257]) -> ([f64; STREAMS], [bool; STREAMS]) {
    let (mut v, mut holds) = ([0.0; STREAMS], [false; STREAMS]);
    for ((b, vl), hl) in bits.iter().zip(v.iter_mut()).zip(holds.iter_mut()) {
        // `i <= 255`: both reads are inside the 257 abscissae.
        let i = (b & 0xff) as usize;
        let u = f64::from_bits((b >> 12) | (1024 << 52)) - 3.0;
        *vl = u * x[i];
        *hl = vl.abs() < x[i + 1];
    }
    (v, holds)
}

/// A normal as `TaskSampler::task_vector` stores it: rounded to `f32`, then scaled unless the scale is 1.
#[inline(always)]
fn scaled(z: f64, scale: f32) -> f32 {
    let z = z as f32;
    if scale == 1.0 {
        z
    } else {
        z * scale
    }
}

/// The task vectors of four tasks, stream `l`'s into lane `l` of `w` (entries `0..d`, the rest 0): what
/// `TaskSampler::task_vector` draws from each stream without a pool, `d` standard normals times `scale`, with the
/// same bits. `bits` is scratch of `d` rows; false, with nothing drawn, when it is shorter.
pub(super) fn normals_side_by_side(
    simd: Simd,
    rng: &mut Xoshiro4,
    w: &mut [[f32; STREAMS]],
    bits: &mut [[u64; STREAMS]],
    d: usize,
    scale: f32,
) -> bool {
    let x = abscissae();
    let Some(bits) = bits.get_mut(..d) else { return false };
    let before = rng.clone();
    rng.fill(simd, bits);
    for row in w.iter_mut().skip(d) {
        *row = [0.0; STREAMS];
    }
    // Every row through the quick case for all four streams; each stream's first row where it does not hold.
    let mut slow = [usize::MAX; STREAMS];
    for (i, (wi, b)) in w.iter_mut().zip(bits.iter()).enumerate() {
        let (v, holds) = quick(b, x);
        for l in 0..STREAMS {
            wi[l] = scaled(v[l], scale);
            slow[l] = if holds[l] { slow[l] } else { slow[l].min(i) };
        }
    }
    for (l, &k) in slow.iter().enumerate() {
        if k < d {
            // This stream again from where it stood: the first `k` normals are the quick case's (one 64-bit draw
            // each, as `StandardNormal` takes them), so it skips their draws; the rest from `StandardNormal` itself
            // (the same numbers), over what the quick case wrote there.
            rng.put_back(l, &before);
            let mut lane = rng.lane(l);
            for _ in 0..k {
                let _ = lane.try_next_u64();
            }
            for wi in w.iter_mut().take(d).skip(k) {
                let z: f64 = StandardNormal.sample(&mut lane);
                wi[l] = scaled(z, scale);
            }
        }
    }
    true
}
