//! Reading weights back into the GD family: how close is an LSA head to a gradient-descent step?
//!
//! A head acts on every token only through its merged matrices `A = W_K^T W_Q` and `B = P W_V` (both `E x E`,
//! [`MergedHead`]): `h <- h + B sum_j e_j e_j^T A h`. The pair is defined up to a scale (`A / a`, `a B` give the same layer), so
//! the reader first fixes the scale by least squares of `A` onto `I_x = [[I_D, 0], [0, 0]]`:
//! `a = trace(A_xx) / D`, `A' = A / a`, `B' = a B`. The GD construction has `A* = I_x` and
//! `B* = c [[0, 0], [W0, -I_DY]]` with `c = eta / N`. The closest member (least squares in `B'`) has
//! `c = -trace(B'_yy) / DY` and `W0 = B'_yx / c` (matched exactly, so W0 carries no evidence either way), and the
//! relative residual is
//! `sqrt(||A' - I_x||^2 + ||B' - B*||^2) / sqrt(||I_x||^2 + ||B*||^2)` (Frobenius norms).
//! A head built by [`crate::construct::gd_layer`] reads back with residual 0 up to rounding; a random head reads back
//! with a residual of order 1.
//!
//! **Functional and dead blocks.** For the prediction at the query (whose `y` entries are 0) only some blocks
//! matter: the columns of `A` that multiply the query's `x` (`A[:, ..D]`) and the rows of `B` that write `y`
//! (`B[D.., :]`). The rest (`A[:, D..]`, `B[..D, :]`) never reach that prediction, and a model trained on it gets no
//! gradient for them: they keep whatever the initialisation put there. [`GdFit::functional`] is the residual over
//! the functional blocks alone (same scale, same closest member, normalised by the construction's functional
//! blocks); [`GdFit::dead`] is the Frobenius norm of the dead blocks relative to the same normaliser (0 for the
//! construction). `residual^2 * (|A*|^2 + |B*|^2) = functional^2 * F + dead^2 * F` with `F` the functional norm.
//!
//! The sums of squares are taken relative to the largest entry, so a head whose normalised entries (`A / a`,
//! `a B`) are finite reads back with a finite residual even where their squares would overflow; an infinite
//! normalised entry gives an infinite residual, a NaN one a NaN residual.
//!
//! Errors: [`Error::Empty`] for `n = 0`; [`Error::InvalidParameter`] for `DY = 0`; [`Error::ZeroNormaliser`] when
//! `trace(A_xx)` is zero or not finite (the head ignores `x` altogether, so no scale can be read). A rate `c` so small
//! that `W0 = B'_yx / c` overflows gives an infinite `W0` but a finite residual (the residual does not depend on W0).

use crate::layer::Head;
use crate::linalg::zeros;
use crate::merged::MergedHead;
use crate::{Error, Real};
use nalgebra::SMatrix;

/// The closest GD step to a head, and how far it is.
#[derive(Clone, Debug, PartialEq)]
pub struct GdFit<T: Real, const D: usize, const DY: usize> {
    /// The learning rate on `L(W) = 1/(2N) sum ||W x_i - y_i||^2` (`c * N`).
    pub eta: T,
    /// The starting weights `W0`.
    pub w0: SMatrix<T, DY, D>,
    /// The scale `a` taken out of `W_Q^T W_K`.
    pub scale: T,
    /// The relative Frobenius residual (0 = exactly a GD step).
    pub residual: T,
    /// The relative residual over the blocks that reach the query's prediction (see the module docs).
    pub functional: T,
    /// The norm of the blocks that never reach the query's prediction, relative to the functional normaliser.
    pub dead: T,
}

