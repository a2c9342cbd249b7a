//! Plain linear tasks' tokens at a constant width, written straight from the registers they are drawn in.

use super::{Group, TaskSampler, STREAMS};
use crate::net::simd;
use crate::tasks::uniform_pair;

impl TaskSampler {
    /// The tokens of task `t` of each group, as the loop of [`TaskSampler::sample_side_by_side`] writes them, for
    /// tasks of plain linear regression (inputs neither scaled nor shifted, no label noise) at the constant token
    /// width `W`: each token's inputs held in registers, their label's partial sums taken as they are converted (in
    /// the order of [`dualform::linalg::dot_slice`], as `dot_lanes`), then the lanes' tokens stored four entries at
    /// a time through 4 x 4 transposes. The same bits as the general loop, in about half its instructions (the tests
    /// compare both with task-by-task drawing).
    #[inline(always)]
    pub(super) fn linear_tokens<const W: usize>(
        &self,
        w: &[[f32; STREAMS]],
        bits: &[[u64; STREAMS]],
        groups: &mut [Group],
        t: usize,
    ) {
        let (n, d, range) = (self.n, W - 1, self.input_range);
        let labelled = n.saturating_sub(self.hidden);
        let per_token = d.div_ceil(2);
        let Some(w) = w.get(..W).and_then(|w| <&[[f32; STREAMS]; W]>::try_from(w).ok()) else {
            return;
        };
        // Each group's task `t`: its context as N tokens, its query and its label.
        let mut outs: [Option<TaskOut<'_, W>>; STREAMS] = [None, None, None, None];
        for (out, group) in outs.iter_mut().zip(groups.iter_mut()) {
            let ctx = group.ctx.get_mut(t * n * W..(t + 1) * n * W).map(|c| c.as_chunks_mut::<W>().0);
            let query = group.query.get_mut(t * W..(t + 1) * W).and_then(|q| <&mut [f32; W]>::try_from(q).ok());
            if let (Some(ctx), Some(query), Some(y)) = (ctx, query, group.y.get_mut(t)) {
                *out = Some((ctx, query, y));
            }
        }
        for j in 0..=n {
            let Some(drawn) = bits.get(j * per_token..(j + 1) * per_token) else {
                return;
            };
            let mut x = [[0.0f32; STREAMS]; W];
            let mut p = [[0.0f32; STREAMS]; 4];
            for (i, (xi, wi)) in x.iter_mut().zip(w).enumerate().take(d) {
                let Some(b) = drawn.get(i / 2) else { return };
                *xi = core::array::from_fn(|l| {
                    let (u, v) = uniform_pair(b[l]);
                    (if i % 2 == 0 { u } else { v }) * range
                });
                for l in 0..STREAMS {
                    p[i % 4][l] += wi[l] * xi[l];
                }
            }
            // The last entry, the label's slot, is 0: its product is still added, as `dot_lanes` does.
            for l in 0..STREAMS {
                p[d % 4][l] += w[d][l] * 0.0;
            }
            let y: [f32; STREAMS] = core::array::from_fn(|l| (p[0][l] + p[1][l]) + (p[2][l] + p[3][l]));
            // The last row is the tokens' last entries: the labels of labelled context tokens, else 0.
            if j < labelled {
                x[d] = y;
            }
            // Each lane's token out of the rows of `x`, four entries at a time through 4 x 4 transposes.
            let mut tokens: [Option<&mut [f32; W]>; STREAMS] = [None, None, None, None];
            for (slot, out) in tokens.iter_mut().zip(outs.iter_mut()) {
                let Some((ctx, query, _)) = out.as_mut() else { continue };
                *slot = if j < n { ctx.get_mut(j) } else { Some(&mut **query) };
            }
            let (blocks, rest) = x.as_chunks::<4>();
            for (b, block) in blocks.iter().enumerate() {
                for (token, column) in tokens.iter_mut().zip(&simd::transpose4(block)) {
                    if let Some(four) = token.as_deref_mut().and_then(|tok| tok.get_mut(4 * b..4 * b + 4)) {
                        four.copy_from_slice(column);
                    }
                }
            }
            let mut last = [[0.0f32; STREAMS]; 4];
            last[..rest.len()].copy_from_slice(rest);
            for (token, column) in tokens.iter_mut().zip(&simd::transpose4(&last)) {
                if let Some(tail) = token.as_deref_mut().and_then(|tok| tok.get_mut(4 * blocks.len()..)) {
                    tail.copy_from_slice(&column[..rest.len()]);
                }
            }
            if j == n {
                for (out, &yl) in outs.iter_mut().zip(&y) {
                    if let Some((_, _, label)) = out.as_mut() {
                        **label = yl;
                    }
                }
            }
        }
    }
}

/// Where one task of a group goes: its context as N tokens of width `W`, its query and its label.
type TaskOut<'a, const W: usize> = (&'a mut [[f32; W]], &'a mut [f32; W], &'a mut f32);
