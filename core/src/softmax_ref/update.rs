//! The update of one token by softmax attention: keys and values projected on the fly ([`token_update`]) or once
//! for the whole context ([`token_update_projected`], and every token of a layer through [`update_projected`]).

use super::{attend, logit_scale, MaxSum, Pairs, Projected, Projection};
use crate::head_ref::{carve, check_heads, expect_len, row, HeadRef, Vectors, Widths};
use crate::linalg::slices::{matvec, matvec_acc};
use crate::{Error, Real};

/// Keys and values projected from context tokens on the fly, into `k` and `v`.
struct OnTheFly<'a, T> {
    head: HeadRef<'a, T>,
    ctx: &'a [T],
    e: usize,
    k: &'a mut [T],
    v: &'a mut [T],
}

impl<T: Real> Pairs<T> for OnTheFly<'_, T> {
    fn count(&self) -> usize {
        self.ctx.len().checked_div(self.e).unwrap_or(0)
    }
    #[inline(always)]
    fn key(&mut self, j: usize) -> Result<&[T], Error> {
        matvec(self.k, self.head.w_k, row(self.ctx, j, self.e)?);
        Ok(self.k)
    }
    #[inline(always)]
    fn value(&mut self, j: usize) -> Result<&[T], Error> {
        matvec(self.v, self.head.w_v, row(self.ctx, j, self.e)?);
        Ok(self.v)
    }
}

/// The softmax-attention update of one token `h` (`e` values) over `ctx` (`N * e`), every head, keys and values
/// projected on the fly, written to `u` (`e` values) without the residual: the contract of
/// [`crate::softmax_token_update`]. Errors: lengths (see the module docs), [`Error::NonFinite`].
pub fn token_update<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    ctx: &[T],
    h: &[T],
    u: &mut [T],
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    check_heads(w, heads)?;
    expect_len(w.e, h.len())?;
    expect_len(w.e, u.len())?;
    expect_len(0, ctx.len() % w.e.max(1))?;
    let [q, qs, k, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [acc, vs, v, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let scale = logit_scale::<T>(w.dk);
    u.fill(T::ZERO);
    for head in heads {
        matvec(q, head.w_q, h);
        let mut pairs = OnTheFly { head: *head, ctx, e: w.e, k: &mut *k, v: &mut *v };
        attend(q, &mut pairs, scale, qs, acc, vs, &mut [])?;
        matvec_acc(u, head.p, acc);
    }
    Ok(())
}

/// [`token_update`] over a context whose keys and values were projected once by [`project`](super::project) (the
/// same bits). Errors: those of [`token_update`], and [`Error::LengthMismatch`] for a projection of other widths or
/// heads.
///
/// Inlined into its caller, as is everything it calls (no closures on the path), so that a caller compiled for a
/// wider vector unit runs it on that unit; so are [`project`](super::project), [`attention`](super::attention),
/// [`backward`](super::backward) and [`token_backward_projected`](super::token_backward_projected).
#[inline(always)]
pub fn token_update_projected<T: Real>(
    w: Widths,
    heads: &[HeadRef<'_, T>],
    proj: &Projection<'_, T>,
    h: &[T],
    u: &mut [T],
    vecs: &mut Vectors<'_, T>,
) -> Result<(), Error> {
    check_heads(w, heads)?;
    proj.check(w, heads.len(), proj.n)?;
    expect_len(w.e, h.len())?;
    expect_len(w.e, u.len())?;
    let [q, qs, _, _] = carve::<T, 4>(vecs.key, w.dk)?;
    let [acc, vs, _, _] = carve::<T, 4>(vecs.value, w.dv)?;
    let scale = logit_scale::<T>(w.dk);
    update_projected(heads, proj, proj.n, scale, h, u, [q, qs], [acc, vs], [&mut [], &mut []])
}

/// `u` = the update of token `h` over the first `seen` projected pairs, every head, logits scaled by `scale`
/// (`q, qs`: key-width scratch, `acc, vs`: value-width scratch); head `hd`'s logits' maximum and sum into
/// `stats[2 hd..][..2]` where it has room ([`MaxSum::UNKNOWN`] where [`attend`] gives none), and its query and
/// logits into `scores[hd (dk + n)..][..dk + n]` where that has room (see [`Work::scores`]).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub(super) fn update_projected<T: Real>(
    heads: &[HeadRef<'_, T>],
    proj: &Projection<'_, T>,
    seen: usize,
    scale: T,
    h: &[T],
    u: &mut [T],
    [q, qs]: [&mut [T]; 2],
    [acc, vs]: [&mut [T]; 2],
    [stats, scores]: [&mut [T]; 2],
) -> Result<(), Error> {
    let (w, n) = (proj.w, proj.n);
    u.fill(T::ZERO);
    for (hd, head) in heads.iter().enumerate() {
        let at = hd * n;
        let mut pairs = Projected {
            keys: proj.keys.get(at * w.dk..).unwrap_or_default(),
            values: proj.values.get(at * w.dv..).unwrap_or_default(),
            dk: w.dk,
            dv: w.dv,
            count: seen,
        };
        matvec(q, head.w_q, h);
        let mut logits: &mut [T] = &mut [];
        if let Some((kept_q, rest)) = scores.get_mut(hd * (w.dk + n)..).and_then(|s| s.split_at_mut_checked(w.dk)) {
            kept_q.copy_from_slice(q);
            logits = rest.get_mut(..n).unwrap_or_default();
        }
        let kept = attend(q, &mut pairs, scale, qs, acc, vs, logits)?.unwrap_or(MaxSum::UNKNOWN);
        if let Some([m, l]) = stats.get_mut(2 * hd..).and_then(|s| s.first_chunk_mut::<2>()) {
            (*m, *l) = (kept.m, kept.l);
        }
        matvec_acc(u, head.p, acc);
    }
    Ok(())
}
