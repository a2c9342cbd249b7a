//! The cost of one forward pass of each attention kind: floating-point operations counted by running the core's
//! kernels on a counting scalar ([`Counted`]), host time measured on the same kernels in f32, and a Cortex-M4
//! estimate from the operation counts.
//!
//! The workload is one full layer (every one of the N context tokens and the query updated; E = d + 1, [`ZOO_HEADS`]
//! heads of key and value width E), the layer of a stack: the linear kinds in the associative order (sums
//! `S = sum_j v_j phi(k_j)^T` once, then `S phi(q_t)` per token), softmax with the context projected once
//! ([`softmax_attention_slices`]), Efficient Attention as [`EfficientState`].
//!
//! The M4 estimate weights the counts: [`M4_CYCLES_PER_OP`] per addition or multiplication, the full LSA layer's
//! estimated cycles per floating-point operation as `firmware-report` measures it (39 370 cycles for 7 623
//! multiply-adds, loads, stores and loop overhead included); [`M4_CYCLES_PER_DIV`] per division (`VDIV.F32`, Cortex-M4
//! TRM); [`M4_CYCLES_PER_EXP`] per `expf` (`firmware-report`'s `exp` workload). It is an estimate, not a
//! measurement: kernels whose memory pattern differs from the LSA layer's (the softmax's score rows, the Performer's
//! projections) may differ from it.

use crate::net::zoo::{PERFORMER_FEATURES, PERFORMER_SEED};
use crate::net::zoo::KindVisitor;
use crate::net::{Attention, ZooLayer, ZOO_HEADS};
use dualform::{
    softmax_attention_slices, AssociativeState, EfficientState, FeatureVjp, Layer, Mask,
    Normalise, PositiveRandomFeatures, Real, SoftmaxWork, Update,
};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// Estimated Cortex-M4 cycles per addition or multiplication (see the module docs).
pub const M4_CYCLES_PER_OP: f64 = 39_370.0 / (2.0 * 7_623.0);
/// Cortex-M4 cycles per `VDIV.F32`.
pub const M4_CYCLES_PER_DIV: f64 = 14.0;
/// Estimated Cortex-M4 cycles per `expf`: `firmware-report`'s `exp` workload, 6 806 estimated cycles for 110
/// exponentials and their sum (default build).
pub const M4_CYCLES_PER_EXP: f64 = 6_806.0 / 110.0;
/// The clock the estimate converts cycles at (the STM32F411's 100 MHz, the board `firmware-example` targets).
pub const M4_HZ: f64 = 100e6;

/// Operations executed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ops {
    /// Additions and subtractions.
    pub add: u64,
    /// Multiplications.
    pub mul: u64,
    /// Divisions.
    pub div: u64,
    /// Exponentials.
    pub exp: u64,
}

impl Ops {
    /// Floating-point operations: additions, multiplications and divisions (exponentials apart).
    pub fn flops(&self) -> u64 {
        self.add + self.mul + self.div
    }

    /// Estimated Cortex-M4 cycles.
    pub fn m4_cycles(&self) -> f64 {
        (self.add + self.mul) as f64 * M4_CYCLES_PER_OP
            + self.div as f64 * M4_CYCLES_PER_DIV
            + self.exp as f64 * M4_CYCLES_PER_EXP
    }
}

thread_local! {
    static OPS: Cell<Ops> = const { Cell::new(Ops { add: 0, mul: 0, div: 0, exp: 0 }) };
}

/// Counts one operation in `field` of this thread's counters.
fn bump(field: fn(&mut Ops) -> &mut u64) {
    OPS.with(|c| {
        let mut o = c.get();
        *field(&mut o) += 1;
        c.set(o);
    });
}

/// An `f32` that counts the operations done on it (per thread), so that the core's generic kernels report what
/// they execute.
#[derive(Clone, Copy, Debug, Default, PartialEq, PartialOrd)]
pub struct Counted(pub f32);

