//! The firmware example under QEMU against the host: every golden prediction, streaming prediction and loss must be
//! the same f32 bits on the Cortex-M4F (emulated) as on the host; and a build with a changed weight must fail the
//! check. Both tests build the firmware (release, fat LTO) and need `qemu-system-arm` (../test.sh installs both).

use dualform_harness::firmware::golden_check::{check_golden, compare_bits, host_golden, run_golden};
use dualform_harness::model::{save, Lsa};
use dualform_tests::firmware_dir;

/// Token width of the committed golden data (d = 10).
const E: usize = 11;

#[test]
fn firmware_predictions_are_bit_identical_to_the_host() {
    let dir = firmware_dir();
    let check = check_golden::<E>(&dir, &dir.join("data"), &[]).unwrap_or_else(|e| panic!("{e}"));
    let r = &check.device.results;
    assert_eq!(r.preds.len(), 16 * 4, "four predictions per golden task");
    assert_eq!(r.stream.len(), 16 * 10, "a streaming prediction after each of 10 pairs");
    assert_eq!(check.values, 16 * 4 + 16 * 10 + 2);
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
    let model = Lsa::<E>::from_file(&file).unwrap();
    let mut head = model.layers()[0].clone();
    head.w_v[(E - 1, 3)] *= 1.0 + 1e-4;
    let changed = tmp.join("trained.safetensors");
    save(&Lsa::single(head), &[("model", "changed".into())], &changed).unwrap();
    let env = [("DUALFORM_WEIGHTS", changed.to_str().unwrap())];
    // The hash check names the weights...
    let err = check_golden::<E>(&dir, &data, &env).unwrap_err().to_string();
    assert!(err.contains("other weights"), "{err}");
    // ...and the bit comparison alone also catches the change.
    let device = run_golden(&dir, &env).unwrap();
    let (host, _) = host_golden::<E>(&data).unwrap();
    let mismatch = compare_bits(&device.results, &host).unwrap_err();
    assert!(mismatch.contains("trained") && mismatch.contains("device 0x"), "{mismatch}");
    eprintln!("changed weight detected: {mismatch}");
    // Leave the default build in place for whoever runs next.
    std::fs::remove_dir_all(&tmp).unwrap();
}
