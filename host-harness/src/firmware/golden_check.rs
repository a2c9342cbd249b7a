//! The golden run checked against the host bit for bit: parse what the device printed (the `dualform-protocol`
//! lines), recompute every value with the core on the host, and compare the f32 bits.
//!
//! The host mirrors the device's computation operation for operation: the full layer's query output is
//! `AssociativeState::add` over the context in order and then `update` (what `lsa_associative` does for the query),
//! the merged prediction is `MergedHead::predict_scalar`, the merged full layer `MergedHead::layer_forward`, and a
//! streaming prediction after `k` pairs (the window never evicts in the golden run) is the same sums over the first
//! `k` pairs. The stack of K layers and the looped layer are the harness's own models (`Lsa`, read from the same
//! files) predicting through the forward that training runs (`Net::predict`: `MergedHead::layer_forward` per
//! application); the device runs `MergedHead::run_schedule` on heads merged at build time. The trained layer's
//! attribution on the first task is `MergedHead::attribution` on both sides.

use super::cargo::build;
use super::qemu::{decode, run_qemu};
use super::Board;
use crate::firmware::golden::Golden;
use crate::model::{Lsa, Model as _};
use crate::net::Forward;
use crate::HarnessError;
use dualform::attention::{context_state, query_forward};
use dualform::{Head, Layer, MergedHead};
use dualform_protocol::{Kernel, Kind, Line, Model};
use std::collections::BTreeMap;
use std::path::Path;

/// Every number the golden run reports, as raw f32 bits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoldenResults {
    /// `(task, kind)` -> prediction bits.
    pub preds: BTreeMap<(usize, Kind), u32>,
    /// `(task, pairs seen)` -> streaming prediction bits.
    pub stream: BTreeMap<(usize, usize), u32>,
    /// Model -> mean loss bits.
    pub losses: BTreeMap<Model, u32>,
    /// `(task, pair)` -> bits of the trained single layer's attribution term (`MergedHead::attribution`).
    pub attribution: BTreeMap<(usize, usize), u32>,
}

/// What the device printed.
#[derive(Clone, Debug, Default)]
pub struct DeviceRun {
    /// The results.
    pub results: GoldenResults,
    /// SHA-256 of each model's weight file, as it embeds it.
    pub weights: WeightHashes,
    /// Peak stack in bytes.
    pub stack: Option<usize>,
    /// Its summary line: tasks, mean loss bits of the trained layer and of GD, start of the trained weights' hash.
    pub summary: Option<(usize, u32, u32, String)>,
    /// Whether it printed `done`.
    pub done: bool,
    /// All decoded lines.
    pub lines: Vec<String>,
}

/// Parses the golden run's decoded lines ([`Line::parse`]); an error-level line or a malformed record is an error.
pub fn parse(lines: Vec<String>) -> Result<DeviceRun, HarnessError> {
    let mut run = DeviceRun::default();
    for line in &lines {
        if line.starts_with("ERROR") {
            return Err(HarnessError::Io(format!("the firmware reported: {line}")));
        }
        let record =
            Line::parse(line).map_err(|_| HarnessError::Io(format!("unexpected firmware output line: {line}")))?;
        match record {
            Some(Line::Pred { task, kind, bits }) => {
                run.results.preds.insert((task, kind), bits);
            }
            Some(Line::Stream { task, pairs, bits }) => {
                run.results.stream.insert((task, pairs), bits);
            }
            Some(Line::Loss { model, bits }) => {
                run.results.losses.insert(model, bits);
            }
            Some(Line::Attribution { task, pair, bits }) => {
                run.results.attribution.insert((task, pair), bits);
            }
            Some(Line::Weights { model, sha256 }) => {
                run.weights.insert(model, sha256.to_string());
            }
            Some(Line::Summary { tasks, trained, gd, weights }) => {
                run.summary = Some((tasks, trained, gd, weights.to_string()))
            }
            Some(Line::Stack { bytes }) => run.stack = Some(bytes),
            Some(Line::Done) => run.done = true,
            _ => {}
        }
    }
    run.lines = lines;
    Ok(run)
}

/// A model of the golden run as the host reads it: the model, and for a single layer its head at width E.
#[derive(Clone, Debug)]
pub struct GoldenModel<const E: usize> {
    /// Which model of the list.
    pub model: Model,
    /// Its layers, schedule and update rule.
    pub lsa: Lsa,
    /// A single layer's head (see [`Model::single`]).
    pub head: Option<Head<f32, E, E, E>>,
}

