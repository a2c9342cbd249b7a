//! Softmax attention on [`Lanes`]: tasks side by side (4, 8 or 16 lanes) give, lane by lane, the bits of `f32` runs
//! of the same kernels (layer forward and backward under both masks, the projected token update and its backward), with
//! logits scaled per task so that the running maximum moves in some lanes and not in others; a lane that needs the
//! scalar-only recovery, or meets a NaN, makes the group an error (the caller then goes task by task).

use crate::common::*;
use dualform::head_ref::{HeadMut, HeadRef, Vectors, Widths};
use dualform::lanes::Lanes;
use dualform::softmax_ref::{attention, backward, project, token_backward_projected, token_update_projected, Work};
use dualform::{Error, Mask, Real, Update};

const L: usize = 8;

/// Everything one run of the kernels writes, flattened.
struct Outputs<T> {
    /// Layer forward: context out, query out.
    forward: Vec<T>,
    /// Layer backward: gradients of context and query, then every parameter gradient.
    backward: Vec<T>,
    /// Token update of the query over the projected context, its backward (dh, g_ctx, parameter gradients).
    token: Vec<T>,
}

/// One task (or eight in lanes) through every kernel: `hs` the heads (`W_Q, W_K, W_V, P` each), `g` the output
/// gradient of every token.
fn run<T: Real>(
    w: Widths,
    mask: Mask,
    hs: &[[Vec<T>; 4]],
    ctx: &[T],
    query: &[T],
    g: &[T],
) -> Result<Outputs<T>, Error> {
    let (heads, e) = (hs.len(), w.e);
    let n = ctx.len() / e;
    let refs: Vec<HeadRef<'_, T>> = hs.iter().map(|[w_q, w_k, w_v, p]| HeadRef { w_q, w_k, w_v, p }).collect();
    let z = |len: usize| vec![T::ZERO; len];
    let (mut key, mut value, mut token) =
        (z(Vectors::<T>::KEY * w.dk), z(Vectors::<T>::VALUE * w.dv), z(Vectors::<T>::TOKEN * e));
    let mut stats = z(2 * heads);
    let mut vecs = Vectors { key: &mut key, value: &mut value, token: &mut token, heads: &mut stats };
    let entries = heads * n;
    let (mut keys, mut values, mut g_keys, mut g_values) =
        (z(entries * w.dk), z(entries * w.dv), z(entries * w.dk), z(entries * w.dv));
    let mut weights = z(n);
    let mut kept_stats = z((n + 1) * heads * 2);
    let mut scores = z((n + 1) * heads * (w.dk + n));
    let (mut c_out, mut q_out) = (z(n * e), z(e));
    let mut work = Work {
        keys: &mut keys,
        values: &mut values,
        g_keys: &mut g_keys,
        g_values: &mut g_values,
        weights: &mut weights,
        stats: &mut kept_stats,
        scores: &mut scores,
        kept: false,
    };
    attention(w, &refs, mask, &Update::residual(), ctx, query, &mut c_out, &mut q_out, &mut work, &mut vecs)?;
    // The backward from the forward's projection, logit statistics, queries and logits.
    work.kept = true;
    let (mut gc, mut gq) = (g[..n * e].to_vec(), g[n * e..].to_vec());
    let zero_grads = || -> Vec<[Vec<T>; 4]> { hs.iter().map(|m| [0, 1, 2, 3].map(|i| z(m[i].len()))).collect() };
    let mut grads = zero_grads();
    let mut gm: Vec<HeadMut<'_, T>> = grads.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
    backward(w, &refs, mask, ctx, query, &mut gc, &mut gq, &mut gm, &mut work, &mut vecs)?;
    drop(gm);
    let flat = |gr: &[[Vec<T>; 4]]| gr.iter().flat_map(|m| m.iter().flatten().copied()).collect::<Vec<T>>();
    let backward_out = [gc, gq, flat(&grads)].concat();

    let (mut keys, mut values) = (z(entries * w.dk), z(entries * w.dv));
    let proj = project(w, &refs, ctx, &mut keys, &mut values)?;
    let mut u = z(e);
    token_update_projected(w, &refs, &proj, query, &mut u, &mut vecs)?;
    let mut tgrads = zero_grads();
    let mut gm: Vec<HeadMut<'_, T>> =
        tgrads.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
    let (mut dh, mut g_ctx) = (z(e), g[..n * e].to_vec());
    let mut weights = z(n);
    let r = &g[n * e..];
    token_backward_projected(
        w,
        &refs,
        &proj,
        ctx,
        query,
        r,
        &mut gm,
        &mut dh,
        Some(&mut g_ctx),
        &mut weights,
        &mut vecs,
    )?;
    drop(gm);
    Ok(Outputs {
        forward: [c_out, q_out].concat(),
        backward: backward_out,
        token: [u, dh, g_ctx, flat(&tgrads)].concat(),
    })
}

