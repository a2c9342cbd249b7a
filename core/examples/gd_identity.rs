//! The identity in f32 and f64: one LSA layer with the GD construction against one explicit GD step, on random
//! problems at d = N = 10, and the largest difference.
//!
//! `cargo run -p dualform --example gd_identity`

use dualform::gd::{gd_step, predict};
use dualform::nalgebra::SMatrix;
use dualform::rng::SplitMix64;
use dualform::{gd_layer, lsa_associative, prediction, token_from, Mask, Update};

const D: usize = 10;
const N: usize = 10;
const E: usize = D + 1;

fn main() -> Result<(), dualform::Error> {
    let mut rng = SplitMix64::new(1);
    let (mut worst_f32, mut worst_f64) = (0.0f64, 0.0f64);
    for _ in 0..100 {
        let w: [f64; D] = core::array::from_fn(|_| rng.next_open01() * 2.0 - 1.0);
        let xs: [[f64; D]; N] = core::array::from_fn(|_| core::array::from_fn(|_| rng.next_open01() - 0.5));
        let ys: [[f64; 1]; N] = xs.map(|x| [x.iter().zip(w.iter()).map(|(a, b)| a * b).sum()]);
        let xq: [f64; D] = core::array::from_fn(|_| rng.next_open01() - 0.5);
        // One explicit GD step in f64 is the reference.
        let w1 = gd_step(&SMatrix::<f64, 1, D>::zeros(), &xs, &ys, 1.0)?;
        let reference = predict(&w1, &xq)[0];
        // The LSA layer in f64 and in f32.
        let layer = gd_layer::<f64, D, 1, E>(&SMatrix::zeros(), 1.0, N)?;
        let mut ctx: [[f64; E]; N] = core::array::from_fn(|i| token_from(&xs[i], &ys[i]));
        let mut q = token_from(&xq, &[0.0]);
        lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q)?;
        worst_f64 = worst_f64.max((prediction::<f64, E, 1>(&q)[0] - reference).abs());
        let layer = gd_layer::<f32, D, 1, E>(&SMatrix::zeros(), 1.0, N)?;
        let mut ctx: [[f32; E]; N] = core::array::from_fn(|i| token_from(&xs[i], &ys[i]).map(|v: f64| v as f32));
        let mut q = token_from(&xq, &[0.0]).map(|v: f64| v as f32);
        lsa_associative(&layer, Mask::Full, &Update::residual(), &mut ctx, &mut q)?;
        worst_f32 = worst_f32.max((prediction::<f32, E, 1>(&q)[0] as f64 - reference).abs());
    }
    println!("100 problems, d = N = 10: LSA layer vs one GD step, largest difference f64 {worst_f64:.1e}, f32 {worst_f32:.1e}");
    Ok(())
}
