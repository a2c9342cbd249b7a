//! Attention heads borrowed at widths chosen at run time, and the scratch of the kernels that take them
//! ([`crate::softmax_ref`], [`crate::linear_ref`]): a head's four matrices as column-major slices ([`HeadRef`], and
//! [`HeadMut`] for gradients) of widths [`Widths`], and the small vectors every kernel needs ([`Vectors`]), passed in
//! by the caller. Every length is checked before anything is written: [`Error::LengthMismatch`] for a weight of the
//! wrong length, [`Error::BufferTooSmall`] for short scratch.

use crate::layer::Head;
use crate::{Error, Real};

/// The widths of a layer's heads: tokens `e`, keys and queries `dk`, values `dv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Widths {
    /// Token width E.
    pub e: usize,
    /// Query and key width DK.
    pub dk: usize,
    /// Value width DV.
    pub dv: usize,
}

impl Widths {
    /// Values of one head's four matrices: `W_Q`, `W_K` (`dk x e`), `W_V` (`dv x e`), `P` (`e x dv`).
    pub fn head_len(&self) -> [usize; 4] {
        let (qk, v) = (self.dk.saturating_mul(self.e), self.dv.saturating_mul(self.e));
        [qk, qk, v, v]
    }
}

/// One attention head borrowed as column-major slices (the storage of [`Head`]): `W_Q`, `W_K` (`dk x e`), `W_V`
/// (`dv x e`), `P` (`e x dv`).
#[derive(Clone, Copy, Debug)]
pub struct HeadRef<'w, T> {
    /// Query projection.
    pub w_q: &'w [T],
    /// Key projection.
    pub w_k: &'w [T],
    /// Value projection.
    pub w_v: &'w [T],
    /// Output projection.
    pub p: &'w [T],
}

/// A head's gradient, accumulated into: the four matrices of a [`HeadRef`].
#[derive(Debug)]
pub struct HeadMut<'g, T> {
    /// `dL/dW_Q`.
    pub w_q: &'g mut [T],
    /// `dL/dW_K`.
    pub w_k: &'g mut [T],
    /// `dL/dW_V`.
    pub w_v: &'g mut [T],
    /// `dL/dP`.
    pub p: &'g mut [T],
}

impl<'w, T: Real, const E: usize, const DK: usize, const DV: usize> From<&'w Head<T, E, DK, DV>> for HeadRef<'w, T> {
    fn from(h: &'w Head<T, E, DK, DV>) -> Self {
        Self { w_q: h.w_q.as_slice(), w_k: h.w_k.as_slice(), w_v: h.w_v.as_slice(), p: h.p.as_slice() }
    }
}

impl<'g, T: Real, const E: usize, const DK: usize, const DV: usize> From<&'g mut Head<T, E, DK, DV>>
    for HeadMut<'g, T>
{
    fn from(h: &'g mut Head<T, E, DK, DV>) -> Self {
        Self { w_q: h.w_q.as_mut_slice(), w_k: h.w_k.as_mut_slice(), w_v: h.w_v.as_mut_slice(), p: h.p.as_mut_slice() }
    }
}

/// The small vectors of the kernels: [`Vectors::KEY`] of width `dk`, [`Vectors::VALUE`] of width `dv`,
/// [`Vectors::TOKEN`] of width `e` (each set one flat slice), and two values per head.
#[derive(Debug)]
pub struct Vectors<'s, T> {
    /// `KEY * dk` values.
    pub key: &'s mut [T],
    /// `VALUE * dv` values.
    pub value: &'s mut [T],
    /// `TOKEN * e` values.
    pub token: &'s mut [T],
    /// `2 * heads` values.
    pub heads: &'s mut [T],
}

impl<T> Vectors<'_, T> {
    /// Vectors of width `dk` needed.
    pub const KEY: usize = 5;
    /// Vectors of width `dv` needed.
    pub const VALUE: usize = 5;
    /// Vectors of width `e` needed.
    pub const TOKEN: usize = 5;
}