macro_rules! counted_op {
    ($tr:ident, $f:ident, $atr:ident, $af:ident, $field:ident, $op:tt) => {
        impl $tr for Counted {
            type Output = Counted;
            fn $f(self, o: Counted) -> Counted {
                bump(|c| &mut c.$field);
                Counted(self.0 $op o.0)
            }
        }
        impl $atr for Counted {
            fn $af(&mut self, o: Counted) {
                *self = $tr::$f(*self, o);
            }
        }
    };
}
counted_op!(Add, add, AddAssign, add_assign, add, +);
counted_op!(Sub, sub, SubAssign, sub_assign, add, -);
counted_op!(Mul, mul, MulAssign, mul_assign, mul, *);
counted_op!(Div, div, DivAssign, div_assign, div, /);

impl Neg for Counted {
    type Output = Counted;
    fn neg(self) -> Counted {
        Counted(-self.0)
    }
}

impl Real for Counted {
    const ZERO: Self = Counted(0.0);
    const ONE: Self = Counted(1.0);
    const INFINITY: Self = Counted(f32::INFINITY);
    const EPSILON: Self = Counted(f32::EPSILON);
    fn from_f64(v: f64) -> Self {
        Counted(v as f32)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.0)
    }
    fn exp(self) -> Self {
        bump(|c| &mut c.exp);
        Counted(self.0.exp())
    }
    fn ln(self) -> Self {
        bump(|c| &mut c.exp);
        Counted(self.0.ln())
    }
    fn cos(self) -> Self {
        bump(|c| &mut c.exp);
        Counted(self.0.cos())
    }
    fn sqrt(self) -> Self {
        bump(|c| &mut c.div);
        Counted(self.0.sqrt())
    }
    fn abs(self) -> Self {
        Counted(self.0.abs())
    }
    fn is_finite(self) -> bool {
        self.0.is_finite()
    }
    fn max(self, other: Self) -> Self {
        Counted(self.0.max(other.0))
    }
    fn min(self, other: Self) -> Self {
        Counted(self.0.min(other.0))
    }
}

/// One full layer of `kind` over `ctx` (N tokens) and `query`, in place, on the core's kernels.
fn full_layer<T: Real, const E: usize>(
    kind: Attention,
    layer: &Layer<T, E, E, E, ZOO_HEADS>,
    features: &PositiveRandomFeatures<T, E, PERFORMER_FEATURES>,
    ctx: &mut [[T; E]],
    query: &mut [T; E],
) -> Result<(), dualform::Error> {
    kind.dispatch(features, FullLayer { layer, ctx, query })
}

/// [`full_layer`]'s visit of the kind.
struct FullLayer<'a, T: Real, const E: usize> {
    layer: &'a Layer<T, E, E, E, ZOO_HEADS>,
    ctx: &'a mut [[T; E]],
    query: &'a mut [T; E],
}

impl<T: Real, const E: usize> KindVisitor<T, E> for FullLayer<'_, T, E> {
    type Output = Result<(), dualform::Error>;

    fn linear<M: FeatureVjp<T, E, F>, const F: usize>(self, phi: &M, norm: Normalise) -> Self::Output {
        let mut state = AssociativeState::<T, F, E, ZOO_HEADS>::new();
        for e in self.ctx.iter() {
            state.add(self.layer, phi, norm, e);
        }
        for h in self.ctx.iter_mut().chain(std::iter::once(self.query)) {
            let u = state.update(self.layer, phi, norm, h)?;
            Update::residual().apply(h, &u);
        }
        Ok(())
    }

    fn efficient(self) -> Self::Output {
        let state = EfficientState::new(self.layer, self.ctx)?;
        for h in self.ctx.iter_mut().chain(std::iter::once(self.query)) {
            let u = state.update(self.layer, h)?;
            Update::residual().apply(h, &u);
        }
        Ok(())
    }

    fn softmax(self) -> Self::Output {
        let n = self.ctx.len();
        let (mut keys, mut values) = (vec![[T::ZERO; E]; ZOO_HEADS * n], vec![[T::ZERO; E]; ZOO_HEADS * n]);
        let mut work = SoftmaxWork { keys: &mut keys, values: &mut values, g_keys: &mut [], g_values: &mut [] };
        let (c_in, q_in) = (self.ctx.to_vec(), *self.query);
        let upd = Update::residual();
        softmax_attention_slices(self.layer, Mask::Full, &upd, &c_in, &q_in, self.ctx, self.query, &mut work)
    }
}

