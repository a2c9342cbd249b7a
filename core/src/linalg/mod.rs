//! Fixed-order small linear algebra on arrays and nalgebra static matrices.
//!
//! Numerical contract: every reduction has one accumulation order, written out here, so f32 results are identical
//! on every target.
//! - [`dot`]: four independent lanes, lane `l` summing the products of indices `i = l (mod 4)` in increasing `i`;
//!   the result is `(lane0 + lane1) + (lane2 + lane3)`.
//! - [`matvec`] (`y = A x`, `A` column-major): `y` starts at zero and takes `x[c] * A[:, c]` for `c = 0, 1, ...`
//!   in order, so each output element is a sequential sum over columns. The loop runs along contiguous columns
//!   and vectorises across output elements without reassociating any sum.
//! - [`matvec_t`] (`y = A^T x`): one [`dot`] per column. [`matvec_t_of_transpose`] computes the same from `A^T`
//!   with the same bits: the four lanes of every output's [`dot`] kept side by side as four accumulator vectors
//!   (lane `l` takes `x[k] A^T[:, k]` for `k = l (mod 4)` in increasing `k`), then `(lane0 + lane1) + (lane2 +
//!   lane3)`; it runs along contiguous columns and vectorises across the outputs, where a [`dot`] per output ends
//!   in a horizontal sum.
//! - [`add_outer`] / [`sub_outer`] (`S +-= u v^T`): one `axpy` per column, no reduction.
//!   [`pairs`] adds two such terms (or two `axpy`s) in one pass with the bits of adding them one after the other.
//! - [`matmul`] (`A B`): one [`matvec`] per column of `B`; [`matmul_tn`] (`A^T B`): one [`dot`] per entry
//!   (computed as [`matvec_t_of_transpose`] per column of `B`, the same bits);
//!   [`matmul_nt`] (`A B^T`): the rank-one updates `A[:, k] B[:, k]^T` added for `k = 0, 1, ...` in order (computed
//!   as [`matvec`] per column of `B^T`, the same bits).
//!
//! No function here allocates, indexes out of bounds or panics: shapes are const generics. Each is a thin wrapper
//! over its run-time-shape twin in [`slices`] (the one implementation), so a kernel has the same bits with constant
//! and with run-time sizes.

pub mod pairs;
pub mod slices;

use crate::Real;
use nalgebra::SMatrix;

/// Whether every element of `x` is finite (in every lane; [`slices::all_finite`]).
#[inline(always)]
pub fn all_finite<T: Real, const N: usize>(x: &[T; N]) -> bool {
    slices::all_finite(x)
}

/// `y += a * x`, element by element (two roundings per element; never fused).
#[inline(always)]
pub fn axpy<T: Real, const N: usize>(y: &mut [T; N], a: T, x: &[T; N]) {
    slices::axpy(y, a, x);
}

/// Dot product of two slices over their common length, in the four-lane order of the module contract.
#[inline(always)]
pub fn dot_slice<T: Real>(a: &[T], b: &[T]) -> T {
    slices::dot(a, b)
}

/// Dot product of two arrays, in the four-lane order of the module contract.
#[inline(always)]
pub fn dot<T: Real, const N: usize>(a: &[T; N], b: &[T; N]) -> T {
    slices::dot(a, b)
}

