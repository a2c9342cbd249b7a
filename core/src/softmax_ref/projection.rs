//! Every head's keys and values of one context, projected once ([`project`]) for the token kernels that read them
//! again.

use crate::head_ref::{check_heads, expect_len, row, row_mut, HeadRef, Widths};
use crate::linalg::slices::matvec;
use crate::{Error, Real};

/// Every head's keys and values of one context (`N` tokens), projected once by [`project`] for the token kernels
/// [`token_update_projected`](super::token_update_projected) and [`token_backward_projected`](super::token_backward_projected): the same bits as projecting them token by token, as
/// [`token_update`](super::token_update) and [`token_backward`](super::token_backward) do, without the `O(N E (DK + DV))` work per token.
#[derive(Clone, Copy, Debug)]
pub struct Projection<'a, T> {
    pub(super) keys: &'a [T],
    pub(super) values: &'a [T],
    pub(super) w: Widths,
    pub(super) heads: usize,
    pub(super) n: usize,
}

impl<'a, T> Projection<'a, T> {
    /// The projection that [`project`] wrote into `keys` and `values` for `heads` heads of widths `w` over `n`
    /// tokens, read again: the lengths are checked, the contents are the caller's word.
    /// Errors: [`Error::LengthMismatch`] for buffers of other lengths.
    #[inline(always)]
    pub fn written(w: Widths, heads: usize, n: usize, keys: &'a [T], values: &'a [T]) -> Result<Self, Error> {
        let entries = heads.saturating_mul(n);
        expect_len(entries.saturating_mul(w.dk), keys.len())?;
        expect_len(entries.saturating_mul(w.dv), values.len())?;
        Ok(Self { keys, values, w, heads, n })
    }

    /// The number of context tokens projected.
    pub fn len(&self) -> usize {
        self.n
    }

    /// True for a projection of an empty context.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Head `hd`'s key of context token `j`.
    #[inline(always)]
    pub(super) fn key(&self, hd: usize, j: usize) -> Result<&[T], Error> {
        row(self.keys, hd * self.n + j, self.w.dk)
    }

    /// Head `hd`'s value of context token `j`.
    #[inline(always)]
    pub(super) fn value(&self, hd: usize, j: usize) -> Result<&[T], Error> {
        row(self.values, hd * self.n + j, self.w.dv)
    }

    /// [`Error::LengthMismatch`] unless it was projected at widths `w` for `heads` heads over `n` tokens.
    pub(super) fn check(&self, w: Widths, heads: usize, n: usize) -> Result<(), Error> {
        if self.w != w {
            return Err(Error::LengthMismatch { expected: w.e, found: self.w.e });
        }
        expect_len(heads, self.heads)?;
        expect_len(n, self.n)
    }
}

/// Projects every head's keys and values of `ctx` (`N * e`) into `keys` (`H * N * dk`, head-major: head `h`'s token
/// `j` at `(h * N + j) * dk..`) and `values` (`H * N * dv`). Errors: lengths (see the module docs). Inlined into
/// its caller (see [`token_update_projected`](super::token_update_projected)).
#[inline(always)]
pub fn project<'a, T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    keys: &'a mut [T],
    values: &'a mut [T],
) -> Result<Projection<'a, T>, Error> {
    check_heads(w, heads)?;
    expect_len(0, ctx.len() % w.e.max(1))?;
    let n = ctx.len() / w.e.max(1);
    project_into(w, heads, ctx, n, keys, values)?;
    Ok(Projection { keys, values, w, heads: heads.len(), n })
}

/// Checks the lengths of `keys` and `values` for `heads.len() * n` entries and writes the projections.
#[inline(always)]
pub(super) fn project_into<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    n: usize,
    keys: &mut [T],
    values: &mut [T],
) -> Result<(), Error> {
    let entries = heads.len().saturating_mul(n);
    expect_len(entries.saturating_mul(w.dk), keys.len())?;
    expect_len(entries.saturating_mul(w.dv), values.len())?;
    for (hd, head) in heads.iter().enumerate() {
        for j in 0..n {
            let tok = row(ctx, j, w.e)?;
            matvec(row_mut(keys, hd * n + j, w.dk)?, head.w_k, tok);
            matvec(row_mut(values, hd * n + j, w.dv)?, head.w_v, tok);
        }
    }
    Ok(())
}