/// The cost of one kind at one context length.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cost {
    /// The attention kind.
    pub kind: Attention,
    /// Context tokens N.
    pub n: usize,
    /// Operations of one full layer, counted.
    pub ops: Ops,
    /// Measured host time of one full layer in f32, microseconds (median of 5 timed batches, one thread).
    pub host_microseconds: f64,
    /// Estimated Cortex-M4 time, milliseconds at [`M4_HZ`].
    pub m4_ms: f64,
}

/// Deterministic small weights and tokens (a layer's cost does not depend on its values, except through branches
/// such as elu's sign and the online softmax's maximum).
fn workload<T: Real, const E: usize>(n: usize) -> (ZooLayer<E>, Layer<T, E, E, E, ZOO_HEADS>, Vec<[T; E]>, [T; E]) {
    let mut rng = dualform::rng::SplitMix64::new(7);
    let mut layer = ZooLayer::<E>::zeros();
    for h in layer.heads.iter_mut() {
        for v in h.w_q.iter_mut().chain(h.w_k.iter_mut()).chain(h.w_v.iter_mut()).chain(h.p.iter_mut()) {
            *v = (rng.next_normal() * 0.3) as f32;
        }
    }
    let mut cast = Layer::<T, E, E, E, ZOO_HEADS>::zeros();
    for (c, h) in cast.heads.iter_mut().zip(layer.heads.iter()) {
        for (a, b) in [(&mut c.w_q, &h.w_q), (&mut c.w_k, &h.w_k), (&mut c.w_v, &h.w_v), (&mut c.p, &h.p)] {
            for (x, y) in a.iter_mut().zip(b.iter()) {
                *x = T::from_f64(f64::from(*y));
            }
        }
    }
    let ctx: Vec<[T; E]> = (0..n).map(|_| core::array::from_fn(|_| T::from_f64(rng.next_open01() - 0.5))).collect();
    let query = core::array::from_fn(|_| T::from_f64(rng.next_open01() - 0.5));
    (layer, cast, ctx, query)
}

/// Counts, times and estimates one full layer of `kind` over `n` tokens of width E.
pub fn measure<const E: usize>(kind: Attention, n: usize) -> Result<Cost, dualform::Error> {
    let (_, counted, mut cctx, mut cq) = workload::<Counted, E>(n);
    let features = PositiveRandomFeatures::<Counted, E, PERFORMER_FEATURES>::seeded(PERFORMER_SEED);
    OPS.with(|c| c.set(Ops::default()));
    full_layer(kind, &counted, &features, &mut cctx, &mut cq)?;
    let ops = OPS.with(|c| c.get());
    let (layer, _, ctx, query) = workload::<f32, E>(n);
    let features = PositiveRandomFeatures::<f32, E, PERFORMER_FEATURES>::seeded(PERFORMER_SEED);
    // Repeat until a batch takes at least 20 ms; the median of 5 batches. Each repetition starts from copies of the
    // inputs (the copy is timed too: N + 1 tokens, small beside the layer).
    let batch = |reps: usize| -> Result<f64, dualform::Error> {
        let t = std::time::Instant::now();
        for _ in 0..reps {
            let (mut c, mut q) = (std::hint::black_box(ctx.clone()), std::hint::black_box(query));
            full_layer(kind, &layer, &features, &mut c, &mut q)?;
            std::hint::black_box((&c, &q));
        }
        Ok(t.elapsed().as_secs_f64())
    };
    let mut reps = 1usize;
    while batch(reps)? < 0.02 && reps < 1 << 20 {
        reps *= 2;
    }
    let mut times = Vec::with_capacity(5);
    for _ in 0..5 {
        times.push(batch(reps)? * 1e6 / reps as f64);
    }
    times.sort_by(f64::total_cmp);
    Ok(Cost { kind, n, ops, host_microseconds: times[2], m4_ms: ops.m4_cycles() / M4_HZ * 1e3 })
}
