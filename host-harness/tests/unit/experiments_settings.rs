//! Unit tests of `experiments::settings` (`src/experiments/settings.rs`).

use dualform_harness::experiments::settings::in_range;
use dualform_harness::HarnessError;

/// Both ends are inside; one past either end is a usage error in the one message shape, naming the flag.
#[test]
fn range_checks_take_both_ends_and_name_the_flag_past_them() {
    assert!(in_range("--seeds", 1usize, 1..=16).is_ok());
    assert!(in_range("--seeds", 16usize, 1..=16).is_ok());
    for (value, got) in [(0usize, "0"), (17, "17")] {
        match in_range("--seeds", value, 1..=16) {
            Err(HarnessError::Usage(m)) => assert_eq!(m, format!("--seeds must be between 1 and 16 (got {got})")),
            other => panic!("{value}: {other:?}"),
        }
    }
    let nan = in_range("--noise", f64::NAN, 0.0..=1000.0);
    assert!(
        matches!(&nan, Err(HarnessError::Usage(m)) if m == "--noise must be between 0 and 1000 (got NaN)"),
        "{nan:?}"
    );
}

#[test]
fn list_checks_need_one_value_and_every_value_in_range() {
    use dualform_harness::experiments::settings::all_in_range;
    assert!(all_in_range("--layers", "depths", &[2usize, 8], 2..=8).is_ok());
    for (bad, shown) in [(vec![], "[]"), (vec![2usize, 9], "[2, 9]"), (vec![1], "[1]")] {
        match all_in_range("--layers", "depths", &bad, 2..=8) {
            Err(HarnessError::Usage(m)) => {
                assert_eq!(m, format!("--layers must list depths from 2 to 8 (got {shown})"))
            }
            other => panic!("{bad:?}: {other:?}"),
        }
    }
}
