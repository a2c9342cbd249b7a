//! Any bytes as a tensor file: the loader refuses them with a one-line error naming the file, or accepts a file whose
//! tensors are F32, finite and as long as their shapes say.
#![no_main]

use dualform_tensors::TensorFile;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    match TensorFile::parse(Path::new("fuzz.safetensors"), data) {
        Ok(f) => {
            for t in f.tensors.values() {
                let elements = t.shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
                assert_eq!(elements, Some(t.data.len()), "{}", t.name);
                assert!(t.data.iter().all(|v| v.is_finite()), "{}", t.name);
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(text.starts_with("fuzz.safetensors: ") && !text.contains('\n'), "{text}");
        }
    }
});
