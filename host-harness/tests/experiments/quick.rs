//! Each experiment's quick report, read back through its typed report and checked against what must hold.

use crate::{quick_all, report};
use dualform_harness::experiments::{
    attention_zoo, dai, gd_plus_plus, interpolate, mlp_sine, multi_layer, ood, recurrent, single_layer, softmax,
};
use dualform_harness::judge::verdict::{Outcome, Role};
use dualform_harness::output::report::{read, Report};
use std::process::Command;

#[test]
fn quick_single_layer() {
    let r: Report<single_layer::Settings, single_layer::Results> = report("single-layer");
    assert!(r.config.shared.common.quick);
    assert!(r.verdict.passed, "{}", r.verdict.text);
    assert!(r.results.seed_to_seed.is_some(), "reproduce all keeps the second seed");
    let a = &r.results.assessment;
    assert_eq!((r.results.seeds.len(), a.loss_per_seed.len(), a.residual_per_seed.len()), (2, 2, 2));
    assert_eq!(a.ruling.outcome, Outcome::ImplementsGd, "{}", r.verdict.text);
    // On isotropic tasks the closed-form preconditioner is plain GD's rate in every coordinate.
    let cf = r.results.closed_form.as_ref().unwrap();
    assert!(cf.preconditioner.iter().all(|g| (g - cf.eta).abs() < 1e-9 * cf.eta));
    let roles: Vec<Role> = a.agreements.iter().map(|g| g.role).collect();
    assert_eq!(
        roles,
        [Role::Gd, Role::Preconditioned, Role::Optimum, Role::LeastSquares, Role::Ridge, Role::TwoStepGd]
    );
    // Agreement with GD beats agreement with least squares and two GD steps by far.
    assert!(a.agreements[0].preds_diff.hi() < a.agreements[3].preds_diff.lo());
    assert!(a.agreements[0].preds_diff.hi() < a.agreements[5].preds_diff.lo());
}

#[test]
fn quick_preconditioned() {
    let r: Report<single_layer::Settings, single_layer::Results> = report("preconditioned");
    assert_eq!(r.config.task.variance_ratio, Some(10.0), "the experiment's own default");
    let res = &r.results;
    let cf = res.closed_form.as_ref().unwrap();
    // The closed form: preconditioning gains about 7% at ratio 10, with rates rising as the variance falls.
    assert!(cf.preconditioned_loss < 0.95 * cf.loss, "{cf:?}");
    assert!(cf.preconditioner.windows(2).all(|w| w[1] > w[0]), "{:?}", cf.preconditioner);
    let a = &res.assessment;
    let (gd, pgd, opt) = (&a.agreements[0], &a.agreements[1], &a.agreements[2]);
    // Held out, the closed-form preconditioned step and the fitted class optimum agree with the closed form's
    // loss, and both beat plain GD.
    assert!((pgd.loss.mean - cf.preconditioned_loss).abs() < 0.05 * cf.preconditioned_loss);
    assert!(pgd.loss.mean < 0.97 * gd.loss.mean && opt.loss.mean < 0.97 * gd.loss.mean);
    assert!((gd.loss.mean - cf.loss).abs() < 0.05 * cf.loss);
    // Even the quick model is closer to the preconditioned step than to GD, and below GD's loss.
    assert!(pgd.preds_diff.mean < gd.preds_diff.mean, "{pgd:?} vs {gd:?}");
    assert!(a.loss.mean < gd.loss.mean);
    assert!(a.ruling.outcome != Outcome::ImplementsGd, "{}", r.verdict.text);
}

#[test]
fn quick_multi_layer() {
    let r: Report<multi_layer::Settings, multi_layer::Results> = report("multi-layer");
    assert_eq!(r.config.layers, [2, 3]);
    assert_eq!(r.results.depths.iter().map(|d| d.layers).collect::<Vec<_>>(), [2, 3]);
    for d in &r.results.depths {
        let names: Vec<&str> = d.references.iter().map(|x| x.params.name.as_str()).collect();
        assert_eq!(names, ["GD", "GD, rate per step", "GD++"]);
        // Fitted on tuning tasks, each richer reference at least as good there.
        let tune: Vec<f64> = d.references.iter().map(|x| x.params.fit.final_loss).collect();
        assert!(tune[1] <= tune[0] && tune[2] <= tune[1], "K = {}: {tune:?}", d.layers);
        // The K-step shared rate sits near the one-step optimum (about 6 on this distribution).
        assert!((3.0..9.0).contains(&d.references[0].params.etas[0]), "{:?}", d.references[0].params);
        // GD++ is far better than plain GD here (it approaches least squares).
        assert!(d.references[2].vs_trained.loss_b.mean < 0.8 * d.references[0].vs_trained.loss_b.mean);
        assert_eq!(d.readout.len(), d.layers);
        assert!(d.references.iter().all(|x| x.readout.len() == d.layers));
        // The loss after the last layer is the model's loss.
        assert!((d.readout[d.layers - 1].mean - d.trained_loss().mean).abs() < 1e-9);
        assert!(d.trained_loss().mean < r.results.zero.mean);
        assert_eq!(d.token_clip, None, "no token clipping up to 3 layers");
    }
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["k2_references_ordered", "k2_trained_vs_gd", "k3_references_ordered", "k3_trained_vs_gd"]);
}

