//! Backward (vector-Jacobian) kernels of kernelised linear attention and of Efficient Attention, for any set of
//! tokens attending over a context given as a slice: the training side of [`AssociativeState::update`] and
//! [`EfficientState::update`], so that models of every kind train on the forward they run with.
//!
//! Kernelised linear attention, per head: `k_j = phi(W_K e_j)`, `v_j = W_V e_j`, `S = sum_j v_j k_j^T`,
//! `z = sum_j k_j`; for a token `h`: `a = W_Q h`, `q = phi(a)`, `r = S q`, `den = z . q` under [`Normalise::Sum`]
//! (else 1), `o = r / den`, update `u = sum_heads P o`. Given `g = dL/du`: `dP += g o^T`, `g_o = P^T g`,
//! `g_r = g_o / den`, `g_den = -(g_o . o) / den`, `dS += g_r q^T`, `dz += g_den q`, `g_q = S^T g_r + g_den z`,
//! `g_a = J_phi(a)^T g_q`, `dW_Q += g_a h^T`, `dh += W_Q^T g_a`; then per context token, with `b = W_K e_j`:
//! `g_v = dS k_j`, `g_k = dS^T v_j + dz`, `g_b = J_phi(b)^T g_k`, `dW_V += g_v e_j^T`, `dW_K += g_b e_j^T`,
//! `de_j += W_V^T g_v + W_K^T g_b`.
//!
//! Efficient Attention, per head: key weights `rho_jf = exp(b_jf) / sum_i exp(b_if)` over positions for each
//! feature `f`, `S = sum_j v_j rho_j^T`, `q = softmax(a)` over features, `o = S q`. Given `g`: `dP += g o^T`,
//! `g_o = P^T g`, `dS += g_o q^T`, `g_a = J_softmax(a)^T S^T g_o`; then with `G_jf = (dS^T v_j)_f` and
//! `c_f = sum_j rho_jf G_jf`: `g_b_jf = rho_jf (G_jf - c_f)`, `g_v = dS rho_j`.
//!
//! Orders: tokens, then context tokens, in increasing index; heads in order; the sums of [`crate::linalg`]. Only
//! the update `u` is differentiated: the caller adds the residual path (`dL/dh' = dL/du` for `h' = h + u`). The
//! tests check every formula against central differences in f64.

use crate::attention::efficient::key_weights;
use crate::attention::{AssociativeState, EfficientState, Normalise};
use crate::backward::LayerGrad;
use crate::features::{FeatureMap, FeatureVjp, SoftmaxFeatures};
use crate::layer::Layer;
use crate::linalg::{add_outer, all_finite, axpy, dot, matvec, matvec_t, zeros};
use crate::{Error, Real};
use nalgebra::SMatrix;

#[inline(always)]
fn check_lengths<T, const E: usize>(
    ctx: &[[T; E]],
    tokens: &[[T; E]],
    g: &[[T; E]],
    g_ctx: &[[T; E]],
    g_tokens: &[[T; E]],
) -> Result<(), Error> {
    for (expected, found) in [(tokens.len(), g.len()), (tokens.len(), g_tokens.len()), (ctx.len(), g_ctx.len())] {
        if expected != found {
            return Err(Error::LengthMismatch { expected, found });
        }
    }
    Ok(())
}

/// Adds `W_V^T g_v + W_K^T g_b` into a context token's gradient and `g_v e^T`, `g_b e^T` into the head's.
#[inline(always)]
fn context_token<T: Real, const E: usize, const DK: usize, const DV: usize>(
    head: &crate::layer::Head<T, E, DK, DV>,
    gh: &mut crate::layer::Head<T, E, DK, DV>,
    e: &[T; E],
    g_v: &[T; DV],
    g_b: &[T; DK],
    ge: &mut [T; E],
) {
    add_outer(&mut gh.w_v, g_v, e);
    add_outer(&mut gh.w_k, g_b, e);
    let (dv, dk) = (matvec_t(&head.w_v, g_v), matvec_t(&head.w_k, g_b));
    for ((d, x), y) in ge.iter_mut().zip(dv.iter()).zip(dk.iter()) {
        *d += *x + *y;
    }
}

/// VJP of kernelised linear attention ([`AssociativeState::update`] of `tokens` over the sums of `ctx`, full mask).
/// `g[t]` is `dL/du_t` for the update of `tokens[t]`; adds the parameter gradients into `grad`, the key/value path
/// into `g_ctx` (one per context token) and the query path into `g_tokens` (one per token). In a layer where the
/// context tokens also attend, pass the same tokens as `ctx` and among `tokens` and add both paths.
///
/// Errors: [`Error::LengthMismatch`] for mismatched slices; [`Error::ZeroNormaliser`] when a token's normaliser is
/// zero or not finite under [`Normalise::Sum`] (then the gradients may be partly updated).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn linear_attention_backward<
    T,
    M,
    const E: usize,
    const DK: usize,
    const DV: usize,
    const F: usize,
    const H: usize,
