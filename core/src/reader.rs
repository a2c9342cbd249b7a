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
use crate::linalg::{frobenius_sq, zeros};
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
fn max_abs<'a, T: Real + 'a>(values: impl Iterator<Item = &'a T>) -> T {
    #[allow(clippy::eq_op)] // `x != x` is the NaN test (the scalar trait has no `is_nan`)
    values.fold(T::ZERO, |m, &v| match () {
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
    if n == 0 {
        return Err(Error::Empty);
    }
    if DY == 0 {
        return Err(Error::InvalidParameter("DY: a GD step needs at least one target coordinate"));
    }
    let (a, b) = (&head.a, &head.b);
    let at = |m: &SMatrix<T, E, E>, i: usize, j: usize| m.get((i, j)).copied().unwrap_or(T::ZERO);
    let trace_x = (0..D).fold(T::ZERO, |s, i| s + at(a, i, i));
    let scale = trace_x / T::from_f64(D as f64);
    if scale == T::ZERO || !scale.is_finite() {
        return Err(Error::ZeroNormaliser);
    }
    let a_n = a.map(|v| v / scale);
    let b_n = b.map(|v| v * scale);
    let trace_y = (0..DY).fold(T::ZERO, |s, i| s + at(&b_n, D + i, D + i));
    let c = -trace_y / T::from_f64(DY as f64);
    let mut w0 = zeros::<T, DY, D>();
    if c != T::ZERO {
        for (j, col) in w0.data.0.iter_mut().enumerate() {
            for (i, v) in col.iter_mut().enumerate() {
                *v = at(&b_n, D + i, j) / c;
            }
        }
    }
    let mut a_star = zeros::<T, E, E>();
    let mut b_star = zeros::<T, E, E>();
    for i in 0..D {
        if let Some(v) = a_star.get_mut((i, i)) {
            *v = T::ONE;
        }
    }
    for i in 0..DY {
        // The W0 block is matched exactly: copied, not rebuilt as c * (B'_yx / c), which overflows when c is tiny
        // and would make the residual depend on W0.
        for j in 0..D {
            if let Some(v) = b_star.get_mut((D + i, j)) {
                *v = at(&b_n, D + i, j);
            }
        }
        if let Some(v) = b_star.get_mut((D + i, D + i)) {
            *v = -c;
        }
    }
    let da = a_n - a_star;
    let db = b_n - b_star;
    // Sums of squares taken relative to the largest magnitude (so entries up to the type's maximum square without
    // overflow), in a fixed order: A's columns 0..D, then B's rows D..E (functional); the rest (dead).
    let big = max_abs(da.iter().chain(db.iter()));
    let norm_big = max_abs(a_star.iter().chain(b_star.iter()));
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
    let norm = (frobenius_sq(&a_star.map(|v| v / norm_big)) + frobenius_sq(&b_star.map(|v| v / norm_big))).sqrt();
    let (mut diff, mut functional_diff, mut dead_sq) = (T::ZERO, T::ZERO, T::ZERO);
    for j in 0..E {
        for i in 0..E {
            let (va, vb) = (sq(at(&da, i, j)), sq(at(&db, i, j)));
            if j < D {
                functional_diff += va;
            } else {
                dead_sq += va;
            }
            if i >= D {
                functional_diff += vb;
            } else {
                dead_sq += vb;
            }
        }
    }
    for col in da.data.0.iter().chain(db.data.0.iter()) {
        diff += col.iter().fold(T::ZERO, |s, &v| s + sq(v));
    }
    // `relative(s)` = sqrt(s * big^2) / (norm * norm_big), with the magnitudes kept apart; an all-zero difference
    // (big = 0) is an exact match.
    let relative = |s: T| match () {
        _ if big == T::ZERO || s == T::ZERO => T::ZERO,
        _ if infinite => T::INFINITY,
        _ => s.sqrt() / norm * (big / norm_big),
    };
    // The construction's dead blocks are zero, so its whole norm is functional.
    Ok(GdFit {
        eta: c * T::from_f64(n as f64),
        w0,
        scale,
        residual: relative(diff),
        functional: relative(functional_diff),
        dead: relative(dead_sq),
    })
}