#[test]
fn quick_recurrent() {
    let r: Report<recurrent::Settings, recurrent::Results> = report("recurrent");
    let it = &r.results.iterated;
    assert_eq!((it.trained.len(), it.gd.len()), (50, 50));
    // GD at 0.75 x the tuned rate on this distribution: the authors' code gives 0.221 after one step and 0.088 after
    // ten; ours must agree up to sampling noise (2000 quick tasks).
    assert!((it.gd[0].mean - 0.221).abs() < 0.02, "{:?}", it.gd[0]);
    assert!((it.gd[9].mean - 0.088).abs() < 0.012, "{:?}", it.gd[9]);
    assert!(it.gd.windows(2).all(|w| w[1].mean < w[0].mean), "damped GD decreases the loss at every step");
    assert!(it.trained[49].mean < 0.5 * it.trained[0].mean);
    let lp = &r.results.looped;
    assert_eq!(lp.applications, 3);
    assert_eq!(lp.readout.len(), 6);
    assert_eq!(lp.references.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["repeated GD", "repeated GD++"]);
    assert_eq!(lp.vs_references.len(), 2);
}

#[test]
fn quick_gd_plus_plus() {
    let r: Report<gd_plus_plus::Settings, gd_plus_plus::Results> = report("gd-plus-plus");
    let m: Report<multi_layer::Settings, multi_layer::Results> = report("multi-layer");
    for (d, md) in r.results.depths.iter().zip(&m.results.depths) {
        // The same trained models and fits as multi-layer (shared within one `reproduce all`).
        assert_eq!(d.losses().0, md.trained_loss());
        assert_eq!(d.references[2], md.references[2].params);
        assert_eq!(d.references[2].gammas.len(), d.layers);
        assert_eq!(d.references[2].gammas[d.layers - 1], 0.0, "the last gamma never reaches the prediction");
    }
}

#[test]
fn quick_interpolate() {
    let r: Report<interpolate::Settings, interpolate::Results> = report("interpolate");
    let p = &r.results.path;
    assert_eq!(p.len(), 11);
    assert_eq!((p[0].alpha, p[10].alpha), (0.0, 1.0));
    // The end of the path is the GD construction itself.
    assert!(p[10].vs_gd.preds_diff.mean < 1e-6 && (p[10].vs_gd.model_cos.mean - 1.0).abs() < 1e-6);
    assert!(r.results.midpoint().is_some());
    assert!(r.results.scale.abs() > 0.0);
}

#[test]
fn quick_ood() {
    let r: Report<ood::Settings, ood::Results> = report("ood");
    let (ranges, scales) = ood::grids();
    assert_eq!(r.results.input_range.len(), ranges.len());
    assert_eq!(r.results.weight_scale.len(), scales.len());
    // The same tasks with weights scaled by s have targets scaled by s: GD's loss scales by s^2 (up to f32 rounding).
    let at = |x: f64| r.results.weight_scale.iter().find(|p| (p.x - x).abs() < 1e-9).unwrap().vs_gd.loss_b.mean;
    assert!((at(2.0) / at(1.0) - 4.0).abs() < 1e-4, "{} / {}", at(2.0), at(1.0));
    assert!((at(5.0) / at(1.0) - 25.0).abs() < 1e-3);
    // Wider inputs than trained on make both fail.
    let last = r.results.input_range.last().unwrap();
    assert!(last.vs_gd.loss_b.mean > 5.0 * at(1.0));
}