>(
    layer: &Layer<T, E, DK, DV, H>,
    phi: &M,
    norm: Normalise,
    ctx: &[[T; E]],
    tokens: &[[T; E]],
    g: &[[T; E]],
    grad: &mut LayerGrad<T, E, DK, DV, H>,
    g_ctx: &mut [[T; E]],
    g_tokens: &mut [[T; E]],
) -> Result<(), Error>
where
    T: Real,
    M: FeatureVjp<T, DK, F>,
{
    check_lengths(ctx, tokens, g, g_ctx, g_tokens)?;
    if ctx.is_empty() {
        return Ok(());
    }
    let mut state = AssociativeState::<T, F, DV, H>::new();
    for e in ctx {
        state.add(layer, phi, norm, e);
    }
    let sum = norm == Normalise::Sum;
    for (((head, gh), s), z) in
        layer.heads.iter().zip(grad.heads.iter_mut()).zip(state.sums().iter()).zip(state.normalisers().iter())
    {
        let mut d_s: SMatrix<T, DV, F> = zeros();
        let mut d_z = [T::ZERO; F];
        for ((h, gt), dh) in tokens.iter().zip(g.iter()).zip(g_tokens.iter_mut()) {
            let a = matvec(&head.w_q, h);
            let q = phi.map(&a);
            let mut o = matvec(s, &q);
            let den = if sum { dot(z, &q) } else { T::ONE };
            if sum {
                if den.has_zero() || !den.is_finite() {
                    return Err(Error::ZeroNormaliser);
                }
                for x in o.iter_mut() {
                    *x /= den;
                }
            }
            add_outer(&mut gh.p, gt, &o);
            let g_o = matvec_t(&head.p, gt);
            let mut g_q;
            if sum {
                let mut g_r = g_o;
                for x in g_r.iter_mut() {
                    *x /= den;
                }
                let g_den = -dot(&g_o, &o) / den;
                add_outer(&mut d_s, &g_r, &q);
                axpy(&mut d_z, g_den, &q);
                g_q = matvec_t(s, &g_r);
                axpy(&mut g_q, g_den, z);
            } else {
                add_outer(&mut d_s, &g_o, &q);
                g_q = matvec_t(s, &g_o);
            }
            let g_a = phi.vjp(&a, &g_q);
            add_outer(&mut gh.w_q, &g_a, h);
            for (d, x) in dh.iter_mut().zip(matvec_t(&head.w_q, &g_a).iter()) {
                *d += *x;
            }
        }
        for (e, ge) in ctx.iter().zip(g_ctx.iter_mut()) {
            let b = matvec(&head.w_k, e);
            let k = phi.map(&b);
            let v = matvec(&head.w_v, e);
            let g_v = matvec(&d_s, &k);
            let mut g_k = matvec_t(&d_s, &v);
            if sum {
                axpy(&mut g_k, T::ONE, &d_z);
            }
            let g_b = phi.vjp(&b, &g_k);
            context_token(head, gh, e, &g_v, &g_b, ge);
        }
    }
    Ok(())
}