/// SHA-256 of each model's weight file.
pub type WeightHashes = BTreeMap<Model, String>;

/// The golden results computed on the host with the core (see the module docs): every model of `models` with each
/// of its kernels, and the streaming learner over the GD construction.
///
/// Golden tasks of another width than E give no values (and the comparison with the device then fails).
pub fn host_results<const E: usize>(golden: &Golden, models: &[GoldenModel<E>]) -> GoldenResults {
    let mut r = GoldenResults::default();
    let full = |m: &Layer<f32, E, E, E, 1>, ctx: &[[f32; E]], q: &[f32; E]| {
        -query_forward(m, &context_state(m, ctx), q)[E - 1]
    };
    let gd = models.iter().find(|m| m.model == Model::Gd).and_then(|m| m.head.clone()).map(Layer::from);
    let mut sums = vec![0.0f32; models.len()];
    let tasks = golden.tasks().filter_map(|(c, q, y)| Some((c.as_chunks::<E>().0, <&[f32; E]>::try_from(q).ok()?, y)));
    for (task, (ctx, q, y)) in tasks.enumerate() {
        for (m, sum) in models.iter().zip(sums.iter_mut()) {
            let mut first = None;
            for &kernel in m.model.kernels() {
                let p = match (kernel, &m.head) {
                    (Kernel::Full, Some(head)) => Some(full(&Layer::from(head.clone()), ctx, q)),
                    (Kernel::Merged, Some(head)) => Some(MergedHead::from_head(head).predict_scalar(ctx, q)),
                    (Kernel::Layer, Some(head)) => {
                        let (mut c, mut h, mut cache) = (ctx.to_vec(), *q, dualform::LayerCache::zeros());
                        // The residual rule is valid, so the forward cannot fail.
                        let upd = dualform::Update::residual();
                        MergedHead::from_head(head)
                            .layer_forward(&upd, &mut c, &mut h, &mut cache)
                            .ok()
                            .map(|()| -h[E - 1])
                    }
                    (Kernel::Scheduled, _) => {
                        let net = m.lsa.net();
                        Some(net.predict(ctx.as_flattened(), q, &mut net.workspace(ctx.len()), None))
                    }
                    _ => None,
                };
                if let Some(p) = p {
                    r.preds.insert((task, Kind { model: m.model, kernel }), p.to_bits());
                    first.get_or_insert(p);
                }
            }
            let p = first.unwrap_or(f32::NAN);
            *sum += 0.5 * (p - y) * (p - y);
        }
        if task == 0 {
            if let Some(head) = models.iter().find(|m| m.model == Model::Trained).and_then(|m| m.head.as_ref()) {
                let mut terms = vec![0.0f32; ctx.len()];
                if MergedHead::from_head(head).attribution(ctx, q, &mut terms).is_ok() {
                    r.attribution.extend(terms.iter().enumerate().map(|(j, t)| ((task, j), t.to_bits())));
                }
            }
        }
        if let Some(gd) = &gd {
            for k in 1..=ctx.len() {
                r.stream.insert((task, k), full(gd, &ctx[..k], q).to_bits());
            }
        }
    }
    let n = golden.y.len() as f32;
    for (m, sum) in models.iter().zip(sums) {
        r.losses.insert(m.model, (sum / n).to_bits());
    }
    r
}

/// `Ok(values compared)` if device and host agree on every value; otherwise the first difference with both bit
/// patterns.
pub fn compare_bits(device: &GoldenResults, host: &GoldenResults) -> Result<usize, String> {
    let mut checked = same_bits(&device.preds, &host.preds, |k| format!("task {} {}", k.0, k.1))?;
    checked += same_bits(&device.stream, &host.stream, |k| format!("task {} streaming after {} pairs", k.0, k.1))?;
    checked += same_bits(&device.losses, &host.losses, |k| format!("mean loss {}", k.as_str()))?;
    checked +=
        same_bits(&device.attribution, &host.attribution, |k| format!("task {} attribution of pair {}", k.0, k.1))?;
    if device.preds.len() != host.preds.len()
        || device.stream.len() != host.stream.len()
        || device.attribution.len() != host.attribution.len()
    {
        return Err("the device reported a different number of values than the host computed".into());
    }
    Ok(checked)
}

