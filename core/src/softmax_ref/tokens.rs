//! The per-token part of [`backward`](super::backward): [`TokenBackward`] runs the tokens one or two at a time. Two
//! tokens' terms go into the same gradients (the output projection's and the query weights' per head, every key's
//! and value's row) in one pass with [`add_outer2`] and [`axpy2`]: each accumulator receives the first token's term,
//! then the second's, exactly as when the tokens run one after the other (the same bits), with its loads and stores
//! halved.

use super::{weights_block, MaxSum, BLOCK};
use crate::head_ref::{row, row_mut, HeadMut, HeadRef, Widths};
use crate::linalg::pairs::{add_outer2, axpy2};
use crate::linalg::slices::{add_outer, axpy, dot, matvec, matvec_t};
use crate::{Error, Real};

/// The layer's projected keys and values, their gradients (added to), and what every token shares.
pub(super) struct TokenBackward<'a, 'h, T> {
    pub(super) w: Widths,
    pub(super) heads: &'a [HeadRef<'h, T>],
    pub(super) n: usize,
    pub(super) c: T,
    pub(super) keys: &'a [T],
    pub(super) values: &'a [T],
    pub(super) g_keys: &'a mut [T],
    pub(super) g_values: &'a mut [T],
}

/// One token: its input `h`, its gradient `g` (the output's on entry, the input's on return), how many keys it
/// sees, and what the forward kept for it (`[stats, scores]`, see [`TokenBackward::head_forward`]).
pub(super) struct Tok<'t, T> {
    pub(super) h: &'t [T],
    pub(super) g: &'t mut [T],
    pub(super) seen: usize,
    pub(super) kept: [&'t [T]; 2],
}

/// One token's scratch: its query and the query's gradient (key width), its attention output and the output's
/// gradient (value width), its input gradient (token width), and `N` values to keep its softmax weights between
/// the passes over the keys (or fewer: the others are computed again, the same bits).
pub(super) struct Scratch<'s, T> {
    pub(super) q: &'s mut [T],
    pub(super) g_q: &'s mut [T],
    pub(super) o: &'s mut [T],
    pub(super) g_o: &'s mut [T],
    pub(super) dh: &'s mut [T],
    pub(super) weights: &'s mut [T],
}

impl<T: Real> TokenBackward<'_, '_, T> {
    /// The weight of key `k` for query `q`: kept in `weights[j]` or computed from the logits' maximum and sum.
    #[inline(always)]
    fn weight(&self, weights: &[T], j: usize, q: &[T], k: &[T], acc: MaxSum<T>) -> T {
        match weights.get(j) {
            Some(&a) => a,
            None => (dot(q, k) * self.c - acc.m).exp() / acc.l,
        }
    }

    /// Token `a`, and `b` after it when given: their input gradients, written over their `g`, and the parameter
    /// gradients added into `grads`, head by head (per head `a`'s terms, then `b`'s, into every accumulator: the
    /// bits of running `a` and then `b` alone). `de` is token-width scratch.
    #[inline(always)]
    pub(super) fn run<'s>(
        &mut self,
        a: Tok<'_, T>,
        b: Option<Tok<'_, T>>,
        grads: &mut [HeadMut<'_, T>],
        sa: &mut Scratch<'s, T>,
        sb: &mut Scratch<'s, T>,
        de: &mut [T],
    ) -> Result<(), Error> {
        sa.dh.copy_from_slice(a.g);
        if let Some(b) = &b {
            sb.dh.copy_from_slice(b.g);
        }
        let heads = self.heads;
        for (hd, (head, gh)) in heads.iter().zip(grads.iter_mut()).enumerate() {
            let acc_a = match a.seen {
                0 => None,
                _ => Some(self.head_forward(hd, head, a.h, a.seen, a.kept, sa)?),
            };
            let acc_b = match &b {
                Some(b) if b.seen > 0 => Some(self.head_forward(hd, head, b.h, b.seen, b.kept, sb)?),
                _ => None,
            };
            match (acc_a, acc_b, &b) {
                (Some(x), Some(y), Some(b)) => {
                    self.head_pair([&a, b], [x, y], hd, head, gh, [&mut *sa, &mut *sb], de)?
                }
                (Some(x), _, _) => self.head_one(&a, x, hd, head, gh, sa, de)?,
                (None, Some(y), Some(b)) => self.head_one(b, y, hd, head, gh, sb, de)?,
                _ => {}
            }
        }
        a.g.copy_from_slice(sa.dh);
        if let Some(b) = b {
            b.g.copy_from_slice(sb.dh);
        }
        Ok(())
    }

