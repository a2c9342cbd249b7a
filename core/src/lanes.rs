//! [`Lanes`]: `L` independent `f32` problems side by side, one per lane, as one [`Real`] scalar. Every kernel of the
//! crate is generic over [`Real`]; instantiated with `Lanes<L>`, it runs `L` tasks at once (tokens and weights stored
//! lane-minor, structure of arrays), and lane `l` performs exactly the operations the `f32` kernel performs on task
//! `l`, in the same order: the same bits per task, whatever `L` and whatever vector unit executes the lanes. The
//! arithmetic is lane-wise IEEE 754 (`+ - * /`, never fused), the functions (`exp`, `sqrt`, ...) are `f32`'s [`Real`] ones per lane.
//!
//! Comparisons are the one place lanes and scalars differ: a kernel branches on a comparison for the whole vector.
//! [`PartialOrd`] therefore answers only when every lane agrees (`a < b` holds when it holds in every lane), and
//! [`Real::is_finite`] when every lane is finite; these are exact for values that are the same in every lane (an
//! update rule's scale or clip). Per-element decisions go through [`Real::clip`] and [`Real::pass_if_within`], which
//! `Lanes` computes lane by lane. A kernel that branches on a per-element comparison any other way must not be run
//! on `Lanes`; the merged LSA layer ([`crate::MergedRef`]) does not, and its tests hold every lane to the `f32`
//! kernel's bits.

use crate::Real;
use core::cmp::Ordering;
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// `L` values, one per lane (see the module docs). Aligned to 32 bytes, so that LLVM treats eight lanes as one
/// vector register (or two) rather than as separate values.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(32))]
pub struct Lanes<const L: usize>(pub [f32; L]);

impl<const L: usize> Lanes<L> {
    /// `v` in every lane.
    #[inline(always)]
    pub const fn splat(v: f32) -> Self {
        Self([v; L])
    }

    // The arithmetic is an index loop over a copy of the array (`i < L`: no bounds check is left). Not
    // `array::from_fn`: LLVM left its inner `try_from_fn` out of line, compiled for the baseline unit even inside a
    // function built for a wider one (a call, two 128-bit halves and a store-forwarding stall per lane-wise addition:
    // a tenth of the two-layer training step on AVX2). Not a loop over zipped iterators either: LLVM scalarised it
    // (the two-layer step three times slower).
    #[inline(always)]
    #[allow(clippy::needless_range_loop, clippy::indexing_slicing)] // `i < L`
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        let mut out = self.0;
        for i in 0..L {
            out[i] = f(out[i]);
        }
        Self(out)
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop, clippy::indexing_slicing)] // `i < L`
    fn zip(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = self.0;
        for i in 0..L {
            out[i] = f(out[i], other.0[i]);
        }
        Self(out)
    }
}

/// All ones where `c`, else zero: a choice as a bit mask.
#[inline(always)]
fn mask(c: bool) -> u32 {
    (c as u32).wrapping_neg()
}

/// `a` where `m` is all ones, `b` where it is zero (bit by bit).
#[inline(always)]
fn pick(m: u32, a: u32, b: u32) -> u32 {
    (a & m) | (b & !m)
}