/// `(e . a, e . b)` in one pass over `e`: each is the four-lane [`dot`] exactly (same products, same order, same
/// bits), with `e` read once.
#[inline(always)]
pub fn dot2<T: Real, const N: usize>(e: &[T; N], a: &[T; N], b: &[T; N]) -> (T, T) {
    let (mut la, mut lb) = ([T::ZERO; 4], [T::ZERO; 4]);
    let (ce, ca, cb) = (e.chunks_exact(4), a.chunks_exact(4), b.chunks_exact(4));
    let (re, ra, rb) = (ce.remainder(), ca.remainder(), cb.remainder());
    for ((x, y), z) in ce.zip(ca).zip(cb) {
        for ((((l, m), &xi), &yi), &zi) in la.iter_mut().zip(lb.iter_mut()).zip(x).zip(y).zip(z) {
            *l += xi * yi;
            *m += xi * zi;
        }
    }
    for ((((l, m), &xi), &yi), &zi) in la.iter_mut().zip(lb.iter_mut()).zip(re).zip(ra).zip(rb) {
        *l += xi * yi;
        *m += xi * zi;
    }
    ((la[0] + la[1]) + (la[2] + la[3]), (lb[0] + lb[1]) + (lb[2] + lb[3]))
}

/// `y = A x` for a column-major static matrix, accumulating over columns in order.
#[inline(always)]
pub fn matvec<T: Real, const R: usize, const C: usize>(a: &SMatrix<T, R, C>, x: &[T; C]) -> [T; R] {
    let mut y = [T::ZERO; R];
    slices::matvec_acc(&mut y, a.as_slice(), x);
    y
}

/// `y += A x`, accumulating over columns in order (see [`matvec`]).
#[inline(always)]
pub fn matvec_acc<T: Real, const R: usize, const C: usize>(y: &mut [T; R], a: &SMatrix<T, R, C>, x: &[T; C]) {
    slices::matvec_acc(y, a.as_slice(), x);
}

/// `y = A^T x`: one four-lane [`dot`] per column of `A`.
#[inline(always)]
pub fn matvec_t<T: Real, const R: usize, const C: usize>(a: &SMatrix<T, R, C>, x: &[T; R]) -> [T; C] {
    let mut y = [T::ZERO; C];
    slices::matvec_t(&mut y, a.as_slice(), x);
    y
}

/// `y = A^T x` given `at = A^T`: the same bits as [`matvec_t`]`(A, x)` (each output's four-lane [`dot`], its lanes
/// held as four vectors; see the module contract), vectorised across the outputs.
#[inline(always)]
pub fn matvec_t_of_transpose<T: Real, const R: usize, const C: usize>(at: &SMatrix<T, C, R>, x: &[T; R]) -> [T; C] {
    let mut y = [T::ZERO; C];
    slices::matvec_t_of_transpose(&mut y, at.as_slice(), x);
    y
}

/// `S += u v^T` (rank-one update), one `axpy` per column.
#[inline(always)]
pub fn add_outer<T: Real, const R: usize, const C: usize>(s: &mut SMatrix<T, R, C>, u: &[T; R], v: &[T; C]) {
    slices::add_outer(s.as_mut_slice(), u, v);
}

/// `S -= u v^T` (rank-one downdate), one `axpy` per column with `-v[c]`.
#[inline(always)]
pub fn sub_outer<T: Real, const R: usize, const C: usize>(s: &mut SMatrix<T, R, C>, u: &[T; R], v: &[T; C]) {
    slices::sub_outer(s.as_mut_slice(), u, v);
}

/// `A B` for static matrices: column `j` of the result is [`matvec`]`(A, B[:, j])`.
pub fn matmul<T: Real, const R: usize, const K: usize, const C: usize>(
    a: &SMatrix<T, R, K>,
    b: &SMatrix<T, K, C>,
) -> SMatrix<T, R, C> {
    let mut out = zeros::<T, R, C>();
    slices::matmul(out.as_mut_slice(), a.as_slice(), b.as_slice(), R, K);
    out
}

/// `A^T B` for static matrices: entry `(i, j)` is [`dot`]`(A[:, i], B[:, j])` (computed as
/// [`matvec_t_of_transpose`] per column of `B`, the same bits).
pub fn matmul_tn<T: Real, const R: usize, const C1: usize, const C2: usize>(
    a: &SMatrix<T, R, C1>,
    b: &SMatrix<T, R, C2>,
) -> SMatrix<T, C1, C2> {
    let mut at = zeros::<T, C1, R>();
    let mut out = zeros::<T, C1, C2>();
    slices::matmul_tn(out.as_mut_slice(), a.as_slice(), b.as_slice(), C1, R, at.as_mut_slice());
    out
}

