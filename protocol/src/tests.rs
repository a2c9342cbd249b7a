//! Every record parses back to what it prints; free text is skipped and malformed records are errors.

use super::*;

fn kind(model: Model, kernel: Kernel) -> Kind {
    Kind { model, kernel }
}

#[test]
fn every_record_parses_from_the_layout_the_device_prints() {
    let cases: [(&str, Line<'_>); 14] = [
        (
            "summary: 16 golden tasks, mean loss trained 0.2078 gd 0.1, weights 0a1b2c3d4e5f",
            Line::Summary { tasks: 16, trained: 0.2078f32.to_bits(), gd: 0.1f32.to_bits(), weights: "0a1b2c3d4e5f" },
        ),
        ("dualform firmware: E 11 N 10 tasks 16", Line::Header { e: 11, n: 10, tasks: 16 }),
        ("weights trained ab12", Line::Weights { model: Model::Trained, sha256: "ab12" }),
        ("weights looped 0789", Line::Weights { model: Model::Looped, sha256: "0789" }),
        (
            "pred 5 looped -0.5 3204448256",
            Line::Pred { task: 5, kind: kind(Model::Looped, Kernel::Scheduled), bits: 3204448256 },
        ),
        (
            "pred 3 trained_full 0.5 1056964608",
            Line::Pred { task: 3, kind: kind(Model::Trained, Kernel::Full), bits: 1056964608 },
        ),
        (
            "pred 0 gd_merged -1.25 3214934016",
            Line::Pred { task: 0, kind: kind(Model::Gd, Kernel::Merged), bits: 3214934016 },
        ),
        ("stream 2 7 0.25 1048576000", Line::Stream { task: 2, pairs: 7, bits: 1048576000 }),
        ("attribution 0 9 -0.25 3196059648", Line::Attribution { task: 0, pair: 9, bits: 3196059648 }),
        ("loss gd 0.1 1036831949", Line::Loss { model: Model::Gd, bits: 1036831949 }),
        ("stack 3080", Line::Stack { bytes: 3080 }),
        ("done", Line::Done),
        ("config 11 10", Line::Config { e: 11, n: 10 }),
        (
            "measure 3 merged_predict stack 256 total 3084",
            Line::Measure { workload: Workload::MergedPredict, stack: 256, total: 3084 },
        ),
    ];
    for (text, want) in cases {
        assert_eq!(Line::parse(text), Ok(Some(want)), "{text}");
    }
    // Every kind's word parses back to it; two single layers' three kernels and two scheduled models.
    let words: Vec<String> = Kind::all().map(|k| k.to_string()).collect();
    assert_eq!(
        words,
        ["trained_full", "trained_merged", "trained_layer", "gd_full", "gd_merged", "gd_layer", "stack", "looped"]
    );
    for k in Kind::all() {
        assert_eq!(Kind::parse(&k.to_string()), Some(k));
    }
    for (i, w) in Workload::ALL.into_iter().enumerate() {
        assert_eq!((w.id(), Workload::parse(i as u32, w.as_str())), (i as u32, Some(w)));
    }
}

#[test]
fn free_text_is_skipped_and_malformed_records_are_errors() {
    assert_eq!(Line::parse(""), Ok(None));
    assert_eq!(Line::parse("hello from the device"), Ok(None));
    assert_eq!(Line::parse("dualform says hi"), Ok(None));
    for bad in [
        "pred x trained_full 1 2",
        "pred 1 no_such_kind 1 2",
        "pred 1 trained_full 1",
        "pred 1 trained_full 1 2 extra",
        "stream 1 2 0.5 -3",
        "attribution 0 1 0.5",
        "loss someone 0.1 5",
        "weights trained",
        "weights someone a",
        "weights gd a b",
        "pred 1 stack_full 1 2",
        "pred 1 trained 1 2",
        "measure 1 lsa_forward stack 2 totl 3",
        "measure 1 merge stack 2 total 3",
        "measure 11 x stack 2 total 3",
        "stack",
        "dualform firmware: E 11 N 10 tasks",
    ] {
        assert_eq!(Line::parse(bad), Err(ParseError), "{bad}");
    }
}

/// The board table is consistent: unique names, both defaults present (the QEMU one emulated, the probe one not),
/// flash and RAM disjoint and non-empty, the stack guard matching the architecture of the target (an MPU region on
/// ARMv7-M, the stack limit register on ARMv8-M, nothing on ARMv6-M and RISC-V), and software floating point exactly
/// on the targets without `hf` (Arm) or the F extension (RISC-V).
#[test]
fn the_board_table_is_consistent() {
    for (i, b) in BOARDS.iter().enumerate() {
        assert!(BOARDS[..i].iter().all(|o| o.name != b.name), "{} twice", b.name);
        let (f, r) = (b.flash, b.ram);
        assert!(f.1 > 0 && r.1 > 0, "{}", b.name);
        assert!(f.0 + f.1 <= r.0 || r.0 + r.1 <= f.0, "{}: flash and RAM overlap", b.name);
        let guard = match b.target.split('-').next() {
            Some("thumbv6m") => StackGuard::None,
            Some("thumbv7m" | "thumbv7em") => StackGuard::Mpu,
            Some("thumbv8m.main") => StackGuard::Msplim,
            Some(isa) if isa.starts_with("riscv32") => StackGuard::None,
            other => panic!("{}: no guard rule for {other:?}", b.name),
        };
        assert_eq!(b.guard, guard, "{}", b.name);
        let isa = b.target.split('-').next().unwrap_or("");
        let float = b.target.ends_with("hf") || isa.strip_prefix("riscv32").is_some_and(|ext| ext.contains('f'));
        assert_eq!(b.fpu == "none", !float, "{}", b.name);
    }
    assert!(Board::named(boards::DEFAULT).is_some_and(|b| b.qemu.is_some()));
    assert!(Board::named(boards::PROBE_DEFAULT).is_some_and(|b| b.qemu.is_none()));
    assert!(Board::named("no-such-board").is_none());
    assert_eq!(Board::emulated().count(), BOARDS.len() - 1);
}