#[test]
fn quick_softmax() {
    let r: Report<softmax::Settings, softmax::Results> = report("softmax");
    let res = &r.results;
    assert_eq!(res.depths.iter().map(|d| d.layers).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((res.heads, res.seeds.len()), (2, 2));
    for d in &res.depths {
        assert_eq!(d.loss_per_seed.len(), 2);
        assert_eq!(d.readout.len(), d.layers);
        // The loss after the last layer is the first seed's loss.
        assert!((d.readout[d.layers - 1].mean - d.loss_per_seed[0].mean).abs() < 1e-9);
        assert_eq!(d.relaxation.iter().map(|x| x.layer).collect::<Vec<_>>(), (1..=d.layers).collect::<Vec<_>>());
        for x in &d.relaxation {
            // Every head on every relaxation task, measured or counted as skipped.
            assert_eq!(x.cosine.n + x.skipped, res.heads * r.config.relaxation_tasks);
            assert!((-1.0..=1.0).contains(&x.cosine.mean) && (0.0..=1.0).contains(&x.residual.mean), "{x:?}");
            assert!(x.logit_std.mean > 0.0 && x.normalised_error.mean >= 0.0);
        }
    }
    let one = &res.depths[0];
    let a = one.assessment.as_ref().expect("one layer is assessed by the rules");
    // Softmax heads have no LSA weights to read: no residuals, no weight check, and the sentence says so if GD wins.
    assert!(a.residual.is_none() && a.residual_per_seed.is_empty());
    assert!(a.ruling.checks.iter().all(|c| c.name != "functional_residual"));
    if a.ruling.outcome == Outcome::ImplementsGd {
        assert!(a.ruling.sentence.contains("by behaviour alone"), "{}", a.ruling.sentence);
    }
    let roles: Vec<Role> = a.agreements.iter().map(|g| g.role).collect();
    assert_eq!(roles[0], Role::Gd);
    assert_eq!(one.against.len(), a.agreements.len() + 1);
    assert!(one.against.last().unwrap().reference.starts_with("trained LSA layer"));
    // The same held-out tasks as single-layer: GD's loss is the same number.
    let sl: Report<single_layer::Settings, single_layer::Results> = report("single-layer");
    assert_eq!(a.agreements[0].loss, sl.results.assessment.agreements[0].loss);
    // Two layers against the fitted two-step references that multi-layer fits (shared within `reproduce all`).
    let two = &res.depths[1];
    assert!(two.assessment.is_none());
    let names: Vec<&str> = two.against.iter().map(|x| x.reference.as_str()).collect();
    assert_eq!(names, ["GD, 2 steps", "GD, rate per step, 2 steps", "GD++, 2 steps"]);
    let ml: Report<multi_layer::Settings, multi_layer::Results> = report("multi-layer");
    assert_eq!(two.against[0].loss, ml.results.depths[0].references[0].vs_trained.loss_b);
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["k1_learns", "k1_relaxation_measured", "k2_learns", "k2_relaxation_measured"]);
    assert!(r.verdict.text.contains("Dai's cosine per layer"), "{}", r.verdict.text);
}

