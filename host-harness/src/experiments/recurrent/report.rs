//! The report of `reproduce recurrent`: the authors' figures, the results of both parts and their tables, the
//! checks, the verdict and the files.

use super::Settings;
use crate::cells;
use crate::experiments::Run;
use crate::fit::references::FittedParams;
use crate::fit::train::{TrainSpec, TrainTiming};
use crate::judge::eval::Comparison;
use crate::judge::stats::Stat;
use crate::model::{save, Lsa};
use crate::output::plot::{Panel, Series};
use crate::output::report::{fmt_num, Check, Table, Tables};
use crate::HarnessError;
use serde::{Deserialize, Serialize};

/// The authors' figures for part 1: `(application, trained layer, GD)`.
///
/// Source: their released notebook `constructed_token_setup.ipynb` (google-research/self-organising-systems,
/// `transformers_learn_icl_by_gd`), cell "Config" with `recurrent_Transformer = True`, `num_layers = 1`,
/// `num_heads = 1`, `config.seed = 0` (5000 training steps), then cell "Visualize iteratively applying a single layer
/// Transformer layer" (`scale = 0.75`, 50 applications, y only): `losses_tr` (trained layer) and `losses_gd` (GD at
/// 0.75 times the tuned rate) at these applications. The notebook is published without outputs: these are from
/// running it on a 2-core machine, one seed, without intervals.
pub const AUTHORS: [(usize, f64, f64); 4] =
    [(1, 0.219, 0.221), (10, 0.088, 0.088), (30, 0.055, 0.055), (48, 0.046, 0.045)];

/// Part 1: the trained single layer iterated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Iterated {
    /// The tuned one-step rate; GD runs at `damping` times it.
    pub eta: f64,
    /// The damping.
    pub damping: f32,
    /// Loss after each application of the trained layer.
    pub trained: Vec<Stat>,
    /// Loss after each step of GD at `damping * eta`.
    pub gd: Vec<Stat>,
    /// The iterated layer against iterated GD after the last application.
    pub final_vs_gd: Comparison,
}

impl Iterated {
    /// `(L_trained(k) - L_GD(k)) / L_GD(k)` at application `k` (from 1), signed.
    pub fn gap(&self, k: usize) -> Option<f64> {
        let (t, g) = (self.trained.get(k.checked_sub(1)?)?, self.gd.get(k - 1)?);
        Some((t.mean - g.mean) / g.mean)
    }

    /// The largest `|L_trained(k) - L_GD(k)| / L_GD(k)` over the applications.
    pub fn worst_gap(&self) -> f64 {
        self.trained.iter().zip(&self.gd).map(|(t, g)| (t.mean - g.mean).abs() / g.mean).fold(0.0, f64::max)
    }
}

/// Part 2: a layer trained with the recurrence in the loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Looped {
    /// Applications it was trained at.
    pub applications: usize,
    /// The training run.
    pub training: TrainSpec,
    /// Token clipping.
    pub token_clip: Option<f32>,
    /// Training time.
    pub timing: TrainTiming,
    /// Loss after each application, up to twice the trained depth.
    pub readout: Vec<Stat>,
    /// Repeated GD and repeated GD++, fitted for K steps.
    pub references: Vec<FittedParams>,
    /// Loss of each reference after each step, up to 2K.
    pub reference_readouts: Vec<Vec<Stat>>,
    /// The looped model at K applications against each reference.
    pub vs_references: Vec<Comparison>,
    /// Whether it matches each reference (loss within 3%, model cos lower bound >= 0.99).
    pub matched: Vec<bool>,
    /// GD-family residual of the learned layer (0 = exactly a GD step).
    pub gd_family_residual: f64,
}

/// What `reproduce recurrent` found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Results {
    /// Part 1.
    pub iterated: Iterated,
    /// Part 2.
    pub looped: Looped,
}