/// `libm::expf` (0.2, FreeBSD's `e_expf.c`) of every lane, the same bits, with its branches turned into per-lane
/// choices so that the lanes run as vector instructions: the reduction `x = k ln2 + r` (`k` from `x / ln2` rounded
/// for `|x| > 1.5 ln2`, `+-1` down to `0.5 ln2`, `0` below; `k = 0` gives `hi = x`, `lo = 0` through the same
/// formulas, exactly), the same rational approximation in the same order of operations, and `2^k` applied by one
/// multiplication, which is what `scalbnf` does for the `k` of that range (`|k| <= 126`). `|x| <= 2^-14` gives
/// `1 + x` as `expf` does, `x <= -103.97` (and `-inf`) gives 0. The lanes left (NaN, `x >= 87.34`, `x` within
/// `(-103.97, -87.34]`, where the result overflows or is subnormal and `scalbnf` takes several steps) are computed by
/// `libm::expf` itself, one by one.
#[inline(always)]
fn exp_lanes<const L: usize>(x: [f32; L]) -> [f32; L] {
    const LN2_HI: f32 = f32::from_bits(0x3f31_7200);
    const LN2_LO: f32 = f32::from_bits(0x35bf_be8e);
    const INV_LN2: f32 = f32::from_bits(0x3fb8_aa3b);
    const P1: f32 = f32::from_bits(0x3e2a_aa8f);
    const P2: f32 = f32::from_bits(0xbb35_5215);
    // One loop over the lanes with no branch and no call in its body: every choice is a mask on the bits, so LLVM
    // turns it into vector instructions wherever it is inlined.
    let mut out = [0.0f32; L];
    let mut rare = 0u32;
    for (o, &xi) in out.iter_mut().zip(x.iter()) {
        let h = xi.to_bits() & 0x7fff_ffff;
        let neg = mask(xi.is_sign_negative());
        let half = f32::from_bits(pick(neg, (-0.5f32).to_bits(), 0.5f32.to_bits()));
        let rounded = trunc_small(INV_LN2 * xi + half);
        let one = pick(neg, (-1i32) as u32, 1);
        let k = pick(mask(h > 0x3f85_1592), rounded, pick(mask(h > 0x3eb1_7218), one, 0)) as i32;
        let kf = k as f32;
        let hi = xi - kf * LN2_HI;
        let lo = kf * LN2_LO;
        let r = hi - lo;
        let rr = r * r;
        let c = r - rr * (P1 + rr * P2);
        let y = 1.0 + (r * c / (2.0 - c) - lo + hi);
        let scale = f32::from_bits(((127 + k.clamp(-126, 127)) as u32) << 23);
        let underflow = neg & mask(h >= 0x42cf_f1b5) & mask(h <= 0x7f80_0000);
        let tiny = mask(h <= 0x3900_0000);
        let general = pick(underflow, 0, (y * scale).to_bits());
        *o = f32::from_bits(pick(tiny, (1.0 + xi).to_bits(), general));
        rare |= mask(h >= 0x42ae_ac50) & !underflow;
    }
    if rare != 0 {
        for (o, &xi) in out.iter_mut().zip(x.iter()) {
            let h = xi.to_bits() & 0x7fff_ffff;
            let underflow = xi.is_sign_negative() && (0x42cf_f1b5..=0x7f80_0000).contains(&h);
            if h >= 0x42ae_ac50 && !underflow {
                *o = <f32 as Real>::exp(xi);
            }
        }
    }
    out
}

/// `t as i32 as u32` (rounded toward zero) where `|t| < 256`, in lane-wise operations: `t + 1.5 * 2^23` rounds to
/// the nearest integer (ties to even) in the bits of the sum, which is moved one step toward zero where it went past
/// `t`. `as i32` itself saturates NaNs and out-of-range values, which LLVM compiles one lane at a time (a scalar
/// conversion, two comparisons and two conditional moves per lane: about a third of the exponential). Elsewhere the
/// result is unspecified (here 0); [`exp_lanes`] does not use it there.
#[inline(always)]
fn trunc_small(t: f32) -> u32 {
    const MAGIC: f32 = 12_582_912.0;
    let abs = |v: f32| f32::from_bits(v.to_bits() & 0x7fff_ffff);
    let t = f32::from_bits(pick(mask(abs(t) < 256.0), t.to_bits(), 0));
    let nearest = (t + MAGIC).to_bits().wrapping_sub(MAGIC.to_bits());
    let past = mask(abs(nearest as i32 as f32) > abs(t));
    let toward_zero = pick(mask(t.is_sign_negative()), 1, 1u32.wrapping_neg());
    nearest.wrapping_add(toward_zero & past)
}