/// Dai's method: the positive control scores as GD on the weight-space and function cosines and a negative (random
/// weights) does not; the relaxation calls the sharp retrieval head GD while its function does not; the structure
/// of the method (FT and ZS do not see the labels ICL sees; one layer's SimAM baseline is 1) holds.
#[test]
fn quick_dai() {
    let r: Report<dai::Settings, dai::Results> = report("dai");
    let res = &r.results;
    let roles: Vec<(dai::Role, bool)> = res.rows.iter().map(|x| (x.role, x.shuffled)).collect();
    use dai::Role::{Negative, Positive, Trained};
    let kinds = [Positive, Trained, Negative, Negative, Positive, Negative];
    let expected: Vec<(dai::Role, bool)> =
        [false, true].iter().flat_map(|&s| kinds.iter().map(move |&k| (k, s))).collect();
    assert_eq!(roles, expected);
    let row = |i: usize| &res.rows[i].scores;
    let (gd, retrieval, random) = (row(0), row(2), row(5));
    // The positive control: ICL is GD, by the relaxed map and by what the layer does; its prompt adds nothing.
    assert!(gd.readout_cos.mean > 1.0 - 1e-9 && gd.sensitivity_cos.mean > 1.0 - 1e-9, "{gd:?}");
    let zero = res.zero[0];
    assert_eq!((gd.loss[0].mean, gd.loss[0].ci95), (zero.mean, zero.ci95), "zero-shot GD predicts 0 on the same tasks");
    assert!(gd.loss[1].mean < 0.6 * gd.loss[0].mean);
    // Random weights score as GD on neither cosine.
    assert!(random.readout_cos.mean.abs() < 0.3 && random.sensitivity_cos.mean.abs() < 0.3, "{random:?}");
    // Dai's relaxation drops the softmax: the retrieval head's relaxed map is the GD direction, its function is not.
    assert!(retrieval.readout_cos.mean > 1.0 - 1e-9, "{retrieval:?}");
    assert!(retrieval.sensitivity_cos.mean < 0.8, "{retrieval:?}");
    // The picker and the GD construction are scored on the same pool of tasks, and compared there.
    let (picker, pool_gd) = (&res.rows[3], &res.rows[4]);
    assert!(picker.on_pool && pool_gd.on_pool && !res.rows[0].on_pool);
    assert_eq!((pool_gd.scores.loss[0].mean, pool_gd.scores.loss[0].ci95), (res.zero[1].mean, res.zero[1].ci95));
    for reading in &res.readings {
        assert_eq!(reading.negatives.len(), 5, "three negatives and GD on shuffled labels, twice");
        let vs = reading.negatives.iter().find(|n| n.negative == picker.model).unwrap();
        assert_ne!(vs.positive, reading.positive, "{}: the picker is read against GD on its pool", reading.metric);
        assert_eq!(reading.separates, reading.negatives.iter().all(|n| n.positive.lo() > n.value.hi()));
    }
    for (plain, shuffled) in res.rows[..6].iter().zip(&res.rows[6..]) {
        let (p, s) = (&plain.scores, &shuffled.scores);
        assert_eq!(plain.model, shuffled.model);
        // Shuffling touches ICL only.
        assert_eq!((p.loss[0], p.loss[2], p.ft_lr.clone()), (s.loss[0], s.loss[2], s.ft_lr.clone()));
        // One layer: ICL's scores to the prompt are ZS's.
        assert!((p.sim_am_zs.mean - 1.0).abs() < 1e-12, "{}: {:?}", plain.model, p.sim_am_zs);
        assert_eq!(
            p.ft_lr.len(),
            if plain.role == dai::Role::Positive || plain.model.contains("retrieval") { 1 } else { 2 }
        );
        assert_eq!(p.scored + p.skipped, r.config.shared.eval.eval_tasks * p.ft_lr.len(), "{}", plain.model);
    }
    // Shuffled labels break the GD construction's agreement with the true labels' gradient.
    assert!(res.rows[6].scores.sensitivity_cos.mean.abs() < 0.2);
    // Which demonstrations ICL draws on: the GD construction's are one GD step's exactly; the retrieval head's and
    // random weights' are not, nor are GD's on shuffled labels.
    assert!(gd.attribution_cos.mean > 1.0 - 1e-9, "{gd:?}");
    assert!(retrieval.attribution_cos.mean < 0.8 && random.attribution_cos.mean.abs() < 0.3);
    assert!(res.rows[6].scores.attribution_cos.mean.abs() < 0.2);
    let metrics: Vec<&str> = res.readings.iter().map(|x| x.metric.as_str()).collect();
    assert_eq!(metrics.len(), 7);
    for m in metrics {
        assert!(r.verdict.text.contains(m), "{m}: {}", r.verdict.text);
    }
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "positive_is_gd",
            "trained_learns",
            "picker_learns",
            "picker_uses_its_pool",
            "retrieval_retrieves",
            "random_is_not_gd",
            "scored"
        ]
    );
    // The retrieval head retrieves; GD does not.
    assert!(retrieval.retrieves.mean > 3.0 * gd.retrieves.mean, "{:?} {:?}", retrieval.retrieves, gd.retrieves);
    let csv = std::fs::read_to_string(quick_all().join("dai/scores.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1 + 12 * 21);
}

/// The sine experiment: the trained model learns; GD on its features is tuned on other tasks (so it cannot beat
/// predicting 0 by luck of the held-out draw by much) and compared at the query and over the grid; the scalar Model
/// cos is reported as what it is, a sign agreement in [-1, 1].
#[test]
fn quick_mlp_sine() {
    let r: Report<mlp_sine::Settings, mlp_sine::Results> = report("mlp-sine");
    let res = &r.results;
    assert_eq!(res.seeds.len(), 2);
    assert!(res.distribution.contains("drawn independently"), "{}", res.distribution);
    for seed in &res.seeds {
        let x = &seed.vs_gd;
        assert!(x.loss.mean < 0.5 * res.zero.mean, "{seed:?}");
        assert!(seed.gd_eta > 0.0 && x.gd_loss.mean <= res.zero.mean * 1.05, "{seed:?}");
        assert!((-1.0..=1.0).contains(&x.sign_agreement.mean) && (-1.0..=1.0).contains(&x.grid_cos.mean));
        assert_eq!((x.loss.n, x.grid_cos.n), (r.config.shared.eval.eval_tasks, r.config.shared.eval.eval_tasks));
        assert_eq!(seed.curve.last().map(|c| c.0), Some(r.config.shared.train.steps));
    }
    assert_eq!(res.over_seeds.loss.mean, (res.seeds[0].vs_gd.loss.mean + res.seeds[1].vs_gd.loss.mean) / 2.0);
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["learns", "gd_helps"]);
    assert!(r.verdict.text.contains("sign agreement"), "{}", r.verdict.text);
}

