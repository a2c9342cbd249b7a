//! `dualform inspect` beyond one layer at its tuned rate: a GD step at another rate is "GD at rate X" (a random
//! layer is not); deep and looped models in the reference layout get the deep verdict their construction implies;
//! haiku parameter names in `.npz` archives written by NumPy read as the same weights in safetensors; softmax layers
//! are judged on behaviour alone; bad files are one-line errors.

use super::{construction, dualform, file, stdout, write_plain};
use dualform_harness::experiments::settings::TaskArgs;
use dualform_harness::fit::references::{shared_rate, FitSpec};
use dualform_harness::model::{save, Softmax};
use safetensors::tensor::{Dtype, TensorView};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// Writes `tensors` and string metadata (as PyTorch's `save_file(..., metadata=...)` does).
fn write_with_meta(path: &Path, tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: &[(&str, &str)]) {
    let bytes: Vec<Vec<u8>> =
        tensors.iter().map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect()).collect();
    let views: HashMap<String, TensorView<'_>> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| (name.to_string(), TensorView::new(Dtype::F32, shape.clone(), b).unwrap()))
        .collect();
    let meta: HashMap<String, String> = meta.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    std::fs::write(path, safetensors::serialize(&views, Some(meta)).unwrap()).unwrap();
}

/// Named tensors: name, shape, row-major values.
type Tensors = Vec<(&'static str, Vec<usize>, Vec<f32>)>;

/// `layers` one-layer tensor sets stacked into `[L, E, E]` tensors.
fn stack(layers: &[Tensors]) -> Tensors {
    (0..4)
        .map(|i| {
            let (name, shape, _) = &layers[0][i];
            let mut s = vec![layers.len()];
            s.extend(shape);
            (*name, s, layers.iter().flat_map(|l| l[i].2.clone()).collect())
        })
        .collect()
}

fn random_layer(salt: usize) -> Tensors {
    let mut r = construction(&[1.0; 10], 10);
    for (m, t) in r.iter_mut().enumerate() {
        for (k, v) in t.2.iter_mut().enumerate() {
            *v = (((k + 31 * m + 7 * salt) * 7919) % 23) as f32 / 40.0 - 0.27;
        }
    }
    r
}

fn inspect(path: &Path, extra: &[&str]) -> String {
    let mut args = vec!["inspect", path.to_str().unwrap(), "--eval-tasks", "3000"];
    args.extend(extra);
    let o = dualform(&args);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

fn verdict(out: &str) -> &str {
    out.lines().find_map(|l| l.strip_prefix("verdict: ")).unwrap_or_else(|| panic!("no verdict in {out}"))
}

#[test]
fn a_gd_step_at_another_rate_is_gd_at_that_rate_and_a_random_layer_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let slow = file(dir.path(), "gd3.safetensors");
    write_plain(&slow, &construction(&[3.0; 10], 10), false);
    let out = inspect(&slow, &[]);
    let v = verdict(&out);
    assert!(v.starts_with("IMPLEMENTS GD AT RATE 3.000; the tuned rate here is 6.1"), "{out}");
    assert!(
        out.contains("at the tuned rates: MATCHES GD'S LOSS") || out.contains("at the tuned rates: DOES NOT MATCH"),
        "{out}"
    );

    // The preconditioned step at 1.5 times its tuned preconditioner, at variance ratio 10.
    let cf = super::closed_form_at_ratio_10();
    let long = file(dir.path(), "pgd15.safetensors");
    let gamma: Vec<f32> = cf.preconditioner.iter().map(|g| 1.5 * *g as f32).collect();
    write_plain(&long, &construction(&gamma, 10), false);
    let out = inspect(&long, &["--variance-ratio", "10"]);
    assert!(verdict(&out).starts_with("IMPLEMENTS PRECONDITIONED GD AT 1.500 TIMES"), "{out}");

    let r = file(dir.path(), "random.safetensors");
    write_plain(&r, &random_layer(0), false);
    let out = inspect(&r, &[]);
    assert!(verdict(&out).starts_with("DOES NOT MATCH"), "{out}");
    assert!(!out.contains("own rate"), "{out}");
}

#[test]
fn deep_and_looped_models_in_the_reference_layout_get_the_deep_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let sampler = TaskArgs::anisotropic(10, 10, 1.0).sampler();
    let spec = FitSpec { sampler: &sampler, eval_seed: 1_000_003, tasks: 3000, iters: 10 };
    let eta = shared_rate(2, spec).unwrap().model.etas()[0];
    let gd = construction(&[eta; 10], 10);

    let two = file(dir.path(), "gd2.safetensors");
    write_plain(&two, &stack(&[gd.clone(), gd.clone()]), false);
    let out = inspect(&two, &["--fit-iters", "10"]);
    assert!(out.contains("2 of 2 distinct layer(s), schedule [0, 1]"), "{out}");
    assert!(verdict(&out).starts_with("MATCHES GD"), "{out}");

    // One layer applied twice: the schedule in the metadata, as `save_file(..., metadata={"schedule": "0,0"})`.
    let looped = file(dir.path(), "looped.safetensors");
    write_with_meta(&looped, &gd, &[("schedule", "0,0")]);
    let out = inspect(&looped, &["--fit-iters", "10"]);
    assert!(out.contains("2 of 1 distinct layer(s), schedule [0, 0]"), "{out}");
    assert!(verdict(&out).starts_with("MATCHES REPEATED GD"), "{out}");

    let random = file(dir.path(), "random2.safetensors");
    write_plain(&random, &stack(&[random_layer(1), random_layer(2)]), false);
    assert!(verdict(&inspect(&random, &["--fit-iters", "10"])).starts_with("MATCHES NO 2-STEP REFERENCE"));
}

