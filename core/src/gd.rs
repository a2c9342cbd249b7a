//! Gradient descent on in-context least squares, in the primal (weights) and the dual (data) space.
//!
//! The problem: context pairs `(x_i, y_i)`, `x_i` in R^D, `y_i` in R^DY, and the loss
//! `L(W) = 1/(2N) sum_i ||W x_i - y_i||^2` for `W` of shape `DY x D`. Its gradient is
//! `dL/dW = 1/N sum_i (W x_i - y_i) x_i^T`, and one step with rate `eta` is `W <- W - eta dL/dW`.
//!
//! - Primal: [`gradient`], [`gd_step`], [`gd_steps`], [`predict`], [`loss`]. Sums run over `i` in increasing order;
//!   the 1/N is applied once, after the sum.
//! - Dual: [`dual_step`] never forms `W`. It moves the targets of every token, context and query, by
//!   `y_t <- y_t + eta/N sum_i (W0 x_i - y_i) (x_i . x_t)`, which is `y_t <- y_t - (W1 - W0) x_t`. A query token
//!   that starts at `(x_q, -W0 x_q)` ends at `(x_q, -W1 x_q)`: the prediction is minus its `y` part. Repeating the
//!   step with the same `W0` gives K steps of GD ([`dual_steps`]), which is why one construction reused K times is
//!   K steps.
//! - GD++ ([`gdpp_step`]): the dual step plus a transformation of every input,
//!   `x_t <- x_t - gamma sum_i x_i (x_i . x_t) = (I - gamma X X^T) x_t` (no 1/N: gamma carries it), all from the
//!   step's input values.
//!
//! Exactness: the primal and dual forms agree in real arithmetic; the tests hold them to 1e-12 relative in f64.
//! Errors: an empty context (N = 0) returns [`Error::Empty`] where a 1/N is needed; non-finite values propagate.

use crate::linalg::{add_outer, axpy, dot, matvec, zeros};
use crate::{Error, Real};
use nalgebra::SMatrix;

/// `1/N` as `T`, or [`Error::Empty`] for `N = 0`.
#[inline(always)]
pub(crate) fn inv_n<T: Real>(n: usize) -> Result<T, Error> {
    if n == 0 {
        return Err(Error::Empty);
    }
    Ok(T::ONE / T::from_f64(n as f64))
}

/// The residuals `W x_i - y_i`.
fn residuals<T: Real, const D: usize, const DY: usize, const N: usize>(
    w: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &[[T; DY]; N],
) -> [[T; DY]; N] {
    let mut r = [[T::ZERO; DY]; N];
    for ((ri, x), y) in r.iter_mut().zip(xs.iter()).zip(ys.iter()) {
        *ri = matvec(w, x);
        for (a, &b) in ri.iter_mut().zip(y.iter()) {
            *a -= b;
        }
    }
    r
}

/// `W x`.
#[inline(always)]
pub fn predict<T: Real, const D: usize, const DY: usize>(w: &SMatrix<T, DY, D>, x: &[T; D]) -> [T; DY] {
    matvec(w, x)
}

/// `L(W) = 1/(2N) sum_i ||W x_i - y_i||^2`.
pub fn loss<T: Real, const D: usize, const DY: usize, const N: usize>(
    w: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &[[T; DY]; N],
) -> Result<T, Error> {
    let inv = inv_n::<T>(N)?;
    let r = residuals(w, xs, ys);
    let sum = r.iter().fold(T::ZERO, |acc, r| acc + dot(r, r));
    if sum.is_finite() {
        return Ok(sum * inv / T::from_f64(2.0));
    }
    // The squares overflowed (or an input is not finite): again with every residual divided by the largest |r|, so
    // a loss that is representable is returned as such; non-finite residuals still give a non-finite loss.
    let s = r.iter().flat_map(|ri| ri.iter()).fold(T::ZERO, |m, v| if v.abs() > m { v.abs() } else { m });
    if !s.is_finite() || s == T::ZERO {
        return Ok(sum * inv / T::from_f64(2.0));
    }
    let scaled = r.iter().fold(T::ZERO, |acc, ri| acc + dot(&ri.map(|v| v / s), &ri.map(|v| v / s)));
    Ok(s * (scaled * inv / T::from_f64(2.0) * s))
}

/// `dL/dW = 1/N sum_i (W x_i - y_i) x_i^T`.
pub fn gradient<T: Real, const D: usize, const DY: usize, const N: usize>(
    w: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &[[T; DY]; N],
) -> Result<SMatrix<T, DY, D>, Error> {
    let inv = inv_n::<T>(N)?;
    let mut g = zeros::<T, DY, D>();
    for (r, x) in residuals(w, xs, ys).iter().zip(xs.iter()) {
        add_outer(&mut g, r, x);
    }
    for v in g.iter_mut() {
        *v *= inv;
    }
    Ok(g)
}

