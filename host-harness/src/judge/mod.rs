//! Judging a model on held-out tasks: [`eval`] computes the losses and the agreement metrics, [`baselines`] the
//! one-layer alternatives a trained layer is told apart from, [`assess`] measures a layer against every reference,
//! [`verdict`] holds the written rules, [`stats`] the confidence intervals they rest on, and [`attribution`] which
//! demonstrations a prediction draws on.

pub mod assess;
pub mod attribution;
pub mod baselines;
pub mod eval;
pub mod stats;
pub mod verdict;