/// `libm::expf` of every element in place, the bits of `<f32 as Real>::exp`: eight at a time through [`exp_lanes`],
/// the rest one by one (`f32`'s [`Real::exp_each`]).
#[inline(always)]
pub(crate) fn exp_each_f32(xs: &mut [f32]) {
    let (eights, rest) = xs.as_chunks_mut::<8>();
    for x in eights.iter_mut() {
        *x = exp_lanes(*x);
    }
    for x in rest.iter_mut() {
        *x = libm::expf(*x);
    }
}

impl<const L: usize> Default for Lanes<L> {
    fn default() -> Self {
        Self::splat(0.0)
    }
}

/// Equal when every lane is (`f32`'s `==` per lane: a NaN lane is unequal, zeros of either sign equal), as a mask
/// over all lanes rather than a loop that stops at the first difference (see [`Real::is_finite`] below; the softmax
/// kernels compare on every key).
impl<const L: usize> PartialEq for Lanes<L> {
    #[inline(always)]
    #[allow(clippy::needless_range_loop, clippy::indexing_slicing)] // `i < L`
    fn eq(&self, other: &Self) -> bool {
        let mut differ = 0u32;
        for i in 0..L {
            differ |= mask(self.0[i] != other.0[i]);
        }
        differ == 0
    }
}

impl<const L: usize> PartialOrd for Lanes<L> {
    /// The ordering every lane agrees on, or `None`.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        let mut pairs = self.0.iter().zip(other.0.iter());
        let first = pairs.next().map_or(Some(Ordering::Equal), |(a, b)| a.partial_cmp(b))?;
        pairs.all(|(a, b)| a.partial_cmp(b) == Some(first)).then_some(first)
    }
}

macro_rules! lanewise {
    ($op:ident, $f:ident, $assign:ident, $fa:ident, $sym:tt) => {
        impl<const L: usize> $op for Lanes<L> {
            type Output = Self;
            #[inline(always)]
            fn $f(self, rhs: Self) -> Self {
                self.zip(rhs, |a, b| a $sym b)
            }
        }
        impl<const L: usize> $assign for Lanes<L> {
            #[inline(always)]
            fn $fa(&mut self, rhs: Self) {
                *self = self.zip(rhs, |a, b| a $sym b);
            }
        }
    };
}

lanewise!(Add, add, AddAssign, add_assign, +);
lanewise!(Sub, sub, SubAssign, sub_assign, -);
lanewise!(Mul, mul, MulAssign, mul_assign, *);
lanewise!(Div, div, DivAssign, div_assign, /);

impl<const L: usize> Neg for Lanes<L> {
    type Output = Self;
    #[inline(always)]
    fn neg(self) -> Self {
        self.map(|a| -a)
    }
}

