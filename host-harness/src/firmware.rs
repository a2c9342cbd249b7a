//! The host side of the firmware example: build it, run it under QEMU (`mps2-an386`, semihosting), decode its
//! defmt stream with `defmt-decoder`, recompute every golden prediction with the core on the host, and compare the
//! f32 results bit for bit.
//!
//! The host mirrors the device's computation operation for operation: the full layer's query output is
//! `AssociativeState::add` over the context in order and then `update` (what `lsa_associative` does for the query),
//! the merged prediction is `MergedHead::predict`, and a streaming prediction after `k` pairs (the window never
//! evicts in the golden run) is the same sums over the first `k` pairs.

use crate::golden::Golden;
use crate::params::{self, Lsa};
use crate::HarnessError;
use dualform::backward::{context_state, query_forward};
use dualform::MergedHead;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target of the firmware.
pub const TARGET: &str = "thumbv7em-none-eabihf";

/// Builds binary `bin` of the firmware crate in `dir` (release); `env` adds variables such as `DUALFORM_WEIGHTS`.
/// The default build goes to `dir/target`; a build with extra variables to its own folder under
/// `dir/target/variants/`, so builds with different weights never overwrite each other. Returns the ELF path.
pub fn build(dir: &Path, bin: &str, env: &[(&str, &str)]) -> Result<PathBuf, HarnessError> {
    // Absolute: cargo runs inside `dir` and would resolve a relative target folder against it.
    let dir = &std::path::absolute(dir).map_err(|e| HarnessError::Io(format!("{}: {e}", dir.display())))?;
    if !dir.join("Cargo.toml").is_file() {
        return Err(HarnessError::Usage(format!("{} is not the firmware crate (no Cargo.toml)", dir.display())));
    }
    let target_dir = if env.is_empty() {
        dir.join("target")
    } else {
        use sha2::Digest;
        let key: String = env.iter().map(|(k, v)| format!("{k}={v};")).collect();
        let hash: String = sha2::Sha256::digest(key.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect();
        dir.join("target").join("variants").join(hash)
    };
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args(["build", "--release", "--bin", bin]).current_dir(dir).env("CARGO_TARGET_DIR", &target_dir);
    // The outer cargo (when this runs inside `cargo test`) must not leak its settings into the firmware build.
    for var in ["RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_ENCODED_RUSTFLAGS", "RUSTC_WORKSPACE_WRAPPER"] {
        cmd.env_remove(var);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().map_err(|e| HarnessError::Io(format!("cannot run cargo: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let reason = err.lines().filter(|l| l.starts_with("error")).collect::<Vec<_>>().join(" | ");
        return Err(HarnessError::Io(format!("building the firmware ({bin}) failed: {reason}")));
    }
    Ok(target_dir.join(TARGET).join("release").join(bin))
}

/// Runs an ELF under QEMU `mps2-an386` with semihosting, killed after `timeout_s` seconds; `extra` adds QEMU
/// arguments (logging). Returns the program's semihosting output and its exit code.
pub fn run_qemu(elf: &Path, timeout_s: u32, extra: &[&str]) -> Result<(Vec<u8>, i32), HarnessError> {
    let qemu = "qemu-system-arm";
    let out = Command::new("timeout")
        .arg(format!("{timeout_s}"))
        .arg(qemu)
        .args(["-machine", "mps2-an386", "-nographic", "-semihosting-config", "enable=on,target=native", "-kernel"])
        .arg(elf)
        .args(extra)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| HarnessError::Io(format!("cannot run timeout/{qemu}: {e}")))?;
    let code = out.status.code().unwrap_or(-1);
    if code == 127 {
        return Err(HarnessError::Io(format!(
            "{qemu} not found: install it (Debian: apt-get install qemu-system-arm)"
        )));
    }
    if code == 124 {
        return Err(HarnessError::Io(format!("{qemu} did not finish within {timeout_s} s")));
    }
    Ok((out.stdout, code))
}

/// Decodes a defmt byte stream with the table of `elf`; error-level frames are prefixed with `ERROR `.
pub fn decode(elf: &Path, bytes: &[u8]) -> Result<Vec<String>, HarnessError> {
    let elf_bytes = std::fs::read(elf).map_err(|e| HarnessError::Io(format!("reading {}: {e}", elf.display())))?;
    let table = defmt_decoder::Table::parse(&elf_bytes)
        .map_err(|e| HarnessError::Io(format!("defmt table of {}: {e}", elf.display())))?
        .ok_or_else(|| HarnessError::Io(format!("{} has no defmt table", elf.display())))?;
    let mut decoder = table.new_stream_decoder();
    decoder.received(bytes);
    let mut lines = Vec::new();
    loop {
        match decoder.decode() {
            Ok(frame) => {
                let error = frame.level() == Some(defmt_parser::Level::Error);
                let text = frame.display_message().to_string();
                lines.push(if error { format!("ERROR {text}") } else { text });
            }
            Err(defmt_decoder::DecodeError::UnexpectedEof) => break,
            Err(defmt_decoder::DecodeError::Malformed) => {
                return Err(HarnessError::Io("malformed defmt frame in the firmware output".into()))
            }
        }
    }
    Ok(lines)
}

/// Every number the golden run reports, as raw f32 bits.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GoldenResults {
    /// `(task, kind)` -> prediction bits; kinds `trained_full`, `gd_full`, `trained_merged`, `gd_merged`.
    pub preds: BTreeMap<(usize, String), u32>,
    /// `(task, pairs seen)` -> streaming prediction bits.
    pub stream: BTreeMap<(usize, usize), u32>,
    /// `trained` / `gd` -> mean loss bits.
    pub losses: BTreeMap<String, u32>,
}

/// What the device printed.
#[derive(Clone, Debug, Default)]
pub struct DeviceRun {
    /// The results.
    pub results: GoldenResults,
    /// SHA-256 of the trained and GD weight files it embeds.
    pub weights_sha256: (String, String),
    /// Peak stack in bytes.
    pub stack: Option<usize>,
    /// Whether it printed `done`.
    pub done: bool,
    /// All decoded lines.
    pub lines: Vec<String>,
}

/// Parses the golden run's lines (see `firmware-example/src/main.rs` for the format).
pub fn parse(lines: Vec<String>) -> Result<DeviceRun, HarnessError> {
    let mut run = DeviceRun::default();
    let bad = |l: &str| HarnessError::Io(format!("unexpected firmware output line: {l}"));
    for line in &lines {
        let w: Vec<&str> = line.split_whitespace().collect();
        let num = |i: usize| w.get(i).and_then(|s| s.parse::<usize>().ok()).ok_or_else(|| bad(line));
        let bits = |i: usize| w.get(i).and_then(|s| s.parse::<u32>().ok()).ok_or_else(|| bad(line));
        match w.first().copied() {
            Some("pred") => {
                let kind = w.get(2).ok_or_else(|| bad(line))?.to_string();
                run.results.preds.insert((num(1)?, kind), bits(4)?);
            }
            Some("stream") => {
                run.results.stream.insert((num(1)?, num(2)?), bits(4)?);
            }
            Some("loss") => {
                run.results.losses.insert(w.get(1).ok_or_else(|| bad(line))?.to_string(), bits(3)?);
            }
            Some("weights") => {
                run.weights_sha256 = (w.get(2).unwrap_or(&"").to_string(), w.get(4).unwrap_or(&"").to_string());
            }
            Some("stack") => run.stack = Some(num(1)?),
            Some("done") => run.done = true,
            Some("ERROR") => return Err(HarnessError::Io(format!("the firmware reported: {line}"))),
            _ => {}
        }
    }
    run.lines = lines;
    Ok(run)
}

/// The golden results computed on the host with the core (see the module docs).
pub fn host_results<const E: usize>(golden: &Golden<E>, trained: &Lsa<E>, gd: &Lsa<E>) -> GoldenResults {
    let mut r = GoldenResults::default();
    let full = |m: &Lsa<E>, ctx: &[[f32; E]], q: &[f32; E]| -query_forward(m, &context_state(m, ctx), q)[E - 1];
    let (mt, mg) = (MergedHead::from_head(&trained.heads[0]), MergedHead::from_head(&gd.heads[0]));
    let (mut lt, mut lg) = (0.0f32, 0.0f32);
    for (task, ((ctx, q), &y)) in golden.ctx.iter().zip(&golden.query).zip(&golden.y).enumerate() {
        let (t, g) = (full(trained, ctx, q), full(gd, ctx, q));
        r.preds.insert((task, "trained_full".into()), t.to_bits());
        r.preds.insert((task, "gd_full".into()), g.to_bits());
        r.preds.insert((task, "trained_merged".into()), mt.predict::<1>(ctx, q)[0].to_bits());
        r.preds.insert((task, "gd_merged".into()), mg.predict::<1>(ctx, q)[0].to_bits());
        lt += 0.5 * (t - y) * (t - y);
        lg += 0.5 * (g - y) * (g - y);
        for k in 1..=ctx.len() {
            r.stream.insert((task, k), full(gd, &ctx[..k], q).to_bits());
        }
    }
    let n = golden.y.len() as f32;
    r.losses.insert("trained".into(), (lt / n).to_bits());
    r.losses.insert("gd".into(), (lg / n).to_bits());
    r
}

/// `Ok` if device and host agree on every value; otherwise the first difference with both bit patterns.
pub fn compare(device: &GoldenResults, host: &GoldenResults) -> Result<usize, String> {
    let show = |b: u32| format!("{:#010x} ({})", b, f32::from_bits(b));
    let mut checked = 0;
    for (key, h) in &host.preds {
        match device.preds.get(key) {
            Some(d) if d == h => checked += 1,
            Some(d) => return Err(format!("task {} {}: device {} vs host {}", key.0, key.1, show(*d), show(*h))),
            None => return Err(format!("task {} {}: missing from the device output", key.0, key.1)),
        }
    }
    for (key, h) in &host.stream {
        match device.stream.get(key) {
            Some(d) if d == h => checked += 1,
            Some(d) => {
                return Err(format!(
                    "task {} streaming after {} pairs: device {} vs host {}",
                    key.0,
                    key.1,
                    show(*d),
                    show(*h)
                ))
            }
            None => {
                return Err(format!("task {} streaming after {} pairs: missing from the device output", key.0, key.1))
            }
        }
    }
    for (key, h) in &host.losses {
        match device.losses.get(key) {
            Some(d) if d == h => checked += 1,
            Some(d) => return Err(format!("mean loss {key}: device {} vs host {}", show(*d), show(*h))),
            None => return Err(format!("mean loss {key}: missing from the device output")),
        }
    }
    if device.preds.len() != host.preds.len() || device.stream.len() != host.stream.len() {
        return Err("the device reported a different number of values than the host computed".into());
    }
    Ok(checked)
}

/// SHA-256 of a file, lower-case hex.
pub fn sha256(path: &Path) -> Result<String, HarnessError> {
    use sha2::Digest;
    let bytes = std::fs::read(path).map_err(|e| HarnessError::Io(format!("reading {}: {e}", path.display())))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// Builds and runs the golden firmware in `dir` under QEMU and parses what it printed; an exit code other than 0 or
/// a missing `done` is an error.
pub fn run_golden(dir: &Path, env: &[(&str, &str)]) -> Result<DeviceRun, HarnessError> {
    let elf = build(dir, "dualform-firmware", env)?;
    let (bytes, code) = run_qemu(&elf, 120, &[])?;
    let device = parse(decode(&elf, &bytes)?)?;
    if code != 0 || !device.done {
        return Err(HarnessError::Io(format!("the firmware exited with code {code} (done: {})", device.done)));
    }
    Ok(device)
}

/// The golden results the host computes from the files in `data`.
pub fn host_golden<const E: usize>(data: &Path) -> Result<GoldenResults, HarnessError> {
    let golden = Golden::<E>::load(&data.join("golden.safetensors"))?;
    let trained = params::load::<E>(&data.join("trained.safetensors"))?;
    let gd = params::load::<E>(&data.join("gd.safetensors"))?;
    Ok(host_results(&golden, &trained, &gd))
}

/// The outcome of [`check_golden`].
#[derive(Clone, Debug)]
pub struct GoldenCheck {
    /// What the device printed.
    pub device: DeviceRun,
    /// Values compared (all equal).
    pub values: usize,
}

/// Builds and runs the golden firmware in `dir` with the weight and golden files in `data`, and compares every
/// value with the host's; `env` is passed to the firmware build (for example a different `DUALFORM_WEIGHTS`).
pub fn check_golden<const E: usize>(
    dir: &Path,
    data: &Path,
    env: &[(&str, &str)],
) -> Result<GoldenCheck, HarnessError> {
    let device = run_golden(dir, env)?;
    let trained_path = data.join("trained.safetensors");
    let gd_path = data.join("gd.safetensors");
    let want = (sha256(&trained_path)?, sha256(&gd_path)?);
    if device.weights_sha256 != want {
        return Err(HarnessError::Io(format!(
            "the firmware embeds other weights than the host uses: device sha256 trained {} gd {}, host {} {}",
            device.weights_sha256.0, device.weights_sha256.1, want.0, want.1
        )));
    }
    let host = host_golden::<E>(data)?;
    let values = compare(&device.results, &host).map_err(|e| HarnessError::Io(format!("bit mismatch: {e}")))?;
    Ok(GoldenCheck { device, values })
}

/// One measured workload of the `measure` binary.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// Workload number (0 is the empty calibration run).
    pub id: u32,
    /// Workload name.
    pub name: String,
    /// Executed instructions between the markers, less the empty run's.
    pub instructions: u64,
    /// Estimated Cortex-M4 cycles of those instructions (see [`cycles`]), less the empty run's.
    pub est_cycles: u64,
    /// Multiply-accumulates the workload performs (from E and N).
    pub macs: u64,
    /// Executed instructions by class.
    pub mix: BTreeMap<String, u64>,
    /// Stack the workload itself used, in bytes (below the depth at which it was called).
    pub stack: usize,
    /// The program's peak stack depth during the workload (including its callers' frames).
    pub stack_total: usize,
}

/// The class and the estimated Cortex-M4 cycles of one executed instruction, from the cycle tables of the
/// Cortex-M4 Technical Reference Manual (3-1, and 7-1 for the FPU): most integer and FPU arithmetic 1;
/// `mla`/`mls` 2; `vmla`/`vmls`/`vfma`/`vfms` (and negated forms) 3; `vdiv`/`vsqrt` 14; `sdiv`/`udiv` 7 (2 to 12);
/// single loads and stores 2, or 1 right after another load or store (they pipeline); `ldrd`/`strd` 3;
/// `ldm`/`stm`/`push`/`pop`/`vldm`/`vstm`/`vpush`/`vpop` 1 + registers; a taken branch 3 (1 + a refill of 1 to 3,
/// taken as 2), an untaken one 1. An estimate: wait states, bus contention and folding are not modelled.
pub fn cycles(mnemonic: &str, operands: &str, prev_was_ldst: bool, taken: bool) -> (&'static str, u64) {
    let m = mnemonic.trim_end_matches(".w").trim_end_matches(".n");
    let m = m.split('.').next().unwrap_or(m);
    let regs = || {
        let inner = operands.split('{').nth(1).and_then(|s| s.split('}').next()).unwrap_or("");
        inner
            .split(',')
            .map(|r| {
                let r = r.trim();
                match r.split_once('-') {
                    Some((a, b)) => {
                        let n = |s: &str| s.trim_start_matches(|c: char| c.is_alphabetic()).parse::<u64>().unwrap_or(0);
                        n(b).saturating_sub(n(a)) + 1
                    }
                    None => u64::from(!r.is_empty()),
                }
            })
            .sum::<u64>()
    };
    let ldst = |base: u64| if prev_was_ldst { 1 } else { base };
    let fp_mac = ["vmla", "vmls", "vfma", "vfms", "vnmla", "vnmls", "vfnma", "vfnms"];
    if fp_mac.contains(&m) {
        ("fp_mac", 3)
    } else if m == "vdiv" || m == "vsqrt" {
        ("fp_div_sqrt", 14)
    } else if m == "vldr" {
        ("fp_load", ldst(2))
    } else if m == "vstr" {
        ("fp_store", ldst(2))
    } else if matches!(m, "vldmia" | "vldmdb" | "vldm" | "vpop") {
        ("fp_load_multiple", 1 + regs())
    } else if matches!(m, "vstmia" | "vstmdb" | "vstm" | "vpush") {
        ("fp_store_multiple", 1 + regs())
    } else if m == "vmul" || m == "vnmul" {
        ("fp_mul", 1)
    } else if m == "vadd" || m == "vsub" {
        ("fp_add", 1)
    } else if m.starts_with('v') {
        ("fp_other", 1)
    } else if matches!(m, "ldrd" | "strd") {
        ("load_store", 3)
    } else if m.starts_with("ldr") {
        ("load", ldst(2))
    } else if m.starts_with("str") {
        ("store", ldst(2))
    } else if m.starts_with("ldm") || m.starts_with("stm") || m == "push" || m == "pop" {
        let extra = if m == "pop" && operands.contains("pc") { 2 } else { 0 };
        ("load_store_multiple", 1 + regs() + extra)
    } else if matches!(m, "mla" | "mls") {
        ("int_mul", 2)
    } else if m.starts_with("mul") || m.ends_with("mull") || m.ends_with("mlal") {
        ("int_mul", 1)
    } else if m == "sdiv" || m == "udiv" {
        ("int_div", 7)
    } else if m.starts_with('b') && !m.starts_with("bic") && !m.starts_with("bfi") && !m.starts_with("bfc")
        || m.starts_with("cbz")
        || m.starts_with("cbnz")
    {
        ("branch", if taken { 3 } else { 1 })
    } else {
        ("int_other", 1)
    }
}

/// Address of a function symbol in an ELF (Thumb bit cleared).
fn symbol_address(elf: &[u8], name: &str) -> Result<u64, HarnessError> {
    use object::{Object, ObjectSymbol};
    let file = object::File::parse(elf).map_err(|e| HarnessError::Io(format!("ELF: {e}")))?;
    file.symbols()
        .find(|s| s.name() == Ok(name))
        .map(|s| s.address() & !1)
        .ok_or_else(|| HarnessError::Io(format!("the ELF has no symbol {name}")))
}

/// Flash (code, read-only data, initialised data) and static RAM (initialised and zeroed data) of an ELF, in bytes,
/// from its allocated sections.
pub fn elf_sizes(elf: &Path) -> Result<(u64, u64), HarnessError> {
    use object::{Object, ObjectSection, SectionKind};
    let bytes = std::fs::read(elf).map_err(|e| HarnessError::Io(format!("reading {}: {e}", elf.display())))?;
    let file = object::File::parse(&*bytes).map_err(|e| HarnessError::Io(format!("ELF: {e}")))?;
    let (mut flash, mut ram) = (0, 0);
    for s in file.sections() {
        match s.kind() {
            SectionKind::Text | SectionKind::ReadOnlyData | SectionKind::ReadOnlyString => flash += s.size(),
            SectionKind::Data => {
                flash += s.size();
                ram += s.size();
            }
            SectionKind::UninitializedData => ram += s.size(),
            _ => {}
        }
    }
    Ok((flash, ram))
}

/// Runs the `measure` binary under QEMU with one log line per executed instruction and returns every workload's
/// counts (calibrated by workload 0) and peak stack.
pub fn measure(elf: &Path) -> Result<Vec<Measurement>, HarnessError> {
    let elf_bytes = std::fs::read(elf).map_err(|e| HarnessError::Io(format!("reading {}: {e}", elf.display())))?;
    let begin = symbol_address(&elf_bytes, "dualform_mark_begin")?;
    let end = symbol_address(&elf_bytes, "dualform_mark_end")?;
    let log = std::env::temp_dir().join(format!("dualform-qemu-{}.log", std::process::id()));
    let log_arg = log.to_string_lossy().into_owned();
    let (bytes, code) = run_qemu(elf, 600, &["-singlestep", "-d", "exec,nochain,in_asm", "-D", &log_arg])?;
    let lines = decode(elf, &bytes)?;
    if code != 0 {
        let _ = std::fs::remove_file(&log);
        return Err(HarnessError::Io(format!("the measure firmware exited with code {code}")));
    }
    let text = std::fs::read_to_string(&log).map_err(|e| HarnessError::Io(format!("reading the QEMU log: {e}")));
    let _ = std::fs::remove_file(&log);
    let text = text?;

    // Address -> (mnemonic, operands, size in bytes), from the in_asm blocks.
    let mut asm: BTreeMap<u64, (String, String, u64)> = BTreeMap::new();
    let mut pcs: Vec<u64> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Trace ") {
            if let Some(pc) = rest.split('/').nth(1).and_then(|s| u64::from_str_radix(s, 16).ok()) {
                pcs.push(pc);
            }
        } else if let Some((addr, rest)) = line.strip_prefix("0x").and_then(|l| l.split_once(":")) {
            let Ok(addr) = u64::from_str_radix(addr, 16) else { continue };
            let mut words = rest.split_whitespace();
            let mut size = 0;
            let mut mnemonic = String::new();
            for w in words.by_ref() {
                if w.len() == 4 && w.chars().all(|c| c.is_ascii_hexdigit()) {
                    size += 2;
                } else {
                    mnemonic = w.to_string();
                    break;
                }
            }
            let operands = words.collect::<Vec<_>>().join(" ");
            asm.insert(addr, (mnemonic, operands, size));
        }
    }

    // Walk the executed PCs: from each entry of the begin marker to the next entry of the end marker.
    let mut raw: Vec<(u64, u64, BTreeMap<String, u64>)> = Vec::new();
    let mut current: Option<(u64, u64, BTreeMap<String, u64>)> = None;
    let mut prev_ldst = false;
    for (i, &pc) in pcs.iter().enumerate() {
        if pc == begin && current.is_none() {
            current = Some((0, 0, BTreeMap::new()));
        } else if pc == end {
            if let Some(c) = current.take() {
                raw.push(c);
            }
        }
        if let Some((n, cyc, mix)) = current.as_mut() {
            let (mnemonic, operands, size) = asm.get(&pc).cloned().unwrap_or_default();
            let next = pcs.get(i + 1).copied().unwrap_or(0);
            let taken = next != pc + size;
            let (class, c) = cycles(&mnemonic, &operands, prev_ldst, taken);
            prev_ldst = matches!(class, "load" | "store" | "fp_load" | "fp_store");
            *n += 1;
            *cyc += c;
            *mix.entry(class.to_string()).or_insert(0) += 1;
        }
    }
    let mut config = (0u64, 0u64);
    let mut meta: Vec<(u32, String, usize, usize)> = Vec::new();
    for l in &lines {
        let w: Vec<&str> = l.split_whitespace().collect();
        match w.as_slice() {
            ["config", e, n] => config = (e.parse().unwrap_or(0), n.parse().unwrap_or(0)),
            ["measure", id, name, "stack", s, "total", t] => {
                meta.push((id.parse().unwrap_or(0), name.to_string(), s.parse().unwrap_or(0), t.parse().unwrap_or(0)))
            }
            [first, ..] if first.starts_with("ERROR") => {
                return Err(HarnessError::Io(format!("the firmware reported: {l}")))
            }
            _ => {}
        }
    }
    if raw.len() != meta.len() || raw.is_empty() {
        return Err(HarnessError::Io(format!(
            "found {} marked regions in the QEMU log but {} workloads in the firmware output",
            raw.len(),
            meta.len()
        )));
    }
    let (e, n) = config;
    let macs = |name: &str| match name {
        "lsa_forward" => 3 * n * e * e + 3 * (n + 1) * e * e,
        "merge" => 2 * e * e * e,
        "merged_predict" => 2 * e * e + 2 * n * e,
        // Project the new pair (W_K e, W_V e) and replace the evicted pair's terms in S (its projections are kept).
        "stream_push" => 4 * e * e,
        "stream_predict" => 3 * e * e,
        "matvec" => e * e,
        _ => 0,
    };
    let (base_n, base_c, base_mix) = raw[0].clone();
    Ok(raw
        .into_iter()
        .zip(meta)
        .map(|((n_instr, cyc, mut mix), (id, name, stack, stack_total))| {
            for (k, v) in &base_mix {
                if let Some(x) = mix.get_mut(k) {
                    *x = x.saturating_sub(*v);
                }
            }
            mix.retain(|_, v| *v > 0);
            Measurement {
                id,
                macs: macs(&name),
                name,
                instructions: n_instr.saturating_sub(base_n),
                est_cycles: cyc.saturating_sub(base_c),
                mix,
                stack,
                stack_total,
            }
        })
        .collect())
}

