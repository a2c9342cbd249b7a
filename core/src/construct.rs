//! Weight constructions: LSA layers that compute a step of gradient descent (von Oswald et al. 2022, Prop. 1) or
//! of GD++, on tokens `e = (x, y)` with `x` in R^D, `y` in R^DY, `E = D + DY` (checked at compile time).
//!
//! GD from `W0` with rate `eta` over N context pairs:
//! `W_Q = W_K = [[I_D, 0], [0, 0]]`, `W_V = [[0, 0], [W0, -I_DY]]`, `P = (eta / N) I_E`.
//! The layer then adds `eta/N sum_j (x_j . x_t) (W0 x_j - y_j)` to the `y` part of every token `t` and nothing to
//! its `x` part: exactly [`crate::gd::dual_step`]. The same layer applied K times (or K such layers with rates
//! `eta_k`, all built from the same `W0`) is K steps of GD, because each layer has already moved the targets by
//! `-(W_k - W0) x_j`.
//!
//! GD++ with `(eta, gamma)`: the same, but `W_V = [[-I_D, 0], [W0, -I_DY]]` and `P = diag(gamma I_D, eta/N I_DY)`,
//! which also moves every input by `-gamma sum_j x_j (x_j . x_t)`: exactly [`crate::gd::gdpp_step`].
//!
//! The constructed matrices hold only 0, +-1, W0's entries and `eta/N` (rounded once): nothing is accumulated.

use crate::layer::{Head, Layer};
use crate::linalg::zeros;
use crate::{Error, Real};
use nalgebra::SMatrix;

fn check_rate<T: Real>(v: T, name: &'static str) -> Result<(), Error> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(Error::InvalidParameter(name))
    }
}

/// Sets entry `(i, j)` of an `e x e` column-major matrix (nothing outside it).
fn set<T: Real>(m: &mut [T], e: usize, i: usize, j: usize, v: T) {
    if i < e {
        if let Some(x) = m.get_mut(j * e + i) {
            *x = v;
        }
    }
}

/// The head shared by both constructions at widths chosen at run time, written into `[W_Q, W_K, W_V, P]` (each
/// `e x e` column-major with `e = d + dy`, zeroed first); `w0` is `dy x d` column-major, `x_scale` the `x` block of
/// `W_V` (0 for GD, -1 for GD++) and `p_x` the `x` block of `P`.
fn head_into<T: Real>(
    d: usize,
    dy: usize,
    w0: &[T],
    x_scale: T,
    p_x: T,
    p_y: T,
    out: [&mut [T]; 4],
) -> Result<(), Error> {
    let e = d + dy;
    if w0.len() != d * dy {
        return Err(Error::LengthMismatch { expected: d * dy, found: w0.len() });
    }
    if let Some(m) = out.iter().find(|m| m.len() != e * e) {
        return Err(Error::LengthMismatch { expected: e * e, found: m.len() });
    }
    let [w_q, w_k, w_v, p] = out;
    for m in [&mut *w_q, &mut *w_k, &mut *w_v, &mut *p] {
        m.fill(T::ZERO);
    }
    for i in 0..d {
        set(w_q, e, i, i, T::ONE);
        set(w_k, e, i, i, T::ONE);
        set(w_v, e, i, i, x_scale);
        set(p, e, i, i, p_x);
    }
    for a in 0..dy {
        for b in 0..d {
            set(w_v, e, d + a, b, w0.get(b * dy + a).copied().unwrap_or(T::ZERO));
        }
        set(w_v, e, d + a, d + a, -T::ONE);
        set(p, e, d + a, d + a, p_y);
    }
    Ok(())
}

/// The head shared by both constructions (see [`head_into`]).
fn head<T: Real, const D: usize, const DY: usize, const E: usize>(
    w0: &SMatrix<T, DY, D>,
    x_scale: T,
    p_x: T,
    p_y: T,
) -> Head<T, E, E, E> {
    const { assert!(D + DY == E, "the token width E must equal D + DY") };
    let mut h: Head<T, E, E, E> = Head { w_q: zeros(), w_k: zeros(), w_v: zeros(), p: zeros() };
    let Head { w_q, w_k, w_v, p } = &mut h;
    // The shapes are right by construction, so the writer cannot refuse them.
    let out = [w_q.as_mut_slice(), w_k.as_mut_slice(), w_v.as_mut_slice(), p.as_mut_slice()];
    let _ = head_into(D, DY, w0.as_slice(), x_scale, p_x, p_y, out);
    h
}

/// [`gd_layer`] at widths chosen at run time: the head of one GD step from `w0` (`dy x d`, column-major) with rate
/// `eta` over `n` pairs, written into `[W_Q, W_K, W_V, P]` (each `(d + dy)^2` values, column-major); with
/// `gamma = Some(g)`, the GD++ step of [`gdpp_layer`]. The same values as those constructions. Errors: theirs, and
/// [`Error::LengthMismatch`] for a matrix of the wrong size.
pub fn gd_head_into<T: Real>(
    d: usize,
    dy: usize,
    w0: &[T],
    eta: T,
    gamma: Option<T>,
    n: usize,
    out: [&mut [T]; 4],
) -> Result<(), Error> {
    check_rate(eta, "eta must be finite")?;
    let c = eta * crate::gd::inv_n::<T>(n)?;
    match gamma {
        None => head_into(d, dy, w0, T::ZERO, c, c, out),
        Some(g) => {
            check_rate(g, "gamma must be finite")?;
            head_into(d, dy, w0, -T::ONE, g, c, out)
        }
    }
}