/// Eight tasks: heads shared, inputs per task, each task's tokens scaled by its own factor (so the logits' ranges,
/// and where the running maximum moves, differ between lanes).
struct Tasks {
    hs: Vec<[Vec<f32>; 4]>,
    ctx: Vec<Vec<f32>>,
    query: Vec<Vec<f32>>,
    g: Vec<Vec<f32>>,
}

impl Tasks {
    fn new(seed: u64, w: Widths, heads: usize, n: usize) -> Self {
        Self::with(L, seed, w, heads, n)
    }

    /// `count` tasks.
    fn with(count: usize, seed: u64, w: Widths, heads: usize, n: usize) -> Self {
        let mut r = Gen::new(seed);
        let mut m = |len: usize, s: f64| (0..len).map(|_| (r.normal() * s) as f32).collect::<Vec<f32>>();
        let hs = (0..heads)
            .map(|_| [m(w.dk * w.e, 0.6), m(w.dk * w.e, 0.6), m(w.dv * w.e, 0.6), m(w.e * w.dv, 0.6)])
            .collect();
        let scale = |l: usize| 0.3 + 0.5 * l as f64;
        let ctx = (0..count).map(|l| m(n * w.e, scale(l))).collect();
        let query = (0..count).map(|l| m(w.e, scale(l))).collect();
        let g = (0..count).map(|_| m((n + 1) * w.e, 1.0)).collect();
        Self { hs, ctx, query, g }
    }

    fn lanes<const W: usize>(of: &[Vec<f32>]) -> Vec<Lanes<W>> {
        (0..of[0].len()).map(|i| Lanes(core::array::from_fn(|l| of[l][i]))).collect()
    }

    fn run_lanes(&self, w: Widths, mask: Mask) -> Result<Outputs<Lanes<L>>, Error> {
        self.run_width::<L>(w, mask)
    }

    /// The first `W` tasks in `W` lanes.
    fn run_width<const W: usize>(&self, w: Widths, mask: Mask) -> Result<Outputs<Lanes<W>>, Error> {
        let hs: Vec<[Vec<Lanes<W>>; 4]> =
            self.hs.iter().map(|m| [0, 1, 2, 3].map(|i| m[i].iter().map(|&v| Lanes::splat(v)).collect())).collect();
        run(w, mask, &hs, &Self::lanes(&self.ctx), &Self::lanes(&self.query), &Self::lanes(&self.g))
    }
}