/// A firmware code-generation variant measured by [`report`].
pub struct Variant {
    /// Short name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Extra build environment (empty: the crate's own `.cargo/config.toml`).
    pub env: &'static [(&'static str, &'static str)],
}

/// The default build (VMLA) and LLVM's Cortex-M4 default (VMUL + VADD).
pub const VARIANTS: [Variant; 2] = [
    Variant { name: "vmla", description: "default: -C target-cpu=cortex-m4 -C target-feature=-slowfpvmlx", env: &[] },
    Variant {
        name: "vmul+vadd",
        description: "-C target-cpu=cortex-m4 (LLVM splits each multiply-add)",
        env: &[("RUSTFLAGS", "-C target-cpu=cortex-m4")],
    },
];

/// `dualform firmware-report`: for each of [`VARIANTS`], checks the golden run bit for bit, measures every workload
/// and reads the ELF sizes; writes `out/firmware/report.json` and returns the printed table.
pub fn report<const E: usize>(dir: &Path, out: &Path) -> Result<String, HarnessError> {
    let staged = crate::output::Staged::new(out, "firmware")?;
    let mut variants = Vec::new();
    let mut t = String::new();
    for v in &VARIANTS {
        let check = check_golden::<E>(dir, &dir.join("data"), v.env)?;
        let measure_elf = build(dir, "measure", v.env)?;
        let golden_elf = build(dir, "dualform-firmware", v.env)?;
        let ms = measure(&measure_elf)?;
        let (flash, ram) = elf_sizes(&measure_elf)?;
        let (golden_flash, golden_ram) = elf_sizes(&golden_elf)?;
        let own_stack = ms.iter().map(|m| m.stack).max().unwrap_or(0);
        let total_stack = ms.iter().map(|m| m.stack_total).max().unwrap_or(0);
        let per_mac =
            |name: &str| ms.iter().find(|m| m.name == name).map(|m| m.instructions as f64 / m.macs.max(1) as f64);
        t.push_str(&format!(
            "{} ({}): {} golden values bit-identical to the host (QEMU mps2-an386, Cortex-M4F)\n",
            v.name, v.description, check.values
        ));
        t.push_str(&format!(
            "  {:<16} {:>9} {:>7} {:>9} {:>12} {:>10}\n",
            "workload", "instr", "MACs", "instr/MAC", "est. cycles", "stack (B)"
        ));
        for m in ms.iter().filter(|m| m.id != 0) {
            let pm = if m.macs > 0 { format!("{:.2}", m.instructions as f64 / m.macs as f64) } else { "-".into() };
            t.push_str(&format!(
                "  {:<16} {:>9} {:>7} {:>9} {:>12} {:>10}\n",
                m.name, m.instructions, m.macs, pm, m.est_cycles, m.stack
            ));
        }
        t.push_str(&format!(
            "  measure binary: flash {flash} B, static RAM {ram} B, peak stack {total_stack} B (workloads alone: up to {own_stack} B), RAM total {} B\n",
            ram as usize + total_stack
        ));
        t.push_str(&format!(
            "  golden binary (16 golden tasks in flash): flash {golden_flash} B, static RAM {golden_ram} B, peak stack {} B\n",
            check.device.stack.unwrap_or(0)
        ));
        variants.push(serde_json::json!({
            "name": v.name, "flags": v.description,
            "golden": {"values_bit_identical": check.values, "peak_stack": check.device.stack,
                       "flash": golden_flash, "static_ram": golden_ram},
            "measure": {"flash": flash, "static_ram": ram, "peak_stack": total_stack,
                        "peak_stack_workloads_alone": own_stack, "ram_total": ram as usize + total_stack,
                        "workloads": ms},
            "instructions_per_mac": {"lsa_forward": per_mac("lsa_forward"), "merged_predict": per_mac("merged_predict"),
                                     "matvec": per_mac("matvec")},
            "weights_sha256": {"trained": check.device.weights_sha256.0, "gd": check.device.weights_sha256.1},
        }));
    }
    let json = serde_json::json!({
        "target": "thumbv7em-none-eabihf (Cortex-M4F), QEMU mps2-an386",
        "variants": variants,
        "note": "instructions are exact counts from QEMU -singlestep -d exec,nochain between marker functions, less \
                 the markers' own; cycles are an estimate from the executed instruction mix and the Cortex-M4 TRM \
                 cycle tables (no wait states, no bus contention); QEMU does not model timing",
    });
    crate::output::write(
        &staged.path().join("report.json"),
        &serde_json::to_string_pretty(&json).map_err(|e| HarnessError::Io(e.to_string()))?,
    )?;
    let dest = staged.commit()?;
    t.push_str(&format!("report: {}\n", dest.join("report.json").display()));
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cycle_table_follows_the_cortex_m4_trm() {
        assert_eq!(cycles("vmla.f32", "s0, s1, s2", false, false), ("fp_mac", 3));
        assert_eq!(cycles("vmul.f32", "s0, s1, s2", false, false), ("fp_mul", 1));
        assert_eq!(cycles("vadd.f32", "s0, s1, s2", false, false), ("fp_add", 1));
        assert_eq!(cycles("vdiv.f32", "s0, s1, s2", false, false), ("fp_div_sqrt", 14));
        // Loads cost 2, or 1 right after another load or store.
        assert_eq!(cycles("vldr", "s0, [r0, #4]", false, false), ("fp_load", 2));
        assert_eq!(cycles("vldr", "s0, [r0, #4]", true, false), ("fp_load", 1));
        assert_eq!(cycles("ldr.w", "r1, [r0]", false, false), ("load", 2));
        // Multiple transfers: 1 + registers (ranges counted), popping pc adds the refill.
        assert_eq!(cycles("push", "{r4, r5, r6, r7, lr}", false, false), ("load_store_multiple", 6));
        assert_eq!(cycles("pop.w", "{r4-r11, pc}", false, false), ("load_store_multiple", 1 + 9 + 2));
        assert_eq!(cycles("vpush", "{d8, d9}", false, false), ("fp_store_multiple", 3));
        // Branches: taken 3, not taken 1; `bic` is not a branch.
        assert_eq!(cycles("bne", "#0x40", false, true), ("branch", 3));
        assert_eq!(cycles("bne", "#0x40", false, false), ("branch", 1));
        assert_eq!(cycles("bic", "r0, r0, #1", false, false), ("int_other", 1));
        assert_eq!(cycles("mla", "r0, r1, r2, r3", false, false), ("int_mul", 2));
    }

    #[test]
    fn device_lines_parse_and_differences_name_the_task_and_bits() {
        let lines = [
            "weights trained aa gd bb",
            "pred 3 trained_full 0.5 1056964608",
            "stream 3 2 0.25 1048576000",
            "loss gd 0.1 1036831949",
            "stack 2048",
            "done",
        ];
        let run = parse(lines.iter().map(|s| s.to_string()).collect()).unwrap();
        assert_eq!(run.weights_sha256, ("aa".to_string(), "bb".to_string()));
        assert_eq!(run.results.preds[&(3, "trained_full".to_string())], 0.5f32.to_bits());
        assert_eq!(run.stack, Some(2048));
        assert!(run.done);
        let mut host = run.results.clone();
        assert_eq!(compare(&run.results, &host), Ok(3));
        host.preds.insert((3, "trained_full".into()), 0.5f32.to_bits() + 1);
        let err = compare(&run.results, &host).unwrap_err();
        assert!(
            err.contains("task 3 trained_full") && err.contains("0x3f000000") && err.contains("0x3f000001"),
            "{err}"
        );
        assert!(parse(vec!["ERROR panic at x.rs:1".into()]).is_err());
        assert!(parse(vec!["pred x trained_full 1 2".into()]).is_err());
    }
}