/// How many of `host`'s values `device` has with the same bits, or the first that differs or is missing (named by
/// `what`).
fn same_bits<K: Ord>(
    device: &BTreeMap<K, u32>,
    host: &BTreeMap<K, u32>,
    what: impl Fn(&K) -> String,
) -> Result<usize, String> {
    let show = |b: u32| format!("{:#010x} ({})", b, f32::from_bits(b));
    for (key, h) in host {
        match device.get(key) {
            Some(d) if d == h => {}
            Some(d) => return Err(format!("{}: device {} vs host {}", what(key), show(*d), show(*h))),
            None => return Err(format!("{}: missing from the device output", what(key))),
        }
    }
    Ok(host.len())
}

/// Builds the golden firmware in `dir` for `board`, runs it under QEMU and parses what it printed; an exit code
/// other than 0 or a missing `done` is an error. Returns the run and the ELF.
pub fn run_golden(
    dir: &Path,
    board: &Board,
    env: &[(&str, &str)],
) -> Result<(DeviceRun, std::path::PathBuf), HarnessError> {
    let elf = build(dir, board, "dualform-firmware", env)?;
    let (bytes, code) = run_qemu(board, &elf, 120, &[])?;
    let device = parse(decode(&elf, &bytes)?)?;
    if code != 0 || !device.done {
        return Err(HarnessError::Io(format!(
            "the firmware on {} exited with code {code} (done: {})",
            board.name, device.done
        )));
    }
    Ok((device, elf))
}

/// The golden results the host computes from the files in `data` (`golden.safetensors` and every model's file of
/// [`Model::ALL`]), and the SHA-256 of the weight files.
pub fn host_golden<const E: usize>(data: &Path) -> Result<(GoldenResults, WeightHashes), HarnessError> {
    let golden = Golden::load(&data.join("golden.safetensors"), Some(E))?;
    let mut models = Vec::new();
    let mut hashes = WeightHashes::new();
    for model in Model::ALL {
        let name = model.source().0;
        let f = dualform_tensors::TensorFile::read(&data.join(name))?;
        let lsa = Lsa::from_file(&f, Some(E))?;
        let head = match (model.single(), lsa.layers()) {
            (false, _) => None,
            (true, [head]) => {
                Some(head.to_fixed::<E>().ok_or_else(|| HarnessError::BadInput(format!("{name}: not of width {E}")))?)
            }
            (true, layers) => {
                return Err(HarnessError::BadInput(format!(
                    "{name}: {} layers, the golden run takes one",
                    layers.len()
                )))
            }
        };
        hashes.insert(model, f.sha256.clone());
        models.push(GoldenModel { model, lsa, head });
    }
    Ok((host_results(&golden, &models), hashes))
}

/// The outcome of [`check_golden`].
#[derive(Clone, Debug)]
pub struct GoldenCheck {
    /// What the device printed.
    pub device: DeviceRun,
    /// Values compared (all equal).
    pub values: usize,
    /// The golden firmware's ELF.
    pub elf: std::path::PathBuf,
}

/// Builds and runs the golden firmware in `dir` for `board` with the weight and golden files in `data`, and
/// compares every value with the host's; `env` is passed to the firmware build (for example a different
/// `DUALFORM_WEIGHTS`).
pub fn check_golden<const E: usize>(
    dir: &Path,
    board: &Board,
    data: &Path,
    env: &[(&str, &str)],
) -> Result<GoldenCheck, HarnessError> {
    let (device, elf) = run_golden(dir, board, env)?;
    let (host, want) = host_golden::<E>(data)?;
    let found = &device.weights;
    if *found != want {
        return Err(HarnessError::Io(format!(
            "the firmware embeds other weights than the host uses: device sha256 {found:?}, host {want:?}"
        )));
    }
    let values = compare_bits(&device.results, &host)
        .map_err(|e| HarnessError::Io(format!("bit mismatch on {} ({}): {e}", board.name, board.core)))?;
    // The summary a person reads says the same as the records the host checked.
    let tasks = host.preds.keys().map(|k| k.0 + 1).max().unwrap_or(0);
    let loss = |m: Model| device.results.losses.get(&m).copied();
    match &device.summary {
        Some((t, tr, g, w))
            if *t == tasks
                && Some(*tr) == loss(Model::Trained)
                && Some(*g) == loss(Model::Gd)
                && !w.is_empty()
                && want.get(&Model::Trained).is_some_and(|h| h.starts_with(w.as_str())) => {}
        other => {
            return Err(HarnessError::Io(format!(
                "the firmware's summary line does not match its records: {other:?} ({tasks} tasks, weights {:?})",
                want.get(&Model::Trained)
            )))
        }
    }
    Ok(GoldenCheck { device, values, elf })
}
