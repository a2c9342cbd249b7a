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

pub mod boards;
pub use boards::{Board, StackGuard, BOARDS};

/// The models of the golden run, in the order the device runs them. A new golden model is one entry here (its name,
/// its weights file and the build variable that overrides it, whether it is a single layer) and its file in
/// `firmware-example/data`: the firmware's build embeds every entry, the device runs and reports every entry, and the
/// host reads and recomputes every entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Model {
    /// The trained layer.
    Trained,
    /// The GD construction.
    Gd,
    /// The stack of K trained layers.
    Stack,
    /// The looped model: one trained layer applied K times.
    Looped,
}

impl Model {
    /// Every model, in the order the device runs them.
    pub const ALL: [Model; 4] = [Model::Trained, Model::Gd, Model::Stack, Model::Looped];

    /// The word on the wire, also the name of its module in the firmware's embedded data.
    pub const fn as_str(self) -> &'static str {
        match self {
            Model::Trained => "trained",
            Model::Gd => "gd",
            Model::Stack => "stack",
            Model::Looped => "looped",
        }
    }

    /// The weights file in `firmware-example/data`, and the build variable that names another.
    pub const fn source(self) -> (&'static str, &'static str) {
        match self {
            Model::Trained => ("trained.safetensors", "DUALFORM_WEIGHTS"),
            Model::Gd => ("gd.safetensors", "DUALFORM_GD_WEIGHTS"),
            Model::Stack => ("stack.safetensors", "DUALFORM_STACK"),
            Model::Looped => ("looped.safetensors", "DUALFORM_LOOPED"),
        }
    }

    /// One layer applied once, predicted by the kernels [`Kernel::SINGLE`]; otherwise a model of merged layers run
    /// in its schedule ([`Kernel::Scheduled`]).
    pub const fn single(self) -> bool {
        matches!(self, Model::Trained | Model::Gd)
    }

    /// The kernels its predictions come from.
    pub const fn kernels(self) -> &'static [Kernel] {
        if self.single() {
            &Kernel::SINGLE
        } else {
            &[Kernel::Scheduled]
        }
    }

    fn parse(word: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == word)
    }
}

/// The kernel that produced a golden prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kernel {
    /// The full LSA layer (`lsa_associative`).
    Full,
    /// The merged query kernel (`MergedHead::predict_scalar`).
    Merged,
    /// The merged full layer (`C = B G A` applied to every token).
    Layer,
    /// Merged full layers in the model's schedule and update rule.
    Scheduled,
}

impl Kernel {
    /// The kernels of a single layer, in the order the device reports them.
    pub const SINGLE: [Kernel; 3] = [Kernel::Full, Kernel::Merged, Kernel::Layer];

    /// What follows the model's name on the wire (`trained_full`; a scheduled model is its name alone).
    pub const fn suffix(self) -> &'static str {
        match self {
            Kernel::Full => "_full",
            Kernel::Merged => "_merged",
            Kernel::Layer => "_layer",
            Kernel::Scheduled => "",
        }
    }
}

/// Which model and which kernel produced a golden prediction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    /// The model.
    pub model: Model,
    /// The kernel.
    pub kernel: Kernel,
}

impl Kind {
    /// Every kind the device reports, model by model in [`Model::ALL`]'s order.
    pub fn all() -> impl Iterator<Item = Kind> {
        Model::ALL.into_iter().flat_map(|model| model.kernels().iter().map(move |&kernel| Kind { model, kernel }))
    }

    fn parse(word: &str) -> Option<Self> {
        Self::all().find(|k| word.strip_prefix(k.model.as_str()) == Some(k.kernel.suffix()))
    }
}

impl fmt::Display for Kind {
    /// The word on the wire: `trained_full`, `gd_merged`, `stack`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.model.as_str(), self.kernel.suffix())
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
    /// SHA-256 of a model's weight file, as the firmware embeds it.
    Weights {
        /// The model.
        model: Model,
        /// Its file's SHA-256, hex.
        sha256: &'a str,
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
    /// What demonstration `pair` contributes to the trained single layer's merged prediction on golden task `task`
    /// (`MergedHead::attribution`): the prediction is minus the query's label plus the sum of these.
    Attribution {
        /// Task index.
        task: usize,
        /// Context pair index.
        pair: usize,
        /// The term's f32 bits.
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
            Line::Weights { model, sha256 } => defmt::println!("weights {=str} {=str}", model.as_str(), sha256),
            Line::Pred { task, kind, bits } => defmt::println!(
                "pred {=usize} {=str}{=str} {=f32} {=u32}",
                task,
                kind.model.as_str(),
                kind.kernel.suffix(),
                f32::from_bits(bits),
                bits
            ),
            Line::Stream { task, pairs, bits } => {
                defmt::println!("stream {=usize} {=usize} {=f32} {=u32}", task, pairs, f32::from_bits(bits), bits)
            }
            Line::Attribution { task, pair, bits } => {
                defmt::println!("attribution {=usize} {=usize} {=f32} {=u32}", task, pair, f32::from_bits(bits), bits)
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
                let model = Model::parse(word()?).ok_or(ParseError)?;
                Line::Weights { model, sha256: word()? }
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
            "attribution" => {
                let (task, pair) = (num(word()?)?, num(word()?)?);
                let _decimal = word()?;
                Line::Attribution { task, pair, bits: num(word()?)? }
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
