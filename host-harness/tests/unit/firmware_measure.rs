//! Unit tests of `firmware::measure` (`src/firmware/measure.rs`).

use dualform_harness::firmware::measure::*;

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
    // Helium (M55): any instruction on a q register is a vector instruction, whatever its mnemonic.
    assert_eq!(cycles("vldrw.u32", "q0, [r1], #16", false, false).0, "mve");
    assert_eq!(cycles("vmul.f32", "q1, q1, q0", false, false).0, "mve");
    assert_eq!(cycles("vmov", "s0, r1", false, false).0, "fp_other");
    assert_eq!(cycles("vldr", "s0, [r0, #4]", false, false).0, "fp_load");
}

/// The Cortex-M0 and M3 tables where they differ from the M4's: on the M0 loads never pipeline, `bl` costs 4 and
/// `bx` 3, a `pop` into pc 4 + the other registers, `muls` 1; on the M3 a long multiply costs 4 (3 to 5) where the M4 takes 1. Cores without
/// a published table get no model.
#[test]
fn the_m0_and_m3_tables_differ_from_the_m4_where_their_manuals_do() {
    let (m0, m3, m4) = (CostModel::CortexM0, CostModel::CortexM3, CostModel::CortexM4);
    assert_eq!(m0.cycles("ldr", "r1, [r0]", true, false), 2);
    assert_eq!(m4.cycles("ldr", "r1, [r0]", true, false), 1);
    assert_eq!(m0.cycles("bl", "#0x100", false, true), 4);
    assert_eq!(m0.cycles("bx", "lr", false, true), 3);
    assert_eq!(m0.cycles("beq", "#0x10", false, false), 1);
    assert_eq!(m0.cycles("pop", "{r4, r5, pc}", false, true), 4 + 2);
    assert_eq!(m4.cycles("pop", "{r4, r5, pc}", false, true), 1 + 3 + 2);
    assert_eq!(m0.cycles("push", "{r4, r5, lr}", false, false), 4);
    assert_eq!(m0.cycles("muls", "r0, r1, r0", false, false), 1);
    assert_eq!(m3.cycles("umull", "r0, r1, r2, r3", false, false), 4);
    assert_eq!(m4.cycles("umull", "r0, r1, r2, r3", false, false), 1);
    assert_eq!(m3.cycles("mla", "r0, r1, r2, r3", false, false), 2);
    assert_eq!(CostModel::for_cpu("cortex-m3"), Some(m3));
    for cpu in ["cortex-m7", "cortex-m33", "cortex-m55", "sifive-e31"] {
        assert_eq!(CostModel::for_cpu(cpu), None, "{cpu}");
    }
}
