//! `dualform firmware-report`: per emulated core, the golden check bit for bit and the measurements (one row each);
//! on the Cortex-M4F, each code-generation variant in detail with estimated cycles; as tables and
//! `OUT/firmware/report.json`.

use super::cargo::build;
use super::golden_check::check_golden;
use super::measure::{elf_sizes, measure, Measurement};
use super::{default_board, Board, DEVICE_E};
use crate::HarnessError;
use std::path::Path;

/// A firmware code-generation variant measured by [`firmware_report`].
pub struct Variant {
    /// Short name.
    pub name: &'static str,
    /// What it is.
    pub description: &'static str,
    /// Extra build environment (empty: the crate's own `.cargo/config.toml`).
    pub env: &'static [(&'static str, &'static str)],
}

/// The default build (LLVM's Cortex-M4 tuning: VMUL + VADD, fewer estimated cycles) and the VMLA build (fewer
/// instructions, more estimated cycles).
pub const VARIANTS: [Variant; 2] = [
    Variant {
        name: "vmul+vadd",
        description: "default: -C target-cpu=cortex-m4 (LLVM splits each multiply-add)",
        env: &[],
    },
    Variant {
        name: "vmla",
        description: "-C target-cpu=cortex-m4 -C target-feature=-slowfpvmlx",
        env: &[("RUSTFLAGS", "-C target-cpu=cortex-m4 -C target-feature=-slowfpvmlx")],
    },
];

/// `dualform firmware-report`: for each board of `boards` (emulated ones), builds the golden and measurement
/// firmware, checks the golden run against the host bit for bit, measures every workload and reads the ELF sizes
/// ([`core_row`]); when the default board (the Cortex-M4F) is among them, also each of [`VARIANTS`] on it with
/// estimated cycles. Writes `out/firmware/report.json` and returns the printed tables; `progress` hears of each
/// board as it starts. A board whose bits differ from the host's is an error naming the first difference.
pub fn firmware_report(
    dir: &Path,
    out: &Path,
    boards: &[&Board],
    mut progress: impl FnMut(&str),
) -> Result<String, HarnessError> {
    let staged = crate::output::staged::Staged::new(out, "firmware")?;
    // The deep models the firmware embeds (read as the build-time helper reads them).
    let mut models = Vec::new();
    for model in dualform_protocol::Model::ALL.into_iter().filter(|m| !m.single()) {
        let name = model.as_str();
        let f = dualform_tensors::LsaFile::read(&dir.join("data").join(model.source().0))?;
        models.push((name, f.layers.len(), f.schedule.len(), f.layers.len() * 2 * f.e * f.e * 4));
    }
    let applications: Vec<(&str, u64)> = models.iter().map(|m| (m.0, m.2 as u64)).collect();
    let mut t = String::new();
    let mut cores = Vec::new();
    for board in boards {
        progress(&format!("{} ({}): building, running the golden check and measuring\n", board.name, board.core));
        cores.push(core_row(dir, board, &[], &applications)?);
        // Helium's effect, with everything else equal: the same core without its vector extension.
        if board.cpu == "cortex-m55" {
            progress(&format!("{} ({}) without Helium\n", board.name, board.core));
            let mut row = core_row(dir, board, &NO_HELIUM, &applications)?;
            row.board = format!("{} -mve", board.name);
            row.cpu = NO_HELIUM[0].1.to_string();
            cores.push(row);
        }
    }
    t.push_str(&cores_table(&cores));
    let board = default_board();
    let variants = if boards.contains(&board) { variants(dir, board, &models, &applications, &mut t)? } else { vec![] };
    let json = serde_json::json!({
        "cores": cores,
        "variants_target": format!("{} ({}), QEMU {}", board.target, board.core, board.name),
        "variants": variants,
        "note": "instructions are exact counts from QEMU -singlestep -d exec,nochain between marker functions, less \
                 the markers' own; cycles (Cortex-M4F only) are an estimate from the executed instruction mix and the \
                 Cortex-M4 TRM cycle tables (no wait states, no bus contention); QEMU does not model timing",
    });
    crate::output::staged::write(
        &staged.path().join("report.json"),
        &serde_json::to_string_pretty(&json).map_err(|e| HarnessError::Io(e.to_string()))?,
    )?;
    let dest = staged.commit()?;
    t.push_str(&format!("report: {}\n", dest.join("report.json").display()));
    Ok(t)
}