/// `A B^T` for static matrices: `sum_k A[:, k] B[:, k]^T`, every entry summed over `k` in increasing order from
/// zero (the bits of [`add_outer`] for `k = 0, 1, ...`), computed as [`matvec`]`(A, B^T[:, c])` per column `c` so
/// each column accumulates in registers.
pub fn matmul_nt<T: Real, const R: usize, const K: usize, const C: usize>(
    a: &SMatrix<T, R, K>,
    b: &SMatrix<T, C, K>,
) -> SMatrix<T, R, C> {
    let mut bt = zeros::<T, K, C>();
    let mut out = zeros::<T, R, C>();
    slices::matmul_nt(out.as_mut_slice(), a.as_slice(), b.as_slice(), R, K, bt.as_mut_slice());
    out
}

/// Squared Frobenius norm, summed column by column with [`dot`].
pub fn frobenius_sq<T: Real, const R: usize, const C: usize>(a: &SMatrix<T, R, C>) -> T {
    a.data.0.iter().fold(T::ZERO, |acc, col| acc + dot(col, col))
}

/// `A^T`, entry by entry (a copy, no arithmetic).
#[inline(always)]
pub fn transpose<T: Real, const R: usize, const C: usize>(a: &SMatrix<T, R, C>) -> SMatrix<T, C, R> {
    let mut out = zeros::<T, C, R>();
    slices::transpose(out.as_mut_slice(), a.as_slice(), R, C);
    out
}

/// An all-zero static matrix (no nalgebra arithmetic involved).
#[inline(always)]
pub fn zeros<T: Real, const R: usize, const C: usize>() -> SMatrix<T, R, C> {
    SMatrix::from_array_storage(nalgebra::ArrayStorage([[T::ZERO; R]; C]))
}