/// The closest member of the GD family to `head`, for a context of `n` pairs (see the module docs).
///
/// ```
/// use dualform::nalgebra::SMatrix;
/// use dualform::{gd_layer, read_gd, GdFit};
/// // A constructed layer reads back as itself: rate 0.7, W0, residual 0 (up to rounding).
/// let w0 = SMatrix::<f64, 1, 2>::new(0.5, -1.0);
/// let layer = gd_layer::<f64, 2, 1, 3>(&w0, 0.7, 10)?;
/// let fit: GdFit<f64, 2, 1> = read_gd(&layer.heads[0], 10)?;
/// assert!((fit.eta - 0.7).abs() < 1e-12 && (fit.w0 - w0).norm() < 1e-12 && fit.residual < 1e-12);
/// # Ok::<(), dualform::Error>(())
/// ```
pub fn read_gd<T: Real, const E: usize, const DK: usize, const DV: usize, const D: usize, const DY: usize>(
    head: &Head<T, E, DK, DV>,
    n: usize,
) -> Result<GdFit<T, D, DY>, Error> {
    const { assert!(D + DY == E, "the token width E must equal D + DY") };
    read_gd_merged(&MergedHead::from_head(head), n)
}

/// The largest magnitude in `values` (NaN if any value is NaN; in any order, since the maximum does not depend on
/// it).
fn max_abs_of<T: Real>(values: impl Iterator<Item = T>) -> T {
    #[allow(clippy::eq_op)] // `x != x` is the NaN test (the scalar trait has no `is_nan`)
    values.fold(T::ZERO, |m, v| match () {
        _ if m != m => m,
        _ if v != v || v.abs() > m => v.abs(),
        _ => m,
    })
}

/// [`read_gd`] for a head given by its merged matrices.
pub fn read_gd_merged<T: Real, const E: usize, const D: usize, const DY: usize>(
    head: &MergedHead<T, E>,
    n: usize,
) -> Result<GdFit<T, D, DY>, Error> {
    const { assert!(D + DY == E, "the token width E must equal D + DY") };
    let mut w0 = zeros::<T, DY, D>();
    let f = read_gd_slices(E, D, head.a.as_slice(), head.b.as_slice(), n, w0.as_mut_slice())?;
    Ok(GdFit { eta: f.eta, w0, scale: f.scale, residual: f.residual, functional: f.functional, dead: f.dead })
}

/// What [`read_gd_slices`] reads besides `W0`: the fields of [`GdFit`] of the same names.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GdFitScalars<T> {
    /// The learning rate (`c * N`).
    pub eta: T,
    /// The scale `a` taken out of `W_Q^T W_K`.
    pub scale: T,
    /// The relative Frobenius residual (0 = exactly a GD step).
    pub residual: T,
    /// The relative residual over the blocks that reach the query's prediction.
    pub functional: T,
    /// The norm of the blocks that never reach the query's prediction, relative to the functional normaliser.
    pub dead: T,
}

/// The sum of squares of `values` in the four-lane order of [`crate::linalg::dot`] (lane `i mod 4`, then
/// `(lane0 + lane1) + (lane2 + lane3)`): the bits of `dot(v, v)` over the same values.
fn sum_sq_lanes<T: Real>(values: impl Iterator<Item = T>) -> T {
    let mut lanes = [T::ZERO; 4];
    for (i, v) in values.enumerate() {
        if let Some(l) = lanes.get_mut(i % 4) {
            *l += v * v;
        }
    }
    (lanes[0] + lanes[1]) + (lanes[2] + lanes[3])
}

