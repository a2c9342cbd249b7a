//! The one-layer verdicts end to end: trained layers (three seeds) get "implements GD" on isotropic tasks and
//! "implements preconditioned GD" at variance ratio 10; `dualform inspect` on weight files in the reference layout
//! (four [E, E] tensors W_Q, W_K, W_V, P and no metadata, as PyTorch's `save_file` writes them) gives constructed
//! models the verdict their construction implies, and bad files one-line errors naming the file and the tensor,
//! with exit code 2. `inspect` on deeper, looped, softmax, rescaled and `.npz` models: [`inspect`].

use dualform_harness::experiments::single_layer::{Results, Settings};
use dualform_harness::judge::verdict::Outcome;
use dualform_harness::output::report::{read, Report};

use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

mod inspect;

fn dualform(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dualform")).args(args).output().expect("the dualform binary runs")
}

/// Writes `tensors` (name, shape, row-major values) as a plain safetensors file without any metadata.
fn write_plain(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)], dtype_f64: bool) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| {
            if dtype_f64 {
                v.iter().flat_map(|x| (*x as f64).to_le_bytes()).collect()
            } else {
                v.iter().flat_map(|x| x.to_le_bytes()).collect()
            }
        })
        .collect();
    let dtype = if dtype_f64 { Dtype::F64 } else { Dtype::F32 };
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| (name.to_string(), TensorView::new(dtype, shape.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(&views, None).unwrap()).unwrap();
}

/// The one-step construction with a per-coordinate rate `gamma` (plain GD when all equal), in the reference
/// layout: `W_Q = diag(gamma, 0)`, `W_K = [[I, 0], [0, 0]]`, `W_V = [[0, 0], [0, -1]]`, `P = I / N`.
fn construction(gamma: &[f32], n: usize) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    let e = gamma.len() + 1;
    let d = gamma.len();
    let mut wq = vec![0.0; e * e];
    let mut wk = vec![0.0; e * e];
    let mut wv = vec![0.0; e * e];
    let mut p = vec![0.0; e * e];
    for i in 0..d {
        wq[i * e + i] = gamma[i];
        wk[i * e + i] = 1.0;
    }
    wv[d * e + d] = -1.0;
    for i in 0..e {
        p[i * e + i] = 1.0 / n as f32;
    }
    vec![("W_Q", vec![e, e], wq), ("W_K", vec![e, e], wk), ("W_V", vec![e, e], wv), ("P", vec![e, e], p)]
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The closed form at variance ratio 10 (d = N = 10): plain GD's best rate and the preconditioner.
fn closed_form_at_ratio_10() -> dualform_harness::tasks::ClosedForm {
    use dualform_harness::experiments::settings::TaskArgs;
    let s = TaskArgs::anisotropic(10, 10, 10.0).sampler();
    dualform_harness::tasks::ClosedForm::of(&s).unwrap()
}