/// [`Vectors`] on the stack for fixed widths (the const-generic kernels' scratch).
pub(crate) struct FixedVectors<T, const E: usize, const DK: usize, const DV: usize, const H: usize> {
    key: [[T; DK]; Vectors::<'static, ()>::KEY],
    value: [[T; DV]; Vectors::<'static, ()>::VALUE],
    token: [[T; E]; Vectors::<'static, ()>::TOKEN],
    heads: [[T; 2]; H],
}

impl<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize> FixedVectors<T, E, DK, DV, H> {
    pub(crate) const WIDTHS: Widths = Widths { e: E, dk: DK, dv: DV };

    pub(crate) fn new() -> Self {
        Self {
            key: [[T::ZERO; DK]; Vectors::<'static, ()>::KEY],
            value: [[T::ZERO; DV]; Vectors::<'static, ()>::VALUE],
            token: [[T::ZERO; E]; Vectors::<'static, ()>::TOKEN],
            heads: [[T::ZERO; 2]; H],
        }
    }

    pub(crate) fn vectors(&mut self) -> Vectors<'_, T> {
        Vectors {
            key: self.key.as_flattened_mut(),
            value: self.value.as_flattened_mut(),
            token: self.token.as_flattened_mut(),
            heads: self.heads.as_flattened_mut(),
        }
    }
}

/// The first `K` pieces of `n` values of `s`, or [`Error::BufferTooSmall`].
pub(crate) fn carve<T, const K: usize>(s: &mut [T], n: usize) -> Result<[&mut [T]; K], Error> {
    let needed = n.saturating_mul(K);
    if s.len() < needed {
        return Err(Error::BufferTooSmall { needed, found: s.len() });
    }
    let mut rest = s;
    let mut out: [&mut [T]; K] = core::array::from_fn(|_| <&mut [T]>::default());
    for piece in out.iter_mut() {
        let (a, b) =
            core::mem::take(&mut rest).split_at_mut_checked(n).ok_or(Error::BufferTooSmall { needed, found: 0 })?;
        *piece = a;
        rest = b;
    }
    Ok(out)
}

/// Row `j` of `w` values of `s`, exactly `w` long, or [`Error::BufferTooSmall`] when `s` has no such row. The
/// length is `w` on every path that returns a row (never an empty fallback), so a kernel whose widths are constants
/// (an instance compiled for one token width) gets loops of constant length over its rows.
#[inline(always)]
pub(crate) fn row<T>(s: &[T], j: usize, w: usize) -> Result<&[T], Error> {
    let found = s.len();
    match s.get(j.saturating_mul(w)..).and_then(|r| r.get(..w)) {
        Some(r) => Ok(r),
        None => Err(no_row(j, w, found)),
    }
}

/// Mutable [`row`].
#[inline(always)]
pub(crate) fn row_mut<T>(s: &mut [T], j: usize, w: usize) -> Result<&mut [T], Error> {
    let found = s.len();
    match s.get_mut(j.saturating_mul(w)..).and_then(|r| r.get_mut(..w)) {
        Some(r) => Ok(r),
        None => Err(no_row(j, w, found)),
    }
}

/// The error of [`row`] and [`row_mut`] (kept off their path: it is never taken once a kernel has checked its
/// lengths). A product `j * w` that overflows saturates, so it is refused rather than wrapped to another row.
#[cold]
fn no_row(j: usize, w: usize, found: usize) -> Error {
    Error::BufferTooSmall { needed: j.saturating_add(1).saturating_mul(w), found }
}

pub(crate) fn expect_len(expected: usize, found: usize) -> Result<(), Error> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch { expected, found })
    }
}

/// Checks every head's four lengths against `w`.
pub(crate) fn check_heads<T>(w: Widths, heads: &[HeadRef<'_, T>]) -> Result<(), Error> {
    let want = w.head_len();
    for h in heads {
        for (len, found) in want.iter().zip([h.w_q.len(), h.w_k.len(), h.w_v.len(), h.p.len()]) {
            expect_len(*len, found)?;
        }
    }
    Ok(())
}

/// Checks every gradient head against `w` and the number of heads.
pub(crate) fn check_grads<T>(w: Widths, heads: usize, grads: &[HeadMut<'_, T>]) -> Result<(), Error> {
    expect_len(heads, grads.len())?;
    let want = w.head_len();
    for g in grads {
        for (len, found) in want.iter().zip([g.w_q.len(), g.w_k.len(), g.w_v.len(), g.p.len()]) {
            expect_len(*len, found)?;
        }
    }
    Ok(())
}