/// [`read_gd_merged`] at widths chosen at run time: `A` and `B` are `e x e` (column-major) with `d` inputs and
/// `e - d` targets; `W0` (`(e - d) x d`, column-major) is written into `w0`. The same arithmetic in the same order
/// (the fixed-width reader calls this). Errors: those of [`read_gd_merged`], and [`Error::LengthMismatch`] for a
/// matrix or `w0` of the wrong size.
pub fn read_gd_slices<T: Real>(
    e: usize,
    d: usize,
    a: &[T],
    b: &[T],
    n: usize,
    w0: &mut [T],
) -> Result<GdFitScalars<T>, Error> {
    let dy = e.saturating_sub(d);
    for (want, found) in [(e * e, a.len()), (e * e, b.len()), (dy * d, w0.len())] {
        if want != found {
            return Err(Error::LengthMismatch { expected: want, found });
        }
    }
    if n == 0 {
        return Err(Error::Empty);
    }
    if dy == 0 {
        return Err(Error::InvalidParameter("DY: a GD step needs at least one target coordinate"));
    }
    let at = |m: &[T], i: usize, j: usize| m.get(j * e + i).copied().unwrap_or(T::ZERO);
    let trace_x = (0..d).fold(T::ZERO, |s, i| s + at(a, i, i));
    let scale = trace_x / T::from_f64(d as f64);
    if scale == T::ZERO || !scale.is_finite() {
        return Err(Error::ZeroNormaliser);
    }
    // The normalised heads and the closest member, entry by entry (nothing is stored: e^2 values each).
    let b_n = |i: usize, j: usize| at(b, i, j) * scale;
    let trace_y = (0..dy).fold(T::ZERO, |s, i| s + b_n(d + i, d + i));
    let c = -trace_y / T::from_f64(dy as f64);
    w0.fill(T::ZERO);
    if c != T::ZERO {
        for (j, col) in w0.chunks_exact_mut(dy).enumerate() {
            for (i, v) in col.iter_mut().enumerate() {
                *v = b_n(d + i, j) / c;
            }
        }
    }
    let a_star = |i: usize, j: usize| if i == j && i < d { T::ONE } else { T::ZERO };
    // The W0 block is matched exactly: copied, not rebuilt as c * (B'_yx / c), which overflows when c is tiny and
    // would make the residual depend on W0.
    let b_star = |i: usize, j: usize| match () {
        _ if i >= d && j < d => b_n(i, j),
        _ if i >= d && i == j => -c,
        _ => T::ZERO,
    };
    let da = |i: usize, j: usize| at(a, i, j) / scale - a_star(i, j);
    let db = |i: usize, j: usize| b_n(i, j) - b_star(i, j);
    let entries = || (0..e).flat_map(move |j| (0..e).map(move |i| (i, j)));
    // Sums of squares taken relative to the largest magnitude (so entries up to the type's maximum square without
    // overflow), in a fixed order: A's columns 0..D, then B's rows D..E (functional); the rest (dead).
    let big = max_abs_of(entries().map(|(i, j)| da(i, j)).chain(entries().map(|(i, j)| db(i, j))));
    let norm_big = max_abs_of(entries().map(|(i, j)| a_star(i, j)).chain(entries().map(|(i, j)| b_star(i, j))));
    let infinite = big == T::INFINITY;
    let sq = |v: T| {
        // Relative to an infinite largest entry, infinite entries count 1 and finite ones 0 (the residual is then
        // infinite), instead of the NaN of inf / inf.
        let r = if infinite {
            if v.abs() == T::INFINITY {
                T::ONE
            } else {
                T::ZERO
            }
        } else {
            v / big
        };
        r * r
    };
    // The construction's norm: each matrix's columns by the four-lane dot, summed column after column.
    let frob = |m: &dyn Fn(usize, usize) -> T| {
        (0..e).fold(T::ZERO, |acc, j| acc + sum_sq_lanes((0..e).map(|i| m(i, j) / norm_big)))
    };
    let norm = (frob(&a_star) + frob(&b_star)).sqrt();
    let (mut diff, mut functional_diff, mut dead_sq) = (T::ZERO, T::ZERO, T::ZERO);
    for j in 0..e {
        for i in 0..e {
            let (va, vb) = (sq(da(i, j)), sq(db(i, j)));
            if j < d {
                functional_diff += va;
            } else {
                dead_sq += va;
            }
            if i >= d {
                functional_diff += vb;
            } else {
                dead_sq += vb;
            }
        }
    }
    for m in [&da as &dyn Fn(usize, usize) -> T, &db] {
        for j in 0..e {
            diff += (0..e).fold(T::ZERO, |s, i| s + sq(m(i, j)));
        }
    }
    // `relative(s)` = sqrt(s * big^2) / (norm * norm_big), with the magnitudes kept apart; an all-zero difference
    // (big = 0) is an exact match.
    let relative = |s: T| match () {
        _ if big == T::ZERO || s == T::ZERO => T::ZERO,
        _ if infinite => T::INFINITY,
        _ => s.sqrt() / norm * (big / norm_big),
    };
    // The construction's dead blocks are zero, so its whole norm is functional.
    Ok(GdFitScalars {
        eta: c * T::from_f64(n as f64),
        scale,
        residual: relative(diff),
        functional: relative(functional_diff),
        dead: relative(dead_sq),
    })
}
