//! The loops over keys in blocks of [`BLOCK`] (logits, then their exponentials together, then the updates in key
//! order) against one key at a time, on `f32` and on eight lanes: the same bits, for every length around the block
//! size, with logits that rise, fall, tie and jump (a new maximum rescales the running sums).

use super::{attend, online_finish, online_push, weights_block, MaxSum, Projected, BLOCK};
use crate::lanes::Lanes;
use crate::linalg::slices::dot;
use crate::Real;

/// Uniform values in `[-1, 1)`, from a fixed sequence.
fn uniform(state: &mut u64) -> f32 {
    *state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    ((*state >> 40) as f32 / (1u64 << 23) as f32) - 1.0
}

/// Value `i` of case `case`: random, rising, falling, or with ties (every other value repeated), times `spread`.
fn value(state: &mut u64, case: usize, i: usize, spread: f32) -> f32 {
    let r = uniform(state);
    spread
        * match case % 4 {
            0 => r,
            1 => i as f32 * 0.5 + 0.01 * r,
            2 => -(i as f32) * 0.5 + 0.01 * r,
            _ => ((i / 2) as f32 * 0.7).sin(),
        }
}

fn bits<T: Copy>(x: &[T], lane_bits: impl Fn(T) -> Vec<u32>) -> Vec<u32> {
    x.iter().flat_map(|&v| lane_bits(v)).collect()
}

/// [`attend`] (blocked) against [`online_push`] one key at a time, then [`online_finish`]: the weighted sum and the
/// logits' maximum and sum, bit for bit.
fn attend_matches<T: Real>(lift: impl Fn(&mut dyn FnMut() -> f32) -> T, lane_bits: impl Fn(T) -> Vec<u32> + Copy) {
    let (dk, dv) = (3, 2);
    let mut state = 7;
    for count in 0..=2 * BLOCK + 1 {
        for case in 0..8 {
            let spread = if case < 4 { 1.0 } else { 30.0 };
            let mut next = |i: usize| lift(&mut || value(&mut state, case, i, spread));
            let q: Vec<T> = (0..dk).map(|_| next(0)).collect();
            let keys: Vec<T> = (0..count * dk).map(|i| next(i / dk)).collect();
            let values: Vec<T> = (0..count * dv).map(&mut next).collect();
            let scale = lift(&mut || 0.57);
            let mut pairs = Projected { keys: &keys, values: &values, dk, dv, count };
            let (mut qs, mut acc, mut vs) = (vec![T::ZERO; dk], vec![T::ZERO; dv], vec![T::ZERO; dv]);
            let stats = attend(&q, &mut pairs, scale, &mut qs, &mut acc, &mut vs, &mut []).expect("finite logits");
            let (mut m, mut l, mut want) = (-T::INFINITY, T::ZERO, vec![T::ZERO; dv]);
            for j in 0..count {
                let s = dot(&q, &keys[j * dk..][..dk]) * scale;
                online_push(&mut m, &mut l, &mut want, s, &values[j * dv..][..dv]).expect("finite logit");
            }
            online_finish(l, &mut want);
            let at = format!("{count} keys, case {case}");
            assert_eq!(bits(&acc, lane_bits), bits(&want, lane_bits), "{at}: weighted sum");
            let stats = stats.expect("no logit recomputed");
            assert_eq!(bits(&[stats.m, stats.l], lane_bits), bits(&[m, l], lane_bits), "{at}: maximum and sum");
        }
    }
}

/// [`MaxSum::push_block`] against [`MaxSum::push`], and [`weights_block`] against `exp(x) / l`, bit for bit; a NaN
/// logit is an error either way.
fn blocks_match<T: Real>(lift: impl Fn(&mut dyn FnMut() -> f32) -> T, lane_bits: impl Fn(T) -> Vec<u32> + Copy) {
    let mut state = 11;
    for count in 0..=2 * BLOCK + 1 {
        for case in 0..8 {
            let spread = if case < 4 { 1.0 } else { 30.0 };
            let logits: Vec<T> = (0..count).map(|i| lift(&mut || value(&mut state, case, i, spread))).collect();
            let (mut one, mut blocked) = (MaxSum::new(), MaxSum::new());
            for &s in &logits {
                one.push(s).expect("finite");
            }
            for chunk in logits.chunks(BLOCK) {
                let mut s = [T::ZERO; BLOCK];
                s[..chunk.len()].copy_from_slice(chunk);
                blocked.push_block(&s, chunk.len()).expect("finite");
            }
            let at = format!("{count} logits, case {case}");
            assert_eq!(bits(&[blocked.m, blocked.l], lane_bits), bits(&[one.m, one.l], lane_bits), "{at}");
            for chunk in logits.chunks(BLOCK) {
                let mut a = [T::ZERO; BLOCK];
                for (x, &s) in a.iter_mut().zip(chunk) {
                    *x = s - one.m;
                }
                let want: Vec<T> = a.iter().take(chunk.len()).map(|&x| x.exp() / one.l).collect();
                weights_block(&mut a, chunk.len(), one.l);
                assert_eq!(bits(&a[..chunk.len()], lane_bits), bits(&want, lane_bits), "{at}: weights");
            }
            if count > 0 {
                let mut s = [T::ZERO; BLOCK];
                s[count.min(BLOCK) - 1] = lift(&mut || f32::NAN);
                assert!(MaxSum::new().push_block(&s, count.min(BLOCK)).is_err(), "{at}: a NaN logit");
            }
        }
    }
}

