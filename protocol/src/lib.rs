//! # dualform-protocol
//!
//! The lines the firmware example prints over defmt, defined once for both sides: the device emits a [`Line`]
//! with `Line::emit` (feature `defmt`), the host parses the decoded text back with [`Line::parse`]. Each
//! variant's defmt format string sits beside the words the parser reads, in this file only.
//!
//! Every value that the host compares with its own computation travels as raw f32 bits (`u32`); the decimal beside
//! it is for people reading the log. Lines that are not records (free text) parse to `None`.
#![cfg_attr(not(test), no_std)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use core::fmt;

/// Which model and which kernel produced a golden prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The trained layer, full LSA layer kernel.
    TrainedFull,
    /// The GD construction, full LSA layer kernel.
    GdFull,
    /// The trained head, merged query kernel.
    TrainedMerged,
    /// The GD head, merged query kernel.
    GdMerged,
    /// The trained head, merged full layer (`C = B G A` applied to every token).
    TrainedLayer,
    /// The GD head, merged full layer.
    GdLayer,
    /// The stack of K trained layers (merged full layers, in its schedule and update rule).
    Stack,
    /// The looped model: one trained layer applied K times.
    Looped,
}

impl Kind {
    /// Every kind, in the order the device reports them.
    pub const ALL: [Kind; 8] = [
        Kind::TrainedFull,
        Kind::GdFull,
        Kind::TrainedMerged,
        Kind::GdMerged,
        Kind::TrainedLayer,
        Kind::GdLayer,
        Kind::Stack,
        Kind::Looped,
    ];

    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::TrainedFull => "trained_full",
            Kind::GdFull => "gd_full",
            Kind::TrainedMerged => "trained_merged",
            Kind::GdMerged => "gd_merged",
            Kind::TrainedLayer => "trained_layer",
            Kind::GdLayer => "gd_layer",
            Kind::Stack => "stack",
            Kind::Looped => "looped",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

/// The model a mean loss belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    /// The trained layer.
    Trained,
    /// The GD construction.
    Gd,
    /// The stack of K trained layers.
    Stack,
    /// The looped model.
    Looped,
}

impl Model {
    /// The word on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Model::Trained => "trained",
            Model::Gd => "gd",
            Model::Stack => "stack",
            Model::Looped => "looped",
        }
    }

    fn parse(word: &str) -> Option<Self> {
        [Model::Trained, Model::Gd, Model::Stack, Model::Looped].into_iter().find(|m| m.as_str() == word)
    }
}

/// The workloads of the measurement program, each once between two markers; the number on the wire is the
/// position here (the empty run, 0, calibrates the markers). A new workload is one entry here, its arms in
/// [`Workload::as_str`] and in the host's multiply-accumulate count (a `match` without a catch-all), and its run on
/// the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// Nothing: the markers' own cost.
    Empty,
    /// The full LSA layer (`lsa_associative`).
    LsaForward,
    /// Merging a head (`A = W_K^T W_Q`, `B = P W_V`).
    Merge,
    /// A prediction with the merged query kernel.
    MergedPredict,
    /// The streaming learner: add a pair, evict the oldest.
    StreamPush,
    /// The streaming learner's prediction.
    StreamPredict,
    /// A plain `E x E` matrix-vector product.
    Matvec,
    /// The full layer in the merged form.
    MergedLayer,
    /// `E N` exponentials and their sum.
    Exp,
    /// The embedded stack of trained layers.
    Stack,
    /// The embedded looped layer.
    Looped,
}

impl Workload {
    /// Every workload, in the order of their numbers.
    pub const ALL: [Workload; 11] = [
        Workload::Empty,
        Workload::LsaForward,
        Workload::Merge,
        Workload::MergedPredict,
        Workload::StreamPush,
        Workload::StreamPredict,
        Workload::Matvec,
        Workload::MergedLayer,
        Workload::Exp,
        Workload::Stack,
        Workload::Looped,
    ];

    /// The number on the wire.
    pub const fn id(self) -> u32 {
        self as u32
    }