impl<const L: usize> Real for Lanes<L> {
    const ZERO: Self = Self::splat(0.0);
    const ONE: Self = Self::splat(1.0);
    const INFINITY: Self = Self::splat(f32::INFINITY);
    const EPSILON: Self = Self::splat(f32::EPSILON);
    const LANES: usize = L;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        Self::splat(v as f32)
    }
    /// Lane 0 (exact for a value that is the same in every lane).
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self.0.first().map_or(0.0, |&v| v as f64)
    }
    /// `libm`'s `expf` in every lane, bit for bit: its operations written lane-wise so that they run as vector
    /// instructions (`exp_lanes` in this module).
    #[inline(always)]
    fn exp(self) -> Self {
        Self(exp_lanes(self.0))
    }
    #[inline(always)]
    fn ln(self) -> Self {
        self.map(<f32 as Real>::ln)
    }
    #[inline(always)]
    fn cos(self) -> Self {
        self.map(<f32 as Real>::cos)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        self.map(<f32 as Real>::sqrt)
    }
    #[inline(always)]
    fn abs(self) -> Self {
        self.map(<f32 as Real>::abs)
    }
    /// Every lane finite, as a mask over all lanes: no early exit, which compiled to a compare and branch per lane
    /// (and shuffles to reach each lane) on every logit of the softmax kernels.
    #[inline(always)]
    #[allow(clippy::needless_range_loop, clippy::indexing_slicing)] // `i < L`
    fn is_finite(self) -> bool {
        let mut bad = 0u32;
        for i in 0..L {
            bad |= mask(!self.0[i].is_finite());
        }
        bad == 0
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        self.zip(other, <f32 as Real>::max)
    }
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        self.zip(other, <f32 as Real>::min)
    }
    /// `f32`'s [`Real::clip`] in every lane (a NaN stays NaN), its two comparisons turned into bit masks: one loop
    /// with no branch, which LLVM vectorises (the loop of `f32::clip` per lane, compares and jumps, was about 9% of the
    /// five-layer training step's profile).
    #[inline(always)]
    fn clip(self, c: Self) -> Self {
        let mut out = self.0;
        for (o, &ci) in out.iter_mut().zip(c.0.iter()) {
            let x = *o;
            let low = pick(mask(x < -ci), (-ci).to_bits(), x.to_bits());
            *o = f32::from_bits(pick(mask(x > ci), ci.to_bits(), low));
        }
        Self(out)
    }
    /// Each lane's side: `then()` alone when every lane has `self > other`, `otherwise()` alone when none has,
    /// both and a choice per lane when they disagree (a NaN lane takes `otherwise`, as `f32` does).
    #[inline(always)]
    fn if_gt(self, other: Self, then: impl FnOnce() -> Self, otherwise: impl FnOnce() -> Self) -> Self {
        let mut gt = [false; L];
        for ((g, a), b) in gt.iter_mut().zip(self.0.iter()).zip(other.0.iter()) {
            *g = a > b;
        }
        // Each closure has one call site, so that the compiler inlines it (a closure called from two places may be
        // kept out of line, and then compiled for the baseline unit inside a caller built for a wider one).
        let a = if gt.contains(&true) { Some(then()) } else { None };
        let b = if gt.contains(&false) { Some(otherwise()) } else { None };
        match (a, b) {
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (a, b) => self.pick_gt(other, a.unwrap_or(Self::ZERO), b.unwrap_or(Self::ZERO)),
        }
    }
    #[inline(always)]
    fn pick_gt(self, other: Self, then: Self, otherwise: Self) -> Self {
        let mut out = otherwise.0;
        for (((o, a), b), &t) in out.iter_mut().zip(self.0.iter()).zip(other.0.iter()).zip(then.0.iter()) {
            if a > b {
                *o = t;
            }
        }
        Self(out)
    }
    /// Both sides in every lane, then each lane's own (see the trait).
    #[inline(always)]
    fn elu_plus_one(self) -> Self {
        self.pick_gt(Self::ZERO, self + Self::ONE, self.exp())
    }
    /// Both sides in every lane, then each lane's own (see the trait).
    #[inline(always)]
    fn elu_plus_one_vjp(self, g: Self) -> Self {
        self.pick_gt(Self::ZERO, g, g * self.exp())
    }
    /// Zero in any lane.
    #[inline(always)]
    fn has_zero(self) -> bool {
        self.0.contains(&0.0)
    }
    /// Each lane where finite, `alt()`'s lane elsewhere (`alt` runs only when some lane is not finite).
    #[inline(always)]
    fn finite_or(self, alt: impl FnOnce() -> Self) -> Self {
        if self.is_finite() {
            return self;
        }
        let b = alt();
        self.zip(b, |a, b| if a.is_finite() { a } else { b })
    }
    /// `f32`'s [`Real::pass_if_within`] in every lane: the lane's bits kept where `|p| <= c` and cleared (`+0.0`)
    /// elsewhere, NaN included, by a bit mask (a per-lane choice compiled as a masked store, slow on some CPUs).
    #[inline(always)]
    fn pass_if_within(self, p: Self, c: Self) -> Self {
        let mut out = self.0;
        for ((o, &pi), &ci) in out.iter_mut().zip(p.0.iter()).zip(c.0.iter()) {
            *o = f32::from_bits(o.to_bits() & mask(pi.abs() <= ci));
        }
        Self(out)
    }
}

#[cfg(test)]
mod tests;
