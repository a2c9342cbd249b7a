//! Unit tests of `net::softmax` (`src/net/softmax.rs`).

use dualform::{softmax_attention, LinearScratch};
use dualform::{Layer, Mask, Update};
use dualform_harness::net::softmax::*;
use dualform_harness::net::Forward;

fn random_layer(seed: u64, scale: f64) -> SoftmaxLayer {
    let mut s = dualform::rng::SplitMix64::new(seed);
    let mut l = SoftmaxLayer::zeros(4);
    for v in l.params_mut() {
        *v = (s.next_normal() * scale) as f32;
    }
    l
}

/// The same weights as a fixed-width core layer.
fn fixed(l: &SoftmaxLayer) -> Layer<f32, 4, 4, 4, SOFTMAX_HEADS> {
    let mut f = Layer::<f32, 4, 4, 4, SOFTMAX_HEADS>::zeros();
    for (h, head) in f.heads.iter_mut().enumerate() {
        for (which, m) in [&mut head.w_q, &mut head.w_k, &mut head.w_v, &mut head.p].into_iter().enumerate() {
            m.as_mut_slice().copy_from_slice(l.matrix(h, which));
        }
    }
    f
}

fn tokens(seed: u64) -> ([[f32; 4]; 5], [f32; 4]) {
    let mut s = dualform::rng::SplitMix64::new(seed);
    let mut u = || (s.next_open01() as f32) * 2.0 - 1.0;
    let ctx = core::array::from_fn(|_| [u(), u(), u(), u()]);
    (ctx, [u(), u(), u(), 0.0])
}

/// The net's readout after every layer is the core's fixed-width softmax layer applied layer after layer, bit
/// for bit, and the layer converts to and from the fixed form unchanged.
#[test]
fn a_softmax_net_predicts_what_the_core_layers_predict() {
    let layers = vec![random_layer(1, 0.8), random_layer(2, 0.8), random_layer(3, 0.8)];
    let net = SoftmaxNet::new(4, layers.clone());
    let (ctx, query) = tokens(4);
    let mut readout = [0.0f32; 3];
    let y = net.predict(ctx.as_flattened(), &query, &mut net.workspace(5), Some(&mut readout));
    let (mut c, mut q) = (ctx, query);
    let mut scratch = LinearScratch::<f32, 5, 4, 4, SOFTMAX_HEADS>::new();
    for (l, r) in layers.iter().zip(readout) {
        assert_eq!(&SoftmaxLayer::from_fixed(&fixed(l)), l);
        softmax_attention(&fixed(l), Mask::Full, &Update::residual(), &mut c, &mut q, &mut scratch).unwrap();
        assert_eq!((-q[3]).to_bits(), r.to_bits());
    }
    assert_eq!(y, readout[2]);
    // A query of another width predicts NaN.
    assert!(net.predict(ctx.as_flattened(), &query[..3], &mut net.workspace(5), None).is_nan());
}

/// Parameter and query gradients of a two-layer net against central differences in f64 of the f32 forward (so
/// a loose bound; a wrong backward is off by far more).
#[test]
fn softmax_net_gradients_match_finite_differences() {
    let net = SoftmaxNet::new(4, vec![random_layer(5, 0.7), random_layer(6, 0.7)]);
    let (ctx, query) = tokens(7);
    let ctx = ctx.as_flattened();
    let mut grads = net.zero_grads();
    let mut dh = [0.0f32; 4];
    net.forward_backward(ctx, &query, &mut net.workspace(5), |_| 1.0, Some(&mut grads), Some(&mut dh));
    let f = |n: &SoftmaxNet, q: &[f32; 4]| n.predict(ctx, q, &mut n.workspace(5), None) as f64;
    let step = 1e-2f32;
    let mut checked = 0;
    for (layer, lg) in grads.iter().enumerate() {
        for head in 0..SOFTMAX_HEADS {
            for (which, i) in [(0usize, 1usize), (1, 6), (2, 11), (3, 15)] {
                let (mut p, mut m) = (net.clone(), net.clone());
                p.layers_mut()[layer].matrix_mut(head, which)[i] += step;
                m.layers_mut()[layer].matrix_mut(head, which)[i] -= step;
                let num = (f(&p, &query) - f(&m, &query)) / (2.0 * step as f64);
                let ana = lg.matrix(head, which)[i] as f64;
                let tol = 3e-3 * (1.0 + ana.abs());
                assert!((num - ana).abs() < tol, "layer {layer} head {head} {which}/{i}: {ana} vs {num}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16);
    for i in 0..3 {
        let (mut p, mut m) = (query, query);
        p[i] += step;
        m[i] -= step;
        let num = (f(&net, &p) - f(&net, &m)) / (2.0 * step as f64);
        assert!((num - dh[i] as f64).abs() < 3e-3 * (1.0 + num.abs()), "dh[{i}]: {} vs {num}", dh[i]);
    }
}

/// A non-finite logit gives NaN, not a panic.
#[test]
fn an_overflowing_logit_gives_nan() {
    let mut l = random_layer(8, 1.0);
    l.matrix_mut(0, 0)[0] = 1e30;
    l.matrix_mut(0, 1)[0] = 1e30;
    let net = SoftmaxNet::new(4, vec![l]);
    let (ctx, query) = tokens(9);
    let ctx = ctx.as_flattened();
    assert!(net.predict(ctx, &query, &mut net.workspace(5), None).is_nan());
    let mut dh = [0.0f32; 4];
    let y = net.forward_backward(ctx, &query, &mut net.workspace(5), |_| 1.0, None, Some(&mut dh));
    assert!(y.is_nan() && dh.iter().all(|v| v.is_nan()));
}
