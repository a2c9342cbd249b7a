//! `dualform firmware-report`: the golden check and the measurements for each code-generation variant, as a table
//! and `OUT/firmware/report.json`.

use super::cargo::build;
use super::golden_check::check_golden;
use super::measure::{elf_sizes, measure};
use super::DEVICE_E;
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

/// `dualform firmware-report`: for each of [`VARIANTS`], checks the golden run bit for bit, measures every workload
/// and reads the ELF sizes; writes `out/firmware/report.json` and returns the printed table.
pub fn firmware_report(dir: &Path, out: &Path) -> Result<String, HarnessError> {
    let staged = crate::output::staged::Staged::new(out, "firmware")?;
    // The deep models the firmware embeds (read as the build-time helper reads them).
    let mut models = Vec::new();
    for model in dualform_protocol::Model::ALL.into_iter().filter(|m| !m.single()) {
        let name = model.as_str();
        let f = dualform_tensors::LsaFile::read(&dir.join("data").join(model.source().0))?;
        models.push((name, f.layers.len(), f.schedule.len(), f.layers.len() * 2 * f.e * f.e * 4));
    }
    let applications: Vec<(&str, u64)> = models.iter().map(|m| (m.0, m.2 as u64)).collect();
    let mut variants = Vec::new();
    let mut t = String::new();
    for v in &VARIANTS {
        let check = check_golden::<DEVICE_E>(dir, &dir.join("data"), v.env)?;
        let measure_elf = build(dir, "measure", v.env)?;
        let golden_elf = build(dir, "dualform-firmware", v.env)?;
        let ms = measure(&measure_elf, &applications)?;
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
            "  {:<16} {:>9} {:>7} {:>9} {:>12} {:>10} {:>10}\n",
            "workload", "instr", "MACs", "instr/MAC", "est. cycles", "cyc/MAC", "stack (B)"
        ));
        let ratio = |x: u64, macs: u64| if macs > 0 { format!("{:.2}", x as f64 / macs as f64) } else { "-".into() };
        for m in ms.iter().filter(|m| m.id != 0) {
            t.push_str(&format!(
                "  {:<16} {:>9} {:>7} {:>9} {:>12} {:>10} {:>10}\n",
                m.name,
                m.instructions,
                m.macs,
                ratio(m.instructions, m.macs),
                m.est_cycles,
                ratio(m.est_cycles, m.macs),
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
        for &(name, layers, apps, flash_bytes) in &models {
            if let Some(m) = ms.iter().find(|m| m.name == name) {
                t.push_str(&format!(
                    "  {:<16} {:>6} {:>12} {:>12} {:>10} {:>12} {:>9} {:>10.2}\n",
                    name,
                    layers,
                    apps,
                    flash_bytes,
                    m.stack,
                    m.est_cycles,
                    ratio(m.est_cycles, m.macs),
                    m.est_cycles as f64 / 1e5
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
    let json = serde_json::json!({
        "target": "thumbv7em-none-eabihf (Cortex-M4F), QEMU mps2-an386",
        "variants": variants,
        "note": "instructions are exact counts from QEMU -singlestep -d exec,nochain between marker functions, less \
                 the markers' own; cycles are an estimate from the executed instruction mix and the Cortex-M4 TRM \
                 cycle tables (no wait states, no bus contention); QEMU does not model timing",
    });
    crate::output::staged::write(
        &staged.path().join("report.json"),
        &serde_json::to_string_pretty(&json).map_err(|e| HarnessError::Io(e.to_string()))?,
    )?;
    let dest = staged.commit()?;
    t.push_str(&format!("report: {}\n", dest.join("report.json").display()));
    Ok(t)
}
