//! Unit tests of `model::lsa` (`src/model/lsa.rs`).

use dualform::Update;
use dualform_harness::model::save;
use dualform_harness::model::Model;
use dualform_harness::model::*;
use dualform_harness::tasks::stream_rng;

#[test]
fn lsa_files_round_trip_bit_for_bit_and_keep_the_single_layer_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = stream_rng(3, 0);
    for (layers, schedule, upd) in [
        (1, vec![0], Update::residual()),
        (3, vec![0, 1, 2], Update { scale: 1.0, first: 0, clip: Some(10.0) }),
        (1, vec![0; 4], Update { scale: 0.75, first: 4, clip: None }),
    ] {
        let m = Lsa::init(&mut rng, 5, layers, schedule, upd).unwrap();
        let path = dir.path().join("w.safetensors");
        save(&m, &[("d", "4".into())], &path).unwrap();
        let f = dualform_tensors::TensorFile::read(&path).unwrap();
        let back = Lsa::from_file(&f, None).unwrap();
        assert_eq!(
            back.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            m.params().iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        assert_eq!(back.net(), m.net());
        if layers == 1 {
            // Row-major [E, E]: entry (0, 1) of W_Q is the second value.
            assert_eq!(f.values("w_q", &[5, 5]).unwrap()[1], m.layers()[0].get(0, 0, 1));
        }
    }
}

#[test]
fn init_has_the_reference_scale() {
    let mut rng = stream_rng(4, 0);
    let m = Lsa::init(&mut rng, 11, 1, vec![0], Update::residual()).unwrap();
    let all = m.params();
    let std = (all.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / all.len() as f64).sqrt();
    // Truncation at 2 sigma shrinks the corrected std back to about sqrt(0.002 / 11) = 0.0135.
    assert!((std - 0.0135).abs() < 0.0015, "std {std}");
    assert!(all.iter().all(|v| v.abs() <= 2.0 * 0.0154));
}
