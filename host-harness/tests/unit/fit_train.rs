//! Unit tests of `fit::train` (`src/fit/train.rs`).

use dualform::Update;
use dualform_harness::fit::optim::AdamW;
use dualform_harness::fit::train::{batch_gradient, train, Convergence, TrainSpec, Workspaces};
use dualform_harness::model::{Lsa, Model, Softmax};
use dualform_harness::tasks::{stream_rng, streams, TaskSampler};

/// The convergence readout is the mean batch loss over the last tenth of the steps and over the tenth before,
/// checked against the losses the run reports step by step (23 steps: tenths of 2, the last two steps and the two
/// before them).
#[test]
fn the_convergence_readout_averages_the_last_two_tenths_of_the_batch_losses() {
    let sampler = TaskSampler::new(3, 5, 1.0);
    let mut model = Lsa::init(&mut stream_rng(1, streams::INIT), 4, 2, vec![0, 1], Update::residual()).unwrap();
    let spec = TrainSpec { steps: 23, batch: 64, seed: 4, adam: AdamW::reference(1e-2), clip: 10.0 };
    let mut losses = Vec::new();
    let timing = train(&mut model, &sampler, &spec, |_, _, loss| {
        losses.push(loss);
        Ok(())
    })
    .unwrap();
    let c = timing.convergence;
    assert_eq!(c.tenth, 2);
    assert_eq!(c.last_tenth, (losses[21] + losses[22]) / 2.0);
    assert_eq!(c.previous_tenth, (losses[19] + losses[20]) / 2.0);
    assert_eq!(c.change(), c.last_tenth / c.previous_tenth - 1.0);
    assert_eq!(c.change_text(), format!("{:+.1}%", 100.0 * c.change()));
    // One step: no tenth before the last.
    let one = TrainSpec { steps: 1, ..spec };
    let c = train(&mut model, &sampler, &one, |_, _, _| Ok(())).unwrap().convergence;
    assert!(c.last_tenth.is_finite() && c.previous_tenth.is_nan());
    assert_eq!(c.change_text(), "-");
}

/// Training counts as settled when the last tenth's mean batch loss is within 2% of the tenth before's, either way;
/// the verdicts' clause names the change otherwise, and says nothing when there is no tenth before.
#[test]
fn training_is_unsettled_beyond_two_per_cent_either_way() {
    let c = |last: f64, previous: f64| Convergence { tenth: 100, last_tenth: last, previous_tenth: previous };
    assert_eq!(c(1.019, 1.0).unsettled(), None);
    assert_eq!(c(0.981, 1.0).unsettled(), None);
    assert_eq!(
        c(1.059, 1.0).unsettled().as_deref(),
        Some("training not settled (batch loss over the last tenth +5.9% from the tenth before)")
    );
    assert!(c(0.5, 1.0).unsettled().unwrap().contains("-50.0%"));
    assert_eq!(c(1.0, f64::NAN).unsettled(), None);
}

/// A batch's gradient and loss with workspaces that earlier steps used (kept in the pool from step to step, as
/// `train` does) are those with fresh ones, bit for bit: for the single layer, a deep net of distinct layers, a looped
/// one and the softmax model, with 1 and 2 threads (blocks of four chunks and of two). The pool ends with at most one
/// workspace per thread and makes none after the first step.
#[test]
fn a_batch_gradient_with_used_workspaces_is_the_one_with_fresh_workspaces() {
    fn check<M: Model>(name: &str, model: &M, sampler: &TaskSampler) {
        let bits = |(g, l): (Vec<f32>, f64)| (g.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), l.to_bits());
        for threads in [1, 2] {
            let rayon = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            rayon.install(|| {
                let used = Workspaces::<M>::new();
                for step in 0..3 {
                    let fresh = bits(batch_gradient(model, sampler, 5, step, 500, &Workspaces::<M>::new()));
                    let reused = bits(batch_gradient(model, sampler, 5, step, 500, &used));
                    assert_eq!(fresh, reused, "{name}, {threads} threads, step {step}");
                    assert!((1..=threads).contains(&used.len()), "{name}: {} workspaces", used.len());
                }
            });
        }
    }
    let sampler = TaskSampler::new(4, 6, 1.0);
    let mut rng = stream_rng(3, streams::INIT);
    check("single layer", &Lsa::init(&mut rng, 5, 1, vec![0], Update::residual()).unwrap(), &sampler);
    check("three layers", &Lsa::init(&mut rng, 5, 3, vec![0, 1, 2], Update::residual()).unwrap(), &sampler);
    check("looped", &Lsa::init(&mut rng, 5, 1, vec![0, 0, 0], Update::residual()).unwrap(), &sampler);
    check("softmax", &Softmax::init(&mut rng, 5, 2), &sampler);
}
