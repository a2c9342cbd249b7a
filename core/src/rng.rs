//! A tiny seeded generator for the core's own fixed projections (the random features of FAVOR+).
//!
//! SplitMix64 (Steele, Lea and Flood 2014) for the integers and Box-Muller for normals, in `f64` through `libm`, so
//! a seed gives the same projection on every target. This is not a general-purpose generator: the harness uses
//! `rand` for data.

use crate::Real;

/// SplitMix64 state.
#[derive(Clone, Debug)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in the open interval (0, 1), from the top 53 bits ([`SplitMix64::open01`]).
    pub fn next_open01(&mut self) -> f64 {
        Self::open01(self.next_u64())
    }

    /// `(top 53 bits + 1/2) / 2^53`, in the open interval (0, 1): the largest input would round to exactly 1 (2^53 -
    /// 1/2 is not a double), so it maps to the largest double below 1 instead.
    pub fn open01(bits: u64) -> f64 {
        let u = ((bits >> 11) as f64 + 0.5) * (1.0 / (1u64 << 53) as f64);
        if u < 1.0 {
            u
        } else {
            1.0 - f64::EPSILON / 2.0
        }
    }

    /// A standard normal sample (Box-Muller, cosine branch).
    pub fn next_normal(&mut self) -> f64 {
        let u1 = self.next_open01();
        let u2 = self.next_open01();
        libm::sqrt(-2.0 * libm::log(u1)) * libm::cos(core::f64::consts::TAU * u2)
    }

    /// Fills an array with standard normal samples converted to `T`.
    pub fn fill_normal<T: Real, const N: usize>(&mut self, out: &mut [T; N]) {
        for o in out.iter_mut() {
            *o = T::from_f64(self.next_normal());
        }
    }
}