/// One core's row of the report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CoreRow {
    /// The board (QEMU machine).
    pub board: String,
    /// The core.
    pub core: String,
    /// The Rust target and CPU.
    pub target: String,
    /// LLVM's CPU (or the flags that replaced it).
    pub cpu: String,
    /// Hardware floating point (`none`: software floating point).
    pub fpu: String,
    /// Golden values compared with the host.
    pub values: usize,
    /// Of those, bit-identical (all of them, or the report is an error).
    pub identical: usize,
    /// The golden program's flash, in bytes.
    pub flash: u64,
    /// The golden program's static RAM, in bytes.
    pub static_ram: u64,
    /// The golden program's peak stack, in bytes.
    pub stack: usize,
    /// Executed instructions of one full LSA layer (`lsa_forward`, E = 11, N = 10).
    pub layer_instructions: u64,
    /// Executed instructions of one prediction with the merged query kernel (`merged_predict`).
    pub prediction_instructions: u64,
    /// Instructions per multiply-accumulate of the full layer.
    pub layer_instructions_per_mac: f64,
    /// Of the full layer's instructions, those on vector registers (Helium).
    pub layer_vector_instructions: u64,
    /// Estimated cycles of the full layer (Cortex-M4 TRM tables), where this core has a cost model.
    pub layer_est_cycles: Option<u64>,
    /// Every workload of the measurement program.
    pub workloads: Vec<Measurement>,
}

/// The Cortex-M55 without its M-profile vector extension (Helium): the report's comparison row. (rustc warns that it
/// does not know the LLVM features `mve` and `mve.fp`, and passes them on.)
const NO_HELIUM: [(&str, &str); 1] = [("RUSTFLAGS", "-C target-cpu=cortex-m55 -C target-feature=-mve.fp,-mve")];

/// Builds, checks and measures the firmware on one board (see [`firmware_report`]); `env` is passed to the builds
/// (`RUSTFLAGS` replaces the board's `-C target-cpu`).
pub fn core_row(
    dir: &Path,
    board: &Board,
    env: &[(&str, &str)],
    applications: &[(&str, u64)],
) -> Result<CoreRow, HarnessError> {
    let check = check_golden::<DEVICE_E>(dir, board, &dir.join("data"), env)?;
    let (flash, static_ram) = elf_sizes(&check.elf)?;
    let ms = measure(board, &build(dir, board, "measure", env)?, applications)?;
    let find = |name: &str| {
        ms.iter().find(|m| m.name == name).ok_or_else(|| HarnessError::Io(format!("no {name} workload measured")))
    };
    let (layer, predict) = (find("lsa_forward")?, find("merged_predict")?);
    Ok(CoreRow {
        board: board.name.into(),
        core: board.core.into(),
        target: board.target.into(),
        cpu: board.cpu.into(),
        fpu: board.fpu.into(),
        values: check.values,
        identical: check.values,
        flash,
        static_ram,
        stack: check.device.stack.unwrap_or(0),
        layer_instructions: layer.instructions,
        prediction_instructions: predict.instructions,
        layer_instructions_per_mac: layer.instructions as f64 / layer.macs.max(1) as f64,
        layer_vector_instructions: layer.mix.get("mve").copied().unwrap_or(0),
        layer_est_cycles: layer.est_cycles,
        workloads: ms,
    })
}

/// The per-core table: one row per board.
pub fn cores_table(rows: &[CoreRow]) -> String {
    let mut t = String::from("golden check and measurements per core (E 11, N 10; instructions exact under QEMU):\n");
    t.push_str(&format!(
        "  {:<15} {:<10} {:<28} {:<6} {:>13} {:>8} {:>6} {:>6} {:>11} {:>9} {:>10} {:>7} {:>11}\n",
        "board",
        "core",
        "target",
        "FPU",
        "bit-identical",
        "flash",
        "RAM",
        "stack",
        "instr/layer",
        "instr/MAC",
        "instr/pred",
        "vector",
        "est. cycles"
    ));
    for r in rows {
        t.push_str(&format!(
            "  {:<15} {:<10} {:<28} {:<6} {:>13} {:>8} {:>6} {:>6} {:>11} {:>9.2} {:>10} {:>7} {:>11}\n",
            r.board,
            r.core,
            r.target,
            r.fpu,
            format!("{}/{}", r.identical, r.values),
            r.flash,
            r.static_ram,
            r.stack,
            r.layer_instructions,
            r.layer_instructions_per_mac,
            r.prediction_instructions,
            r.layer_vector_instructions,
            r.layer_est_cycles.map_or("-".to_string(), |c| c.to_string())
        ));
    }
    t
}

