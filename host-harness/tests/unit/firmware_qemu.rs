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

/// `--boards`: names in any order become the emulated boards in the table's order, once each; `all` is every
/// emulated board; an unknown or real-only board is a usage error that names the boards there are.
#[test]
fn board_lists_parse_to_emulated_boards_in_table_order() {
    use dualform_harness::firmware::{emulated_boards, Board};
    let names = |list: &str| emulated_boards(list).unwrap().iter().map(|b| b.name).collect::<Vec<_>>();
    assert_eq!(names("mps3-an547, microbit,microbit"), ["microbit", "mps3-an547"]);
    assert_eq!(names("all"), Board::emulated().map(|b| b.name).collect::<Vec<_>>());
    assert_eq!(names("all").len(), 7);
    for (list, says) in [("mps2-an999", "unknown board mps2-an999"), ("nucleo-f411re", "is not emulated")] {
        let err = emulated_boards(list).unwrap_err().to_string();
        assert!(err.contains(says) && err.contains("microbit, mps2-an385"), "{err}");
    }
}