/// The attention zoo: every task, kind and depth trained and scored; GD applies where the tokens are a linear
/// regression and not behind the learned feature map; the cost table counts the core's operations, softmax's growing
/// with N^2 and the linear kinds' with N.
#[test]
fn quick_attention_zoo() {
    let r: Report<attention_zoo::Settings, attention_zoo::Results> = report("attention-zoo");
    let res = &r.results;
    assert!(r.verdict.passed, "{}", r.verdict.text);
    assert_eq!(res.rows.len(), 4 * 5 * 2);
    for row in &res.rows {
        assert_eq!(row.per_seed.len() + row.diverged, 2, "{row:?}");
        assert_eq!(row.preds_diff_gd.is_some(), row.task != attention_zoo::Task::SineMlp, "{row:?}");
        assert_eq!(row.curve.last().map(|c| c.0), Some(r.config.shared.train.steps), "{row:?}");
        assert_eq!(row.sweep.len(), r.config.lrs.len());
    }
    for t in &res.tasks {
        assert_eq!(t.gd.is_some(), t.task != attention_zoo::Task::SineMlp);
        // GD is tuned on other tasks: on the sine task, where it barely helps, it may end a little above 0's loss.
        assert!(t.zero.mean > 0.0 && t.gd.as_ref().is_none_or(|g| g.1.mean < 1.05 * t.zero.mean), "{t:?}");
    }
    let flops = |kind: &str, n: usize| {
        res.costs.iter().find(|c| c.kind.name() == kind && c.n == n).map(|c| c.ops.flops() as f64).unwrap()
    };
    assert_eq!(res.costs.len(), 2 * 5);
    assert!(flops("softmax", 32) / flops("softmax", 10) > flops("lsa", 32) / flops("lsa", 10));
    assert!(res.costs.iter().all(|c| c.host_microseconds > 0.0 && c.m4_ms > 0.0));
    let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["trained", "lsa_learns_linear", "softmax_solves_recall"]);
}

/// The recall task is sound: one softmax layer solves it (loss below 0.05, a tenth of predicting 0), with 300 steps
/// of 128 tasks, while one LSA layer cannot (every other value leaks in through the keys' overlap).
#[test]
fn softmax_attention_solves_associative_recall() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zoo");
    let args = "reproduce attention-zoo --tasks recall --kinds softmax,lsa --layers 1 --steps 300 --sweep-steps 300 \
                --batch 128 --lrs 0.01 --seeds 1 --eval-tasks 1000 --cost-n 4 --out";
    let o = Command::new(env!("CARGO_BIN_EXE_dualform"))
        .args(args.split_whitespace())
        .arg(&out)
        .output()
        .expect("the dualform binary runs");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let r: Report<attention_zoo::Settings, attention_zoo::Results> =
        read(&out.join("attention-zoo/report.json")).unwrap();
    let loss = |kind: &str| r.results.rows.iter().find(|x| x.kind.name() == kind).unwrap().loss.mean;
    let zero = r.results.tasks[0].zero.mean;
    assert!(loss("softmax") < 0.05, "softmax {} (predict 0: {zero})", loss("softmax"));
    assert!(loss("lsa") > 0.3 * zero, "lsa {} (predict 0: {zero})", loss("lsa"));
    let solved = r.checks.iter().find(|c| c.name == "softmax_solves_recall").unwrap();
    assert!(solved.passed && solved.line().contains("0.1"), "{}", solved.line());
}
