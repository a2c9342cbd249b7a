//! An online least-squares learner: pairs `(x, y)` of a drifting linear signal arrive one by one; a window of the last
//! 16 pairs and the GD construction predict each new `y` before it is seen.
//!
//! `cargo run -p dualform --example streaming_learner`

use dualform::nalgebra::SMatrix;
use dualform::rng::SplitMix64;
use dualform::{gd_layer, LsaStream};

const CAP: usize = 16;

fn main() -> Result<(), dualform::Error> {
    // d = 2, a scalar target: tokens of width E = 3. One GD step from W0 = 0, scaled for a full window, at rate 3:
    // inputs uniform on (-1, 1) have covariance I / 3, so one step at rate 3 lands near the true weights.
    let layer = gd_layer::<f32, 2, 1, 3>(&SMatrix::zeros(), 3.0, CAP)?;
    let mut learner = LsaStream::<f32, 3, CAP>::new(&layer, 64);
    let mut rng = SplitMix64::new(7);
    let mut uniform = || rng.next_open01() as f32 * 2.0 - 1.0;
    println!("step  true w            y       predicted  |error|");
    let (mut err_sum, mut y_sum) = (0.0f32, 0.0f32);
    for step in 0..200 {
        // The true weights turn slowly.
        let angle = step as f32 * 0.01;
        let w = [angle.cos(), angle.sin()];
        let x = [uniform(), uniform()];
        let y = w[0] * x[0] + w[1] * x[1];
        let predicted = learner.predict_scalar(&x);
        if step % 20 == 0 || step == 199 {
            let err = (predicted - y).abs();
            println!("{step:4}  ({:+.2}, {:+.2})  {y:+.3}  {predicted:+.3}     {err:.3}", w[0], w[1]);
        }
        if step >= 100 {
            err_sum += (predicted - y).abs();
            y_sum += y.abs();
        }
        learner.push_scalar(&x, y)?;
    }
    println!("steps 100..200: mean |error| {:.3}, mean |y| {:.3} (predicting 0)", err_sum / 100.0, y_sum / 100.0);
    println!("window drift {:.1e} (64 evictions between resyncs)", learner.drift());
    Ok(())
}