/// Everything after the first line (which names the file, its layout and hash).
fn body(out: &str) -> String {
    out.lines().skip(1).collect::<Vec<_>>().join("\n")
}

#[test]
fn haiku_npz_archives_read_as_the_same_weights_in_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let st = file(dir.path(), "gd.safetensors");
    write_plain(&st, &construction(&[6.06; 10], 10), false);
    let npz = inspect(&fixture("haiku-gd.npz"), &[]);
    assert!(npz.contains("haiku / flax names (1 attention module(s)"), "{npz}");
    assert!(verdict(&npz).starts_with("IMPLEMENTS GD:"), "{npz}");
    assert_eq!(body(&npz), body(&inspect(&st, &[])));
    // No matrix of that construction is asymmetric; these are, so a transposition missed or doubled shows.
    let random = file(dir.path(), "random.safetensors");
    write_plain(&random, &random_layer(0), false);
    assert_eq!(body(&inspect(&fixture("haiku-random.npz"), &[])), body(&inspect(&random, &[])));

    let st2 = file(dir.path(), "gd2.safetensors");
    let gd = construction(&[5.0; 10], 10);
    write_plain(&st2, &stack(&[gd.clone(), gd]), false);
    let (a, b) = (inspect(&fixture("haiku-gd2.npz"), &["--fit-iters", "5"]), inspect(&st2, &["--fit-iters", "5"]));
    assert!(a.contains("2 of 2 distinct layer(s)"), "{a}");
    assert_eq!(body(&a), body(&b));
}

#[test]
fn softmax_layers_are_judged_on_behaviour_alone() {
    let dir = tempfile::tempdir().unwrap();
    // This project's format, two layers.
    let mut rng = <rand_xoshiro::Xoshiro256PlusPlus as rand::SeedableRng>::seed_from_u64(7);
    let two = file(dir.path(), "softmax-2.safetensors");
    save(&Softmax::init(&mut rng, 11, 2), &[], &two).unwrap();
    let out = inspect(&two, &["--fit-iters", "5"]);
    assert!(out.contains("2 softmax layer(s)"), "{out}");
    assert!(verdict(&out).ends_with("softmax attention, so this rests on behaviour alone"), "{out}");
    // The reference layout with one head, marked softmax in the metadata.
    let one = file(dir.path(), "softmax-1.safetensors");
    let layer: Vec<_> = random_layer(3).into_iter().map(|(n, _, v)| (n, vec![1, 1, 11, 11], v)).collect();
    write_with_meta(&one, &layer, &[("attention", "softmax")]);
    let out = inspect(&one, &[]);
    assert!(out.contains("softmax attention: judged on behaviour alone"), "{out}");
    assert!(out.contains("reference (W_Q, W_K, W_V, P), softmax attention"), "{out}");
}