fn f32_bits(v: f32) -> Vec<u32> {
    vec![v.to_bits()]
}

fn lanes_bits(v: Lanes<8>) -> Vec<u32> {
    v.0.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn blocked_attention_gives_the_bits_of_one_key_at_a_time() {
    attend_matches(|next| next(), f32_bits);
    attend_matches(|next| Lanes(core::array::from_fn(|_| next())), lanes_bits);
}

#[test]
fn blocked_maxima_sums_and_weights_give_the_bits_of_one_logit_at_a_time() {
    blocks_match(|next| next(), f32_bits);
    blocks_match(|next| Lanes(core::array::from_fn(|_| next())), lanes_bits);
}

/// The layer's backward and the query's, which run tokens and keys two at a time into the shared gradients, against
/// the same kernels one at a time: every gradient bit for bit, under both masks, for even and odd contexts, with
/// the weights computed twice or kept for one or two tokens.
#[test]
fn pairs_give_the_bits_of_one_at_a_time() {
    use super::backward::{backward_in, token_backward_from};
    use super::Work;
    use crate::head_ref::{HeadMut, HeadRef, Vectors, Widths};
    use crate::Mask;
    let mut state = 11;
    for (w, heads, n) in [
        (Widths { e: 11, dk: 11, dv: 11 }, 2, 10),
        (Widths { e: 5, dk: 3, dv: 4 }, 3, 7),
        (Widths { e: 4, dk: 3, dv: 2 }, 1, 1),
        (Widths { e: 4, dk: 3, dv: 2 }, 1, 0),
    ] {
        let mut m = |len: usize| (0..len).map(|_| uniform(&mut state) * 1.3).collect::<Vec<f32>>();
        let hs: Vec<[Vec<f32>; 4]> =
            (0..heads).map(|_| [m(w.dk * w.e), m(w.dk * w.e), m(w.dv * w.e), m(w.e * w.dv)]).collect();
        let (ctx, query, g_ctx, g_query) = (m(n * w.e), m(w.e), m(n * w.e), m(w.e));
        let refs: Vec<HeadRef<'_, f32>> = hs.iter().map(|[w_q, w_k, w_v, p]| HeadRef { w_q, w_k, w_v, p }).collect();
        let zeros =
            || -> Vec<[Vec<f32>; 4]> { hs.iter().map(|m| [0, 1, 2, 3].map(|i| vec![0.0; m[i].len()])).collect() };
        let flat = |gr: &[[Vec<f32>; 4]]| -> Vec<u32> { gr.iter().flatten().flatten().map(|x| x.to_bits()).collect() };
        let mut vecs =
            [w.dk * Vectors::<f32>::KEY, w.dv * Vectors::<f32>::VALUE, w.e * Vectors::<f32>::TOKEN, 2 * heads]
                .map(|len| vec![0.0f32; len]);
        for mask in [Mask::Full, Mask::Causal] {
            for keep in [0, 1, 2] {
                let mut outs = Vec::new();
                for pairs in [true, false] {
                    let mut gr = zeros();
                    let mut gm: Vec<HeadMut<'_, f32>> =
                        gr.iter_mut().map(|[w_q, w_k, w_v, p]| HeadMut { w_q, w_k, w_v, p }).collect();
                    let (mut gc, mut gq) = (g_ctx.clone(), g_query.clone());
                    let [key, value, token, hd] = &mut vecs;
                    let mut v = Vectors { key, value, token, heads: hd };
                    let entries = heads * n;
                    let [mut keys, mut values, mut g_keys, mut g_values] =
                        [w.dk, w.dv, w.dk, w.dv].map(|x| vec![0.0f32; entries * x]);
                    let mut kept = vec![0.0f32; keep * n];
                    let mut work = Work {
                        keys: &mut keys,
                        values: &mut values,
                        g_keys: &mut g_keys,
                        g_values: &mut g_values,
                        weights: &mut kept,
                        stats: &mut [],
                        scores: &mut [],
                        kept: false,
                    };
                    let (c, q) = (&ctx[..], &query[..]);
                    backward_in(w, &refs, mask, [c, q], [&mut gc, &mut gq], &mut gm, &mut work, &mut v, pairs).unwrap();
                    // The query alone (the last layer's backward), its context's gradient added into `gc`.
                    let mut dh = vec![0.0f32; w.e];
                    let mut kept = vec![0.0f32; keep.min(1) * n];
                    let gcm = Some(&mut gc[..]);
                    token_backward_from(
                        w, &refs, None, c, q, &g_query, &mut gm, &mut dh, gcm, &mut kept, &mut v, pairs,
                    )
                    .unwrap();
                    drop(gm);
                    let b = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<u32>>();
                    outs.push([b(&gc), b(&gq), b(&dh), flat(&gr)]);
                }
                assert_eq!(outs[0], outs[1], "{w:?}, {heads} heads, {n} tokens, {mask:?}, weights kept x{keep}");
            }
        }
    }
}
