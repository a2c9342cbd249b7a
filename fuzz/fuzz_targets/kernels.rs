//! Any bytes as f32 bit patterns fed to the core's kernels (softmax, softmax and linear attention over slices of any
//! length, an LSA layer, the reader, the streaming learner): no panic; the documented errors or results; NaN in a
//! query coordinate stays NaN through an LSA layer.
#![no_main]

use dualform::nalgebra::SMatrix;
use dualform::*;
use libfuzzer_sys::fuzz_target;

fn floats(data: &[u8]) -> Vec<f32> {
    data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fuzz_target!(|data: &[u8]| {
    let v = floats(data);
    let Some((_, rest)) = data.split_first() else { return };
    // Softmax over everything.
    let mut out = vec![0.0f32; v.len()];
    match softmax(&v, &mut out) {
        Ok(()) => assert!(out.iter().all(|p| (0.0..=1.0).contains(p))),
        Err(e) => assert!(matches!(e, Error::Empty | Error::NonFinite), "{e:?}"),
    }
    // Softmax and linear attention with keys and values of lengths taken from the input.
    let tokens: Vec<[f32; 3]> = v.chunks_exact(3).map(|c| [c[0], c[1], c[2]]).collect();
    let split = (rest.first().copied().unwrap_or(0) as usize).min(tokens.len());
    let (keys, values) = tokens.split_at(split);
    let q = tokens.first().copied().unwrap_or([0.5; 3]);
    let scale = v.first().copied().unwrap_or(1.0);
    if let Err(e) = attend_softmax(&q, keys, values, scale) {
        assert!(matches!(e, Error::LengthMismatch { .. } | Error::NonFinite | Error::Empty), "{e:?}");
    }
    if let Err(e) = attend_linear(&q, keys, values) {
        assert!(matches!(e, Error::LengthMismatch { .. } | Error::Empty), "{e:?}");
    }
    // One LSA layer whose weights and tokens are the input.
    if v.len() >= 2 * 9 + 5 * 3 {
        let mut layer = Layer::<f32, 3, 3, 3, 1>::zeros();
        layer.heads[0].w_q = SMatrix::from_fn(|i, j| v[3 * i + j]);
        layer.heads[0].w_k = SMatrix::from_fn(|i, j| v[9 + 3 * i + j]);
        layer.heads[0].w_v = SMatrix::identity();
        layer.heads[0].p = SMatrix::identity();
        let mut ctx: [[f32; 3]; 4] = core::array::from_fn(|t| tokens[6 + t]);
        let before = tokens[10];
        let mut query = before;
        assert!(lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut query).is_ok());
        for (a, b) in query.iter().zip(before.iter()) {
            assert!(!b.is_nan() || a.is_nan());
        }
        let head = MergedHead::<f32, 3> { a: layer.heads[0].w_q, b: layer.heads[0].w_k };
        if let Ok(fit) = read_gd_merged::<f32, 3, 2, 1>(&head, 4) {
            assert!(fit.residual.is_nan() || fit.residual >= 0.0);
        }
    }
    // The streaming learner over the tokens as pairs.
    if let Ok(layer) = gd_layer::<f32, 2, 1, 3>(&SMatrix::zeros(), 0.5, 4) {
        let mut stream = StreamingContext::<f32, 3, 3, 3, 1, 4>::new(&layer, split % 3);
        for t in &tokens {
            let _ = stream.push_pair::<2, 1>(&[t[0], t[1]], &[t[2]]);
        }
        let _ = stream.predict::<2, 1>(&[q[0], q[1]]);
        let _ = stream.drift();
    }
});