#[test]
fn bad_layouts_give_one_line_errors_naming_file_and_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| file(dir.path(), n);
    let gd = construction(&[6.0; 10], 10);
    let bad = |path: &Path, mentions: &[&str]| super::assert_bad(&["inspect", path.to_str().unwrap()], mentions);

    let schedule = p("schedule.safetensors");
    write_with_meta(&schedule, &gd, &[("schedule", "0,1")]);
    bad(&schedule, &["schedule.safetensors", "schedule", "below 1"]);

    let attention = p("attention.safetensors");
    write_with_meta(&attention, &gd, &[("attention", "sigmoid")]);
    bad(&attention, &["attention.safetensors", "attention", "sigmoid"]);

    let heads = p("heads.safetensors");
    let three: Vec<_> = gd.iter().map(|(n, _, v)| (*n, vec![1, 3, 11, 11], v.repeat(3))).collect();
    write_with_meta(&heads, &three, &[("attention", "softmax")]);
    bad(&heads, &["heads.safetensors", "W_Q", "3 heads"]);

    let linear_heads = p("linear_heads.safetensors");
    write_plain(&linear_heads, &three, false);
    bad(&linear_heads, &["linear_heads.safetensors", "W_Q", "[1, 3, 11, 11]"]);

    // Haiku names without the output projection, and with a non-zero bias.
    let names = ["query", "key", "value", "linear"];
    let haiku = |extra: Option<(&str, Vec<f32>)>, skip: usize| {
        let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = gd
            .iter()
            .zip(names)
            .enumerate()
            .filter(|(i, _)| *i != skip)
            .map(|(_, ((_, s, v), k))| (format!("transformer/multi_head_attention/{k}/w"), s.clone(), v.clone()))
            .collect();
        if let Some((n, v)) = extra {
            t.push((n.to_string(), vec![v.len()], v));
        }
        t
    };
    let write_owned = |path: &Path, t: Vec<(String, Vec<usize>, Vec<f32>)>| {
        let borrowed: Vec<(&str, Vec<usize>, Vec<f32>)> =
            t.iter().map(|(n, s, v)| (n.as_str(), s.clone(), v.clone())).collect();
        write_plain(path, &borrowed, false);
    };
    let missing = p("no_linear.safetensors");
    write_owned(&missing, haiku(None, 3));
    bad(&missing, &["no_linear.safetensors", "multi_head_attention/linear/w", "missing"]);
    let bias = p("bias.safetensors");
    write_owned(&bias, haiku(Some(("transformer/multi_head_attention/query/b", vec![0.5; 11])), 9));
    bad(&bias, &["bias.safetensors", "query/b", "bias"]);
    let zero_bias = p("zero_bias.safetensors");
    write_owned(&zero_bias, haiku(Some(("transformer/multi_head_attention/query/b", vec![0.0; 11])), 9));
    assert!(verdict(&inspect(&zero_bias, &[])).starts_with("IMPLEMENTS GD"));

    let nothing = p("nothing.safetensors");
    write_plain(&nothing, &[("weights", vec![2], vec![1.0, 2.0])], false);
    bad(&nothing, &["nothing.safetensors", "W_Q", "missing"]);

    let npz = p("cut.npz");
    let bytes = std::fs::read(fixture("haiku-gd.npz")).unwrap();
    std::fs::write(&npz, &bytes[..bytes.len() / 3]).unwrap();
    bad(&npz, &["cut.npz", ".npz"]);
}
