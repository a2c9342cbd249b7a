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