impl Tables for Results {
    fn tables(&self) -> Vec<Table> {
        let it = &self.iterated;
        let mut t = Table::new(
            format!(
                "the trained single layer applied {} times (y only, damping {}) against GD at {} x eta = {:.3}",
                it.trained.len(),
                it.damping,
                it.damping,
                it.damping as f64 * it.eta
            ),
            &["application", "trained layer", "GD", "gap (trained - GD) / GD", "authors: trained / GD", "authors' gap"],
        );
        let shown = [1usize, 2, 5, 10, 20, 30, 40, 48, 50];
        for &k in shown.iter().filter(|&&k| k <= it.trained.len()) {
            let authors = AUTHORS.iter().find(|a| a.0 == k);
            t.row(vec![
                k.to_string(),
                it.trained[k - 1].show(),
                it.gd[k - 1].show(),
                it.gap(k).map_or("-".into(), |g| format!("{:+.1}%", 100.0 * g)),
                authors.map_or("-".into(), |a| format!("{:.3} / {:.3}", a.1, a.2)),
                authors.map_or("-".into(), |a| format!("{:+.1}%", 100.0 * (a.1 - a.2) / a.2)),
            ]);
        }
        let c = &it.final_vs_gd;
        t.row(vec![
            "after the last: preds diff / model cos".into(),
            format!("{:.4}", c.preds_diff.mean),
            format!("{:.4}", c.model_cos.mean),
            String::new(),
            String::new(),
            String::new(),
        ]);
        let lp = &self.looped;
        let k = lp.applications;
        let mut u = Table::new(
            format!("one layer trained with {k} applications in the loop, against repeated GD and repeated GD++ fitted for {k} steps"),
            &["model", &format!("loss after {k}"), &format!("after {}", 2 * k), "preds diff", "model cos", "parameters"],
        );
        u.row(vec![
            "looped layer (trained)".into(),
            lp.readout[k - 1].show(),
            lp.readout.last().map_or("-".into(), |s| s.show()),
            "-".into(),
            "-".into(),
            format!("GD-family residual {}", fmt_num(lp.gd_family_residual)),
        ]);
        for (((p, r), c), m) in lp.references.iter().zip(&lp.reference_readouts).zip(&lp.vs_references).zip(&lp.matched)
        {
            let params = if p.gammas.is_empty() {
                format!("eta {:.3}", p.etas[0])
            } else {
                format!("eta {:.3}, gamma {:.4}", p.etas[0], p.gammas[0])
            };
            u.row(vec![
                format!("{}{}", p.name, if *m { " (match)" } else { "" }),
                c.loss_b.show(),
                r.last().map_or("-".into(), |s| s.show()),
                format!("{:.4}", c.preds_diff.mean),
                format!("{:.4}", c.model_cos.mean),
                params,
            ]);
        }
        u.row(vec![
            "training".into(),
            format!("{:.2} ms/step", lp.timing.ms_per_step),
            format!("{} x {}", lp.training.steps, lp.training.batch),
            format!("lr {}", lp.training.adam.lr),
            format!("clip {}", lp.training.clip),
            format!(
                "token clip {}; loss over the last tenth {:.4}, {} from the tenth before",
                lp.token_clip.map_or("none".into(), |c| c.to_string()),
                lp.timing.convergence.last_tenth,
                lp.timing.convergence.change_text()
            ),
        ]);
        vec![t, u]
    }
}

/// The iterated trained layer must track iterated GD within 5% at every application (the reference's claim), and
/// the looped layer's references must be consistent (repeated GD++ no worse than repeated GD, within 1%).
pub fn checks(r: &Results) -> Vec<Check> {
    let mut c = vec![Check::at_most(
        "iterated_tracks_gd",
        "largest |trained - GD| / GD loss over the applications",
        r.iterated.worst_gap(),
        0.05,
    )];
    if let [gd, pp] = &r.looped.vs_references[..] {
        c.push(Check::at_most(
            "looped_references_ordered",
            "repeated GD++ loss / repeated GD loss",
            pp.loss_b.mean / gd.loss_b.mean,
            1.01,
        ));
    }
    c
}

