//! The firmware example under QEMU against the host: every golden prediction, streaming prediction, attribution term
//! and loss must be the same f32 bits on every emulated core (Cortex-M0, M3, M4F, M7, M33, M55, and the RISC-V SiFive
//! E31) as on the host, and the fault paths must report their cause on each; a build with a changed weight must fail the check. The
//! tests build the firmware (release, fat LTO) and need `qemu-system-arm`, `qemu-system-riscv32` and the Rust targets
//! (../test.sh installs them).

use dualform::Update;
use dualform_harness::firmware::cargo::cargo_in;
use dualform_harness::firmware::golden_check::{check_golden, compare_bits, host_golden, run_golden};
use dualform_harness::firmware::{default_board, Board, StackGuard, DEVICE_E as E};
use dualform_harness::model::{save, Lsa};
use dualform_tests::firmware_dir;

/// Token width of the committed golden data (d = 10).

#[test]
fn firmware_predictions_are_bit_identical_to_the_host() {
    let dir = firmware_dir();
    let check = check_golden::<E>(&dir, default_board(), &dir.join("data"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let r = &check.device.results;
    assert_eq!(r.preds.len(), 16 * 8, "eight predictions per golden task");
    assert_eq!(r.stream.len(), 16 * 10, "a streaming prediction after each of 10 pairs");
    assert_eq!(r.attribution.len(), 10, "the trained layer's attribution on the first task, one term per pair");
    assert_eq!(check.values, 16 * 8 + 16 * 10 + 10 + 4);
    // The committed deep models: 5 distinct layers, one layer looped 4 times.
    let stack = r.preds.iter().filter(|((_, k), _)| k.model == dualform_protocol::Model::Stack).count();
    assert_eq!(stack, 16);
    eprintln!("firmware: {} values bit-identical to the host; peak stack {:?} bytes", check.values, check.device.stack);
}

#[test]
fn a_changed_weight_fails_the_check() {
    let dir = firmware_dir();
    let data = dir.join("data");
    let tmp = std::env::temp_dir().join(format!("dualform-changed-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    // One entry of W_V changed by 1e-4 relative: far below any tolerance a float comparison would use, visible in
    // the bits. (A change of one ulp in this weight is absorbed by rounding and reaches no output.)
    let file = dualform_tensors::TensorFile::read(&data.join("trained.safetensors")).unwrap();
    let model = Lsa::from_file(&file, Some(E)).unwrap();
    let mut head = model.layers()[0].clone();
    head.mats_mut()[2][3 * E + E - 1] *= 1.0 + 1e-4;
    let changed = tmp.join("trained.safetensors");
    save(&Lsa::single(head).unwrap(), &[("model", "changed".into())], &changed).unwrap();
    let env = [("DUALFORM_WEIGHTS", changed.to_str().unwrap())];
    // The hash check names the weights...
    let err = check_golden::<E>(&dir, default_board(), &data, &env).unwrap_err().to_string();
    assert!(err.contains("other weights"), "{err}");
    // ...and the bit comparison alone also catches the change.
    let (device, _) = run_golden(&dir, default_board(), &env).unwrap();
    let (host, _) = host_golden::<E>(&data).unwrap();
    let mismatch = compare_bits(&device.results, &host).unwrap_err();
    assert!(mismatch.contains("trained") && mismatch.contains("device 0x"), "{mismatch}");
    eprintln!("changed weight detected: {mismatch}");
    // Leave the default build in place for whoever runs next.
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// Golden tasks follow the run they belong to: a layer trained with `--input-range 2` is exported with golden tasks
/// of input range 2 (recorded in the golden file), and the device's mean losses on those tasks are the host's bits.
/// The deep models are ones nobody committed: a stack of 3 layers with token clipping and a layer looped 3 times with
/// damping that updates only y, written here; the device runs them through the build-time helper bit for bit.
#[test]
fn golden_tasks_follow_the_run_distribution() {
    let dir = firmware_dir();
    let tmp = std::env::temp_dir().join(format!("dualform-golden-range-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let (results, data) = (tmp.join("results"), tmp.join("data"));
    std::fs::create_dir_all(&data).unwrap();
    let args: Vec<String> = ["--out", results.to_str().unwrap(), "--quick", "--seeds", "1", "--input-range", "2"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    dualform_harness::experiments::reproduce("single-layer", &args, |_| {}).unwrap();
    let run = results.join("single-layer");
    // A size that contradicts the run is refused; leaving it out takes the run's.
    let err = dualform_harness::firmware::golden::export(&run, &data, Some(12), None, 8, 42).unwrap_err().to_string();
    assert!(err.contains("--d 12") && err.contains("d = 10"), "{err}");
    let task = dualform_harness::firmware::golden::export(&run, &data, None, None, 8, 42).unwrap();
    assert_eq!(task.input_range, 2.0);
    let golden = dualform_tensors::TensorFile::read(&data.join("golden.safetensors")).unwrap();
    assert_eq!(golden.meta["input_range"], "2");
    assert!(golden.meta["task"].contains("\"input_range\":2.0"), "{}", golden.meta["task"]);
    // The inputs really come from (-1, 1): some coordinate is beyond the default range's 0.5.
    let x_max = golden.tensors["query"].data.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
    assert!(x_max > 0.5, "largest query input {x_max}");

    let mut rng = dualform_harness::tasks::stream_rng(7, 0);
    let clipped = Update { scale: 1.0, first: 0, clip: Some(2.0) };
    let stack = Lsa::init(&mut rng, E, 3, vec![0, 1, 2], clipped).unwrap();
    let looped = Lsa::init(&mut rng, E, 1, vec![0; 3], Update { scale: 0.5, first: E - 1, clip: None }).unwrap();
    save(&stack, &[("model", "untrained stack".into())], &data.join("stack.safetensors")).unwrap();
    save(&looped, &[("model", "untrained looped".into())], &data.join("looped.safetensors")).unwrap();

    let path = |f: &str| data.join(f).to_str().unwrap().to_string();
    let (w, g, t) = (path("trained.safetensors"), path("gd.safetensors"), path("golden.safetensors"));
    let (s, l) = (path("stack.safetensors"), path("looped.safetensors"));
    let env = [
        ("DUALFORM_WEIGHTS", w.as_str()),
        ("DUALFORM_GD_WEIGHTS", g.as_str()),
        ("DUALFORM_GOLDEN", t.as_str()),
        ("DUALFORM_STACK", s.as_str()),
        ("DUALFORM_LOOPED", l.as_str()),
    ];
    let check = check_golden::<E>(&dir, default_board(), &data, &env).unwrap_or_else(|e| panic!("{e}"));
    let (host, _) = host_golden::<E>(&data).unwrap();
    assert_eq!(check.device.results.losses, host.losses, "mean losses, bit for bit");
    let summary = check.device.lines.iter().find(|l| l.starts_with("summary:")).unwrap();
    assert!(summary.starts_with("summary: 8 golden tasks, mean loss trained"), "{summary}");
    eprintln!("{summary}");
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// `cargo run --release` in the firmware crate (what its README suggests) runs it under QEMU through the crate's
/// runner, prints decoded lines a person can read, and exits with the firmware's exit code; a firmware that cannot
/// run gives a non-zero code.
#[test]
fn cargo_run_prints_decoded_lines_and_the_firmware_exit_code() {
    let dir = std::path::absolute(firmware_dir()).unwrap();
    let mut cmd = cargo_in(&dir);
    cmd.args(["run", "--release", "--bin", "dualform-firmware"]).env("CARGO_TARGET_DIR", dir.join("target"));
    // Other tests build in the same folder: none may replace the ELF between this build and its run.
    let turn = dualform_harness::firmware::cargo::lock(&dir.join("target")).unwrap();
    let out = cmd.output().unwrap();
    drop(turn);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("dualform firmware: E 11 N 10 tasks 16"), "{stdout}");
    assert!(lines.iter().any(|l| l.starts_with("summary: 16 golden tasks, mean loss trained")), "{stdout}");
    assert_eq!(lines.last().copied(), Some("done"));
    assert!(lines.iter().all(|l| l.is_ascii() && !l.contains('\u{fffd}')), "decoded text only");

    let bad = std::process::Command::new(dir.join("qemu-run")).arg(dir.join("Cargo.toml")).output().unwrap();
    assert_ne!(bad.status.code(), Some(0), "a file QEMU cannot run must not exit 0");
}

/// The fault paths on `board`: an index out of range panics with its location (exit 101), and a stack overflow
/// (flip-link's layout plus the board's guard) is a hard fault reported as a stack overflow (exit 102), not corrupted
/// memory or a hang. Where the guard is the ARMv8-M stack limit, the fault comes before the stack pointer leaves RAM
/// (it stops at the limit); elsewhere (the MPU region, or the Cortex-M0's unmapped memory) it has gone below.
fn faults_report_their_cause(board: &Board) {
    use dualform_harness::firmware::{cargo, qemu};
    let dir = firmware_dir();
    for (bin, code, first, last) in [
        ("fault-index", 101, "indexing out of range", "ERROR panic at src/bin/fault-index.rs:16"),
        ("fault-stack", 102, "overflowing the stack", "ERROR hard fault: stack overflow (stack pointer 0x"),
    ] {
        let elf = cargo::build(&dir, board, bin, &[]).unwrap_or_else(|e| panic!("{e}"));
        let (bytes, exit) = qemu::run_qemu(board, &elf, 60, &[]).unwrap_or_else(|e| panic!("{bin}: {e}"));
        let lines = qemu::decode(&elf, &bytes).unwrap();
        let at = board.name;
        assert_eq!(exit, code, "{at} {bin}: {lines:?}");
        assert_eq!(lines.first().map(String::as_str), Some(first), "{at} {bin}: {lines:?}");
        let fault = lines.last().filter(|l| l.starts_with(last)).unwrap_or_else(|| panic!("{at} {bin}: {lines:?}"));
        assert_eq!(lines.len(), 2, "{at} {bin}: nothing runs after the fault: {lines:?}");
        if bin == "fault-stack" {
            let hex = fault[last.len()..].split(|c: char| !c.is_ascii_hexdigit()).next().unwrap();
            let sp = u32::from_str_radix(hex, 16).unwrap();
            let origin = board.ram.0;
            match board.guard {
                StackGuard::Msplim => assert!((origin..origin + 256).contains(&sp), "{at}: {fault}"),
                StackGuard::Mpu | StackGuard::None => assert!(sp < origin, "{at}: {fault}"),
            }
        }
    }
}

#[test]
fn a_panic_and_a_stack_overflow_report_their_cause_and_exit_non_zero() {
    faults_report_their_cause(default_board());
}

/// Every other emulated core (`dualform_protocol::BOARDS`) gives the host's bits on every golden value, with its
/// own code generation (soft float on the M0, the M3 and the RISC-V E31, double-precision FPUs on the M7 and M55,
/// Helium vector instructions on the M55), and reports its faults.
#[test]
fn every_core_matches_the_host_bit_for_bit_and_reports_its_faults() {
    let dir = firmware_dir();
    let others: Vec<&Board> = Board::emulated().filter(|b| *b != default_board()).collect();
    assert!(others.len() >= 6, "M0, M3, M7, M33, M55 and a RISC-V core besides the M4F");
    // Two boards at a time (each builds in its own target folder; a fat-LTO link uses one core).
    let next = std::sync::Mutex::new(others.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| loop {
                let Some(board) = next.lock().unwrap().next() else { break };
                let name = board.name;
                let check =
                    check_golden::<E>(&dir, board, &dir.join("data"), &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(check.values, 16 * 8 + 16 * 10 + 10 + 4, "{name}");
                eprintln!("{name} ({}): {} values bit-identical to the host", board.core, check.values);
                faults_report_their_cause(board);
            });
        }
    });
}

/// The firmware's build script reads weights through the shared loader: a broken or non-finite weight file, or one
/// of another width E, stops `cargo build` with an error naming the file, and nothing is embedded.
#[test]
fn a_bad_weight_file_stops_the_firmware_build_naming_it() {
    let tmp = tempfile_dir("bad-weights");
    let meta: std::collections::BTreeMap<String, String> =
        [("format".to_string(), "dualform-lsa-v1".to_string())].into_iter().collect();
    let lsa = |e: usize, bad: f32| -> Vec<dualform_tensors::Tensor> {
        ["w_q", "w_k", "w_v", "p"]
            .iter()
            .map(|n| {
                let mut v = vec![0.25f32; e * e];
                if *n == "w_v" {
                    v[3] = bad;
                }
                dualform_tensors::Tensor::new(*n, vec![e, e], v)
            })
            .collect()
    };
    let random = tmp.join("random.safetensors");
    std::fs::write(&random, (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect::<Vec<_>>())
        .unwrap();
    let nan = tmp.join("nan.safetensors");
    dualform_tensors::TensorFile::write(&nan, &lsa(E, f32::NAN), &meta).unwrap();
    let narrow = tmp.join("narrow.safetensors");
    dualform_tensors::TensorFile::write(&narrow, &lsa(4, 0.5), &meta).unwrap();
    for (file, mentions) in
        [(&random, "not a valid safetensors file"), (&nan, "w_v: value 3 is NaN"), (&narrow, "E = 4")]
    {
        let (ok, err) = build_default_firmware_with("DUALFORM_WEIGHTS", file.as_os_str());
        assert!(!ok, "{}: the build must fail", file.display());
        let line = err.lines().find(|l| l.trim_start().starts_with("error: /")).unwrap_or_else(|| panic!("{err}"));
        assert!(line.contains(file.to_str().unwrap()) && line.contains(mentions), "{mentions}: {line}");
    }
    std::fs::remove_dir_all(&tmp).unwrap();
}

/// The board comes from `DUALFORM_BOARD`: a name not in the list, or a board of another target than the build's,
/// stops the build with one line saying what to do.
#[test]
fn an_unknown_board_or_the_wrong_target_stops_the_firmware_build() {
    for (board, says) in [
        ("mps2-an999", "DUALFORM_BOARD=mps2-an999 is not a board of the list (microbit, mps2-an385"),
        ("microbit", "board microbit (Cortex-M0) builds for --target thumbv6m-none-eabi, not thumbv7em-none-eabihf"),
    ] {
        let (ok, err) = build_default_firmware_with("DUALFORM_BOARD", board.as_ref());
        assert!(!ok, "{board}: the build must fail");
        assert!(err.lines().any(|l| l.trim_start().starts_with(&format!("error: {says}"))), "{board}: {err}");
    }
}

/// `cargo build --release` of the golden firmware in its default target folder, in turn with the other builds there,
/// with one more variable set: whether it succeeded, and its standard error.
fn build_default_firmware_with(var: &str, value: &std::ffi::OsStr) -> (bool, String) {
    let dir = std::path::absolute(firmware_dir()).unwrap();
    let mut cmd = cargo_in(&dir);
    cmd.args(["build", "--release", "--bin", "dualform-firmware"]);
    cmd.env("CARGO_TARGET_DIR", dir.join("target")).env(var, value);
    let turn = dualform_harness::firmware::cargo::lock(&dir.join("target")).unwrap();
    let out = cmd.output().unwrap();
    drop(turn);
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let tmp = std::env::temp_dir().join(format!("dualform-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    tmp
}

/// The files of the README's "Use it in your firmware" section: each code block that follows a line "`PATH`:".
fn readme_firmware_files() -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(dualform_tests::workspace().join("README.md")).unwrap();
    let start = readme.find("## Use it in your firmware").expect("the README has the section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let mut files = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line.strip_prefix('`').and_then(|l| l.strip_suffix("`:")) else { continue };
        assert_eq!(lines.next(), Some(""), "{path}: a blank line, then the code block");
        assert!(lines.next().is_some_and(|l| l.starts_with("```")), "{path}: a code block");
        let body: Vec<&str> = lines.by_ref().take_while(|l| !l.starts_with("```")).collect();
        files.push((path.to_string(), body.join("\n") + "\n"));
    }
    files
}

/// The README's firmware section, copied into a fresh crate (with `dualform` at this checkout and the firmware's
/// lockfile, so no version moves), builds for the Cortex-M4F and runs under QEMU through its own runner: it prints
/// the streaming learner's prediction, whose bits are the host's, and exits 0.
#[test]
fn the_readme_firmware_section_runs_under_qemu() {
    let files = readme_firmware_files();
    let names: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["Cargo.toml", ".cargo/config.toml", "memory.x", "src/main.rs"]);
    let krate = tempfile_dir("readme-learner");
    let core = dualform_tests::workspace().join("core");
    for (path, body) in &files {
        let body = body.replace("path = \"../dualform/core\"", &format!("path = {:?}", core.to_str().unwrap()));
        let p = krate.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, body).unwrap();
    }
    std::fs::copy(firmware_dir().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let mut cmd = cargo_in(&krate);
    // Its own target folder under the firmware's, kept between runs.
    let target = std::path::absolute(firmware_dir()).unwrap().join("target").join("readme-learner");
    cmd.args(["run", "--release"]).env("CARGO_TARGET_DIR", target);
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    // The same learner on the host.
    use dualform::nalgebra::SMatrix;
    let pairs: [([f32; 2], f32); 8] = [
        ([0.5, 0.1], 0.9),
        ([-0.3, 0.4], -1.0),
        ([0.2, -0.6], 1.0),
        ([0.7, 0.7], 0.7),
        ([-0.5, -0.2], -0.8),
        ([0.1, 0.9], -0.7),
        ([-0.8, 0.3], -1.9),
        ([0.4, -0.4], 1.2),
    ];
    let layer = dualform::gd_layer::<f32, 2, 1, 3>(&SMatrix::zeros(), 3.0, 8).unwrap();
    let mut learner = dualform::LsaStream::<f32, 3, 8>::new(&layer, 64);
    for (x, y) in &pairs {
        learner.push_scalar(x, *y).unwrap();
    }
    let bits = learner.predict_scalar(&[0.5, 0.25]).to_bits();
    let line = stdout.lines().find(|l| l.starts_with("prediction ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.ends_with(&format!("(bits {bits:#x})")), "device: {line}; host bits {bits:#x}");
    std::fs::remove_dir_all(&krate).unwrap();
}

/// `dualform firmware-report` on the Cortex-M55: a row per core with every golden value bit-identical, sizes and
/// exact instruction counts, and the comparison row without Helium: the vector instructions are there with Helium
/// and gone without it, the bits are the same either way, and Helium takes fewer instructions per MAC.
#[test]
fn the_firmware_report_has_a_row_per_core_and_shows_what_helium_does() {
    let dir = firmware_dir();
    let out = tempfile_dir("firmware-report");
    let board = Board::named("mps3-an547").unwrap();
    let text = dualform_harness::firmware::report::firmware_report(&dir, &out, &[board], |_| {}).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("firmware/report.json")).unwrap()).unwrap();
    let rows = json["cores"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{text}");
    for row in rows {
        assert_eq!(row["values"], 302, "{row}");
        assert_eq!(row["identical"], row["values"], "{row}");
        assert!(row["flash"].as_u64().unwrap() > 10_000 && row["stack"].as_u64().unwrap() > 1_000, "{row}");
        assert!(row["prediction_instructions"].as_u64().unwrap() > 462, "at least one per MAC: {row}");
        assert!(row["layer_est_cycles"].is_null(), "no cost model for the M55: {row}");
    }
    let (helium, plain) = (&rows[0], &rows[1]);
    assert_eq!(plain["board"], "mps3-an547 -mve");
    assert!(helium["layer_vector_instructions"].as_u64().unwrap() > 100, "{helium}");
    assert_eq!(plain["layer_vector_instructions"], 0, "{plain}");
    let per_mac = |r: &serde_json::Value| r["layer_instructions_per_mac"].as_f64().unwrap();
    assert!(per_mac(helium) < per_mac(plain), "{text}");
    assert!(json["variants"].as_array().unwrap().is_empty(), "the M4F variants only with the M4F");
    std::fs::remove_dir_all(&out).unwrap();
}
