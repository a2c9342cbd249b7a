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

/// The pairs `(a[k m..(k + 1) m], b[k n..(k + 1) n])` for `k = 0, 1, ...` while both slices hold a whole chunk: what
/// `a.chunks_exact_mut(m).zip(b.chunks_exact(n))` visits, without the two integer divisions with which that zip's
/// constructor computes its length (LLVM kept the constructor out of line inside the kernels: a call and two
/// divisions per matrix product or per token loop). Nothing when `m` or `n` is zero.
#[inline(always)]
pub fn chunk_pairs<'a, 'b, T>(a: &'a mut [T], m: usize, b: &'b [T], n: usize) -> ChunkPairs<'a, 'b, T> {
    ChunkPairs { a, b, m, n }
}

/// The iterator of [`chunk_pairs`].
#[derive(Debug)]
pub struct ChunkPairs<'a, 'b, T> {
    a: &'a mut [T],
    b: &'b [T],
    m: usize,
    n: usize,
}

impl<'a, 'b, T> Iterator for ChunkPairs<'a, 'b, T> {
    type Item = (&'a mut [T], &'b [T]);

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.m == 0 || self.n == 0 {
            return None;
        }
        let (x, a) = core::mem::take(&mut self.a).split_at_mut_checked(self.m)?;
        let (y, b) = self.b.split_at_checked(self.n)?;
        (self.a, self.b) = (a, b);
        Some((x, y))
    }
}

/// Whether every element of `x` is finite (in every lane): a plain loop, no closure, so that it inlines into a
/// kernel compiled for a wider vector unit.
#[inline(always)]
pub fn all_finite<T: Real>(x: &[T]) -> bool {
    let mut finite = true;
    for v in x {
        finite &= v.is_finite();
    }
    finite
}

