//! Unmerged heads and the merged form: [`merge`] takes `(W_Q, W_K, W_V, P)` to `(A, B)`, [`pullback`] takes a
//! gradient of `(A, B)` back to the four matrices.

use crate::linalg::slices::transpose;
use crate::linalg::slices::{matmul, matmul_tn};
use crate::{Error, Real};

use super::{expect_len, expect_room};

/// The shapes of one unmerged head: token width `e`, key size `dk`, value size `dv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadShape {
    /// Token width E.
    pub e: usize,
    /// Query and key size DK.
    pub dk: usize,
    /// Value size DV.
    pub dv: usize,
}

impl HeadShape {
    /// Every matrix of a head with key and value size E (the shape the harness trains).
    pub fn square(e: usize) -> Self {
        Self { e, dk: e, dv: e }
    }

    /// Scratch values [`merge`] and [`pullback`] need: `2 max(e, dk, dv) e`.
    pub const fn scratch(&self) -> usize {
        let m = if self.dk > self.dv { self.dk } else { self.dv };
        let m = if m > self.e { m } else { self.e };
        2 * m * self.e
    }

    fn check(&self, w: [usize; 4], scratch: usize) -> Result<(), Error> {
        let (e, dk, dv) = (self.e, self.dk, self.dv);
        for (want, found) in [dk * e, dk * e, dv * e, e * dv].into_iter().zip(w) {
            expect_len(want, found)?;
        }
        expect_room(self.scratch(), scratch)
    }
}

/// Merges a head given as `[W_Q (dk x e), W_K (dk x e), W_V (dv x e), P (e x dv)]`, column-major:
/// `A = W_K^T W_Q` by [`matmul_tn`], `B = P W_V` by [`matmul`], into `a` and `b` (`e x e` each).
#[inline(always)]
pub fn merge<T: Real>(
    shape: HeadShape,
    head: [&[T]; 4],
    a: &mut [T],
    b: &mut [T],
    scratch: &mut [T],
) -> Result<(), Error> {
    let HeadShape { e, dk, dv } = shape;
    shape.check(head.map(<[T]>::len), scratch.len())?;
    expect_len(e * e, a.len())?;
    expect_len(e * e, b.len())?;
    let [w_q, w_k, w_v, p] = head;
    matmul_tn(a, w_k, w_q, e, dk, scratch);
    matmul(b, p, w_v, e, dv);
    Ok(())
}

/// Adds into `grad` (the four matrices of [`merge`]'s layout) the gradient of the head's weights implied by the
/// merged gradient `(da, db)`: `dW_Q += W_K dA`, `dW_K += W_Q dA^T`, `dP += dB W_V^T`, `dW_V += P^T dB`, each
/// product formed in `scratch` first and then added.
#[inline(always)]
pub fn pullback<T: Real>(
    shape: HeadShape,
    head: [&[T]; 4],
    da: &[T],
    db: &[T],
    grad: [&mut [T]; 4],
    scratch: &mut [T],
) -> Result<(), Error> {
    let HeadShape { e, dk, dv } = shape;
    shape.check(head.map(<[T]>::len), scratch.len())?;
    shape.check([grad[0].len(), grad[1].len(), grad[2].len(), grad[3].len()], scratch.len())?;
    expect_len(e * e, da.len())?;
    expect_len(e * e, db.len())?;
    let [w_q, w_k, w_v, p] = head;
    let [g_q, g_k, g_v, g_p] = grad;
    let (prod, tr) = scratch.split_at_mut(scratch.len() / 2);
    let add = |dst: &mut [T], src: &[T]| {
        for (d, s) in dst.iter_mut().zip(src.iter()) {
            *d += *s;
        }
    };
    let prod_k = prod.get_mut(..dk * e).unwrap_or_default();
    matmul(prod_k, w_k, da, dk, e);
    add(g_q, prod_k);
    transpose(tr, da, e, e);
    matmul(prod_k, w_q, tr.get(..e * e).unwrap_or_default(), dk, e);
    add(g_k, prod_k);
    let prod_p = prod.get_mut(..e * dv).unwrap_or_default();
    transpose(tr, w_v, dv, e);
    matmul(prod_p, db, tr.get(..e * dv).unwrap_or_default(), e, e);
    add(g_p, prod_p);
    let prod_v = prod.get_mut(..dv * e).unwrap_or_default();
    matmul_tn(prod_v, p, db, dv, e, tr);
    add(g_v, prod_v);
    Ok(())
}