    /// The name on the wire.
    pub const fn as_str(self) -> &'static str {
        match self {
            Workload::Empty => "empty",
            Workload::LsaForward => "lsa_forward",
            Workload::Merge => "merge",
            Workload::MergedPredict => "merged_predict",
            Workload::StreamPush => "stream_push",
            Workload::StreamPredict => "stream_predict",
            Workload::Matvec => "matvec",
            Workload::MergedLayer => "merged_layer",
            Workload::Exp => "exp",
            Workload::Stack => "stack",
            Workload::Looped => "looped",
        }
    }

    /// The workload with this number and name (both must agree).
    fn parse(id: u32, word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.id() == id && w.as_str() == word)
    }
}

/// One record the firmware prints.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Line<'a> {
    /// Sizes of the golden run: token width, context pairs, tasks.
    Header {
        /// Token width E.
        e: usize,
        /// Context pairs N.
        n: usize,
        /// Golden tasks.
        tasks: usize,
    },
    /// SHA-256 of the weight files the firmware embeds.
    Weights {
        /// Trained weights.
        trained: &'a str,
        /// GD weights.
        gd: &'a str,
    },
    /// SHA-256 of the deep models' weight files: the stack of K layers and the looped layer.
    Models {
        /// The stack.
        stack: &'a str,
        /// The looped layer.
        looped: &'a str,
    },
    /// A golden prediction.
    Pred {
        /// Task index.
        task: usize,
        /// Model and kernel.
        kind: Kind,
        /// The prediction's f32 bits.
        bits: u32,
    },
    /// The streaming learner's prediction after `pairs` pairs.
    Stream {
        /// Task index.
        task: usize,
        /// Pairs seen so far.
        pairs: usize,
        /// The prediction's f32 bits.
        bits: u32,
    },
    /// A mean loss over the golden tasks.
    Loss {
        /// Which model.
        model: Model,
        /// The loss's f32 bits.
        bits: u32,
    },
    /// The golden run in one line a person can read: tasks, both mean losses (decimals that parse back to the same
    /// f32 bits as the `loss` records) and the first 12 hex digits of the trained weights' SHA-256.
    Summary {
        /// Golden tasks.
        tasks: usize,
        /// Mean loss of the trained layer, f32 bits.
        trained: u32,
        /// Mean loss of the GD construction, f32 bits.
        gd: u32,
        /// Start of the trained weights' SHA-256.
        weights: &'a str,
    },
    /// Peak stack of the run in bytes.
    Stack {
        /// Bytes.
        bytes: usize,
    },
    /// The run finished.
    Done,
    /// Sizes of the measurement program.
    Config {
        /// Token width E.
        e: usize,
        /// Context pairs N.
        n: usize,
    },
    /// One measured workload of the measurement program.
    Measure {
        /// The workload (its number and name on the wire).
        workload: Workload,
        /// Stack the workload itself used, in bytes.
        stack: usize,
        /// Peak stack depth during the workload, in bytes.
        total: usize,
    },
}

/// A line that starts like a record but does not parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError;

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed firmware record")
    }
}

impl<'a> Line<'a> {
    /// Prints the record over defmt, in the layout [`Line::parse`] reads.
    #[cfg(feature = "defmt")]
    pub fn emit(&self) {
        match *self {
            Line::Header { e, n, tasks } => {
                defmt::println!("dualform firmware: E {=usize} N {=usize} tasks {=usize}", e, n, tasks)
            }
            Line::Weights { trained, gd } => defmt::println!("weights trained {=str} gd {=str}", trained, gd),
            Line::Models { stack, looped } => defmt::println!("models stack {=str} looped {=str}", stack, looped),
            Line::Pred { task, kind, bits } => {
                defmt::println!("pred {=usize} {=str} {=f32} {=u32}", task, kind.as_str(), f32::from_bits(bits), bits)
            }
            Line::Stream { task, pairs, bits } => {
                defmt::println!("stream {=usize} {=usize} {=f32} {=u32}", task, pairs, f32::from_bits(bits), bits)
            }
            Line::Loss { model, bits } => {
                defmt::println!("loss {=str} {=f32} {=u32}", model.as_str(), f32::from_bits(bits), bits)
            }
            Line::Summary { tasks, trained, gd, weights } => defmt::println!(
                "summary: {=usize} golden tasks, mean loss trained {=f32} gd {=f32}, weights {=str}",
                tasks,
                f32::from_bits(trained),
                f32::from_bits(gd),
                weights
            ),
            Line::Stack { bytes } => defmt::println!("stack {=usize}", bytes),
            Line::Done => defmt::println!("done"),
            Line::Config { e, n } => defmt::println!("config {=usize} {=usize}", e, n),
            Line::Measure { workload, stack, total } => defmt::println!(
                "measure {=u32} {=str} stack {=usize} total {=usize}",
                workload.id(),
                workload.as_str(),
                stack,
                total
            ),
        }
    }

