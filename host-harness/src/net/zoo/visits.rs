//! [`ZooNet`](super::ZooNet)'s visits of its attention kind ([`KindVisitor`]): a layer's forward over some tokens
//! and its backward, for each of the three shapes the kinds come in.

use super::{kernel_updates, softmax_heads, KindVisitor, SoftmaxScratch, ZOO_HEADS};
use crate::net::VectorsBuf;
use dualform::head_ref::HeadMut;
use dualform::kernel_backward::{efficient_backward, linear_attention_backward};
use dualform::softmax_ref::{project, token_backward_projected, token_update_projected};
use dualform::{EfficientState, Error, FeatureVjp, Layer, Normalise, Real};

/// The forward of one layer over some tokens: [`ZooNet`]'s visit of its kind.
pub(super) struct Updates<'a, T: Real, const E: usize> {
    pub(super) layer: &'a Layer<T, E, E, E, ZOO_HEADS>,
    pub(super) ctx: &'a [[T; E]],
    pub(super) tokens: &'a [[T; E]],
    pub(super) out: &'a mut [[T; E]],
    pub(super) scratch: &'a mut SoftmaxScratch<T>,
}

impl<T: Real, const E: usize> KindVisitor<T, E> for Updates<'_, T, E> {
    type Output = Result<(), Error>;

    #[inline(always)]
    fn linear<M: FeatureVjp<T, E, F>, const F: usize>(self, phi: &M, norm: Normalise) -> Self::Output {
        kernel_updates(self.layer, phi, norm, self.ctx, self.tokens, self.out)
    }

    #[inline(always)]
    fn efficient(self) -> Self::Output {
        let state = EfficientState::new(self.layer, self.ctx)?;
        for (h, o) in self.tokens.iter().zip(self.out.iter_mut()) {
            *o = state.update(self.layer, h)?;
        }
        Ok(())
    }

    #[inline(always)]
    fn softmax(self) -> Self::Output {
        let (w, heads) = softmax_heads(self.layer);
        self.scratch.fit(w, self.ctx.len());
        let SoftmaxScratch { keys, values, vecs, .. } = self.scratch;
        let proj = project(w, &heads, self.ctx.as_flattened(), keys, values)?;
        let mut vecs = vecs.get_or_insert_with(|| VectorsBuf::new(w, ZOO_HEADS)).vectors();
        for (h, o) in self.tokens.iter().zip(self.out.iter_mut()) {
            token_update_projected(w, &heads, &proj, h, o, &mut vecs)?;
        }
        Ok(())
    }
}

/// The backward of one layer: [`ZooNet`]'s visit of its kind.
pub(super) struct LayerBackward<'a, T: Real, const E: usize> {
    pub(super) layer: &'a Layer<T, E, E, E, ZOO_HEADS>,
    pub(super) ctx: &'a [[T; E]],
    pub(super) tokens: &'a [[T; E]],
    pub(super) g: &'a [[T; E]],
    pub(super) grad: &'a mut Layer<T, E, E, E, ZOO_HEADS>,
    pub(super) g_ctx: &'a mut [[T; E]],
    pub(super) g_tokens: &'a mut [[T; E]],
    pub(super) scratch: &'a mut SoftmaxScratch<T>,
}

impl<T: Real, const E: usize> KindVisitor<T, E> for LayerBackward<'_, T, E> {
    type Output = Result<(), Error>;

    #[inline(always)]
    fn linear<M: FeatureVjp<T, E, F>, const F: usize>(self, phi: &M, norm: Normalise) -> Self::Output {
        let Self { layer, ctx, tokens, g, grad, g_ctx, g_tokens, .. } = self;
        g_tokens.copy_from_slice(g);
        linear_attention_backward(layer, phi, norm, ctx, tokens, g, grad, g_ctx, g_tokens)
    }

    #[inline(always)]
    fn efficient(self) -> Self::Output {
        let Self { layer, ctx, tokens, g, grad, g_ctx, g_tokens, .. } = self;
        g_tokens.copy_from_slice(g);
        efficient_backward(layer, ctx, tokens, g, grad, g_ctx, g_tokens)
    }

    #[inline(always)]
    fn softmax(self) -> Self::Output {
        let (w, heads) = softmax_heads(self.layer);
        let mut gh = self.grad.heads.each_mut().map(HeadMut::from);
        self.scratch.fit(w, self.ctx.len());
        let SoftmaxScratch { keys, values, weights, vecs } = self.scratch;
        let flat = self.ctx.as_flattened();
        let proj = project(w, &heads, flat, keys, values)?;
        let mut vecs = vecs.get_or_insert_with(|| VectorsBuf::new(w, ZOO_HEADS)).vectors();
        let g_ctx = self.g_ctx.as_flattened_mut();
        for ((h, gt), out) in self.tokens.iter().zip(self.g.iter()).zip(self.g_tokens.iter_mut()) {
            let g_ctx = Some(&mut *g_ctx);
            token_backward_projected(w, &heads, &proj, flat, h, gt, &mut gh, out, g_ctx, weights, &mut vecs)?;
        }
        Ok(())
    }
}