/// The Cortex-M4F's code-generation variants in detail (see [`VARIANTS`]), appended to `t`; their JSON.
fn variants(
    dir: &Path,
    board: &Board,
    models: &[(&str, usize, usize, usize)],
    applications: &[(&str, u64)],
    t: &mut String,
) -> Result<Vec<serde_json::Value>, HarnessError> {
    let mut variants = Vec::new();
    for v in &VARIANTS {
        let check = check_golden::<DEVICE_E>(dir, board, &dir.join("data"), v.env)?;
        let measure_elf = build(dir, board, "measure", v.env)?;
        let golden_elf = check.elf.clone();
        let ms = measure(board, &measure_elf, applications)?;
        let (flash, ram) = elf_sizes(&measure_elf)?;
        let (golden_flash, golden_ram) = elf_sizes(&golden_elf)?;
        let own_stack = ms.iter().map(|m| m.stack).max().unwrap_or(0);
        let total_stack = ms.iter().map(|m| m.stack_total).max().unwrap_or(0);
        let per_mac =
            |name: &str| ms.iter().find(|m| m.name == name).map(|m| m.instructions as f64 / m.macs.max(1) as f64);
        t.push_str(&format!(
            "{} ({}): {} golden values bit-identical to the host (QEMU {}, {})\n",
            v.name, v.description, check.values, board.name, board.core
        ));
        t.push_str(&format!(
            "  {:<16} {:>9} {:>7} {:>9} {:>12} {:>10} {:>10}\n",
            "workload", "instr", "MACs", "instr/MAC", "est. cycles", "cyc/MAC", "stack (B)"
        ));
        let ratio = |x: u64, macs: u64| if macs > 0 { format!("{:.2}", x as f64 / macs as f64) } else { "-".into() };
        let cycles = |m: &Measurement| m.est_cycles.unwrap_or(0);
        for m in ms.iter().filter(|m| m.id != 0) {
            t.push_str(&format!(
                "  {:<16} {:>9} {:>7} {:>9} {:>12} {:>10} {:>10}\n",
                m.name,
                m.instructions,
                m.macs,
                ratio(m.instructions, m.macs),
                cycles(m),
                ratio(cycles(m), m.macs),
                m.stack
            ));
        }
        // Per model: what a firmware that embeds it pays in flash (the merged heads), RAM (the workload's stack:
        // the tokens, the layer cache) and time.
        let mut per_model = Vec::new();
        t.push_str(&format!(
            "  {:<16} {:>6} {:>12} {:>12} {:>10} {:>12} {:>9} {:>10}\n",
            "model", "layers", "applications", "flash (B)", "RAM (B)", "est. cycles", "cyc/MAC", "ms @100MHz"
        ));
        for &(name, layers, apps, flash_bytes) in models {
            if let Some(m) = ms.iter().find(|m| m.name == name) {
                t.push_str(&format!(
                    "  {:<16} {:>6} {:>12} {:>12} {:>10} {:>12} {:>9} {:>10.2}\n",
                    name,
                    layers,
                    apps,
                    flash_bytes,
                    m.stack,
                    cycles(m),
                    ratio(cycles(m), m.macs),
                    cycles(m) as f64 / 1e5
                ));
                per_model.push(serde_json::json!({
                    "model": name, "layers": layers, "applications": apps, "flash_merged_heads": flash_bytes,
                    "ram_stack": m.stack, "instructions": m.instructions, "est_cycles": m.est_cycles, "macs": m.macs,
                }));
            }
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
            "models": per_model,
            "weights_sha256": check.device.weights.iter()
                .map(|(m, h)| (m.as_str().to_string(), serde_json::json!(h)))
                .collect::<serde_json::Map<_, _>>(),
        }));
    }
    Ok(variants)
}