/// The LSA layer that computes one GD step from `w0` with rate `eta` over `n` context pairs.
/// Errors: `n = 0` ([`Error::Empty`]) or a non-finite `eta` ([`Error::InvalidParameter`]).
///
/// `n` is folded into the output projection (`P = eta / n`), so the layer is the GD step for contexts of exactly
/// `n` pairs; with fewer pairs `m` it is a step at rate `eta * m / n`. For a streaming window pass its capacity
/// ([`crate::stream`] explains the warm-up). `D + DY` must equal `E`: a build error (`cargo build`; `cargo check`
/// does not evaluate it).
///
/// ```
/// use dualform::gd::{gd_step, predict};
/// use dualform::nalgebra::SMatrix;
/// use dualform::{gd_layer, lsa_associative, prediction, token_from, Mask, Update};
///
/// // Three pairs from y = x1 - 2 x2, and a query: the layer's prediction is one GD step's.
/// let xs = [[1.0, 0.5], [-0.5, 1.0], [0.25, -1.0]];
/// let ys = xs.map(|x| [x[0] - 2.0 * x[1]]);
/// let w0 = SMatrix::<f64, 1, 2>::zeros();
/// let layer = gd_layer::<f64, 2, 1, 3>(&w0, 0.5, 3)?;
/// let mut ctx: [[f64; 3]; 3] = core::array::from_fn(|i| token_from(&xs[i], &ys[i]));
/// let mut query = token_from(&[0.3, 0.7], &[0.0]); // (x_q, -W0 x_q) with W0 = 0
/// lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut query)?;
/// let w1 = gd_step(&w0, &xs, &ys, 0.5)?;
/// let [lsa] = prediction::<f64, 3, 1>(&query);
/// assert!((lsa - predict(&w1, &[0.3, 0.7])[0]).abs() < 1e-12);
/// # Ok::<(), dualform::Error>(())
/// ```
pub fn gd_layer<T: Real, const D: usize, const DY: usize, const E: usize>(
    w0: &SMatrix<T, DY, D>,
    eta: T,
    n: usize,
) -> Result<Layer<T, E, E, E, 1>, Error> {
    const { assert!(D + DY == E, "the token width E must equal D + DY") };
    check_rate(eta, "eta must be finite")?;
    let c = eta * crate::gd::inv_n::<T>(n)?;
    Ok(head::<T, D, DY, E>(w0, T::ZERO, c, c).into())
}

/// The LSA layer that computes one GD++ step (targets: rate `eta` from `w0`; inputs: `(I - gamma X X^T)`).
/// Errors as [`gd_layer`], and a non-finite `gamma`.
pub fn gdpp_layer<T: Real, const D: usize, const DY: usize, const E: usize>(
    w0: &SMatrix<T, DY, D>,
    eta: T,
    gamma: T,
    n: usize,
) -> Result<Layer<T, E, E, E, 1>, Error> {
    const { assert!(D + DY == E, "the token width E must equal D + DY") };
    check_rate(eta, "eta must be finite")?;
    check_rate(gamma, "gamma must be finite")?;
    let c = eta * crate::gd::inv_n::<T>(n)?;
    Ok(head::<T, D, DY, E>(w0, -T::ONE, gamma, c).into())
}

/// K distinct layers, layer `k` with rate `etas[k]`, all from `w0`: together K steps of GD (run them with
/// [`crate::stack::run_stack`]; the tests check K layers against K steps of [`crate::gd::gd_steps`]).
///
/// ```
/// use dualform::gd_stack;
/// use dualform::nalgebra::SMatrix;
/// // Two steps at rates 0.5 and 0.25 for contexts of 10 pairs with d = 3, a scalar target (E = 4).
/// let layers = gd_stack::<f32, 3, 1, 4, 2>(&SMatrix::zeros(), &[0.5, 0.25], 10)?;
/// assert_eq!(layers[1].heads[0].p[(3, 3)], 0.25 / 10.0);
/// # Ok::<(), dualform::Error>(())
/// ```
pub fn gd_stack<T: Real, const D: usize, const DY: usize, const E: usize, const K: usize>(
    w0: &SMatrix<T, DY, D>,
    etas: &[T; K],
    n: usize,
) -> Result<[Layer<T, E, E, E, 1>; K], Error> {
    const { assert!(D + DY == E, "the token width E must equal D + DY") };
    let mut out: [Layer<T, E, E, E, 1>; K] = core::array::from_fn(|_| Layer::zeros());
    for (layer, &eta) in out.iter_mut().zip(etas.iter()) {
        *layer = gd_layer::<T, D, DY, E>(w0, eta, n)?;
    }
    Ok(out)
}
