//! The core as a user's dependency: a shape mismatch in a user's call (`D + DY != E`) is a build error whose
//! "while instantiating" note points at the user's line, not only into `dualform`'s source.

use dualform_tests::workspace;

/// Builds a scratch binary crate whose `main.rs` is `source` (depending on the core by path) and returns cargo's
/// stderr; the build must fail.
fn build_errors(name: &str, source: &str) -> String {
    let dir = std::env::temp_dir().join(format!("dualform-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\ndualform = {{ path = {:?} }}\n",
        workspace().join("core").to_str().unwrap()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap();
    std::fs::write(dir.join("src/main.rs"), source).unwrap();
    std::fs::copy(workspace().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["build", "--quiet"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", workspace().join("target").join("shape-errors"))
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success(), "{name}: the build must fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The location line after the "while instantiating" note of the error that mentions `message`.
fn instantiated_at<'a>(stderr: &'a str, message: &str) -> Option<&'a str> {
    let from = stderr.find(message)?;
    let note = stderr[from..].find("the above error was encountered while instantiating")? + from;
    stderr[note..].lines().nth(1).map(str::trim)
}

#[test]
fn shape_errors_point_at_the_callers_line() {
    let source = r#"use dualform::nalgebra::SMatrix;
use dualform::{gd_layer, LsaStream};

fn main() {
    let layer = gd_layer::<f32, 2, 1, 3>(&SMatrix::zeros(), 1.0, 4).unwrap();
    let mut learner = LsaStream::<f32, 3, 4>::new(&layer, 0);
    let _ = learner.push_scalar(&[1.0, 2.0, 3.0], 1.0);
    let _ = learner.predict_scalar(&[1.0]);
    let _ = gd_layer::<f32, 2, 1, 4>(&SMatrix::zeros(), 1.0, 4);
}
"#;
    let err = build_errors("shape-errors", source);
    assert_eq!(
        instantiated_at(&err, "D + 1 must equal the token width E"),
        Some("--> src/main.rs:7:13"),
        "push_scalar: {err}"
    );
    assert!(err.contains("--> src/main.rs:8:13"), "predict_scalar: {err}");
    assert_eq!(instantiated_at(&err, "the token width E must equal D + DY"), Some("--> src/main.rs:9:13"), "{err}");
}
