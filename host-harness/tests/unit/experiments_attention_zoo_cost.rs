//! Unit tests of `experiments::attention_zoo::cost` (`src/experiments/attention_zoo/cost.rs`).

use dualform_harness::experiments::attention_zoo::cost::*;
use dualform_harness::net::{Attention, ZOO_HEADS};

/// The counts are the core's executed operations: the LSA layer's multiply-adds follow the formula of the
/// associative order, and softmax grows with N^2 while the linear kinds grow with N.
#[test]
fn counted_operations_follow_the_evaluation_orders() {
    const E: usize = 5;
    let lsa = measure::<E>(Attention::Lsa, 8).unwrap();
    // Per head: W_K e, W_V e, S += v k^T for each of N tokens; W_Q h, S q, P r for each of N + 1 tokens.
    let (n, e, h) = (8u64, E as u64, ZOO_HEADS as u64);
    let macs = h * (3 * n * e * e + 3 * (n + 1) * e * e);
    assert_eq!(lsa.ops.mul, macs, "{:?}", lsa.ops);
    assert_eq!(lsa.ops.exp + lsa.ops.div, 0);
    let small = measure::<E>(Attention::Softmax, 16).unwrap().ops.flops() as f64;
    let large = measure::<E>(Attention::Softmax, 64).unwrap().ops.flops() as f64;
    assert!(large / small > 8.0, "softmax {small} -> {large}");
    for kind in [Attention::Lsa, Attention::EluPlusOne, Attention::Performer, Attention::Efficient] {
        let small = measure::<E>(kind, 16).unwrap().ops.flops() as f64;
        let large = measure::<E>(kind, 64).unwrap().ops.flops() as f64;
        assert!(large / small < 4.5, "{kind:?} {small} -> {large}");
    }
}