#[test]
fn reference_layout_files_get_the_verdict_of_their_construction() {
    let dir = tempfile::tempdir().unwrap();
    let gd = file(dir.path(), "gd.safetensors");
    write_plain(&gd, &construction(&[6.06; 10], 10), false);
    let o = dualform(&["inspect", gd.to_str().unwrap(), "--eval-tasks", "3000"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let out = stdout(&o);
    assert!(out.contains("reference (W_Q, W_K, W_V, P)"), "{out}");
    assert!(out.contains("verdict: IMPLEMENTS GD"), "{out}");
    assert!(out.contains("optimum of its class"), "isotropic tasks: {out}");

    // A GD step at the best rate for anisotropic tasks: still GD there, now told apart from the preconditioned step.
    let cf = closed_form_at_ratio_10();
    let gd = file(dir.path(), "gd_ratio_10.safetensors");
    write_plain(&gd, &construction(&[cf.eta as f32; 10], 10), false);
    let o = dualform(&["inspect", gd.to_str().unwrap(), "--eval-tasks", "3000", "--variance-ratio", "10"]);
    let out = stdout(&o);
    assert!(out.contains("verdict: IMPLEMENTS GD") && !out.contains("optimum of its class"), "{out}");

    let pgd = file(dir.path(), "pgd.safetensors");
    let gamma: Vec<f32> = cf.preconditioner.iter().map(|g| *g as f32).collect();
    write_plain(&pgd, &construction(&gamma, 10), false);
    let o = dualform(&["inspect", pgd.to_str().unwrap(), "--eval-tasks", "3000", "--variance-ratio", "10"]);
    let out = stdout(&o);
    assert!(out.contains("verdict: IMPLEMENTS PRECONDITIONED GD"), "{out}");
    // Against another file: the two constructions, compared on the same tasks.
    let o = dualform(&[
        "inspect",
        pgd.to_str().unwrap(),
        "--eval-tasks",
        "3000",
        "--variance-ratio",
        "10",
        "--against",
        gd.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("(--against)"), "{}", stdout(&o));

    let mut random = construction(&[1.0; 10], 10);
    for (k, v) in random[0].2.iter_mut().enumerate() {
        *v = ((k * 7919) % 23) as f32 / 11.0 - 1.0;
    }
    let r = file(dir.path(), "random.safetensors");
    write_plain(&r, &random, false);
    let out = stdout(&dualform(&["inspect", r.to_str().unwrap(), "--eval-tasks", "3000"]));
    assert!(out.contains("verdict: DOES NOT MATCH"), "{out}");
}

/// One line, exit 2, naming the file (and the tensor where there is one).
fn assert_bad(args: &[&str], mentions: &[&str]) {
    let o = dualform(args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
    for m in mentions {
        assert!(err.contains(m), "{args:?} should mention {m:?}: {err}");
    }
}

#[test]
fn bad_model_files_give_one_line_errors_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| file(dir.path(), n);
    let good = construction(&[6.0; 10], 10);

    let missing = p("missing_p.safetensors");
    write_plain(&missing, &good[..3], false);
    assert_bad(&["inspect", missing.to_str().unwrap()], &["missing_p.safetensors", "P", "missing"]);

    let shape = p("shape.safetensors");
    let mut s = good.clone();
    s[3] = ("P", vec![11, 10], vec![0.0; 110]);
    write_plain(&shape, &s, false);
    assert_bad(&["inspect", shape.to_str().unwrap()], &["shape.safetensors", "P", "[11, 10]"]);

    let nan = p("nan.safetensors");
    let mut s = good.clone();
    s[1].2[5] = f32::NAN;
    write_plain(&nan, &s, false);
    assert_bad(&["inspect", nan.to_str().unwrap()], &["nan.safetensors", "W_K", "finite"]);

    let f64s = p("f64.safetensors");
    write_plain(&f64s, &good, true);
    assert_bad(&["inspect", f64s.to_str().unwrap()], &["f64.safetensors", "F64", "F32"]);

    let junk = p("junk.safetensors");
    std::fs::write(&junk, b"not a tensor file at all").unwrap();
    assert_bad(&["inspect", junk.to_str().unwrap()], &["junk.safetensors", "safetensors"]);

    let wide = p("d12.safetensors");
    write_plain(&wide, &construction(&[6.0; 12], 12), false);
    assert_bad(&["inspect", wide.to_str().unwrap()], &["d12.safetensors", "--d 12"]);

    let ok = p("ok.safetensors");
    write_plain(&ok, &good, false);
    assert_bad(&["inspect", ok.to_str().unwrap(), "--against", "nowhere.safetensors"], &["--against"]);
    assert_bad(&["inspect", p("absent.safetensors").to_str().unwrap()], &["absent.safetensors"]);
}

/// Trains three layers at d = N = 4 (2000 steps, enough there) on the given distribution and returns the report.
fn trained(experiment: &str, extra: &[&str]) -> Report<Settings, Results> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("r");
    let mut args = vec!["reproduce", experiment, "--out", out.to_str().unwrap(), "--quick", "--d", "4", "--n", "4"];
    args.extend(["--steps", "2000", "--seeds", "3", "--eval-tasks", "4000"]);
    args.extend(extra);
    let o = dualform(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    read(&out.join(experiment).join("report.json")).unwrap()
}

#[test]
fn trained_layers_implement_gd_on_isotropic_tasks_and_preconditioned_gd_at_ratio_10() {
    let iso = trained("single-layer", &[]);
    assert_eq!(iso.results.assessment.ruling.outcome, Outcome::ImplementsGd, "{}", iso.verdict.text);
    let aniso = trained("preconditioned", &[]);
    let a = &aniso.results.assessment;
    assert_eq!(a.ruling.outcome, Outcome::ImplementsPreconditionedGd, "{}", aniso.verdict.text);
    // Plain GD is measurably worse there, and the trained layers are far closer to the preconditioned step.
    let (gd, pgd) = (&a.agreements[0], &a.agreements[1]);
    assert!(a.loss.mean < 0.97 * gd.loss.mean, "{} vs {}", a.loss.mean, gd.loss.mean);
    assert!(pgd.preds_diff.hi() < 0.5 * gd.preds_diff.lo(), "{pgd:?} vs {gd:?}");
    assert_eq!(a.residual_per_seed.len(), 3);
}
