//! Two updates of one accumulator in one pass: [`axpy2`] and [`add_outer2`] give the bits of two [`axpy`]s or two
//! [`add_outer`]s applied one after the other (each element receives the first term, then the second, each rounded
//! as before), loading and storing the accumulator once instead of twice. The softmax backward adds one term per
//! token or per key into the same gradient rows and matrices; run in pairs it halves that memory traffic, which
//! bounded its speed. Re-exported by [`crate::linalg::slices`].

use super::slices::{add_outer, axpy};
use crate::Real;

/// `y += a1 * x1`, then `y += a2 * x2`, per element (the bits of [`axpy`]`(y, a1, x1)` followed by
/// [`axpy`]`(y, a2, x2)`), over the common length of the three slices; when `x1` and `x2` differ in length, exactly
/// those two calls.
#[inline(always)]
pub fn axpy2<T: Real>(y: &mut [T], a1: T, x1: &[T], a2: T, x2: &[T]) {
    if x1.len() != x2.len() {
        axpy(y, a1, x1);
        axpy(y, a2, x2);
        return;
    }
    // Blocks of four and the rest, as in `axpy`.
    let n = y.len().min(x1.len());
    let y = y.split_at_mut_checked(n).map_or(&mut [][..], |(h, _)| h);
    let (x1, x2) = (x1.get(..n).unwrap_or(x1), x2.get(..n).unwrap_or(x2));
    let (cy, ry) = y.as_chunks_mut::<4>();
    let (c1, r1) = x1.as_chunks::<4>();
    let (c2, r2) = x2.as_chunks::<4>();
    for ((yb, b1), b2) in cy.iter_mut().zip(c1).zip(c2) {
        for ((yi, &p), &q) in yb.iter_mut().zip(b1).zip(b2) {
            *yi += a1 * p;
            *yi += a2 * q;
        }
    }
    for ((yi, &p), &q) in ry.iter_mut().zip(r1).zip(r2) {
        *yi += a1 * p;
        *yi += a2 * q;
    }
}

/// `S += u1 v1^T`, then `S += u2 v2^T` (the bits of the two [`add_outer`] calls in that order), one [`axpy2`] per
/// column; when the two terms differ in shape, exactly those two calls.
#[inline(always)]
pub fn add_outer2<T: Real>(s: &mut [T], u1: &[T], v1: &[T], u2: &[T], v2: &[T]) {
    let rows = u1.len();
    if rows != u2.len() || v1.len() != v2.len() {
        add_outer(s, u1, v1);
        add_outer(s, u2, v2);
        return;
    }
    if rows == 0 {
        return;
    }
    for ((col, &p), &q) in s.chunks_exact_mut(rows).zip(v1.iter()).zip(v2.iter()) {
        axpy2(col, p, u1, q, u2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values whose sums round differently in other orders (magnitudes far apart, signs mixed).
    fn vals(n: usize, seed: u32) -> [f32; 16] {
        let mut out = [0.0f32; 16];
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        for x in out.iter_mut().take(n) {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let m = (s >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
            *x = m * [1.0e-3, 1.0, 3.0e3][(s % 3) as usize];
        }
        out
    }

    #[test]
    fn axpy2_is_two_axpys_in_order() {
        for n in [0usize, 1, 3, 4, 5, 7, 8, 11, 16] {
            let (y0, x1, x2) = (vals(n, 1), vals(n, 2), vals(n, 3));
            let (a1, a2) = (0.37f32, -1.9e3f32);
            let mut want = y0;
            axpy(&mut want[..n], a1, &x1[..n]);
            axpy(&mut want[..n], a2, &x2[..n]);
            let mut got = y0;
            axpy2(&mut got[..n], a1, &x1[..n], a2, &x2[..n]);
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "n = {n}");
        }
    }

    #[test]
    fn add_outer2_is_two_add_outers_in_order() {
        for (rows, cols) in [(1usize, 1usize), (3, 4), (4, 3), (5, 2)] {
            let (u1, v1, u2, v2) = (vals(rows, 4), vals(cols, 5), vals(rows, 6), vals(cols, 7));
            let s0 = vals(16, 8);
            let m = rows * cols;
            let mut want = s0;
            add_outer(&mut want[..m], &u1[..rows], &v1[..cols]);
            add_outer(&mut want[..m], &u2[..rows], &v2[..cols]);
            let mut got = s0;
            add_outer2(&mut got[..m], &u1[..rows], &v1[..cols], &u2[..rows], &v2[..cols]);
            assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits), "{rows} x {cols}");
        }
    }

    #[test]
    fn unequal_shapes_fall_back_to_the_two_calls() {
        let (u1, v1, u2, v2) = (vals(3, 9), vals(2, 10), vals(2, 11), vals(2, 12));
        let s0 = vals(6, 13);
        let mut want = s0;
        add_outer(&mut want[..6], &u1[..3], &v1[..2]);
        add_outer(&mut want[..6], &u2[..2], &v2[..2]);
        let mut got = s0;
        add_outer2(&mut got[..6], &u1[..3], &v1[..2], &u2[..2], &v2[..2]);
        assert_eq!(got.map(f32::to_bits), want.map(f32::to_bits));
    }
}
