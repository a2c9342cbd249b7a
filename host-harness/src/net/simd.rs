//! The vector unit training runs on, chosen at run time: the widest this CPU has ([`Simd::widest`]), or the one
//! `DUALFORM_SIMD` names (`portable` or `avx2`; a unit the CPU lacks, or another name, is refused).
//!
//! The lane kernels of the deep and recurrent LSA models ([`super::lanes`]) are inlined to the bottom (the core's
//! `*_inlined` kernels, no closures on the path), so one source is compiled twice: for the x86-64 baseline (SSE2,
//! eight lanes in two 128-bit registers) and inside functions compiled for AVX2 (eight lanes in one 256-bit
//! register), one per token width 2 to 17 so that the short loops are unrolled. Every lane performs its task's `f32`
//! operations in the documented order with unfused IEEE arithmetic (Rust never contracts a multiply and an add into
//! a fused one, and AVX2 does not imply FMA), so the bits of every task are the same on both units; only the speed
//! differs. The tests compare both units with the task-by-task path, and `reproduce all --quick` on both.
//!
//! AVX-512 with sixteen lanes was tried and is not offered: LLVM vectorises the loops over a kernel's entries a
//! second time, across entries, with gather instructions, and the deep-model step ran seven times slower than on
//! AVX2 (docs/benchmarks.md). The softmax models' lanes ([`super::lanes`], the core's `softmax_ref` kernels, likewise
//! inlined whole) and the attention-zoo models' (every kind: the feature maps, the associative sums, Efficient
//! attention, their backward kernels, all inlined) run on the chosen unit too, the softmax models at the constant
//! width 11 where their tasks have it ([`run_at_main_widths`]), everything else at run-time widths
//! ([`run_any_width`]), the zoo's feature-map (`sine+mlp`) models included (their feature maps task by task). So does
//! `mlp-sine`'s model, task by task ([`super::MlpLsaNet`]: the feature map's loops over its units on the unit's
//! registers, its exponentials eight at a time). So does the single layer's query-only kernel, eight tasks side by
//! side (the core's `query_*_inlined` kernels).
//!
//! The training tasks' random streams are stepped here too, four side by side ([`xoshiro4`]): on AVX2 as four 64-bit
//! lanes of one register (written with the unit's intrinsics, because LLVM keeps 64-bit rotations in general
//! registers), otherwise one stream after another; the numbers are the same.
//!
//! So is the sum of the lanes' gradients into the batch's, task by task ([`add_lanes`]), and the loading of a group's
//! tasks into lane-minor tokens ([`load_tasks`]): on AVX2 eight values at a time through an 8 x 8 transpose (written
//! with the unit's intrinsics), the same additions in the same order, the same copies.
//!
//! The harness's `unsafe` is here: calling a function compiled for AVX2 is sound only on a CPU that has it, which
//! [`Simd::available`] checks at run time before every call; the 4 x 4 transpose ([`transpose4`]) takes the
//! baseline SSE's unpacks, which every x86-64 CPU has.
#![allow(unsafe_code)]

mod transpose;
pub use transpose::{add_lanes, load_tasks, transpose4};

use std::sync::atomic::{AtomicU8, Ordering};

/// A vector unit the training kernels can be compiled for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Simd {
    /// The x86-64 baseline (SSE2, 128 bits), or any other architecture's default build.
    Portable,
    /// AVX2 (256 bits).
    Avx2,
}

impl Simd {
    /// Every unit, narrowest first.
    pub const ALL: [Simd; 2] = [Simd::Portable, Simd::Avx2];

