//! Layer stacks (distinct and recurrent, readout per layer) and the streaming context (running sums against a
//! full recompute after many add/evict cycles, with the measured drift).

use crate::common::*;
use dualform::*;

#[test]
fn recurrent_stack_equals_repeated_layer_and_reads_out_every_layer() {
    let mut g = Gen::new(8);
    let mut layer = g.layer::<6, 6, 6, 1>();
    layer.heads[0].p *= 0.2;
    let ctx0 = g.tokens::<6, 5>();
    let q0 = g.array::<6>(-1.0, 1.0);
    // By hand: three applications.
    let (mut c, mut q) = (ctx0, q0);
    let mut by_hand = Vec::new();
    for _ in 0..3 {
        lsa_associative(&layer, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
        by_hand.push(prediction::<f64, 6, 2>(&q));
    }
    // Recurrent stack: one block, three repeats.
    let (mut c2, mut q2) = (ctx0, q0);
    let mut readout = [[0.0; 2]; 3];
    let last = run_stack(&mut [&layer], 3, &Update::residual(), &mut c2, &mut q2, Some(&mut readout)).unwrap();
    assert_eq!(readout.to_vec(), by_hand);
    assert_eq!(last, by_hand[2]);
    assert_eq!((c2, q2), (c, q));
    // Distinct stack of three copies: the same.
    let (mut c3, mut q3) = (ctx0, q0);
    let mut layers = [layer.clone(), layer.clone(), layer.clone()];
    let last3 = run_stack::<_, _, 6, 5, 2>(&mut layers, 1, &Update::residual(), &mut c3, &mut q3, None).unwrap();
    assert_eq!(last3, by_hand[2]);
}

#[test]
fn distinct_stack_runs_layers_in_order() {
    let mut g = Gen::new(9);
    let a = g.layer::<5, 5, 5, 1>();
    let b = g.layer::<5, 5, 5, 1>();
    let ctx0 = g.tokens::<5, 4>();
    let q0 = g.array::<5>(-1.0, 1.0);
    let (mut c, mut q) = (ctx0, q0);
    lsa_associative(&a, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    lsa_associative(&b, Mask::Full, &Update::residual(), &mut c, &mut q).unwrap();
    let (mut c2, mut q2) = (ctx0, q0);
    let got = run_stack::<_, _, 5, 4, 1>(&mut [&a, &b], 1, &Update::residual(), &mut c2, &mut q2, None).unwrap();
    assert_eq!(got, prediction::<f64, 5, 1>(&q));
    let (mut c3, mut q3) = (ctx0, q0);
    let swapped = run_stack::<_, _, 5, 4, 1>(&mut [&b, &a], 1, &Update::residual(), &mut c3, &mut q3, None).unwrap();
    assert_ne!(swapped, got, "order matters for distinct layers");
}

#[test]
fn softmax_block_in_a_stack_and_readout_too_small() {
    let mut g = Gen::new(10);
    let layer = g.layer::<4, 4, 4, 1>();
    let ctx0 = g.tokens::<4, 3>();
    let q0 = g.array::<4>(-1.0, 1.0);
    let (mut c, mut q) = (ctx0, q0);
    let mut scratch = LinearScratch::new();
    softmax_attention(&layer, Mask::Causal, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
    let (mut c2, mut q2) = (ctx0, q0);
    let mut blocks = [SoftmaxBlock::new(&layer, Mask::Causal)];
    run_stack::<_, _, 4, 3, 1>(&mut blocks, 1, &Update::residual(), &mut c2, &mut q2, None).unwrap();
    assert_eq!((c, q), (c2, q2));
    let mut readout = [[0.0; 1]; 1];
    let r = run_stack(&mut [&layer], 2, &Update::residual(), &mut c2, &mut q2, Some(&mut readout));
    assert_eq!(r, Err(Error::BufferTooSmall { needed: 2, found: 1 }));
    assert_eq!((c, q), (c2, q2), "nothing runs when the readout is too small");
}

/// Streaming: after every push the running sums predict what a full recompute over the window predicts.
fn stream_cycles<T: Real>(resync_every: usize, pushes: usize) -> (f64, f64) {
    const E: usize = 11;
    const CAP: usize = 10;
    let mut g = Gen::new(12);
    let layer64 = g.layer::<E, E, E, 1>();
    let layer = cast_layer::<T, E, E, E, 1>(&layer64);
    let mut stream = StreamingContext::<T, E, E, E, 1, CAP>::new(&layer, resync_every);
    let mut worst_pred = 0.0f64;
    let mut worst_drift = 0.0f64;
    for i in 0..pushes {
        let x: [T; 10] = cast(&g.array::<10>(-0.5, 0.5));
        let y: [T; 1] = cast(&g.array::<1>(-2.0, 2.0));
        let evicted = stream.push_pair(&x, &y).unwrap();
        assert_eq!(evicted.is_some(), i >= CAP);
        if stream.len() == CAP {
            let mut ctx = [[T::ZERO; E]; CAP];
            for (c, w) in ctx.iter_mut().zip(stream.window()) {
                *c = *w;
            }
            let xq: [T; 10] = cast(&g.array::<10>(-0.5, 0.5));
            let mut q = token_from(&xq, &[T::ZERO]);
            lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q).unwrap();
            let full = prediction::<T, E, 1>(&q)[0].to_f64();
            let streamed = stream.predict::<10, 1>(&xq)[0].to_f64();
            worst_pred = worst_pred.max((full - streamed).abs());
            worst_drift = worst_drift.max(stream.drift().to_f64());
        }
    }
    (worst_pred, worst_drift)
}

#[test]
fn streaming_matches_recompute_after_many_cycles() {
    // f64 without resync: 10 000 add/evict cycles drift by rounding only.
    let (p64, d64) = stream_cycles::<f64>(0, 10_000);
    eprintln!("f64, 10000 cycles, no resync: max |pred diff| {p64:e}, max drift of S {d64:e}");
    assert!(p64 < 1e-11 && d64 < 1e-12, "f64 drift {p64:e} {d64:e}");
    // f32 without resync: measurable drift, still small.
    let (p32, d32) = stream_cycles::<f32>(0, 10_000);
    eprintln!("f32, 10000 cycles, no resync: max |pred diff| {p32:e}, max drift of S {d32:e}");
    assert!(p32 < 1e-3 && d32 < 1e-4, "f32 drift {p32:e} {d32:e}");
    assert!(d32 > 0.0, "f32 rounding drift is expected without resync");
    // f32 with a resync every 64 evictions: the drift is bounded by what 64 cycles accumulate.
    let (p32r, d32r) = stream_cycles::<f32>(64, 10_000);
    eprintln!("f32, 10000 cycles, resync every 64: max |pred diff| {p32r:e}, max drift of S {d32r:e}");
    assert!(d32r < d32, "resync must reduce the drift ({d32r:e} vs {d32:e})");
    assert!(p32r < 1e-4);
}

#[test]
fn streaming_is_bit_identical_to_recompute_right_after_resync() {
    const E: usize = 5;
    let mut g = Gen::new(13);
    let layer = cast_layer::<f32, E, E, E, 2>(&g.layer::<E, E, E, 2>());
    let mut stream = StreamingContext::<f32, E, E, E, 2, 4>::new(&layer, 0);
    for _ in 0..37 {
        stream.push(cast(&g.array::<E>(-1.0, 1.0))).unwrap();
    }
    stream.resync();
    assert_eq!(stream.drift(), 0.0);
    let mut ctx = [[0.0f32; E]; 4];
    for (c, w) in ctx.iter_mut().zip(stream.window()) {
        *c = *w;
    }
    let xq: [f32; 3] = cast(&g.array::<3>(-1.0, 1.0));
    let mut q = token_from(&xq, &[0.0f32; 2]);
    lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q).unwrap();
    assert_eq!(stream.predict::<3, 2>(&xq), prediction::<f32, E, 2>(&q));
}

#[test]
fn replace_is_remove_then_add_bit_for_bit() {
    const E: usize = 7;
    let mut g = Gen::new(14);
    let layer = cast_layer::<f32, E, E, E, 2>(&g.layer::<E, E, E, 2>());
    let tokens: Vec<[f32; E]> = (0..6).map(|_| cast(&g.array::<E>(-1.0, 1.0))).collect();
    for norm in [Normalise::None, Normalise::Sum] {
        let mut a = AssociativeState::<f32, E, E, 2>::new();
        for t in &tokens[..4] {
            a.add(&layer, &EluPlusOne, norm, t);
        }
        let mut b = a.clone();
        a.remove(&layer, &EluPlusOne, norm, &tokens[0]);
        a.add(&layer, &EluPlusOne, norm, &tokens[5]);
        let old = AssociativeState::<f32, E, E, 2>::project(&layer, &EluPlusOne, &tokens[0]);
        let new = AssociativeState::<f32, E, E, 2>::project(&layer, &EluPlusOne, &tokens[5]);
        b.replace(&old, &new, norm);
        assert_eq!(a, b, "{norm:?}");
        // Adding by projection is adding.
        let mut c = AssociativeState::<f32, E, E, 2>::new();
        let mut d = c.clone();
        c.add(&layer, &EluPlusOne, norm, &tokens[1]);
        d.add_projection(&AssociativeState::<f32, E, E, 2>::project(&layer, &EluPlusOne, &tokens[1]), norm);
        assert_eq!(c, d);
    }
}
