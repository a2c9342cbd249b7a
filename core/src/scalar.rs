//! The scalar type of every kernel: `f32` on the device, `f64` for reference checks.
//!
//! Numerical contract: the transcendental functions (`exp`, `ln`, `cos`, `sqrt`) are those of the pure-Rust `libm`
//! crate on every target, never the platform's C library, so that the same inputs give the same bits on x86_64 and
//! on thumbv7em. Arithmetic is plain IEEE 754 (`+ - * /`, no fused multiply-add), which Rust never reassociates.

use core::fmt::Debug;
use core::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A real floating-point scalar with the operations the kernels need.
pub trait Real:
    nalgebra::Scalar
    + Copy
    + Default
    + Debug
    + PartialOrd
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Positive infinity.
    const INFINITY: Self;
    /// Machine epsilon (distance from 1 to the next representable value).
    const EPSILON: Self;
    /// Converts from `f64` with IEEE round-to-nearest (exact for `f64`).
    fn from_f64(v: f64) -> Self;
    /// Converts to `f64` (exact for both implementations).
    fn to_f64(self) -> f64;
    /// `e^self`, by `libm`.
    fn exp(self) -> Self;
    /// Natural logarithm, by `libm`.
    fn ln(self) -> Self;
    /// Cosine, by `libm`.
    fn cos(self) -> Self;
    /// Square root (correctly rounded), by `libm`.
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `true` unless NaN or infinite.
    fn is_finite(self) -> bool;
    /// The larger of two values; if one is NaN, the other is returned (IEEE `maxNum`, `libm`'s rule).
    fn max(self, other: Self) -> Self;
    /// The smaller of two values; if one is NaN, the other is returned (IEEE `minNum`, `libm`'s rule).
    fn min(self, other: Self) -> Self;

    /// `self` clamped to `[-c, c]` by comparisons, not `max`/`min`: a NaN stays NaN (IEEE `maxNum` would replace it
    /// by the bound). The token clipping of [`crate::Update`].
    #[inline(always)]
    fn clip(self, c: Self) -> Self {
        if self > c {
            c
        } else if self < -c {
            -c
        } else {
            self
        }
    }

    /// `then()` where `self > other`, else `otherwise()`, decided per element: how a kernel that may run on
    /// [`crate::lanes::Lanes`] branches on values that differ between problems (a softmax's running maximum). A
    /// scalar evaluates one of the two; lanes evaluate the side their lanes need (both when they disagree) and take
    /// each lane's own, so every lane gets the scalar's bits.
    #[inline(always)]
    fn if_gt(self, other: Self, then: impl FnOnce() -> Self, otherwise: impl FnOnce() -> Self) -> Self {
        if self > other {
            then()
        } else {
            otherwise()
        }
    }

    /// `then` where `self > other`, else `otherwise`, per element: [`Real::if_gt`] for values already computed, with
    /// no closures (a closure inlined in several places may be kept out of line, see `crate::lanes`).
    #[inline(always)]
    fn pick_gt(self, other: Self, then: Self, otherwise: Self) -> Self {
        if self > other {
            then
        } else {
            otherwise
        }
    }

    /// `self + 1` where `self > 0`, else `exp(self)`, per element: elu+1 ([`crate::features::EluPlusOne`]), with no
    /// closures. A scalar computes only the side it takes; lanes compute both (one vector exponential) and pick per
    /// lane ([`Real::pick_gt`]), the same bits.
    #[inline(always)]
    fn elu_plus_one(self) -> Self {
        if self > Self::ZERO {
            self + Self::ONE
        } else {
            self.exp()
        }
    }

    /// `g` where `self > 0`, else `g exp(self)`, per element: `g` times the derivative of
    /// [`Real::elu_plus_one`] at `self`, computed as that method is.
    #[inline(always)]
    fn elu_plus_one_vjp(self, g: Self) -> Self {
        if self > Self::ZERO {
            g
        } else {
            g * self.exp()
        }
    }

    /// [`Real::exp`] of every element of `xs`, in place, the same bits. `f32` takes eight elements at a time through
    /// the branchless form of [`crate::lanes::Lanes`]' `exp` (vector instructions wherever the caller is compiled
    /// for them) and the rest one by one; the others one by one.
    #[inline(always)]
    fn exp_each(xs: &mut [Self]) {
        for x in xs.iter_mut() {
            *x = x.exp();
        }
    }

    /// `self` where it is finite, else `alt()`, per element (see [`Real::if_gt`]).
    #[inline(always)]
    fn finite_or(self, alt: impl FnOnce() -> Self) -> Self {
        if self.is_finite() {
            self
        } else {
            alt()
        }
    }

    /// Whether the value is zero (for [`crate::lanes::Lanes`]: in any lane), so that a division by it is refused
    /// whenever some problem would divide by zero.
    #[inline(always)]
    fn has_zero(self) -> bool {
        self == Self::ZERO
    }

    /// How many independent problems one value holds: 1 for `f32` and `f64`, `L` for `Lanes<L>`. A kernel whose
    /// rare path cannot be decided per element (the softmax's recovery from an overflowing weighted sum) refuses
    /// values of more than one lane with [`crate::Error::NonFinite`]; the caller then runs those problems one by one.
    const LANES: usize = 1;

    /// `self` where `|p| <= c`, else zero (also for a NaN `p`): the gradient that a clip at `c` passes.
    #[inline(always)]
    fn pass_if_within(self, p: Self, c: Self) -> Self {
        if p.abs() <= c {
            self
        } else {
            Self::ZERO
        }
    }
}

