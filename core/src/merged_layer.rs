//! The merged form of one LSA head applied to every token of a layer, forward and backward: what deep and
//! recurrent stacks train with.
//!
//! Keys and values come from the N context tokens only, so with the context Gram matrix
//! `G = sum_j e_j e_j^T` every token's update is `u_t = B G A h_t = C h_t` with `C = B (G A)`
//! (`A = W_K^T W_Q`, `B = P W_V`, see [`crate::merged`]): one E x E matrix per layer and task, applied to the N
//! context tokens and the query alike. The token is then written by the layer's [`Update`] rule (damping, "update
//! only y", clipping). Cost: `N E^2` for `G`, `2 E^3` for `C`, `(N + 1) E^2` to apply it, against
//! `N E (DK + DV) + (N + 1) (E DK + DK DV + DV E)` for [`crate::lsa_associative`] (equal at N = 10, E = 11; the
//! merged form wins as soon as the key and value sizes exceed E or the layer is differentiated).
//!
//! Numerical contract: `G` by [`gram`] (each entry summed over `j` in increasing order; the same bits as [`add_outer`]
//! per token); `F = G A` and `C = B F` by [`matmul`];
//! `u_t = C h_t` by [`matvec`]; context tokens in order, then the query, each by [`Update::apply`], all from the
//! layer's input (the Gram matrix is taken before any token changes). Equal to [`crate::lsa_associative`] in real
//! arithmetic (tests: 1e-12 relative in f64); the f32 bits differ from that kernel, so a host and a device that must
//! agree bit for bit both use this kernel or both the other.
//!
//! Backward, for `G_t = dL/dh'_t` on every token: where the rule clips, the gradient of a clipped coordinate is 0
//! (`Gp_t`); `Gu_t = scale * Gp_t` on the written coordinates (0 below `first`); `dh_t = Gp_t + C^T Gu_t`;
//! `dC = sum_t Gu_t h_t^T`; `dB += dC F^T`; `dF = B^T dC`; `dA += G dF` (`G` is symmetric); `dG = dF A^T`; and
//! every context token also takes `(dG + dG^T) e_j`. The tests check it against central finite differences in f64.

use crate::layer::Update;
use crate::linalg::{add_outer, matmul, matmul_nt, matmul_tn, matvec, matvec_t_of_transpose, transpose, zeros};
use crate::merged::MergedHead;
use crate::{Error, Real};
use nalgebra::SMatrix;

/// The context Gram matrix `G = sum_j e_j e_j^T`: the upper triangle (rows `0..=c` of each column `c`), each entry
/// summed over `j` in increasing order, then mirrored. The same bits as rank-one updates of the whole matrix
/// ([`add_outer`] per token; products commute, and each entry sees the same terms in the same order) in a little over
/// half the multiply-adds.
pub fn gram<T: Real, const E: usize>(ctx: &[[T; E]]) -> SMatrix<T, E, E> {
    let mut g = zeros::<T, E, E>();
    for e in ctx {
        for (c, (col, &ec)) in g.data.0.iter_mut().zip(e.iter()).enumerate() {
            for (gi, &er) in col.iter_mut().zip(e.iter()).take(c + 1) {
                *gi += er * ec;
            }
        }
    }
    for c in 1..E {
        for r in 0..c {
            if let Some(v) = g.get((r, c)).copied() {
                if let Some(w) = g.get_mut((c, r)) {
                    *w = v;
                }
            }
        }
    }
    g
}

/// What a layer's forward keeps for its backward: the context Gram matrix `G`, `F = G A` and `C = B F`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerCache<T: Real, const E: usize> {
    /// `G = sum_j e_j e_j^T` over the layer's input context.
    pub gram: SMatrix<T, E, E>,
    /// `F = G A`.
    pub ga: SMatrix<T, E, E>,
    /// `C = B G A`: every token's update is `C h_t`.
    pub c: SMatrix<T, E, E>,
}

impl<T: Real, const E: usize> LayerCache<T, E> {
    /// Zero matrices.
    pub fn zeros() -> Self {
        Self { gram: zeros(), ga: zeros(), c: zeros() }
    }
}

impl<T: Real, const E: usize> Default for LayerCache<T, E> {
    fn default() -> Self {
        Self::zeros()
    }
}

impl<T: Real, const E: usize> MergedHead<T, E> {
    /// Fills `cache` with `G`, `F = G A` and `C = B F` for the context `ctx` (any length; 0 gives `C = 0`).
    pub fn layer_matrix(&self, ctx: &[[T; E]], cache: &mut LayerCache<T, E>) {
        let gram = gram(ctx);
        cache.ga = matmul(&gram, &self.a);
        cache.c = matmul(&self.b, &cache.ga);
        cache.gram = gram;
    }

