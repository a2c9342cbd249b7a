//! `dualform firmware-report`: the golden check and the measurements for each code-generation variant, as a table
//! and `OUT/firmware/report.json`.

use super::cargo::build;
use super::golden_check::check_golden;
use super::measure::{elf_sizes, measure};
use crate::HarnessError;
use std::path::Path;

/// A firmware code-generation variant measured by [`report`].
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