    /// Head `hd`'s forward again for token `h` seeing the first `seen` keys: its query in `s.q`, its softmax
    /// weights in `s.weights` (where there is room), its output in `s.o`; returns the logits' maximum and sum. They
    /// are taken from `stats[2 hd..][..2]` where the forward kept a finite maximum there, else computed; with them,
    /// the query and logits from `scores` where that holds the head's (see [`Work::scores`](super::Work::scores)),
    /// else computed.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn head_forward(
        &self,
        hd: usize,
        head: &HeadRef<'_, T>,
        h: &[T],
        seen: usize,
        [stats, scores]: [&[T]; 2],
        s: &mut Scratch<'_, T>,
    ) -> Result<MaxSum<T>, Error> {
        let (w, n, c, at) = (self.w, self.n, self.c, hd * self.n);
        let from_forward = match stats.get(2 * hd..).and_then(|s| s.first_chunk::<2>()) {
            Some(&[m, l]) if m.is_finite() => Some(MaxSum { m, l }),
            _ => None,
        };
        let kept = match (from_forward, scores.get(hd * (w.dk + n)..)) {
            (Some(_), Some(sc)) => match sc.split_at_checked(w.dk) {
                Some((kept_q, logits)) => logits.get(..seen).map(|l| (kept_q, l)),
                None => None,
            },
            _ => None,
        };
        let logits: &[T] = match kept {
            Some((kept_q, logits)) => {
                s.q.copy_from_slice(kept_q);
                logits
            }
            None => {
                matvec(s.q, head.w_q, h);
                &[]
            }
        };
        let acc = match from_forward {
            Some(acc) => acc,
            None => {
                let mut acc = MaxSum::new();
                let mut j0 = 0;
                while j0 < seen {
                    let b = (seen - j0).min(BLOCK);
                    let mut sc = [T::ZERO; BLOCK];
                    for (t, st) in sc.iter_mut().enumerate().take(b) {
                        *st = dot(s.q, row(self.keys, at + j0 + t, w.dk)?) * c;
                    }
                    acc.push_block(&sc, b)?;
                    j0 += b;
                }
                acc
            }
        };
        s.o.fill(T::ZERO);
        let mut j0 = 0;
        while j0 < seen {
            let b = (seen - j0).min(BLOCK);
            let mut x = [T::ZERO; BLOCK];
            for (t, xt) in x.iter_mut().enumerate().take(b) {
                let st = match logits.get(j0 + t) {
                    Some(&st) => st,
                    None => dot(s.q, row(self.keys, at + j0 + t, w.dk)?) * c,
                };
                *xt = st - acc.m;
            }
            weights_block(&mut x, b, acc.l);
            for (t, &xt) in x.iter().enumerate().take(b) {
                if let Some(kept) = s.weights.get_mut(j0 + t) {
                    *kept = xt;
                }
                axpy(s.o, xt, row(self.values, at + j0 + t, w.dv)?);
            }
            j0 += b;
        }
        Ok(acc)
    }

    /// Head `hd`'s backward for one token `t` after [`Self::head_forward`] (its maximum and sum `acc`).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn head_one(
        &mut self,
        t: &Tok<'_, T>,
        acc: MaxSum<T>,
        hd: usize,
        head: &HeadRef<'_, T>,
        gh: &mut HeadMut<'_, T>,
        s: &mut Scratch<'_, T>,
        de: &mut [T],
    ) -> Result<(), Error> {
        add_outer(gh.p, t.g, s.o);
        matvec_t(s.g_o, head.p, t.g);
        let g_dot_o = dot(s.g_o, s.o);
        s.g_q.fill(T::ZERO);
        for j in 0..t.seen {
            self.key_one(hd * self.n + j, j, s, g_dot_o, acc)?;
        }
        add_outer(gh.w_q, s.g_q, t.h);
        to_input(s.dh, de, head.w_q, s.g_q);
        Ok(())
    }

    /// Key `j` (row `r` of the keys and values) for one token: the gradient of its logit into the token's query
    /// gradient, and the token's terms into the key's and value's gradient rows.
    #[inline(always)]
    fn key_one(&mut self, r: usize, j: usize, s: &mut Scratch<'_, T>, g_dot_o: T, acc: MaxSum<T>) -> Result<(), Error> {
        let w = self.w;
        let (k, v) = (row(self.keys, r, w.dk)?, row(self.values, r, w.dv)?);
        let a = self.weight(s.weights, j, s.q, k, acc);
        let g_s = a * (dot(s.g_o, v) - g_dot_o) * self.c;
        axpy(s.g_q, g_s, k);
        axpy(row_mut(self.g_keys, r, w.dk)?, g_s, s.q);
        axpy(row_mut(self.g_values, r, w.dv)?, a, s.g_o);
        Ok(())
    }

    /// [`Self::head_one`] for two tokens, the first's term then the second's into every shared accumulator.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn head_pair(
        &mut self,
        [a, b]: [&Tok<'_, T>; 2],
        [acc_a, acc_b]: [MaxSum<T>; 2],
        hd: usize,
        head: &HeadRef<'_, T>,
        gh: &mut HeadMut<'_, T>,
        [sa, sb]: [&mut Scratch<'_, T>; 2],
        de: &mut [T],
    ) -> Result<(), Error> {
        let (w, at) = (self.w, hd * self.n);
        add_outer2(gh.p, a.g, sa.o, b.g, sb.o);
        matvec_t(sa.g_o, head.p, a.g);
        matvec_t(sb.g_o, head.p, b.g);
        let (gd_a, gd_b) = (dot(sa.g_o, sa.o), dot(sb.g_o, sb.o));
        sa.g_q.fill(T::ZERO);
        sb.g_q.fill(T::ZERO);
        let both = a.seen.min(b.seen);
        for j in 0..both {
            let (k, v) = (row(self.keys, at + j, w.dk)?, row(self.values, at + j, w.dv)?);
            let wa = self.weight(sa.weights, j, sa.q, k, acc_a);
            let wb = self.weight(sb.weights, j, sb.q, k, acc_b);
            let g_a = wa * (dot(sa.g_o, v) - gd_a) * self.c;
            let g_b = wb * (dot(sb.g_o, v) - gd_b) * self.c;
            axpy(sa.g_q, g_a, k);
            axpy(sb.g_q, g_b, k);
            axpy2(row_mut(self.g_keys, at + j, w.dk)?, g_a, sa.q, g_b, sb.q);
            axpy2(row_mut(self.g_values, at + j, w.dv)?, wa, sa.g_o, wb, sb.g_o);
        }
        // Keys only one of the two sees (a causal mask): that token's terms alone.
        for j in both..a.seen {
            self.key_one(at + j, j, sa, gd_a, acc_a)?;
        }
        for j in both..b.seen {
            self.key_one(at + j, j, sb, gd_b, acc_b)?;
        }
        add_outer2(gh.w_q, sa.g_q, a.h, sb.g_q, b.h);
        to_input(sa.dh, de, head.w_q, sa.g_q);
        to_input(sb.dh, de, head.w_q, sb.g_q);
        Ok(())
    }
}

/// `dh += W_Q^T g_q` through the scratch `de`.
#[inline(always)]
fn to_input<T: Real>(dh: &mut [T], de: &mut [T], w_q: &[T], g_q: &[T]) {
    matvec_t(de, w_q, g_q);
    for (d, &x) in dh.iter_mut().zip(de.iter()) {
        *d += x;
    }
}