/// A static matrix with ones on the main diagonal and zeros elsewhere (also for non-square shapes).
pub fn eye<T: Real, const R: usize, const C: usize>() -> SMatrix<T, R, C> {
    let mut m = zeros::<T, R, C>();
    for (c, col) in m.data.0.iter_mut().enumerate() {
        if let Some(x) = col.get_mut(c) {
            *x = T::ONE;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::SMatrix;

    #[test]
    fn axpy_adds_over_the_common_length_only_in_blocks_and_rest_alike() {
        for ny in 0..10 {
            for nx in 0..10 {
                let x: Vec<f32> = (0..nx).map(|i| (i as f32 * 0.61).sin()).collect();
                let mut y: Vec<f32> = (0..ny).map(|i| (i as f32 * 1.7).cos()).collect();
                let mut want = y.clone();
                for (w, &v) in want.iter_mut().zip(&x) {
                    *w += 0.3 * v;
                }
                slices::axpy(&mut y, 0.3, &x);
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&y), bits(&want), "{ny} and {nx} elements");
            }
        }
    }

    #[test]
    fn dot_matches_plain_sum_and_its_documented_order() {
        let a: [f64; 11] = core::array::from_fn(|i| (i as f64 * 0.37).sin());
        let b: [f64; 11] = core::array::from_fn(|i| (i as f64 * 1.3).cos());
        let plain: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-15);
        // The documented order, written out for f32: lanes i mod 4, then (l0 + l1) + (l2 + l3).
        let a32 = a.map(|v| v as f32);
        let b32 = b.map(|v| v as f32);
        let mut l = [0.0f32; 4];
        for i in 0..11 {
            l[i % 4] += a32[i] * b32[i];
        }
        assert_eq!(dot(&a32, &b32).to_bits(), ((l[0] + l[1]) + (l[2] + l[3])).to_bits());
    }

    /// The transposed form keeps every output's four-lane order: the same bits as `matvec_t` (and `matmul_tn` the
    /// same as a `dot` per entry), for widths around the lane count and on values whose sums depend on the order.
    #[test]
    fn the_transposed_matvec_has_the_bits_of_one_dot_per_output() {
        fn check<const R: usize, const C: usize>() {
            let a = SMatrix::<f32, R, C>::from_fn(|i, j| {
                ((i * 7 + j * 3) as f32 * 0.731).sin() * 1e3f32.powi((i % 3) as i32)
            });
            let x: [f32; R] = core::array::from_fn(|i| ((i as f32) * 1.37).cos() / (1.0 + i as f32));
            let want = matvec_t(&a, &x).map(f32::to_bits);
            assert_eq!(matvec_t_of_transpose(&a.transpose(), &x).map(f32::to_bits), want, "{R}x{C}");
            let b = SMatrix::<f32, R, 2>::from_fn(|i, j| x[i] * (j as f32 + 0.5));
            let tn = matmul_tn(&a, &b);
            for (j, col) in b.data.0.iter().enumerate() {
                for (i, acol) in a.data.0.iter().enumerate() {
                    assert_eq!(tn[(i, j)].to_bits(), dot(acol, col).to_bits(), "{R}x{C} entry ({i}, {j})");
                }
            }
        }
        check::<11, 11>();
        // `A B^T` has the bits of the rank-one updates in increasing k.
        let a = SMatrix::<f32, 11, 7>::from_fn(|i, j| ((i * 5 + j) as f32 * 0.917).sin() * 1e2f32.powi((j % 3) as i32));
        let b = SMatrix::<f32, 9, 7>::from_fn(|i, j| ((i * 3 + j * 11) as f32 * 0.377).cos());
        let mut want = zeros::<f32, 11, 9>();
        for (ac, bc) in a.data.0.iter().zip(b.data.0.iter()) {
            add_outer(&mut want, ac, bc);
        }
        assert_eq!(matmul_nt(&a, &b).map(f32::to_bits), want.map(f32::to_bits));
        check::<3, 5>();
        check::<4, 4>();
        check::<9, 2>();
        check::<32, 7>();
        // More outputs than one tile of the run-time kernel holds.
        check::<7, 33>();
        check::<5, 16>();
        check::<6, 17>();
    }

    #[test]
    fn matvec_kernels_match_nalgebra() {
        let a = SMatrix::<f64, 3, 5>::from_fn(|i, j| (i * 5 + j) as f64 - 6.5);
        let x = [0.5, -1.0, 2.0, 0.25, 3.0];
        let y = [1.0, -2.0, 0.5];
        assert_eq!(matvec(&a, &x).to_vec(), (a * nalgebra::SVector::from(x)).as_slice().to_vec());
        assert_eq!(matvec_t(&a, &y).to_vec(), (a.transpose() * nalgebra::SVector::from(y)).as_slice().to_vec());
        let mut s = zeros::<f64, 3, 5>();
        add_outer(&mut s, &y, &x);
        assert_eq!(s, nalgebra::SVector::from(y) * nalgebra::SVector::from(x).transpose());
        let b = SMatrix::<f64, 5, 2>::from_fn(|i, j| (i as f64) - 2.0 * j as f64);
        assert_eq!(matmul(&a, &b), a * b);
        assert_eq!(matmul_tn(&a, &a), a.transpose() * a);
        let c = SMatrix::<f64, 4, 5>::from_fn(|i, j| (i as f64 + 1.0) * 0.5 - j as f64);
        assert_eq!(matmul_nt(&a, &c), a * c.transpose());
        assert_eq!(frobenius_sq(&a), a.norm_squared());
        sub_outer(&mut s, &y, &x);
        assert_eq!(s, zeros::<f64, 3, 5>());
        assert_eq!(eye::<f64, 2, 3>(), SMatrix::<f64, 2, 3>::identity());
        assert_eq!(transpose(&a), a.transpose());
    }
}
