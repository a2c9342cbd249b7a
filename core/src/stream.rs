//! A streaming context for one LSA layer: a fixed-capacity window (heapless) of tokens `e = (x, y)` whose running
//! associative sums `S_h = sum_j W_V e_j (W_K e_j)^T` make each new pair O(H (E (DK + DV) + DK DV)), independent of
//! the window size. The window keeps each token's projections `(W_K e, W_V e)` beside it (`CAP * H * (DK + DV)`
//! scalars), so evicting the oldest pair costs one sweep of `S` and no projection: a push into a full window
//! projects the new token and replaces the old one's terms in one pass ([`AssociativeState::replace`]).
//!
//! Numerical contract: [`StreamingContext::resync`] recomputes the sums from the window, oldest first, exactly as
//! [`crate::lsa_associative`] sums its context; right after a resync, predictions are bit-identical to a full
//! recompute over the same window. Between resyncs each eviction subtracts a rank-one term that was added with
//! different neighbours, leaving a rounding residue; the drift grows roughly with the square root of the number of
//! evictions. `resync_every = R > 0` recomputes after every R evictions (O(CAP) work amortised over R pushes), which
//! bounds the drift; [`StreamingContext::drift`] measures it. Measured (tests/stack_stream.rs, E = 11, window 10, random
//! weights of order one, 10 000 add/evict cycles): f64 drift of `S` 3e-14; f32 1.8e-5 without resync (prediction
//! difference 7.8e-6), 2.9e-6 with a resync every 64 evictions (prediction difference 1.2e-6).
//!
//! The residue of an eviction is relative to the evicted term, not to the window: a pair much larger than the rest
//! (an outlier) leaves, once evicted, an error of about `epsilon * |W_V e| |W_K e|` of that pair in the sums, which
//! stays until the next resync (with `resync_every = 0`, until [`StreamingContext::resync`] is called). So the
//! drift is bounded in terms of the largest token seen since the last resync, not the tokens in the window: a
//! caller that can see outliers calls `resync` after one leaves the window, or sets `resync_every` (measured: one
//! pair of size 1e4 among pairs of size 1, f32, leaves a drift of 1.5 in `S`, as large as the ordinary terms
//! themselves, after its eviction, and 0 after a resync; test `an_evicted_outlier_leaves_a_residue_until_the_next_resync`).
//!
//! # A learner
//!
//! With the GD construction ([`crate::gd_layer`]) the window is an online least-squares learner: each prediction is
//! one GD step from `W0` on the pairs in the window. Build the layer with `n = CAP`: `P` carries `eta / n`, so a
//! full window gets exactly rate `eta`, and while the window is filling (`m < CAP` pairs) each prediction is a GD
//! step at rate `eta * m / CAP` on those `m` pairs (a warm-up that starts cautious). `resync_every` trades work for
//! drift (above): 0 never recomputes, which is fine for bounded inputs; 64 bounds f32 drift near 3e-6.
//!
//! ```
//! use dualform::gd::{gd_step, predict};
//! use dualform::nalgebra::SMatrix;
//! use dualform::{gd_layer, LsaStream};
//!
//! const CAP: usize = 4;
//! let w0 = SMatrix::<f64, 1, 2>::zeros();
//! let layer = gd_layer::<f64, 2, 1, 3>(&w0, 1.0, CAP)?; // n = CAP
//! let mut learner = LsaStream::<f64, 3, CAP>::new(&layer, 64);
//! let pairs = [([1.0, 0.0], 2.0), ([0.0, 1.0], -1.0), ([1.0, 1.0], 1.0), ([0.5, -1.0], 2.0), ([2.0, 0.5], 3.5)];
//! for (x, y) in &pairs[..2] {
//!     learner.push_scalar(x, *y)?;
//! }
//! // Two pairs of four: one GD step at rate 1 * 2 / 4 on those two.
//! let xs = [[1.0, 0.0], [0.0, 1.0]];
//! let w = gd_step(&w0, &xs, &[[2.0], [-1.0]], 0.5)?;
//! assert!((learner.predict_scalar(&[0.3, 0.2]) - predict(&w, &[0.3, 0.2])[0]).abs() < 1e-12);
//! // Five pushes into a window of four: the first pair has been evicted.
//! for (x, y) in &pairs[2..] {
//!     learner.push_scalar(x, *y)?;
//! }
//! assert_eq!(learner.len(), CAP);
//! let xs = [[0.0, 1.0], [1.0, 1.0], [0.5, -1.0], [2.0, 0.5]];
//! let w = gd_step(&w0, &xs, &[[-1.0], [1.0], [2.0], [3.5]], 1.0)?;
//! assert!((learner.predict_scalar(&[0.3, 0.6]) - predict(&w, &[0.3, 0.6])[0]).abs() < 1e-12);
//! # Ok::<(), dualform::Error>(())
//! ```
//!
//! # A learner in a `static`
//!
//! The learner borrows its layer; with the layer in a `static` (written with the `const fn`
//! [`crate::Head::from_rows`], or computed offline) the learner is `'static` and, since [`StreamingContext::new`]
//! is a `const fn`, can itself be a `static` behind a mutex, fed from an interrupt and read from the main loop. On a
//! microcontroller the mutex is `critical_section::Mutex<RefCell<_>>` (or `cortex_m::interrupt::Mutex`); the host
//! example below uses `std`'s, whose constructor is also `const`:
//!
//! ```
//! use dualform::{Head, LsaLayer, LsaStream};
//! use std::sync::Mutex;
//!
//! const CAP: usize = 8;
//! // The GD construction for d = 2, a scalar target, W0 = 0 and eta = 1 over CAP pairs, written out.
//! static LAYER: LsaLayer<f32, 3> = LsaLayer::single(Head::from_rows(
//!     [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
//!     [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]],
//!     [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, -1.0]],
//!     [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0 / CAP as f32]],
//! ));
//! static LEARNER: Mutex<LsaStream<'static, f32, 3, CAP>> = Mutex::new(LsaStream::new(&LAYER, 64));
//!
//! // In the interrupt handler: a new sample.
//! LEARNER.lock().unwrap().push_scalar(&[0.5, -0.25], 1.0)?;
//! // In the main loop: a prediction.
//! let y = LEARNER.lock().unwrap().predict_scalar(&[0.5, -0.25]);
//! assert!(y > 0.0);
//! # Ok::<(), dualform::Error>(())
//! ```

