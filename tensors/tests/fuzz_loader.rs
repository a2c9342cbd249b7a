//! The loader under hostile bytes: byte-level mutations of a valid file (flips, overwrites, truncation, appended
//! bytes, a forged header length) and forged headers (any dtype, shape and offsets, overlapping or outside the data)
//! never panic or hang; every file the loader accepts is one a command can use (F32, finite, sizes matching shapes)
//! and writes back to the same tensors. `DUALFORM_FUZZ_CASES` overrides the cases per property (default 1000).

use dualform_tensors::{Tensor, TensorFile};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

const CASES: u32 = 1000;

fn runner(seed: u8) -> TestRunner {
    let cases = std::env::var("DUALFORM_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(CASES);
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &[seed; 32]))
}

fn meta() -> BTreeMap<String, String> {
    [("format", "dualform-lsa-v1"), ("d", "2"), ("n", "2")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn tensors() -> Vec<Tensor> {
    vec![
        Tensor::new("w_q", vec![3, 3], (0..9).map(|i| i as f32 * 0.25 - 1.0).collect()),
        Tensor::new("p", vec![3], vec![0.5, -0.0, f32::MIN_POSITIVE]),
        Tensor::new("ctx", vec![2, 2, 3], (0..12).map(|i| (i as f32).sin()).collect()),
    ]
}

fn valid_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("valid.safetensors");
    TensorFile::write(&p, &tensors(), &meta()).unwrap();
    std::fs::read(&p).unwrap()
}

/// What every accepted file satisfies; and it writes back to the same tensors and metadata.
fn check_accepted(f: &TensorFile) -> Result<(), TestCaseError> {
    for t in f.tensors.values() {
        let elements = t.shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
        prop_assert_eq!(elements, Some(t.data.len()), "{}", t.name);
        prop_assert!(t.data.iter().all(|v| v.is_finite()), "{}", t.name);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("again.safetensors");
    let all: Vec<Tensor> = f.tensors.values().cloned().collect();
    TensorFile::write(&p, &all, &f.meta).unwrap();
    let again = TensorFile::parse(&p, &std::fs::read(&p).unwrap()).unwrap();
    prop_assert_eq!(&again.tensors, &f.tensors);
    prop_assert_eq!(&again.meta, &f.meta);
    Ok(())
}

/// Parses `bytes`: an accepted file satisfies [`check_accepted`]; a refused one has a one-line error naming it.
fn parse(bytes: &[u8], accepted: &AtomicUsize) -> Result<(), TestCaseError> {
    let path = Path::new("fuzzed.safetensors");
    match TensorFile::parse(path, bytes) {
        Ok(f) => {
            accepted.fetch_add(1, Ordering::Relaxed);
            check_accepted(&f)
        }
        Err(e) => {
            let text = e.to_string();
            prop_assert!(text.starts_with("fuzzed.safetensors: "), "{}", text);
            prop_assert_eq!(text.lines().count(), 1, "{}", text);
            Ok(())
        }
    }
}

/// One byte-level change to a valid file.
#[derive(Clone, Debug)]
enum Mutation {
    /// Flip one bit at a position (taken modulo the length).
    Flip(usize, u8),
    /// Overwrite a byte.
    Set(usize, u8),
    /// Keep only the first bytes.
    Truncate(usize),
    /// Append bytes.
    Append(Vec<u8>),
    /// Replace the 8-byte header length.
    HeaderLength(u64),
    /// Overwrite four bytes (at a position taken modulo the length) with an f32: NaN, infinities or any bit pattern.
    Float(usize, f32),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 0u8..8).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Set(p, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::Append),
        prop_oneof![any::<u64>(), 0u64..400].prop_map(Mutation::HeaderLength),
        (any::<usize>(), prop_oneof![Just(f32::NAN), Just(f32::INFINITY), any::<u32>().prop_map(f32::from_bits)])
            .prop_map(|(p, v)| Mutation::Float(p, v)),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let len = bytes.len().max(1);
    match m {
        Mutation::Flip(p, b) => {
            if let Some(x) = bytes.get_mut(p % len) {
                *x ^= 1 << b;
            }
        }
        Mutation::Set(p, b) => {
            if let Some(x) = bytes.get_mut(p % len) {
                *x = *b;
            }
        }
        Mutation::Truncate(n) => bytes.truncate(n % len),
        Mutation::Append(extra) => bytes.extend_from_slice(extra),
        Mutation::Float(p, v) => {
            let at = p % len;
            if let Some(x) = bytes.get_mut(at..at + 4) {
                x.copy_from_slice(&v.to_le_bytes());
            }
        }
        Mutation::HeaderLength(h) => {
            if let Some(head) = bytes.get_mut(..8) {
                head.copy_from_slice(&h.to_le_bytes());
            }
        }
    }
}

#[test]
fn mutated_files_are_refused_or_usable_never_a_panic() {
    let valid = valid_bytes();
    let accepted = AtomicUsize::new(0);
    runner(11)
        .run(&prop::collection::vec(mutation(), 1..6), |mutations| {
            let mut bytes = valid.clone();
            for m in &mutations {
                apply(&mut bytes, m);
            }
            parse(&bytes, &accepted)
        })
        .unwrap();
    // Both branches are exercised: some mutations leave a usable file (a changed value, appended nothing).
    eprintln!("mutated files accepted: {}", accepted.load(Ordering::Relaxed));
    assert!(accepted.load(Ordering::Relaxed) > 0);
}

/// A header entry written by hand: any dtype name, shape and offsets.
#[derive(Clone, Debug)]
struct Entry {
    dtype: &'static str,
    shape: Vec<usize>,
    offsets: [usize; 2],
}

fn entry() -> impl Strategy<Value = Entry> {
    let dtype = prop::sample::select(vec!["F32", "F32", "F32", "F64", "F16", "BF16", "I8", "U8", "I64", "BOOL", "x"]);
    let dim = prop_oneof![8 => 0usize..5, 1 => Just(1usize << 31), 1 => Just(usize::MAX)];
    let offset = prop_oneof![0usize..120, Just(usize::MAX)];
    (dtype, prop::collection::vec(dim, 0..4), offset.clone(), offset).prop_map(|(dtype, shape, a, b)| Entry {
        dtype,
        shape,
        offsets: [a, b],
    })
}

/// Bytes per element of a dtype name (4 for names safetensors does not know).
fn width(dtype: &str) -> usize {
    match dtype {
        "F64" | "I64" => 8,
        "F16" | "BF16" => 2,
        "I8" | "U8" | "BOOL" => 1,
        _ => 4,
    }
}

#[test]
fn forged_headers_are_refused_or_usable_never_a_panic() {
    let names = ["w_q", "w_k", "p", "y"];
    // Half the cases lay the tensors out back to back (offsets from the shapes, data of the right length), so that
    // dtypes, shapes and values are what gets tested; the other half keep the drawn offsets and data.
    let case = (
        prop::collection::vec(entry(), 0..4),
        prop::collection::vec(any::<u32>().prop_map(f32::from_bits), 0..40),
        any::<bool>(),
        any::<bool>(),
    );
    let accepted = AtomicUsize::new(0);
    runner(12)
        .run(&case, |(mut entries, values, with_meta, contiguous)| {
            let mut data: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            if contiguous {
                let mut at = 0usize;
                for e in entries.iter_mut() {
                    let bytes = e.shape.iter().try_fold(width(e.dtype), |a, &b| a.checked_mul(b)).unwrap_or(0);
                    e.offsets = [at, at.saturating_add(bytes)];
                    at = at.saturating_add(bytes);
                }
                data.resize(at.min(4096), 0x3f);
            }
            let mut fields: Vec<String> = entries
                .iter()
                .zip(names.iter())
                .map(|(e, n)| {
                    format!(
                        "\"{n}\":{{\"dtype\":\"{}\",\"shape\":{:?},\"data_offsets\":{:?}}}",
                        e.dtype, e.shape, e.offsets
                    )
                })
                .collect();
            if with_meta {
                fields.push(r#""__metadata__":{"dualform":"{\"format\":\"x\"}"}"#.to_string());
            }
            let header = format!("{{{}}}", fields.join(","));
            let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
            bytes.extend_from_slice(header.as_bytes());
            bytes.extend_from_slice(&data);
            parse(&bytes, &accepted)
        })
        .unwrap();
    eprintln!("forged headers accepted: {}", accepted.load(Ordering::Relaxed));
    assert!(accepted.load(Ordering::Relaxed) > 0);
}

/// The offsets cases named one by one: two tensors sharing bytes, a gap between them, and offsets past the data.
#[test]
fn overlapping_gapped_and_outside_offsets_are_refused() {
    let file = |a: [usize; 2], b: [usize; 2], data: usize| {
        let header = format!(
            "{{\"a\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{a:?}}},\
             \"b\":{{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":{b:?}}},\
             \"__metadata__\":{{\"dualform\":\"{{}}\"}}}}"
        );
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend(std::iter::repeat_n(0u8, data));
        TensorFile::parse(Path::new("offsets.safetensors"), &bytes)
    };
    assert!(file([0, 8], [8, 16], 16).is_ok(), "the well-formed layout is accepted");
    for (a, b, data, what) in [
        ([0, 8], [4, 12], 12, "overlapping"),
        ([0, 8], [0, 8], 8, "identical"),
        ([0, 8], [12, 20], 20, "a gap"),
        ([0, 8], [8, 16], 12, "past the data"),
        ([8, 0], [8, 16], 16, "reversed"),
    ] {
        let e = file(a, b, data).expect_err(what).to_string();
        assert!(e.starts_with("offsets.safetensors: not a valid safetensors file"), "{what}: {e}");
    }
}
