//! The fixed-order linear algebra of [`crate::linalg`] over shapes chosen at run time: vectors are slices and
//! matrices column-major slices (`rows * cols` entries, column `c` at `c * rows..`). This is the one
//! implementation; the const-generic functions of [`crate::linalg`] call these on their arrays, so a kernel gives the
//! same bits whether its sizes are constants (firmware) or run-time values (the host harness).
//!
//! Numerical contract: exactly the module contract of [`crate::linalg`] (four-lane [`dot`], column-ordered
//! [`matvec`], ...). Shapes: every function takes its sizes from the slice lengths it is given (documented per
//! function) and works on the common part when they disagree; nothing here panics, allocates or indexes out of
//! bounds. A caller that needs a mismatch reported checks the lengths first (the kernels built on these do, and
//! return [`crate::Error::LengthMismatch`]).

use crate::Real;

/// Outputs per tile of [`matvec_t_of_transpose`]: its four accumulator lanes live on the stack, `4 * TILE` values.
const TILE: usize = 16;

/// `y += a * x` over the common length (two roundings per element; never fused).
#[inline(always)]
pub fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    for (yi, &xi) in y.iter_mut().zip(x.iter()) {
        *yi += a * xi;
    }
}

/// Dot product over the common length: lane `l` sums the products of indices `i = l (mod 4)` in increasing `i`;
/// the result is `(lane0 + lane1) + (lane2 + lane3)`.
#[inline(always)]
pub fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    // Cut both to the common length first: chunking them separately would pair the longer one's tail with the
    // shorter one's remainder.
    let n = a.len().min(b.len());
    let (a, b) = (a.get(..n).unwrap_or(a), b.get(..n).unwrap_or(b));
    let mut lanes = [T::ZERO; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for ((l, &xi), &yi) in lanes.iter_mut().zip(x).zip(y) {
            *l += xi * yi;
        }
    }
    for ((l, &xi), &yi) in lanes.iter_mut().zip(ra).zip(rb) {
        *l += xi * yi;
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// `y += A x`: `A` has `y.len()` rows and its first `x.len()` columns are used; columns taken in order, each an
/// [`axpy`].
#[inline(always)]
pub fn matvec_acc<T: Real>(y: &mut [T], a: &[T], x: &[T]) {
    let rows = y.len();
    if rows == 0 {
        return;
    }
    for (col, &xc) in a.chunks_exact(rows).zip(x.iter()) {
        axpy(y, xc, col);
    }
}

/// `y = A x` (see [`matvec_acc`]).
#[inline(always)]
pub fn matvec<T: Real>(y: &mut [T], a: &[T], x: &[T]) {
    y.fill(T::ZERO);
    matvec_acc(y, a, x);
}

/// `y = A^T x`: `A` has `x.len()` rows and `y.len()` columns; one four-lane [`dot`] per column.
#[inline(always)]
pub fn matvec_t<T: Real>(y: &mut [T], a: &[T], x: &[T]) {
    let rows = x.len();
    if rows == 0 {
        y.fill(T::ZERO);
        return;
    }
    for (yc, col) in y.iter_mut().zip(a.chunks_exact(rows)) {
        *yc = dot(col, x);
    }
}

/// `y = A^T x` given `at = A^T` (`y.len()` rows, `x.len()` columns): the bits of [`matvec_t`] (each output's four
/// lanes held side by side as accumulator vectors, lane `l` taking `x[k] A^T[:, k]` for `k = l (mod 4)` in increasing
/// `k`, then `(lane0 + lane1) + (lane2 + lane3)`), vectorised across the outputs, in tiles of 16 outputs.
#[inline(always)]
pub fn matvec_t_of_transpose<T: Real>(y: &mut [T], at: &[T], x: &[T]) {
    let rows = y.len();
    if rows == 0 {
        return;
    }
    for (t, tile) in y.chunks_mut(TILE).enumerate() {
        let start = t * TILE;
        let width = tile.len();
        let mut lanes = [[T::ZERO; TILE]; 4];
        for (cols, xs) in at.chunks(4 * rows).zip(x.chunks(4)) {
            for ((lane, col), &xk) in lanes.iter_mut().zip(cols.chunks_exact(rows)).zip(xs) {
                let (Some(lane), Some(col)) = (lane.get_mut(..width), col.get(start..start + width)) else {
                    continue;
                };
                axpy(lane, xk, col);
            }
        }
        let [l0, l1, l2, l3] = &lanes;
        for ((((yi, &a), &b), &c), &d) in tile.iter_mut().zip(l0).zip(l1).zip(l2).zip(l3) {
            *yi = (a + b) + (c + d);
        }
    }
}

/// `S += u v^T` (`S` has `u.len()` rows; its first `v.len()` columns), one [`axpy`] per column.
#[inline(always)]
pub fn add_outer<T: Real>(s: &mut [T], u: &[T], v: &[T]) {
    let rows = u.len();
    if rows == 0 {
        return;
    }
    for (col, &vc) in s.chunks_exact_mut(rows).zip(v.iter()) {
        axpy(col, vc, u);
    }
}

/// `S -= u v^T`, one [`axpy`] per column with `-v[c]`.
#[inline(always)]
pub fn sub_outer<T: Real>(s: &mut [T], u: &[T], v: &[T]) {
    let rows = u.len();
    if rows == 0 {
        return;
    }
    for (col, &vc) in s.chunks_exact_mut(rows).zip(v.iter()) {
        axpy(col, -vc, u);
    }
}

/// `out = A B` with `A` of `rows x inner` and `B` of `inner x cols` (`out` holds `rows * cols`): column `j` is
/// [`matvec`]`(A, B[:, j])`.
#[inline(always)]
pub fn matmul<T: Real>(out: &mut [T], a: &[T], b: &[T], rows: usize, inner: usize) {
    if rows == 0 || inner == 0 {
        out.fill(T::ZERO);
        return;
    }
    for (oc, bc) in out.chunks_exact_mut(rows).zip(b.chunks_exact(inner)) {
        matvec(oc, a, bc);
    }
}

/// `out = A^T B` with `A` of `inner x rows` and `B` of `inner x cols` (`out` holds `rows * cols`): entry `(i, j)` is
/// [`dot`]`(A[:, i], B[:, j])`, computed as [`matvec_t_of_transpose`] per column of `B` from `A^T`, which is written
/// into `at` (`rows * inner` values).
#[inline(always)]
pub fn matmul_tn<T: Real>(out: &mut [T], a: &[T], b: &[T], rows: usize, inner: usize, at: &mut [T]) {
    if rows == 0 || inner == 0 {
        out.fill(T::ZERO);
        return;
    }
    transpose(at, a, inner, rows);
    for (oc, bc) in out.chunks_exact_mut(rows).zip(b.chunks_exact(inner)) {
        matvec_t_of_transpose(oc, at, bc);
    }
}

/// `out = A B^T` with `A` of `rows x inner` and `B` of `cols x inner` (`out` holds `rows * cols`):
/// `sum_k A[:, k] B[:, k]^T`, every entry summed over `k` in increasing order from zero (the bits of [`add_outer`]
/// for `k = 0, 1, ...`), computed as [`matvec`]`(A, B^T[:, c])` per column `c` from `B^T`, which is written into `bt`
/// (`inner * cols` values).
#[inline(always)]
pub fn matmul_nt<T: Real>(out: &mut [T], a: &[T], b: &[T], rows: usize, inner: usize, bt: &mut [T]) {
    if rows == 0 || inner == 0 {
        out.fill(T::ZERO);
        return;
    }
    let cols = out.len() / rows;
    transpose(bt, b, cols, inner);
    for (oc, bc) in out.chunks_exact_mut(rows).zip(bt.chunks_exact(inner)) {
        matvec(oc, a, bc);
    }
}

/// `out = A^T` for `A` of `rows x cols` (`out` is `cols x rows`), entry by entry (a copy, no arithmetic).
#[inline(always)]
pub fn transpose<T: Real>(out: &mut [T], a: &[T], rows: usize, cols: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    for (c, col) in a.chunks_exact(rows).take(cols).enumerate() {
        for (out_col, &v) in out.chunks_exact_mut(cols).zip(col.iter()) {
            if let Some(x) = out_col.get_mut(c) {
                *x = v;
            }
        }
    }
}

/// The Gram matrix `G = sum_j e_j e_j^T` of the tokens of width `e` in `tokens` (`G` is `e x e`): the upper
/// triangle (rows `0..=c` of each column `c`), each entry summed over `j` in increasing order, then mirrored. The
/// same bits as [`add_outer`] per token (products commute, and each entry sees the same terms in the same order) in a
/// little over half the multiply-adds.
#[inline(always)]
pub fn gram<T: Real>(g: &mut [T], tokens: &[T], e: usize) {
    g.fill(T::ZERO);
    if e == 0 {
        return;
    }
    for tok in tokens.chunks_exact(e) {
        for (c, (col, &ec)) in g.chunks_exact_mut(e).zip(tok.iter()).enumerate() {
            for (gi, &er) in col.iter_mut().zip(tok.iter()).take(c + 1) {
                *gi += er * ec;
            }
        }
    }
    for c in 1..e {
        for r in 0..c {
            if let Some(v) = g.get(c * e + r).copied() {
                if let Some(w) = g.get_mut(r * e + c) {
                    *w = v;
                }
            }
        }
    }
}
