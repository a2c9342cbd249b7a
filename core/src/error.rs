//! The one error type of the core: small, `Copy`, printable with `Display` (and `defmt` behind its feature).

use core::fmt;

/// What can go wrong in a core operation. No core function panics on bad input; it returns one of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Error {
    /// An input that must hold at least one element was empty.
    Empty,
    /// Two lengths that must agree did not.
    LengthMismatch {
        /// The length that was required.
        expected: usize,
        /// The length that was given.
        found: usize,
    },
    /// A caller-provided buffer was too small.
    BufferTooSmall {
        /// Elements needed.
        needed: usize,
        /// Elements provided.
        found: usize,
    },
    /// A value that must be finite was NaN or infinite (for example a softmax logit).
    NonFinite,
    /// A normaliser (a sum of attention weights or a norm) was zero or not finite, so the division is undefined.
    ZeroNormaliser,
    /// A parameter was out of its documented range; the string names it.
    InvalidParameter(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Empty => write!(f, "input is empty"),
            Error::LengthMismatch { expected, found } => {
                write!(f, "length mismatch: expected {expected}, found {found}")
            }
            Error::BufferTooSmall { needed, found } => {
                write!(f, "buffer too small: needed {needed}, found {found}")
            }
            Error::NonFinite => write!(f, "a value that must be finite is NaN or infinite"),
            Error::ZeroNormaliser => write!(f, "normaliser is zero or not finite"),
            Error::InvalidParameter(name) => write!(f, "parameter out of range: {name}"),
        }
    }
}