/// A rate or step parameter must be finite (a negative rate is allowed: it is gradient ascent).
fn finite<T: Real>(v: T, name: &'static str) -> Result<(), Error> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidParameter(name))
    }
}

/// One step `W - eta dL/dW`. Errors: [`Error::Empty`] for `N = 0`, [`Error::InvalidParameter`] for a non-finite
/// `eta`.
pub fn gd_step<T: Real, const D: usize, const DY: usize, const N: usize>(
    w: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &[[T; DY]; N],
    eta: T,
) -> Result<SMatrix<T, DY, D>, Error> {
    finite(eta, "eta must be finite")?;
    let g = gradient(w, xs, ys)?;
    let mut out = *w;
    for (o, &gi) in out.iter_mut().zip(g.iter()) {
        *o -= eta * gi;
    }
    Ok(out)
}

/// `k` steps from `w0` with a constant rate.
pub fn gd_steps<T: Real, const D: usize, const DY: usize, const N: usize>(
    w0: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &[[T; DY]; N],
    eta: T,
    k: usize,
) -> Result<SMatrix<T, DY, D>, Error> {
    let mut w = *w0;
    for _ in 0..k {
        w = gd_step(&w, xs, ys, eta)?;
    }
    Ok(w)
}

/// The dual step: `y_t += eta/N sum_i (W0 x_i - y_i) (x_i . x_t)` for every context target `ys[t]` and for the
/// query target `yq` (inputs `xq`), all from the step's input targets. Errors as [`gd_step`].
pub fn dual_step<T: Real, const D: usize, const DY: usize, const N: usize>(
    w0: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &mut [[T; DY]; N],
    xq: &[T; D],
    yq: &mut [T; DY],
    eta: T,
) -> Result<(), Error> {
    finite(eta, "eta must be finite")?;
    let c = eta * inv_n::<T>(N)?;
    let r = residuals(w0, xs, ys);
    let delta = |xt: &[T; D]| {
        let mut d = [T::ZERO; DY];
        for (ri, xi) in r.iter().zip(xs.iter()) {
            axpy(&mut d, dot(xi, xt), ri);
        }
        d
    };
    for (yt, xt) in ys.iter_mut().zip(xs.iter()) {
        axpy(yt, c, &delta(xt));
    }
    axpy(yq, c, &delta(xq));
    Ok(())
}

/// `k` dual steps from `W0` on a copy of the targets, with the query target starting at `-W0 x_q`; returns the
/// prediction, minus the query's final target (equal to `gd_steps(w0, .., k) x_q`).
pub fn dual_steps<T: Real, const D: usize, const DY: usize, const N: usize>(
    w0: &SMatrix<T, DY, D>,
    xs: &[[T; D]; N],
    ys: &[[T; DY]; N],
    xq: &[T; D],
    eta: T,
    k: usize,
) -> Result<[T; DY], Error> {
    let mut ys = *ys;
    let mut yq = matvec(w0, xq).map(|v| -v);
    for _ in 0..k {
        dual_step(w0, xs, &mut ys, xq, &mut yq, eta)?;
    }
    Ok(yq.map(|v| -v))
}

/// One GD++ step on all tokens: the dual step of the targets (rate `eta`, from `W0`) and
/// `x_t <- x_t - gamma sum_i x_i (x_i . x_t)` for context and query inputs, all from the step's input values.
/// Errors as [`gd_step`], and [`Error::InvalidParameter`] for a non-finite `gamma` (nothing is changed then).
#[allow(clippy::too_many_arguments)]
pub fn gdpp_step<T: Real, const D: usize, const DY: usize, const N: usize>(
    w0: &SMatrix<T, DY, D>,
    xs: &mut [[T; D]; N],
    ys: &mut [[T; DY]; N],
    xq: &mut [T; D],
    yq: &mut [T; DY],
    eta: T,
    gamma: T,
) -> Result<(), Error> {
    finite(gamma, "gamma must be finite")?;
    let old = *xs;
    let xq_old = *xq;
    dual_step(w0, &old, ys, &xq_old, yq, eta)?;
    let shift = |xt: &[T; D]| {
        let mut d = [T::ZERO; D];
        for xi in old.iter() {
            axpy(&mut d, dot(xi, xt), xi);
        }
        d
    };
    for (xt, xo) in xs.iter_mut().zip(old.iter()) {
        axpy(xt, -gamma, &shift(xo));
    }
    axpy(xq, -gamma, &shift(&xq_old));
    Ok(())
}