    /// The name `DUALFORM_SIMD` takes and reports print.
    pub fn name(self) -> &'static str {
        match self {
            Simd::Portable => "portable",
            Simd::Avx2 => "avx2",
        }
    }

    /// Whether this CPU can run code compiled for the unit.
    pub fn available(self) -> bool {
        match self {
            Simd::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Simd::Avx2 => std::arch::is_x86_feature_detected!("avx2"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The units this CPU has, narrowest first.
    pub fn on_this_cpu() -> Vec<Simd> {
        Self::ALL.into_iter().filter(|s| s.available()).collect()
    }

    /// The widest unit this CPU has.
    pub fn widest() -> Simd {
        Self::on_this_cpu().last().copied().unwrap_or(Simd::Portable)
    }

    /// The unit a name selects, if this CPU has it.
    pub fn parse(name: &str) -> Result<Simd, String> {
        let simd = Self::ALL
            .into_iter()
            .find(|s| s.name() == name.trim())
            .ok_or_else(|| format!("DUALFORM_SIMD must be portable or avx2 (got {name:?})"))?;
        if !simd.available() {
            return Err(format!("DUALFORM_SIMD={name}: this CPU has no {name} unit (it has {})", names()));
        }
        Ok(simd)
    }
}

fn names() -> String {
    Simd::on_this_cpu().iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
}

/// 0 until the first call of [`chosen`], then the chosen unit's index in [`Simd::ALL`] plus 1.
static CHOSEN: AtomicU8 = AtomicU8::new(0);

/// The unit training runs on: `DUALFORM_SIMD` if set (an invalid value is an error), else the widest the CPU has.
/// Read once per process.
pub fn chosen() -> Result<Simd, String> {
    if let Some(s) = from_index(CHOSEN.load(Ordering::Relaxed)) {
        return Ok(s);
    }
    let simd = match std::env::var("DUALFORM_SIMD") {
        Ok(name) => Simd::parse(&name)?,
        Err(_) => Simd::widest(),
    };
    choose(simd)?;
    Ok(simd)
}

/// The unit training runs on from now on in this process (the tests run every unit in turn). Refused when the CPU
/// lacks it.
pub fn choose(simd: Simd) -> Result<(), String> {
    if !simd.available() {
        return Err(format!("this CPU has no {} unit (it has {})", simd.name(), names()));
    }
    let index = Simd::ALL.iter().position(|&s| s == simd).unwrap_or(0);
    CHOSEN.store(index as u8 + 1, Ordering::Relaxed);
    Ok(())
}

fn from_index(i: u8) -> Option<Simd> {
    Simd::ALL.get(usize::from(i).checked_sub(1)?).copied()
}

/// The unit for a training step: [`chosen`], or the portable build if `DUALFORM_SIMD` is invalid (the commands
/// check it first and stop with its message).
pub fn current() -> Simd {
    chosen().unwrap_or(Simd::Portable)
}

/// Work on the lanes ([`super::lanes::LANES`] tasks) for tokens of width `W` (0: the run-time width), for any `W`.
/// `run` must be `#[inline(always)]`, and so must everything it calls on the lanes (no closures), so that the body
/// is compiled for the unit of the function that calls it.
pub trait InLanes {
    /// What the work returns.
    type Out;
    /// The work at width `W`.
    fn run<const W: usize>(self) -> Self::Out;
}

/// Calls `$unit::<_, W>(work)` with the token width `W` a constant for the widths 2 to 17 (the kernels' short loops
/// unrolled, as the core's own width dispatch does), 0 otherwise.
macro_rules! at_width {
    ($unit:ident, $width:expr, $work:expr) => {
        match $width {
            2 => $unit::<_, 2>($work),
            3 => $unit::<_, 3>($work),
            4 => $unit::<_, 4>($work),
            5 => $unit::<_, 5>($work),
            6 => $unit::<_, 6>($work),
            7 => $unit::<_, 7>($work),
            8 => $unit::<_, 8>($work),
            9 => $unit::<_, 9>($work),
            10 => $unit::<_, 10>($work),
            11 => $unit::<_, 11>($work),
            12 => $unit::<_, 12>($work),
            13 => $unit::<_, 13>($work),
            14 => $unit::<_, 14>($work),
            15 => $unit::<_, 15>($work),
            16 => $unit::<_, 16>($work),
            17 => $unit::<_, 17>($work),
            _ => $unit::<_, 0>($work),
        }
    };
}

/// `work` for tokens of width `width`, compiled for `simd` (the portable build when this CPU lacks it).
pub fn run<K: InLanes>(simd: Simd, width: usize, work: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 && simd.available() {
        // SAFETY: `avx2` is compiled for AVX2, which `available` just found on this CPU.
        return unsafe { at_width!(avx2, width, work) };
    }
    let _ = simd;
    at_width!(portable, width, work)
}

/// `work` compiled for `simd` once, for run-time widths only (`W = 0`): for kernels whose loops take their lengths at
/// run time anyway or whose width is already in their type (`mlp-sine`'s model, the attention zoo's lanes), where one
/// instance per width would only cost compile time.
pub fn run_any_width<K: InLanes>(simd: Simd, work: K) -> K::Out {
    run_at::<K, 0>(simd, work)
}

/// `work` compiled for `simd`, with the token width `W` the constant 11 for tokens of width 11 (every experiment's
/// linear regression tasks, `d = 10`) and `W = 0` (run-time widths, the same bits) for every other: for kernels too
/// large to compile once per width 2 to 17, as [`run`] does for the LSA layers (here: the softmax lanes and the
/// tasks' drawing). A loop whose length is a constant is
/// unrolled whole, with no counting, branching or bounds checks per element: a copy of the softmax kernels took 1.5
/// times the instructions at run-time widths (docs/benchmarks.md has the counts).
pub fn run_at_main_widths<K: InLanes>(simd: Simd, width: usize, work: K) -> K::Out {
    match width {
        11 => run_at::<K, 11>(simd, work),
        _ => run_any_width(simd, work),
    }
}

/// `work` at the constant width `W`, compiled for `simd` (the portable build when this CPU lacks it).
fn run_at<K: InLanes, const W: usize>(simd: Simd, work: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 && simd.available() {
        // SAFETY: `avx2` is compiled for AVX2, which `available` just found on this CPU.
        return unsafe { avx2::<K, W>(work) };
    }
    let _ = simd;
    portable::<K, W>(work)
}

#[inline(never)]
fn portable<K: InLanes, const W: usize>(work: K) -> K::Out {
    work.run::<W>()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn avx2<K: InLanes, const W: usize>(work: K) -> K::Out {
    work.run::<W>()
}

/// `out.len()` steps of four xoshiro256++ generators side by side, word `k` of generator `l` at `state[k][l]`: step
/// `i`'s four outputs into `out[i]`, each generator's numbers those of `Xoshiro256PlusPlus::next_u64`. On AVX2 the
/// four generators are the four lanes of one register; the numbers are the same on every unit.
pub fn xoshiro4(simd: Simd, state: &mut [[u64; 4]; 4], out: &mut [[u64; 4]]) {
    #[cfg(target_arch = "x86_64")]
    if simd == Simd::Avx2 && simd.available() {
        // SAFETY: `xoshiro4_avx2` is compiled for AVX2, which `available` just found on this CPU.
        return unsafe { xoshiro4_avx2(state, out) };
    }
    let _ = simd;
    let [s0, s1, s2, s3] = state;
    for o in out {
        for l in 0..4 {
            o[l] = s0[l].wrapping_add(s3[l]).rotate_left(23).wrapping_add(s0[l]);
            let t = s1[l] << 17;
            s2[l] ^= s0[l];
            s3[l] ^= s1[l];
            s1[l] ^= s2[l];
            s0[l] ^= s3[l];
            s2[l] ^= t;
            s3[l] = s3[l].rotate_left(45);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn xoshiro4_avx2(state: &mut [[u64; 4]; 4], out: &mut [[u64; 4]]) {
    use std::arch::x86_64::*;
    let load = |w: [u64; 4]| _mm256_set_epi64x(w[3] as i64, w[2] as i64, w[1] as i64, w[0] as i64);
    let store = |m: __m256i| -> [u64; 4] {
        let lane = |v: i64| v as u64;
        [
            lane(_mm256_extract_epi64::<0>(m)),
            lane(_mm256_extract_epi64::<1>(m)),
            lane(_mm256_extract_epi64::<2>(m)),
            lane(_mm256_extract_epi64::<3>(m)),
        ]
    };
    let [mut s0, mut s1, mut s2, mut s3] = state.map(load);
    for o in out {
        // rotl(s0 + s3, 23) + s0, then the state's step; rotl(x, k) = (x << k) | (x >> (64 - k)).
        let a = _mm256_add_epi64(s0, s3);
        *o = store(_mm256_add_epi64(_mm256_or_si256(_mm256_slli_epi64::<23>(a), _mm256_srli_epi64::<41>(a)), s0));
        let t = _mm256_slli_epi64::<17>(s1);
        s2 = _mm256_xor_si256(s2, s0);
        s3 = _mm256_xor_si256(s3, s1);
        s1 = _mm256_xor_si256(s1, s2);
        s0 = _mm256_xor_si256(s0, s3);
        s2 = _mm256_xor_si256(s2, t);
        s3 = _mm256_or_si256(_mm256_slli_epi64::<45>(s3), _mm256_srli_epi64::<19>(s3));
    }
    *state = [store(s0), store(s1), store(s2), store(s3)];
}

/// Applications of one head [`add_lanes`] takes at once.
pub const MOST_SOURCES: usize = 16;