#[test]
fn eight_tasks_in_lanes_are_the_bits_of_eight_f32_runs() {
    let shapes = [
        (Widths { e: 11, dk: 11, dv: 11 }, 2, 10),
        (Widths { e: 23, dk: 7, dv: 5 }, 3, 9),
        (Widths { e: 4, dk: 3, dv: 2 }, 1, 1),
        (Widths { e: 4, dk: 3, dv: 2 }, 2, 0),
    ];
    for (i, (w, heads, n)) in shapes.into_iter().enumerate() {
        let tasks = Tasks::new(70 + i as u64, w, heads, n);
        for mask in [Mask::Full, Mask::Causal] {
            let lanes = tasks.run_lanes(w, mask).unwrap();
            let mut moved = [false; L];
            for (l, moved) in moved.iter_mut().enumerate() {
                let one = run(w, mask, &tasks.hs, &tasks.ctx[l], &tasks.query[l], &tasks.g[l]).unwrap();
                let lane = |v: &[Lanes<L>]| v.iter().map(|x| x.0[l].to_bits()).collect::<Vec<u32>>();
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                let at = format!("{w:?} x {heads} heads, N {n}, {mask:?}, lane {l}");
                assert_eq!(lane(&lanes.forward), bits(&one.forward), "{at}: forward");
                assert_eq!(lane(&lanes.backward), bits(&one.backward), "{at}: backward");
                assert_eq!(lane(&lanes.token), bits(&one.token), "{at}: token kernels");
                *moved = one.forward.iter().zip(tasks.ctx[l].iter().chain(&tasks.query[l])).any(|(a, b)| a != b);
            }
            assert!(n == 0 || moved.iter().all(|&m| m), "{w:?}: some task's tokens did not move");
        }
    }
}

#[test]
fn a_lane_the_lanes_cannot_decide_makes_the_group_an_error() {
    let w = Widths { e: 4, dk: 4, dv: 4 };
    let mut tasks = Tasks::new(5, w, 1, 3);
    // Lane 3's weighted sum overflows (equal logits, every value 2e38): f32 recovers by scaling the values, which
    // compares magnitudes across the context; the lanes refuse the group.
    tasks.hs[0][0].fill(0.0);
    tasks.hs[0][2].fill(5.0e37);
    tasks.ctx[3].fill(1.0);
    let one = run(w, Mask::Full, &tasks.hs, &tasks.ctx[3], &tasks.query[3], &tasks.g[3]);
    assert!(one.is_ok(), "f32 recovers");
    assert!(matches!(tasks.run_lanes(w, Mask::Full), Err(Error::NonFinite)));
    // A NaN in one lane's context: every lane refused, as f32 refuses that task.
    let mut tasks = Tasks::new(6, w, 1, 3);
    tasks.ctx[5][2] = f32::NAN;
    assert!(matches!(
        run(w, Mask::Full, &tasks.hs, &tasks.ctx[5], &tasks.query[5], &tasks.g[5]),
        Err(Error::NonFinite)
    ));
    assert!(matches!(tasks.run_lanes(w, Mask::Full), Err(Error::NonFinite)));
}

/// The bits do not depend on how many lanes run side by side: 4, 8 and 16 lanes (one 128-bit register, two, four)
/// give each task the bits of its `f32` run.
#[test]
fn every_lane_width_gives_the_same_bits() {
    fn check<const W: usize>(tasks: &Tasks, w: Widths) {
        let lanes = tasks.run_width::<W>(w, Mask::Causal).unwrap();
        for l in 0..W {
            let one = run(w, Mask::Causal, &tasks.hs, &tasks.ctx[l], &tasks.query[l], &tasks.g[l]).unwrap();
            let lane = |v: &[Lanes<W>]| v.iter().map(|x| x.0[l].to_bits()).collect::<Vec<u32>>();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
            let all = |o: &Outputs<Lanes<W>>| [lane(&o.forward), lane(&o.backward), lane(&o.token)].concat();
            let all1 = [bits(&one.forward), bits(&one.backward), bits(&one.token)].concat();
            assert_eq!(all(&lanes), all1, "{W} lanes, lane {l}");
        }
    }
    let w = Widths { e: 11, dk: 11, dv: 11 };
    let tasks = Tasks::with(16, 90, w, 2, 10);
    check::<4>(&tasks, w);
    check::<8>(&tasks, w);
    check::<16>(&tasks, w);
}