/// The verdict sentence.
pub fn verdict(r: &Results) -> String {
    let it = &r.iterated;
    let lp = &r.looped;
    let k = lp.applications;
    let matched: Vec<&str> =
        lp.references.iter().zip(&lp.matched).filter(|(_, m)| **m).map(|(p, _)| p.name.as_str()).collect();
    let gaps: Vec<String> = AUTHORS
        .iter()
        .filter_map(|a| {
            let ours = it.gap(a.0)?;
            Some(format!("{:+.1}% (theirs {:+.1}%) at {}", 100.0 * ours, 100.0 * (a.1 - a.2) / a.2, a.0))
        })
        .collect();
    format!(
        "the trained layer applied {} times tracks GD at {} x eta within {:.1}% at every application ({:.4} vs {:.4} \
         after the last; its gap to GD by application: {}); a layer trained with {k} applications in the loop \
         reaches {:.4} ({}{}{})",
        it.trained.len(),
        it.damping,
        100.0 * it.worst_gap(),
        it.trained.last().map_or(f64::NAN, |s| s.mean),
        it.gd.last().map_or(f64::NAN, |s| s.mean),
        gaps.join(", "),
        lp.readout[k - 1].mean,
        lp.references
            .iter()
            .zip(&lp.vs_references)
            .map(|(p, c)| format!("{} {:.4}", p.name, c.loss_b.mean))
            .collect::<Vec<_>>()
            .join(", "),
        if matched.is_empty() {
            let closest = lp
                .references
                .iter()
                .zip(&lp.vs_references)
                .min_by(|a, b| a.1.preds_diff.mean.total_cmp(&b.1.preds_diff.mean))
                .map_or("-", |(p, _)| p.name.as_str());
            format!("; it matches neither, and is closest to {closest} by preds diff")
        } else {
            format!("; it matches {}", matched.join(" and "))
        },
        lp.timing.convergence.unsettled().map_or(String::new(), |u| format!("; its {u}"))
    )
}

pub(super) fn write_files(s: &Settings, run: &mut Run<'_>, looped: &Lsa, r: &Results) -> Result<(), HarnessError> {
    let it = &r.iterated;
    let mut iterated = Table::new("iterated", &["application", "trained_loss", "gd_loss"]);
    for (i, (t, g)) in it.trained.iter().zip(&it.gd).enumerate() {
        iterated.row(cells![i + 1, t.mean, g.mean]);
    }
    run.csv("iterated.csv", &iterated)?;
    let lp = &r.looped;
    let names: Vec<String> = lp.references.iter().map(|p| p.name.replace(' ', "_")).collect();
    let columns: Vec<&str> = ["application", "looped_loss"].into_iter().chain(names.iter().map(String::as_str)).collect();
    let mut csv = Table::new("looped", &columns);
    for (i, readout) in lp.readout.iter().enumerate() {
        let mut row = cells![i + 1, readout.mean];
        row.extend(lp.reference_readouts.iter().map(|rr| rr.get(i).map_or(f64::NAN, |s| s.mean).to_string()));
        csv.row(row);
    }
    run.csv("looped.csv", &csv)?;
    save(
        looped,
        &[
            ("d", s.task.d.to_string()),
            ("n", s.task.n.to_string()),
            ("model", format!("one LSA layer trained looped {} times", lp.applications)),
        ],
        &run.file("looped.safetensors"),
    )?;
    let pts = |v: &[Stat]| v.iter().enumerate().map(|(i, s)| ((i + 1) as f64, s.mean)).collect::<Vec<_>>();
    let mut p2 =
        Panel::new(format!("Trained with {} applications in the loop", lp.applications), "application", "loss")
            .log_y()
            .with(Series::line("looped layer", pts(&lp.readout)).with_markers());
    for (p, rr) in lp.references.iter().zip(&lp.reference_readouts) {
        p2 = p2.with(Series::dashed(p.name.clone(), pts(rr)).with_markers());
    }
    run.plot(
        "recurrent.png",
        "Left: the trained single layer applied repeatedly (y only, damped) against GD at the damped rate, with the \
         authors' figures. Right: a layer trained with the recurrence in the loop, applied up to twice its trained \
         depth, against repeated GD and GD++",
        &[
            Panel::new("Trained single layer, iterated", "application", "loss")
                .log_y()
                .with(Series::line("trained layer", pts(&it.trained)))
                .with(Series::dashed(format!("GD at {} x eta", it.damping), pts(&it.gd)))
                .with(Series::points("authors: trained", AUTHORS.iter().map(|a| (a.0 as f64, a.1)).collect()))
                .with(Series::points("authors: GD", AUTHORS.iter().map(|a| (a.0 as f64, a.2)).collect())),
            p2,
        ],
    );
    Ok(())
}
