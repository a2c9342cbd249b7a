//! Exact executed-instruction counts of the `measure` binary under QEMU (`-singlestep -d exec,nochain,in_asm`,
//! between two marker functions, less the markers' own), on any emulated board; on the Cortex-M4F, an instruction
//! mix weighted by the Cortex-M4 TRM cycle tables for an estimate of cycles (the only core with a cost model here);
//! and ELF sizes.

use super::qemu::{decode, run_qemu};
use super::Board;
use crate::HarnessError;
use dualform_protocol::{Line, Workload};
use std::collections::BTreeMap;
use std::path::Path;

/// One measured workload of the `measure` binary.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Measurement {
    /// Workload number (0 is the empty calibration run).
    pub id: u32,
    /// Workload name.
    pub name: String,
    /// Executed instructions between the markers, less the empty run's.
    pub instructions: u64,
    /// Estimated cycles of those instructions by the core's published cycle tables ([`CostModel`]), less the empty
    /// run's; `None` on a core without one.
    pub est_cycles: Option<u64>,
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
///
/// An instruction on a vector (`q`) register is classed `mve` (Helium, Cortex-M55; never on the M4), its cycles
/// taken as 1: only its count is reported.
pub fn cycles(mnemonic: &str, operands: &str, prev_was_ldst: bool, taken: bool) -> (&'static str, u64) {
    let vector = |w: &str| w.strip_prefix('q').is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if operands.split([',', ' ', '[', ']', '{', '}']).any(vector) {
        return ("mve", 1);
    }
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

/// A core's published cycle table, applied instruction by instruction to the executed stream (zero wait states; an
/// estimate: bus contention, folding and the pipeline's finer effects are not modelled).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CostModel {
    /// Cortex-M0 Technical Reference Manual (Arm DDI 0432C), table 3-1: most instructions 1; loads and stores 2
    /// (they do not pipeline); `ldm`/`stm`/`push`/`pop` 1 + registers, a `pop` into `pc` 4 + the others; a taken
    /// conditional branch and `b` 3, `bl` 4, `bx`/`blx` 3, an untaken branch 1; `muls` 1 (the fast-multiplier
    /// configuration; 32 with the small one); `mrs`/`msr`/barriers 4; writing `pc` with `mov`/`add` 3.
    CortexM0,
    /// Cortex-M3 Technical Reference Manual (Arm DDI 0337), table 18-1: as the Cortex-M4's integer table
    /// ([`cycles`]), but the long multiplies (`umull`, `smull`, `umlal`, `smlal`) take 3 to 5 cycles (taken as 4),
    /// where the M4 takes 1.
    CortexM3,
    /// Cortex-M4 Technical Reference Manual tables 3-1 and 7-1 ([`cycles`]).
    CortexM4,
}

impl CostModel {
    /// The model for an LLVM CPU name, where one is published and modelled here (the M7, M33, M55 and the RISC-V
    /// cores have none here: their vendors publish no per-instruction table of this kind, or one this crate does not
    /// model).
    pub fn for_cpu(cpu: &str) -> Option<Self> {
        match cpu {
            "cortex-m0" => Some(CostModel::CortexM0),
            "cortex-m3" => Some(CostModel::CortexM3),
            "cortex-m4" => Some(CostModel::CortexM4),
            _ => None,
        }
    }

