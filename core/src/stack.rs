//! A stack of attention layers: K distinct layers, or one layer applied K times (a recurrent / looped stack), with
//! the [`Update`] rule's damping, "update only y" and clipping, and a readout of the query's prediction after every
//! layer application.
//!
//! Numerical contract: layers run in order, each exactly as its own kernel documents; the readout is the exact
//! negation of the query's last `DY` coordinates. Nothing is accumulated across layers except the tokens themselves.

use crate::attention::{lsa_associative, LinearScratch};
use crate::layer::{prediction, Layer, Mask, Update};
use crate::softmax::softmax_attention;
use crate::{Error, Real};

/// One layer of a stack: updates the context and the query token in place. Contract: the new tokens depend only on
/// the tokens and the rule passed in (no hidden state carried from one call to the next), as for every block here.
pub trait Block<T: Real, const E: usize, const N: usize> {
    /// Applies the layer with update rule `upd`.
    fn forward(&mut self, upd: &Update<T>, ctx: &mut [[T; E]; N], query: &mut [T; E]) -> Result<(), Error>;
}

/// A [`Layer`] in a stack is an LSA layer (associative order, full mask).
impl<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize> Block<T, E, N>
    for Layer<T, E, DK, DV, H>
{
    fn forward(&mut self, upd: &Update<T>, ctx: &mut [[T; E]; N], query: &mut [T; E]) -> Result<(), Error> {
        lsa_associative(self, Mask::Full, upd, ctx, query)
    }
}

/// A borrowed [`Layer`] (for example weights in flash) is an LSA layer too.
impl<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize> Block<T, E, N>
    for &Layer<T, E, DK, DV, H>
{
    fn forward(&mut self, upd: &Update<T>, ctx: &mut [[T; E]; N], query: &mut [T; E]) -> Result<(), Error> {
        lsa_associative(*self, Mask::Full, upd, ctx, query)
    }
}

/// A softmax-attention layer in a stack, with the scratch it needs.
#[derive(Clone, Debug)]
pub struct SoftmaxBlock<'a, T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize> {
    /// The weights.
    pub layer: &'a Layer<T, E, DK, DV, H>,
    /// Full or causal.
    pub mask: Mask,
    /// Keys and values of the layer's input.
    pub scratch: LinearScratch<T, N, DK, DV, H>,
}

impl<'a, T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize>
    SoftmaxBlock<'a, T, E, DK, DV, H, N>
{
    /// A softmax block over `layer` with zeroed scratch.
    pub fn new(layer: &'a Layer<T, E, DK, DV, H>, mask: Mask) -> Self {
        Self { layer, mask, scratch: LinearScratch::new() }
    }
}

impl<T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const N: usize> Block<T, E, N>
    for SoftmaxBlock<'_, T, E, DK, DV, H, N>
{
    fn forward(&mut self, upd: &Update<T>, ctx: &mut [[T; E]; N], query: &mut [T; E]) -> Result<(), Error> {
        softmax_attention(self.layer, self.mask, upd, ctx, query, &mut self.scratch)
    }
}

/// Runs `blocks` in order, the whole sequence `repeats` times (`repeats = 1` for K distinct layers; one block and
/// `repeats = K` for a recurrent stack). After the `i`-th layer application the query's prediction
/// (minus its last `DY` coordinates) is written to `readout[i]` when a readout is given. Returns the final
/// prediction.
///
/// Errors: [`Error::BufferTooSmall`] if the readout has fewer than `blocks.len() * repeats` rows (checked before any
/// work), [`Error::InvalidParameter`] if that product overflows, and any error of a block (tokens are then left as
/// that block left them).
///
/// With an empty context (`N = 0`) the query is the whole state: once a full pass over the blocks leaves it
/// unchanged bit for bit, every further pass would too (the [`Block`] contract), so the remaining readout rows get
/// the same prediction and the call returns at once, whatever `repeats` is.
pub fn run_stack<T: Real, B: Block<T, E, N>, const E: usize, const N: usize, const DY: usize>(
    blocks: &mut [B],
    repeats: usize,
    upd: &Update<T>,
    ctx: &mut [[T; E]; N],
    query: &mut [T; E],
    readout: Option<&mut [[T; DY]]>,
) -> Result<[T; DY], Error> {
    let total = blocks.len().checked_mul(repeats).ok_or(Error::InvalidParameter("blocks.len() * repeats overflows"))?;
    if let Some(r) = readout.as_deref() {
        if r.len() < total {
            return Err(Error::BufferTooSmall { needed: total, found: r.len() });
        }
    }
    let mut slots = readout.map(|r| r.iter_mut());
    for _ in 0..repeats {
        let before = *query;
        for block in blocks.iter_mut() {
            block.forward(upd, ctx, query)?;
            if let Some(slot) = slots.as_mut().and_then(|s| s.next()) {
                *slot = prediction(query);
            }
        }
        let unchanged = before.iter().zip(query.iter()).all(|(a, b)| a.to_f64().to_bits() == b.to_f64().to_bits());
        if N == 0 && unchanged {
            // A fixed point: the readout rows left all hold this prediction.
            if let Some(rest) = slots.as_mut() {
                for slot in rest {
                    *slot = prediction(query);
                }
            }
            break;
        }
    }
    Ok(prediction(query))
}
