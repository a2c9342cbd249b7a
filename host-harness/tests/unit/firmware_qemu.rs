//! Unit tests of `firmware::qemu` (`src/firmware/qemu.rs`).

use dualform_harness::firmware::qemu::parse_json_frames;

#[test]
fn json_frames_become_lines_and_anything_else_is_an_error() {
    let out = concat!(
        "{\"schema_version\":1}\n",
        "{\"data\":\"ok 1\",\"level\":null,\"target_timestamp\":\"\"}\n",
        "{\"data\":\"bad\",\"level\":\"ERROR\",\"target_timestamp\":\"\"}\n",
    );
    assert_eq!(parse_json_frames(out).unwrap(), ["ok 1", "ERROR bad"]);
    assert!(parse_json_frames("(HOST) malformed frame skipped\n").is_err());
    assert!(parse_json_frames("{\"level\":null}\n").is_err());
}