    /// Parses one decoded line: `Ok(None)` for free text, `Err` for a line that names a record but is malformed.
    pub fn parse(text: &'a str) -> Result<Option<Line<'a>>, ParseError> {
        let mut w = text.split_ascii_whitespace();
        let Some(first) = w.next() else { return Ok(None) };
        let mut word = || w.next().ok_or(ParseError);
        fn num<V: core::str::FromStr>(s: &str) -> Result<V, ParseError> {
            s.parse().map_err(|_| ParseError)
        }
        fn literal(s: &str, want: &str) -> Result<(), ParseError> {
            if s == want {
                Ok(())
            } else {
                Err(ParseError)
            }
        }
        let line = match first {
            "dualform" => {
                // `dualform firmware: E {e} N {n} tasks {tasks}`; other lines starting with the word are free text.
                if word()? != "firmware:" {
                    return Ok(None);
                }
                literal(word()?, "E")?;
                let e = num(word()?)?;
                literal(word()?, "N")?;
                let n = num(word()?)?;
                literal(word()?, "tasks")?;
                Line::Header { e, n, tasks: num(word()?)? }
            }
            "weights" => {
                literal(word()?, "trained")?;
                let trained = word()?;
                literal(word()?, "gd")?;
                Line::Weights { trained, gd: word()? }
            }
            "models" => {
                literal(word()?, "stack")?;
                let stack = word()?;
                literal(word()?, "looped")?;
                Line::Models { stack, looped: word()? }
            }
            "pred" => {
                let task = num(word()?)?;
                let kind = Kind::parse(word()?).ok_or(ParseError)?;
                let _decimal = word()?;
                Line::Pred { task, kind, bits: num(word()?)? }
            }
            "stream" => {
                let (task, pairs) = (num(word()?)?, num(word()?)?);
                let _decimal = word()?;
                Line::Stream { task, pairs, bits: num(word()?)? }
            }
            "loss" => {
                let model = Model::parse(word()?).ok_or(ParseError)?;
                let _decimal = word()?;
                Line::Loss { model, bits: num(word()?)? }
            }
            "summary:" => {
                // `summary: {tasks} golden tasks, mean loss trained {f32} gd {f32}, weights {hex}`
                let tasks = num(word()?)?;
                for want in ["golden", "tasks,", "mean", "loss", "trained"] {
                    literal(word()?, want)?;
                }
                let trained = num::<f32>(word()?)?.to_bits();
                literal(word()?, "gd")?;
                let gd = num::<f32>(word()?.strip_suffix(',').ok_or(ParseError)?)?.to_bits();
                literal(word()?, "weights")?;
                Line::Summary { tasks, trained, gd, weights: word()? }
            }
            "stack" => Line::Stack { bytes: num(word()?)? },
            "done" => Line::Done,
            "config" => Line::Config { e: num(word()?)?, n: num(word()?)? },
            "measure" => {
                let workload = Workload::parse(num(word()?)?, word()?).ok_or(ParseError)?;
                literal(word()?, "stack")?;
                let stack = num(word()?)?;
                literal(word()?, "total")?;
                Line::Measure { workload, stack, total: num(word()?)? }
            }
            _ => return Ok(None),
        };
        if w.next().is_some() {
            return Err(ParseError);
        }
        Ok(Some(line))
    }
}

#[cfg(test)]
mod tests;
