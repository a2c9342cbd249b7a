//! Unit tests of `output::plot` (`src/output/plot.rs`).

use dualform_harness::output::plot::*;

#[test]
fn a_two_panel_chart_is_a_png_of_the_expected_size() {
    if register_font().is_err() {
        eprintln!("no font on this machine; the CLI test covers the missing-font note");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("c.png");
    let a = Panel::new("loss", "step", "loss").with(Series::line("a", vec![(0.0, 1.0), (1.0, 0.5)]));
    let b = Panel::new("log", "x", "y")
        .log_y()
        .with(Series::dashed("b", vec![(0.0, 1.0), (1.0, 0.01), (2.0, f64::NAN)]).with_markers());
    draw(&p, &[a, b]).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[1..4], b"PNG");
    // Width and height from the IHDR chunk.
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    assert_eq!((w, h), (1000, 460));
    assert_eq!(
        (tick(0.30000000000000004), tick(100.0), tick(2.5), tick(1e-5)),
        ("0.3".into(), "100".into(), "2.5".into(), "1.0e-5".into())
    );
}