    /// The layer on every token: `h_t <- rule(h_t, C h_t)` for the context tokens in order and then the query, with
    /// `C` from the layer's input context (see the module docs). `cache` receives `G`, `F`, `C` for
    /// [`MergedHead::layer_backward`]. Errors: an invalid [`Update`] rule (checked before any token changes).
    pub fn layer_forward(
        &self,
        upd: &Update<T>,
        ctx: &mut [[T; E]],
        query: &mut [T; E],
        cache: &mut LayerCache<T, E>,
    ) -> Result<(), Error> {
        upd.validate(E)?;
        self.layer_matrix(ctx, cache);
        // The plain residual rule on its own loop: the same additions as `apply`, without its run-time start and
        // clip, so that the compiler can unroll it when the rule is not a constant at the call.
        let residual = *upd == Update::residual();
        for h in ctx.iter_mut().chain(core::iter::once(query)) {
            let u = matvec(&cache.c, h);
            if residual {
                for (hi, ui) in h.iter_mut().zip(u) {
                    *hi += ui;
                }
            } else {
                upd.apply(h, &u);
            }
        }
        Ok(())
    }

    /// Merged heads applied to every token in `schedule` order (application `k` is
    /// `heads[schedule[k]].layer_forward(upd, ..)`): K distinct layers are `schedule = [0, 1, .., K - 1]`, one layer
    /// applied K times (a recurrent or looped model) is `[0; K]`. The tokens are updated in place; returns the
    /// query's prediction after the last application, `-query[E - 1]`. What a trained stack runs on a device, in the
    /// same operations as the harness's training forward (which keeps every application's tokens for its backward).
    ///
    /// Errors (all checked before any token changes): [`Error::InvalidParameter`] for an empty schedule or one that
    /// names a head `heads` does not have; an invalid [`Update`] rule.
    pub fn run_schedule(
        heads: &[Self],
        schedule: &[usize],
        upd: &Update<T>,
        ctx: &mut [[T; E]],
        query: &mut [T; E],
        cache: &mut LayerCache<T, E>,
    ) -> Result<T, Error> {
        if schedule.is_empty() {
            return Err(Error::InvalidParameter("a schedule needs at least one application"));
        }
        if schedule.iter().any(|&k| k >= heads.len()) {
            return Err(Error::InvalidParameter("the schedule names a head that does not exist"));
        }
        upd.validate(E)?;
        for &k in schedule {
            if let Some(head) = heads.get(k) {
                head.layer_forward(upd, ctx, query, cache)?;
            }
        }
        Ok(-query.last().copied().unwrap_or(T::ZERO))
    }

    /// VJP of [`MergedHead::layer_forward`]. `ctx_in` / `query_in` are the layer's inputs and `cache` its forward
    /// cache; `g_ctx` / `g_query` hold `dL/d(output)` on entry and `dL/d(input)` on return; `(dA, dB)` are added into
    /// `grad`. `g_ctx` must have the length of `ctx_in` (extra entries are left alone, missing ones ignored).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_backward(
        &self,
        upd: &Update<T>,
        cache: &LayerCache<T, E>,
        ctx_in: &[[T; E]],
        query_in: &[T; E],
        g_ctx: &mut [[T; E]],
        g_query: &mut [T; E],
        grad: &mut MergedHead<T, E>,
    ) {
        let mut dc = zeros::<T, E, E>();
        // `C^T g` per token from `C^T`, once: the bits of a dot per output, vectorised across the outputs.
        let ct = transpose(&cache.c);
        let tokens = ctx_in.iter().chain(core::iter::once(query_in));
        let grads = g_ctx.iter_mut().chain(core::iter::once(&mut *g_query));
        for (h, g) in tokens.zip(grads) {
            if let Some(c) = upd.clip {
                // The coordinates the rule clamped pass no gradient.
                let u = matvec(&cache.c, h);
                let mut pre = *h;
                let unclipped = Update { clip: None, ..*upd };
                unclipped.apply(&mut pre, &u);
                for (gi, p) in g.iter_mut().zip(pre.iter()) {
                    // A NaN coordinate passes no gradient either.
                    let inside = p.abs() <= c;
                    if !inside {
                        *gi = T::ZERO;
                    }
                }
            }
            let mut gu = [T::ZERO; E];
            let first = upd.first.min(E);
            if let (Some((_, o)), Some((_, gs))) = (gu.split_at_mut_checked(first), g.split_at_checked(first)) {
                for (o, &gi) in o.iter_mut().zip(gs) {
                    *o = if upd.scale == T::ONE { gi } else { upd.scale * gi };
                }
            }
            add_outer(&mut dc, &gu, h);
            let back = matvec_t_of_transpose(&ct, &gu);
            for (gi, b) in g.iter_mut().zip(back.iter()) {
                *gi += *b;
            }
        }
        // C = B F, F = G A.
        let db = matmul_nt(&dc, &cache.ga);
        let df = matmul_tn(&self.b, &dc);
        let da = matmul(&cache.gram, &df);
        let dg = matmul_nt(&df, &self.a);
        for (acc, d) in grad.b.iter_mut().zip(db.iter()) {
            *acc += *d;
        }
        for (acc, d) in grad.a.iter_mut().zip(da.iter()) {
            *acc += *d;
        }
        // G = sum_j e_j e_j^T: de_j = (dG + dG^T) e_j.
        let sym = dg + transpose(&dg);
        for (gj, e) in g_ctx.iter_mut().zip(ctx_in.iter()) {
            for (gi, v) in gj.iter_mut().zip(matvec(&sym, e).iter()) {
                *gi += *v;
            }
        }
    }
}