    /// The estimated cycles of one executed instruction (arguments as for [`cycles`]).
    pub fn cycles(self, mnemonic: &str, operands: &str, prev_was_ldst: bool, taken: bool) -> u64 {
        let (class, m4) = cycles(mnemonic, operands, prev_was_ldst, taken);
        let m = mnemonic.trim_end_matches(".w").trim_end_matches(".n");
        let m = m.split('.').next().unwrap_or(m);
        match self {
            CostModel::CortexM4 => m4,
            CostModel::CortexM3 if matches!(m, "umull" | "smull" | "umlal" | "smlal") => 4,
            CostModel::CortexM3 => m4,
            CostModel::CortexM0 => match class {
                "load" | "store" => 2,
                // 1 + registers; a pop into pc 4 + the other registers, which the M4's estimate also gives.
                "load_store_multiple" => m4,
                "branch" if m == "bl" => 4,
                "branch" if m == "bx" || m == "blx" || m == "b" => 3,
                "branch" => m4,
                _ if matches!(m, "mrs" | "msr" | "dmb" | "dsb" | "isb") => 4,
                _ if matches!(m, "mov" | "add") && operands.starts_with("pc") => 3,
                _ => 1,
            },
        }
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
/// from its allocated sections (riscv-rt's stack and heap regions left out).
pub fn elf_sizes(elf: &Path) -> Result<(u64, u64), HarnessError> {
    use object::{Object, ObjectSection, SectionKind};
    let bytes = std::fs::read(elf).map_err(|e| HarnessError::Io(format!("reading {}: {e}", elf.display())))?;
    let file = object::File::parse(&*bytes).map_err(|e| HarnessError::Io(format!("ELF: {e}")))?;
    let (mut flash, mut ram) = (0, 0);
    // riscv-rt's `.stack` and `.heap` are regions marked out for the linker's checks, not static data.
    for s in file.sections().filter(|s| !matches!(s.name(), Ok(".stack" | ".heap"))) {
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

/// Runs the `measure` binary under QEMU as `board` with one log line per executed instruction and returns every
/// workload's counts (calibrated by workload 0) and peak stack; cycles are estimated on the Cortex-M4 only.
/// `applications` names the workloads that run a model of merged full layers, with its number of layer applications
/// (for their multiply-add counts).
pub fn measure(board: &Board, elf: &Path, applications: &[(&str, u64)]) -> Result<Vec<Measurement>, HarnessError> {
    let elf_bytes = std::fs::read(elf).map_err(|e| HarnessError::Io(format!("reading {}: {e}", elf.display())))?;
    let begin = symbol_address(&elf_bytes, "dualform_mark_begin")?;
    let end = symbol_address(&elf_bytes, "dualform_mark_end")?;
    let log = std::env::temp_dir().join(format!("dualform-qemu-{}-{}.log", std::process::id(), board.name));
    let log_arg = log.to_string_lossy().into_owned();
    let (bytes, code) = run_qemu(board, elf, 600, &["-singlestep", "-d", "exec,nochain,in_asm", "-D", &log_arg])?;
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
            // The encoding comes first, in hex: Thumb as 16-bit halves, RISC-V as one word of 16 or 32 bits.
            for w in words.by_ref() {
                if (w.len() == 4 || w.len() == 8) && w.chars().all(|c| c.is_ascii_hexdigit()) {
                    size += w.len() as u64 / 2;
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
    let cost = CostModel::for_cpu(board.cpu);
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
            let class = cycles(&mnemonic, &operands, prev_ldst, taken).0;
            let c = cost.map_or(0, |m| m.cycles(&mnemonic, &operands, prev_ldst, taken));
            prev_ldst = matches!(class, "load" | "store" | "fp_load" | "fp_store");
            *n += 1;
            *cyc += c;
            *mix.entry(class.to_string()).or_insert(0) += 1;
        }
    }
    let mut config = (0u64, 0u64);
    let mut meta: Vec<(Workload, usize, usize)> = Vec::new();
    for l in &lines {
        if l.starts_with("ERROR") {
            return Err(HarnessError::Io(format!("the firmware reported: {l}")));
        }
        match Line::parse(l) {
            Ok(Some(Line::Config { e, n })) => config = (e as u64, n as u64),
            Ok(Some(Line::Measure { workload, stack, total })) => meta.push((workload, stack, total)),
            Ok(_) => {}
            Err(_) => return Err(HarnessError::Io(format!("unexpected firmware output line: {l}"))),
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
    let full_layer = 3 * n * e * e + 3 * (n + 1) * e * e;
    // A model of merged full layers (`stack`, `looped`) is credited with the naive full-layer count per application.
    let model = |name: &str| applications.iter().find(|(w, _)| *w == name).map(|(_, k)| k * full_layer);
    // Every workload's count, by an exhaustive match: a new workload does not compile until it has one.
    let macs = |w: Workload| match w {
        Workload::Empty => 0,
        // The full LSA layer; the merged form (it needs N E^2 + 2 E^3 + (N + 1) E^2) is credited with the same
        // naive count.
        Workload::LsaForward | Workload::MergedLayer => full_layer,
        Workload::Merge => 2 * e * e * e,
        // The naive count of a merged prediction (A h, the context sums, B z); `predict_scalar`, measured here,
        // needs only E^2 + 2 N E + N of them, and is credited with the naive count.
        Workload::MergedPredict => 2 * e * e + 2 * n * e,
        // Project the new pair (W_K e, W_V e) and replace the evicted pair's terms in S (its projections are kept).
        Workload::StreamPush => 4 * e * e,
        Workload::StreamPredict => 3 * e * e,
        Workload::Matvec => e * e,
        // N E exponentials and their sum: no multiply-adds (the report gives its cycles per exponential).
        Workload::Exp => 0,
        // A model of merged full layers is credited with the naive full-layer count per application.
        Workload::Stack | Workload::Looped => model(w.as_str()).unwrap_or(0),
    };
    let (base_n, base_c, base_mix) = raw[0].clone();
    Ok(raw
        .into_iter()
        .zip(meta)
        .map(|((n_instr, cyc, mut mix), (workload, stack, stack_total))| {
            for (k, v) in &base_mix {
                if let Some(x) = mix.get_mut(k) {
                    *x = x.saturating_sub(*v);
                }
            }
            mix.retain(|_, v| *v > 0);
            Measurement {
                id: workload.id(),
                macs: macs(workload),
                name: workload.as_str().to_string(),
                instructions: n_instr.saturating_sub(base_n),
                est_cycles: cost.map(|_| cyc.saturating_sub(base_c)),
                mix,
                stack,
                stack_total,
            }
        })
        .collect())
}