/// `y += a * x` over the common length (two roundings per element; never fused).
#[inline(always)]
pub fn axpy<T: Real>(y: &mut [T], a: T, x: &[T]) {
    // In blocks of four (`as_chunks`), then the rest: a run-time length would otherwise pay the loop's counting and
    // branching once per element. The same operation per element either way.
    let n = y.len().min(x.len());
    let (y, x) = (y.split_at_mut_checked(n).map_or(&mut [][..], |(h, _)| h), x.get(..n).unwrap_or(x));
    let (cy, ry) = y.as_chunks_mut::<4>();
    let (cx, rx) = x.as_chunks::<4>();
    for (yb, xb) in cy.iter_mut().zip(cx) {
        for (yi, &xi) in yb.iter_mut().zip(xb) {
            *yi += a * xi;
        }
    }
    for (yi, &xi) in ry.iter_mut().zip(rx) {
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
    // Arrays of four (`as_chunks`), not `chunks_exact(4)`: zipping two `ChunksExact` computes their lengths by
    // division, and in a large caller LLVM may leave that constructor as a call (two divisions per dot product).
    let (ca, ra) = a.as_chunks::<4>();
    let (cb, rb) = b.as_chunks::<4>();
    for (x, y) in ca.iter().zip(cb) {
        for ((l, &xi), &yi) in lanes.iter_mut().zip(x).zip(y) {
            *l += xi * yi;
        }
    }
    for ((l, &xi), &yi) in lanes.iter_mut().zip(ra).zip(rb) {
        *l += xi * yi;
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// `y += A x`: `A` has `y.len()` rows and its first `x.len()` columns are used; each `y[r]` takes `x[c] A[r, c]`
/// for `c = 0, 1, ...` in order (the bits of one [`axpy`] per column). Computed in blocks of 8, then 4, 2 and 1
/// rows whose partial sums stay in registers across the columns: a run-time row count would otherwise store and
/// reload `y` for every column.
#[inline(always)]
pub fn matvec_acc<T: Real>(y: &mut [T], a: &[T], x: &[T]) {
    let rows = y.len();
    if rows == 0 {
        return;
    }
    let mut r0 = 0;
    while r0 + 8 <= rows {
        matvec_block::<T, 8>(y, a, x, rows, r0);
        r0 += 8;
    }
    if r0 + 4 <= rows {
        matvec_block::<T, 4>(y, a, x, rows, r0);
        r0 += 4;
    }
    if r0 + 2 <= rows {
        matvec_block::<T, 2>(y, a, x, rows, r0);
        r0 += 2;
    }
    if r0 < rows {
        matvec_block::<T, 1>(y, a, x, rows, r0);
    }
}

/// Rows `r0..r0 + B` of [`matvec_acc`], accumulated in `B` registers.
#[inline(always)]
fn matvec_block<T: Real, const B: usize>(y: &mut [T], a: &[T], x: &[T], rows: usize, r0: usize) {
    let Some(out) = y.get_mut(r0..r0 + B) else { return };
    let mut acc = [T::ZERO; B];
    acc.copy_from_slice(out);
    for (col, &xc) in a.chunks_exact(rows).zip(x.iter()) {
        if let Some(part) = col.get(r0..r0 + B) {
            for (s, &v) in acc.iter_mut().zip(part) {
                *s += xc * v;
            }
        }
    }
    out.copy_from_slice(&acc);
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
/// `k`, then `(lane0 + lane1) + (lane2 + lane3)`), vectorised across the outputs, in register tiles of 8, 4, 2 and 1
/// outputs.
#[inline(always)]
pub fn matvec_t_of_transpose<T: Real>(y: &mut [T], at: &[T], x: &[T]) {
    let rows = y.len();
    if rows == 0 {
        return;
    }
    let mut r0 = 0;
    while r0 + 8 <= rows {
        lanes_block::<T, 8>(y, at, x, rows, r0);
        r0 += 8;
    }
    if r0 + 4 <= rows {
        lanes_block::<T, 4>(y, at, x, rows, r0);
        r0 += 4;
    }
    if r0 + 2 <= rows {
        lanes_block::<T, 2>(y, at, x, rows, r0);
        r0 += 2;
    }
    if r0 < rows {
        lanes_block::<T, 1>(y, at, x, rows, r0);
    }
}

/// Outputs `r0..r0 + B` of [`matvec_t_of_transpose`], their four lanes in registers: columns taken four at a
/// time, column `4 i + l` into lane `l`, then the last one to three columns into lanes 0, 1, 2.
#[inline(always)]
fn lanes_block<T: Real, const B: usize>(y: &mut [T], at: &[T], x: &[T], rows: usize, r0: usize) {
    let k = x.len().min(at.len() / rows);
    let (at, x) = (at.get(..k * rows).unwrap_or_default(), x.get(..k).unwrap_or_default());
    let (mut l0, mut l1, mut l2, mut l3) = ([T::ZERO; B], [T::ZERO; B], [T::ZERO; B], [T::ZERO; B]);
    // Groups of four columns split off one after another, not a zip of `chunks_exact` iterators: that zip's
    // constructor divides by the run-time chunk size, and LLVM has kept it out of line inside the kernels.
    let (xs, rest_x) = x.as_chunks::<4>();
    let (mut groups, mut rest_cols) = at.split_at_checked(4 * rows * xs.len()).unwrap_or((at, &[]));
    for &[x0, x1, x2, x3] in xs {
        let Some((group, next)) = groups.split_at_checked(4 * rows) else { break };
        groups = next;
        let (c01, c23) = group.split_at(2 * rows);
        let ((c0, c1), (c2, c3)) = (c01.split_at(rows), c23.split_at(rows));
        add_rows(&mut l0, x0, c0, r0);
        add_rows(&mut l1, x1, c1, r0);
        add_rows(&mut l2, x2, c2, r0);
        add_rows(&mut l3, x3, c3, r0);
    }
    for (lane, &xk) in [&mut l0, &mut l1, &mut l2].into_iter().zip(rest_x) {
        let Some((col, next)) = rest_cols.split_at_checked(rows) else { break };
        rest_cols = next;
        add_rows(lane, xk, col, r0);
    }
    if let Some(out) = y.get_mut(r0..r0 + B) {
        for ((((yi, a), b), c), d) in out.iter_mut().zip(l0).zip(l1).zip(l2).zip(l3) {
            *yi = (a + b) + (c + d);
        }
    }
}

/// `lane[i] += xk * col[r0 + i]` (`col` read as zeros where it is too short). A function, not a closure: closures
/// may stay out of line, and a kernel inlined into a caller compiled for a wider vector unit must be inlined whole.
#[inline(always)]
fn add_rows<T: Real, const B: usize>(lane: &mut [T; B], xk: T, col: &[T], r0: usize) {
    let mut p = [T::ZERO; B];
    if let Some(src) = col.get(r0..r0 + B) {
        p.copy_from_slice(src);
    }
    for (s, v) in lane.iter_mut().zip(p) {
        *s += xk * v;
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
    for (oc, bc) in chunk_pairs(out, rows, b, inner) {
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
    for (oc, bc) in chunk_pairs(out, rows, b, inner) {
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
    for (oc, bc) in chunk_pairs(out, rows, bt, inner) {
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
        for (r, &v) in col.iter().enumerate() {
            if let Some(x) = out.get_mut(r * cols + c) {
                *x = v;
            }
        }
    }
}

/// The Gram matrix `G = sum_j e_j e_j^T` of the tokens of width `e` in `tokens` (`G` is `e x e`): the upper
/// triangle (rows `0..=c` of each column `c`), each entry summed over `j` in increasing order from zero, then
/// mirrored. The same bits as [`add_outer`] per token (products commute, and each entry sees the same terms in the
/// same order) in a little over half the multiply-adds. Each column's rows are summed in register blocks of 8, 4,
/// 2 and 1 across the tokens.
#[inline(always)]
pub fn gram<T: Real>(g: &mut [T], tokens: &[T], e: usize) {
    g.fill(T::ZERO);
    if e == 0 {
        return;
    }
    for c in 0..e {
        let rows = c + 1;
        let mut r0 = 0;
        while r0 + 8 <= rows {
            gram_block::<T, 8>(g, tokens, e, c, r0);
            r0 += 8;
        }
        if r0 + 4 <= rows {
            gram_block::<T, 4>(g, tokens, e, c, r0);
            r0 += 4;
        }
        if r0 + 2 <= rows {
            gram_block::<T, 2>(g, tokens, e, c, r0);
            r0 += 2;
        }
        if r0 < rows {
            gram_block::<T, 1>(g, tokens, e, c, r0);
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

/// Rows `r0..r0 + B` of column `c` of [`gram`], summed over the tokens in registers.
#[inline(always)]
fn gram_block<T: Real, const B: usize>(g: &mut [T], tokens: &[T], e: usize, c: usize, r0: usize) {
    let mut acc = [T::ZERO; B];
    for tok in tokens.chunks_exact(e) {
        if let (Some(part), Some(&ec)) = (tok.get(r0..r0 + B), tok.get(c)) {
            for (s, &er) in acc.iter_mut().zip(part) {
                *s += er * ec;
            }
        }
    }
    if let Some(out) = g.get_mut(c * e + r0..c * e + r0 + B) {
        out.copy_from_slice(&acc);
    }
}