macro_rules! impl_real {
    ($t:ty, $exp:path, $ln:path, $cos:path, $sqrt:path, $abs:path $(, $exp_each:path)?) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const INFINITY: Self = <$t>::INFINITY;
            const EPSILON: Self = <$t>::EPSILON;
            #[inline(always)]
            fn from_f64(v: f64) -> Self {
                v as $t
            }
            #[inline(always)]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline(always)]
            fn exp(self) -> Self {
                $exp(self)
            }
            $(
            #[inline(always)]
            fn exp_each(xs: &mut [Self]) {
                $exp_each(xs)
            }
            )?
            #[inline(always)]
            fn ln(self) -> Self {
                $ln(self)
            }
            #[inline(always)]
            fn cos(self) -> Self {
                $cos(self)
            }
            #[inline(always)]
            fn sqrt(self) -> Self {
                $sqrt(self)
            }
            #[inline(always)]
            fn abs(self) -> Self {
                $abs(self)
            }
            // `libm`'s `fmax`/`fmin` rule (its generic `maxNum`/`minNum`: the other value if one is NaN, else the
            // larger/smaller; on a tie `self` for the maximum, `other` for the minimum, so `min(-0, +0)` is `+0`),
            // written here so that it inlines: `libm`'s function was called out of line, compiled for the baseline
            // unit, inside kernels built for a wider one. `libm` multiplies the result by one to quieten a
            // signalling NaN; nothing here depends on NaN payloads.
            #[inline(always)]
            fn max(self, other: Self) -> Self {
                if self.is_nan() || self < other {
                    other
                } else {
                    self
                }
            }
            #[inline(always)]
            fn min(self, other: Self) -> Self {
                if other.is_nan() || self < other {
                    self
                } else {
                    other
                }
            }
            #[inline(always)]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
        }
    };
}

impl_real!(f32, libm::expf, libm::logf, libm::cosf, libm::sqrtf, libm::fabsf, crate::lanes::exp_each_f32);
impl_real!(f64, libm::exp, libm::log, libm::cos, libm::sqrt, libm::fabs);

#[cfg(test)]
mod tests {
    use super::Real;

    /// `max`/`min` give `libm`'s `fmax`/`fmin` bits, signed zeros, infinities and NaN included.
    #[test]
    fn max_and_min_are_libms_bit_for_bit() {
        let specials = [0.0f32, -0.0, 1.0, -1.0, 2.5, -3.75, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-40, -1e-40];
        for &x in &specials {
            for &y in &specials {
                let (mx, mn) = (<f32 as Real>::max(x, y), <f32 as Real>::min(x, y));
                let (lx, ln) = (libm::fmaxf(x, y), libm::fminf(x, y));
                assert!(mx.to_bits() == lx.to_bits() || (mx.is_nan() && lx.is_nan()), "max({x}, {y})");
                assert!(mn.to_bits() == ln.to_bits() || (mn.is_nan() && ln.is_nan()), "min({x}, {y})");
                let (x, y) = (f64::from(x), f64::from(y));
                let (mx, mn) = (<f64 as Real>::max(x, y), <f64 as Real>::min(x, y));
                assert!(mx.to_bits() == libm::fmax(x, y).to_bits() || mx.is_nan(), "max({x}, {y})");
                assert!(mn.to_bits() == libm::fmin(x, y).to_bits() || mn.is_nan(), "min({x}, {y})");
            }
        }
    }
}
