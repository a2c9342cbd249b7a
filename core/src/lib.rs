//! # dualform
//!
//! `no_std`, allocation-free attention kernels that compute gradient descent in context, with the same bits on a
//! host and on microcontrollers (checked on the Cortex-M0, M3, M4F, M7, M33, M55 and a RISC-V RV32IMAC core).
//!
//! One linear self-attention (LSA) layer with the right weights computes exactly one step of gradient descent on the
//! least-squares problem whose `(x, y)` pairs sit in its context (von Oswald et al. 2022). This crate holds the
//! layers (linear, kernelised and softmax attention; quadratic and associative evaluation orders; full and causal
//! masks; stacks; a streaming context), written so that every reduction has one fixed order.
//!
//! Conventions (the reference code's): a token is `e = (x, y)` in R^E; the query token is `(x_q, 0)`; an LSA layer
//! maps every token `h_t` to `h_t + P sum_j (W_Q h_t . W_K e_j) W_V e_j` over the N context tokens; the prediction
//! is minus the query token's `y` part.
//!
//! ```
//! use dualform::{lsa_associative, prediction, Layer, Mask, Update};
//! // E = 2 (x in R, y in R), N = 2 context tokens, key and value size 2, one head.
//! let mut layer = Layer::<f64, 2, 2, 2, 1>::zeros();
//! let head = &mut layer.heads[0];
//! head.w_q[(0, 0)] = 1.0; // query and key read x
//! head.w_k[(0, 0)] = 1.0;
//! head.w_v[(1, 1)] = -1.0; // value is -y
//! head.p[(1, 1)] = 0.5; // P = eta / N with eta = 1, N = 2
//! let mut ctx = [[1.0, 2.0], [2.0, 4.0]]; // y = 2 x
//! let mut query = [3.0, 0.0];
//! lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut query)?;
//! // One GD step from w = 0 with rate 1 on L(w) = 1/(2N) sum (w x_i - y_i)^2 gives w = (1*2 + 2*4)/2 = 5.
//! assert_eq!(prediction::<f64, 2, 1>(&query), [15.0]);
//! # Ok::<(), dualform::Error>(())
//! ```
//!
//! Conventions for arguments: kernels that update the context in place (the layer kernels) take it as a fixed-size
//! array `&mut [[T; E]; N]`; kernels that only read it (the merged query kernel [`MergedHead::predict`], the slice
//! attention functions) take a slice `&[[T; E]]`, which an array coerces to. For the common case of one head with
//! key and value width E, [`LsaLayer`] and [`LsaStream`] spell the shapes, and the `*_scalar` methods need no output
//! width.
//!
//! No function panics on bad input: errors are the small enum [`Error`]; shape mismatches (`D + DY != E`, a zero
//! capacity) are build errors, reported by `cargo build` when a generic function is instantiated (not by `cargo check`).
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
// The library cannot panic: no unwrap, expect, panic or indexing (every index is an iterator, `get` or a checked
// `Option`); tests may. `clippy::arithmetic_side_effects` is not denied: it flags every operator on the generic
// scalar `T` (about 120 float operations, which cannot panic), so it cannot tell the integer arithmetic apart; that
// is on const sizes (`D + i` with `D + DY == E` asserted at compile time, `t + 1` with `t < N`) or saturating
// (token counts, tested in `attention/associative.rs`).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub use nalgebra;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub mod attention;
pub mod backward;
pub mod construct;
pub mod dual_form;
mod error;
pub mod features;
pub mod gd;
pub mod head_ref;
pub mod kernel_backward;
pub mod lanes;
pub mod layer;
pub mod linalg;
pub mod linear_ref;
pub mod merged;
pub mod merged_layer;
pub mod merged_ref;
pub mod mlp;
pub mod reader;
pub mod rng;
mod scalar;
pub mod softmax;
pub mod softmax_ref;
pub mod stack;
pub mod stream;

pub use attention::{
    attend_linear, efficient_attention, linear_attention_associative, linear_attention_quadratic, lsa_associative,
    lsa_quadratic, AssociativeState, EfficientState, LinearScratch, Normalise, Projection,
};
pub use construct::{gd_head_into, gd_layer, gd_stack, gdpp_layer};
pub use dual_form::{
    dai_demo_effect, dai_split, error_signals, irie_dual, irie_primal, relaxed_attention, softmax_relaxation_error,
    DaiSplit, DemoEffect,
};
pub use error::Error;
pub use features::{EluPlusOne, FeatureMap, FeatureVjp, Identity, PositiveRandomFeatures, SoftmaxFeatures};
pub use layer::{prediction, Head, Layer, LsaLayer, Mask, Update};
pub use merged::MergedHead;
pub use merged_layer::LayerCache;
pub use merged_ref::MergedRef;
pub use reader::{read_gd, read_gd_merged, read_gd_slices, GdFit, GdFitScalars};
pub use scalar::Real;
pub use softmax::{
    attend_softmax, online_max_sum, softmax, softmax_attention, softmax_attention_slices, softmax_token_update,
    OnlineSoftmax, SoftmaxWork,
};
pub use stack::{run_stack, Block, SoftmaxBlock};
pub use stream::{token_from, LsaStream, StreamingContext};