use crate::attention::{AssociativeState, Normalise, Projection};
use crate::features::Identity;
use crate::layer::{prediction, Layer};
use crate::{Error, Real};
use heapless::Deque;

/// A sliding window of at most `CAP` context tokens with the running sums of one LSA layer.
#[derive(Clone, Debug)]
pub struct StreamingContext<
    'a,
    T: Real,
    const E: usize,
    const DK: usize,
    const DV: usize,
    const H: usize,
    const CAP: usize,
> {
    layer: &'a Layer<T, E, DK, DV, H>,
    window: Deque<([T; E], Projection<T, DK, DV, H>), CAP>,
    state: AssociativeState<T, DK, DV, H>,
    resync_every: usize,
    evictions: usize,
}

impl<'a, T: Real, const E: usize, const DK: usize, const DV: usize, const H: usize, const CAP: usize>
    StreamingContext<'a, T, E, DK, DV, H, CAP>
{
    /// An empty window over `layer`; `resync_every = 0` never resyncs by itself. A `const fn`: with a layer in a
    /// `static`, the learner itself can be a `static` (see the module docs).
    pub const fn new(layer: &'a Layer<T, E, DK, DV, H>, resync_every: usize) -> Self {
        Self { layer, window: Deque::new(), state: AssociativeState::new(), resync_every, evictions: 0 }
    }

    /// Tokens in the window.
    pub fn len(&self) -> usize {
        self.window.len()
    }

    /// `true` when the window holds no token.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The window, oldest first.
    pub fn window(&self) -> impl Iterator<Item = &[T; E]> {
        self.window.iter().map(|(e, _)| e)
    }

    /// Adds a token, evicting (and returning) the oldest when the window is full. (A capacity of 0 is rejected at
    /// compile time by heapless, so the error branch is unreachable in practice; it is kept rather than unwrapped.)
    pub fn push(&mut self, token: [T; E]) -> Result<Option<[T; E]>, Error> {
        let mut evicted = None;
        let projection = AssociativeState::<T, DK, DV, H>::project(self.layer, &Identity, &token);
        if self.window.is_full() {
            if let Some((old, old_projection)) = self.window.pop_front() {
                self.state.replace(&old_projection, &projection, Normalise::None);
                evicted = Some(old);
            }
        } else {
            self.state.add_projection(&projection, Normalise::None);
        }
        self.window.push_back((token, projection)).map_err(|_| Error::BufferTooSmall { needed: 1, found: CAP })?;
        if evicted.is_some() {
            // Saturating: with `resync_every = 0` the count is never reset, and a 32-bit target reaches 2^32
            // evictions in 50 days at 1 kHz.
            self.evictions = self.evictions.saturating_add(1);
            if self.resync_every > 0 && self.evictions >= self.resync_every {
                self.resync();
            }
        }
        Ok(evicted)
    }

    /// Adds the pair `(x, y)` as the token `[x, y]`; `D + DY != E` is rejected at compile time.
    pub fn push_pair<const D: usize, const DY: usize>(
        &mut self,
        x: &[T; D],
        y: &[T; DY],
    ) -> Result<Option<[T; E]>, Error> {
        const { assert!(D + DY == E, "the pair's widths D + DY must equal the token width E") };
        self.push(token_from(x, y))
    }

    /// Recomputes the running sums from the window, oldest first.
    pub fn resync(&mut self) {
        let mut state = AssociativeState::new();
        for (e, _) in self.window.iter() {
            state.add(self.layer, &Identity, Normalise::None, e);
        }
        self.state = state;
        self.evictions = 0;
    }

    /// The largest absolute difference between the running sums and a fresh recompute over the window; NaN or
    /// infinity when a difference is not finite (for example a NaN token in the window), never a silent 0.
    pub fn drift(&self) -> T {
        let mut fresh = AssociativeState::<T, DK, DV, H>::new();
        for (e, _) in self.window.iter() {
            fresh.add(self.layer, &Identity, Normalise::None, e);
        }
        let mut worst = T::ZERO;
        for (a, b) in self.state.s.iter().zip(fresh.s.iter()) {
            for (x, y) in a.iter().zip(b.iter()) {
                let d = (*x - *y).abs();
                // NaN propagates (a NaN difference never compares greater, and `max` would drop it).
                if d.is_finite() {
                    worst = if d > worst { d } else { worst };
                } else {
                    return d;
                }
            }
        }
        worst
    }

    /// The query token `[x, 0]` after the layer: `h + sum_heads P S W_Q h` over the current window.
    pub fn query<const D: usize, const DY: usize>(&self, x: &[T; D]) -> [T; E] {
        const { assert!(D + DY == E, "the pair's widths D + DY must equal the token width E") };
        let mut h = token_from(x, &[T::ZERO; DY]);
        // Identity features and no normaliser: the update cannot fail.
        if let Ok(u) = self.state.update(self.layer, &Identity, Normalise::None, &h) {
            for (hi, ui) in h.iter_mut().zip(u.iter()) {
                *hi += *ui;
            }
        }
        h
    }

    /// The layer's prediction for `x`: minus the `y` part of [`StreamingContext::query`].
    pub fn predict<const D: usize, const DY: usize>(&self, x: &[T; D]) -> [T; DY] {
        const { assert!(D + DY == E, "the pair's widths D + DY must equal the token width E") };
        prediction(&self.query::<D, DY>(x))
    }

    /// [`StreamingContext::push_pair`] for a scalar target: adds the token `[x, y]` (`D + 1 != E` is a build error).
    pub fn push_scalar<const D: usize>(&mut self, x: &[T; D], y: T) -> Result<Option<[T; E]>, Error> {
        // Asserted here, not only inside `push_pair`, so that the build error's "while instantiating" note points at
        // the caller's line.
        const { assert!(D + 1 == E, "x has D entries and the target one: D + 1 must equal the token width E") };
        self.push_pair(x, &[y])
    }

    /// [`StreamingContext::predict`] for a scalar target: no widths to annotate, `D` comes from `x`.
    pub fn predict_scalar<const D: usize>(&self, x: &[T; D]) -> T {
        const { assert!(D + 1 == E, "x has D entries and the target one: D + 1 must equal the token width E") };
        let [y] = self.predict::<D, 1>(x);
        y
    }
}

