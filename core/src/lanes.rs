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
#[derive(Clone, Copy, Debug, PartialEq)]
#[repr(C, align(32))]
pub struct Lanes<const L: usize>(pub [f32; L]);

impl<const L: usize> Lanes<L> {
    /// `v` in every lane.
    #[inline(always)]
    pub const fn splat(v: f32) -> Self {
        Self([v; L])
    }

    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        // `from_fn` over the lane index, not an iterator over the array: LLVM then keeps the lanes in one vector
        // (an iterator version was scalarised through the stack, twice as slow). `i < L`, so `get` never fails.
        Self(core::array::from_fn(|i| f(self.0.get(i).copied().unwrap_or(0.0))))
    }

    #[inline(always)]
    fn zip(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let at = |v: &[f32; L], i: usize| v.get(i).copied().unwrap_or(0.0);
        Self(core::array::from_fn(|i| f(at(&self.0, i), at(&other.0, i))))
    }
}

impl<const L: usize> Default for Lanes<L> {
    fn default() -> Self {
        Self::splat(0.0)
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
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        Self::splat(v as f32)
    }
    /// Lane 0 (exact for a value that is the same in every lane).
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self.0.first().map_or(0.0, |&v| v as f64)
    }
    #[inline(always)]
    fn exp(self) -> Self {
        self.map(<f32 as Real>::exp)
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
    #[inline(always)]
    fn is_finite(self) -> bool {
        self.0.iter().all(|v| v.is_finite())
    }
    #[inline(always)]
    fn max(self, other: Self) -> Self {
        self.zip(other, <f32 as Real>::max)
    }
    #[inline(always)]
    fn min(self, other: Self) -> Self {
        self.zip(other, <f32 as Real>::min)
    }
    #[inline(always)]
    fn clip(self, c: Self) -> Self {
        self.zip(c, <f32 as Real>::clip)
    }
    #[inline(always)]
    fn pass_if_within(self, p: Self, c: Self) -> Self {
        let at = |v: &[f32; L], i: usize| v.get(i).copied().unwrap_or(0.0);
        Self(core::array::from_fn(|i| at(&self.0, i).pass_if_within(at(&p.0, i), at(&c.0, i))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_answer_only_when_every_lane_agrees() {
        let a = Lanes([1.0, 2.0]);
        assert!(Lanes::splat(0.0) < a);
        assert_eq!(Lanes([3.0, 0.0]).partial_cmp(&a), None, "lanes that disagree are not ordered");
        assert!(!Lanes([1.0, f32::NAN]).is_finite() && a.is_finite());
    }

    #[test]
    fn clipping_decides_per_lane() {
        let c = Lanes::splat(1.0);
        let v = Lanes([2.0, -3.0, 0.5, f32::NAN]).clip(c);
        assert_eq!(&v.0[..3], &[1.0, -1.0, 0.5]);
        assert!(v.0[3].is_nan());
        let g = Lanes([5.0; 4]).pass_if_within(Lanes([0.5, 1.5, -1.0, f32::NAN]), c);
        assert_eq!(g.0, [5.0, 0.0, 5.0, 0.0]);
    }
}