/// VJP of Efficient Attention ([`EfficientState::update`] of `tokens` over `ctx`), with the arguments and the
/// accumulation rules of [`linear_attention_backward`].
///
/// Errors: [`Error::LengthMismatch`] for mismatched slices; [`Error::NonFinite`] for a non-finite key or query
/// feature (then the gradients may be partly updated).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
pub fn efficient_backward<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize>(
    layer: &Layer<T, E, DK, DV, H>,
    ctx: &[[T; E]],
    tokens: &[[T; E]],
    g: &[[T; E]],
    grad: &mut LayerGrad<T, E, DK, DV, H>,
    g_ctx: &mut [[T; E]],
    g_tokens: &mut [[T; E]],
) -> Result<(), Error> {
    check_lengths(ctx, tokens, g, g_ctx, g_tokens)?;
    if ctx.is_empty() {
        return Ok(());
    }
    let state = EfficientState::new(layer, ctx)?;
    for ((((head, gh), s), m), l) in
        layer.heads.iter().zip(grad.heads.iter_mut()).zip(state.s.iter()).zip(state.m.iter()).zip(state.l.iter())
    {
        let mut d_s: SMatrix<T, DV, DK> = zeros();
        for ((h, gt), dh) in tokens.iter().zip(g.iter()).zip(g_tokens.iter_mut()) {
            let a = matvec(&head.w_q, h);
            if !all_finite(&a) {
                return Err(Error::NonFinite);
            }
            let q = SoftmaxFeatures.map(&a);
            add_outer(&mut gh.p, gt, &matvec(s, &q));
            let g_o = matvec_t(&head.p, gt);
            add_outer(&mut d_s, &g_o, &q);
            let g_a = SoftmaxFeatures.vjp(&a, &matvec_t(s, &g_o));
            add_outer(&mut gh.w_q, &g_a, h);
            for (d, x) in dh.iter_mut().zip(matvec_t(&head.w_q, &g_a).iter()) {
                *d += *x;
            }
        }
        // c_f = sum_j rho_jf G_jf, then each key's gradient through the softmax over positions.
        let mut c = [T::ZERO; DK];
        for e in ctx {
            let w = key_weights(&matvec(&head.w_k, e), m, l);
            let big_g = matvec_t(&d_s, &matvec(&head.w_v, e));
            for ((cf, &wf), &gf) in c.iter_mut().zip(w.iter()).zip(big_g.iter()) {
                *cf += wf * gf;
            }
        }
        for (e, ge) in ctx.iter().zip(g_ctx.iter_mut()) {
            let w = key_weights(&matvec(&head.w_k, e), m, l);
            let big_g = matvec_t(&d_s, &matvec(&head.w_v, e));
            let mut g_b = [T::ZERO; DK];
            for (((gb, &wf), &gf), &cf) in g_b.iter_mut().zip(w.iter()).zip(big_g.iter()).zip(c.iter()) {
                *gb = wf * (gf - cf);
            }
            context_token(head, gh, e, &matvec(&d_s, &w), &g_b, ge);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{EluPlusOne, Identity, PositiveRandomFeatures};
    use crate::rng::SplitMix64;

    type L = Layer<f64, 4, 3, 3, 2>;

    fn random_layer(seed: u64, scale: f64) -> L {
        let mut r = SplitMix64::new(seed);
        let mut l = L::zeros();
        for h in l.heads.iter_mut() {
            for v in h.w_q.iter_mut().chain(h.w_k.iter_mut()).chain(h.w_v.iter_mut()).chain(h.p.iter_mut()) {
                *v = r.next_normal() * scale;
            }
        }
        l
    }

    fn random_tokens<const N: usize>(seed: u64) -> [[f64; 4]; N] {
        let mut r = SplitMix64::new(seed);
        core::array::from_fn(|_| core::array::from_fn(|_| r.next_open01() * 2.0 - 1.0))
    }

    fn entries(l: &mut L, head: usize, which: usize) -> &mut [f64] {
        let h = &mut l.heads[head];
        match which {
            0 => h.w_q.as_mut_slice(),
            1 => h.w_k.as_mut_slice(),
            2 => h.w_v.as_mut_slice(),
            _ => h.p.as_mut_slice(),
        }
    }

    /// `L = sum_t c_t . u_t` over `tokens`, for a forward `update(layer, ctx, h)`.
    fn loss(update: &Forward<'_>, l: &L, ctx: &[[f64; 4]], tokens: &[[f64; 4]], c: &[[f64; 4]]) -> f64 {
        tokens.iter().zip(c.iter()).map(|(h, ct)| dot(&update(l, ctx, h), ct)).sum()
    }

    type Forward<'a> = dyn Fn(&L, &[[f64; 4]], &[f64; 4]) -> [f64; 4] + 'a;
    type Backward<'a> =
        dyn Fn(&L, &[[f64; 4]], &[[f64; 4]], &[[f64; 4]], &mut L, &mut [[f64; 4]], &mut [[f64; 4]]) + 'a;

    /// Parameter, context and token gradients against central differences (1e-6 relative).
    fn check(update: &Forward<'_>, backward: &Backward<'_>, layer: &L) {
        let ctx = random_tokens::<5>(11);
        let tokens = random_tokens::<3>(12);
        let c = random_tokens::<3>(13);
        let mut grad = L::zeros();
        let (mut g_ctx, mut g_tok) = ([[0.0; 4]; 5], [[0.0; 4]; 3]);
        backward(layer, &ctx, &tokens, &c, &mut grad, &mut g_ctx, &mut g_tok);
        let eps = 1e-6;
        let close = |a: f64, n: f64, what: &str| assert!((a - n).abs() < 1e-6 * (1.0 + n.abs()), "{what}: {a} vs {n}");
        for hd in 0..2 {
            for which in 0..4 {
                for i in 0..12 {
                    // W_Q, W_K (3 x 4), W_V (3 x 4) and P (4 x 3): 12 entries each.
                    let mut p = layer.clone();
                    let mut mm = layer.clone();
                    entries(&mut p, hd, which)[i] += eps;
                    entries(&mut mm, hd, which)[i] -= eps;
                    let num =
                        (loss(update, &p, &ctx, &tokens, &c) - loss(update, &mm, &ctx, &tokens, &c)) / (2.0 * eps);
                    let mut gg = grad.clone();
                    close(entries(&mut gg, hd, which)[i], num, &format!("head {hd} matrix {which} entry {i}"));
                }
            }
        }
        for j in 0..5 {
            for i in 0..4 {
                let (mut p, mut m) = (ctx, ctx);
                p[j][i] += eps;
                m[j][i] -= eps;
                let num = (loss(update, layer, &p, &tokens, &c) - loss(update, layer, &m, &tokens, &c)) / (2.0 * eps);
                close(g_ctx[j][i], num, &format!("context {j}/{i}"));
            }
        }
        for t in 0..3 {
            for i in 0..4 {
                let (mut p, mut m) = (tokens, tokens);
                p[t][i] += eps;
                m[t][i] -= eps;
                let num = (loss(update, layer, &ctx, &p, &c) - loss(update, layer, &ctx, &m, &c)) / (2.0 * eps);
                close(g_tok[t][i], num, &format!("token {t}/{i}"));
            }
        }
    }

    fn check_map<M: FeatureVjp<f64, 3, F>, const F: usize>(phi: &M, norm: Normalise, layer: &L) {
        let update = |l: &L, ctx: &[[f64; 4]], h: &[f64; 4]| {
            let mut st = AssociativeState::<f64, F, 3, 2>::new();
            for e in ctx {
                st.add(l, phi, norm, e);
            }
            st.update(l, phi, norm, h).unwrap()
        };
        let backward = |l: &L,
                        ctx: &[[f64; 4]],
                        tokens: &[[f64; 4]],
                        g: &[[f64; 4]],
                        grad: &mut L,
                        gc: &mut [[f64; 4]],
                        gt: &mut [[f64; 4]]| {
            linear_attention_backward(l, phi, norm, ctx, tokens, g, grad, gc, gt).unwrap()
        };
        check(&update, &backward, layer);
    }

    #[test]
    fn kernelised_attention_gradients_match_finite_differences() {
        let layer = random_layer(1, 0.7);
        check_map(&Identity, Normalise::None, &layer);
        check_map(&EluPlusOne, Normalise::Sum, &layer);
        check_map(&EluPlusOne, Normalise::None, &layer);
        check_map(&PositiveRandomFeatures::<f64, 3, 8>::seeded(5), Normalise::Sum, &layer);
    }

    #[test]
    fn efficient_attention_gradients_match_finite_differences() {
        let layer = random_layer(2, 0.9);
        let update = |l: &L, ctx: &[[f64; 4]], h: &[f64; 4]| EfficientState::new(l, ctx).unwrap().update(l, h).unwrap();
        let backward =
            |l: &L,
             ctx: &[[f64; 4]],
             tokens: &[[f64; 4]],
             g: &[[f64; 4]],
             grad: &mut L,
             gc: &mut [[f64; 4]],
             gt: &mut [[f64; 4]]| { efficient_backward(l, ctx, tokens, g, grad, gc, gt).unwrap() };
        check(&update, &backward, &layer);
    }

    #[test]
    fn mismatched_lengths_and_zero_normalisers_are_errors() {
        let layer = random_layer(3, 0.5);
        let ctx = random_tokens::<2>(4);
        let tokens = random_tokens::<1>(5);
        let mut grad = L::zeros();
        let r = linear_attention_backward(
            &layer,
            &Identity,
            Normalise::None,
            &ctx,
            &tokens,
            &[],
            &mut grad,
            &mut [[0.0; 4]; 2],
            &mut [[0.0; 4]; 1],
        );
        assert_eq!(r, Err(Error::LengthMismatch { expected: 1, found: 0 }));
        let r = efficient_backward(&layer, &ctx, &tokens, &tokens, &mut grad, &mut [[0.0; 4]; 1], &mut [[0.0; 4]; 1]);
        assert_eq!(r, Err(Error::LengthMismatch { expected: 2, found: 1 }));
        // Identity features under the sum normaliser, with keys and query orthogonal: z . q = 0.
        let mut l = L::zeros();
        l.heads[0].w_k[(0, 0)] = 1.0;
        l.heads[0].w_q[(1, 1)] = 1.0;
        let r = linear_attention_backward(
            &l,
            &Identity,
            Normalise::Sum,
            &ctx,
            &tokens,
            &tokens,
            &mut grad,
            &mut [[0.0; 4]; 2],
            &mut [[0.0; 4]; 1],
        );
        assert_eq!(r, Err(Error::ZeroNormaliser));
    }
}