/// The common case: a streaming learner over one LSA head of key and value width E ([`crate::LsaLayer`], the shape
/// of [`crate::gd_layer`]), with a window of `CAP` pairs.
pub type LsaStream<'a, T, const E: usize, const CAP: usize> = StreamingContext<'a, T, E, E, E, 1, CAP>;

/// The token `[x, y]`; `D + DY != E` is rejected at compile time.
pub fn token_from<T: Real, const D: usize, const DY: usize, const E: usize>(x: &[T; D], y: &[T; DY]) -> [T; E] {
    const { assert!(D + DY == E, "token width E must equal D + DY") };
    let mut e = [T::ZERO; E];
    for (o, v) in e.iter_mut().zip(x.iter().chain(y.iter())) {
        *o = *v;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::construct::gd_layer;

    /// A learner that never resyncs counts evictions without an overflow panic (debug) or a wrap (release), and
    /// keeps predicting.
    #[test]
    fn eviction_counts_saturate() {
        let layer = gd_layer::<f32, 1, 1, 2>(&nalgebra::SMatrix::zeros(), 0.5, 2).unwrap();
        let mut stream = StreamingContext::<f32, 2, 2, 2, 1, 2>::new(&layer, 0);
        stream.evictions = usize::MAX - 1;
        for k in 0..4 {
            stream.push_pair::<1, 1>(&[k as f32], &[2.0 * k as f32]).unwrap();
        }
        assert_eq!(stream.evictions, usize::MAX);
        assert!(stream.predict::<1, 1>(&[1.0])[0].is_finite());
    }
}
