//! # dualform-harness
//!
//! Trains small LSA models on in-context linear regression with the `dualform` core's own forward and backward
//! kernels, compares them with gradient descent and honest alternatives, and writes reports, curves, plots and
//! weights. The binary `dualform` is a thin layer over [`experiments::reproduce`] and the firmware commands.
//!
//! Where things are, one folder per stage, each using only the ones listed before it: [`tasks`] (seeded tasks and
//! random streams), [`net`] (the forward and backward every model runs, on the core's kernels), [`model`]
//! (parameterisations: trained LSA weights, the GD references), [`output`] (typed reports, plots, all-or-nothing
//! folders), [`fit`] (training, optimisers, fitted references), [`judge`] (evaluation, baselines, assessment, the
//! verdict rules, statistics), [`probes`] (Dai et al.'s comparison, the relaxation), [`experiments`] (settings, one
//! file or folder per experiment, the registry and the runner, and sweeps of experiments over a grid), [`inspect`]
//! (judging a saved model) and [`firmware`] (the golden tasks and the device side).
//!
//! Tests: `tests/unit` holds the unit tests, one module per module here (the library is not built as a test
//! target, which would compile the whole harness a second time); the other files of `tests/` test it end to end.

pub mod experiments;
pub mod firmware;
pub mod fit;
pub mod inspect;
pub mod judge;
pub mod model;
pub mod net;
pub mod output;
pub mod probes;
pub mod tasks;

use std::fmt;

/// Why a harness command failed; [`HarnessError::exit_code`] maps it to the process exit code.
#[derive(Debug, Clone, PartialEq)]
pub enum HarnessError {
    /// Help or version text was asked for (printed to stdout, exit code 0).
    Help(String),
    /// A flag out of range (exit code 2).
    Usage(String),
    /// An input file that cannot be used (exit code 2): the message names the file and the tensor or key.
    BadInput(String),
    /// The output folder cannot be created or written (exit code 2).
    BadOutput(String),
    /// Reading or writing a file failed (exit code 1).
    Io(String),
    /// Training produced a NaN or infinite loss at this step (exit code 1).
    NonFinite {
        /// 1-based training step.
        step: u64,
    },
    /// A core operation failed (exit code 1).
    Core(dualform::Error),
}

impl HarnessError {
    /// 2 for bad input, 1 for failures during the run.
    pub fn exit_code(&self) -> i32 {
        match self {
            HarnessError::Help(_) => 0,
            HarnessError::Usage(_) | HarnessError::BadOutput(_) | HarnessError::BadInput(_) => 2,
            _ => 1,
        }
    }
}

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HarnessError::Help(m)
            | HarnessError::Usage(m)
            | HarnessError::BadOutput(m)
            | HarnessError::BadInput(m)
            | HarnessError::Io(m) => write!(f, "{m}"),
            HarnessError::NonFinite { step } => {
                write!(f, "training diverged: the loss is NaN or infinite at step {step} (try a smaller learning rate)")
            }
            HarnessError::Core(e) => write!(f, "core: {e}"),
        }
    }
}

impl std::error::Error for HarnessError {}

impl From<dualform_tensors::TensorError> for HarnessError {
    fn from(e: dualform_tensors::TensorError) -> Self {
        HarnessError::BadInput(e.to_string())
    }
}

impl From<net::NetError> for HarnessError {
    fn from(e: net::NetError) -> Self {
        HarnessError::Usage(format!("model: {e}"))
    }
}

impl From<dualform::Error> for HarnessError {
    fn from(e: dualform::Error) -> Self {
        HarnessError::Core(e)
    }
}

/// Input dimensions every experiment but the fixed-d ones (`attention-zoo`, `mlp-sine`), `inspect`, `golden` and
/// the references take (shapes are chosen at run time; the limit keeps a task's `d x d` fits and `(d + 1)^2`
/// matrices per layer small).
pub const SUPPORTED_D: std::ops::RangeInclusive<usize> = 1..=tasks::MAX_D;
