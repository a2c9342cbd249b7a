//! How `reproduce dai` reads each metric: every negative against the positive control scored on the same tasks, by
//! mean and by interval.

use super::report::{Role, Row};
use crate::judge::stats::Stat;
use crate::probes::dai::Scores;
use serde::{Deserialize, Serialize};

/// The metrics the readings judge, with how to read each from [`Scores`].
pub(super) type Metric = (&'static str, fn(&Scores) -> Stat);

pub(super) const METRICS: [Metric; 7] = [
    ("SimAOU", |s| s.sim_aou),
    ("SimAM (ICL vs FT)", |s| s.sim_am),
    ("Rec2FTP", |s| s.rec2ftp),
    ("cos(M_ICL, M_FT)", |s| s.map_cos),
    ("cos(implied predictor, -gradient)", |s| s.readout_cos),
    ("cos(ICL sensitivity, -gradient)", |s| s.sensitivity_cos),
    ("attribution cos (ICL vs GD)", |s| s.attribution_cos),
];

/// One negative against the positive control scored on the same tasks, on one metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VersusNegative {
    /// The negative.
    pub negative: String,
    /// Its value.
    pub value: Stat,
    /// The positive control's value on the same tasks.
    pub positive: Stat,
    /// The positive's mean above the negative's.
    pub by_mean: bool,
    /// The positive's interval above the negative's (lower end above upper end).
    pub by_interval: bool,
}

/// Whether one metric tells the positive control from the negatives.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    /// The metric.
    pub metric: String,
    /// The positive control's value (on the regression tasks).
    pub positive: Stat,
    /// Every negative against the positive on its tasks.
    pub negatives: Vec<VersusNegative>,
    /// The positive's interval lies above every negative's.
    pub separates: bool,
    /// The positive's mean lies above every negative's.
    pub separates_by_mean: bool,
    /// The trained softmax model's value.
    pub trained: Stat,
}

impl Reading {
    /// The negative with the highest mean relative to the positive on its tasks.
    pub fn strongest(&self) -> Option<&VersusNegative> {
        self.negatives.iter().max_by(|a, b| (a.value.mean - a.positive.mean).total_cmp(&(b.value.mean - b.positive.mean)))
    }
}

/// Per metric: every negative (and the positive on shuffled labels) against the positive control with true labels
/// scored on the same tasks (the picker on its pool, against GD on that pool).
pub fn readings(rows: &[Row]) -> Vec<Reading> {
    let positive_on = |pool: bool| rows.iter().find(|r| r.role == Role::Positive && !r.shuffled && r.on_pool == pool);
    let trained = rows.iter().find(|r| r.role == Role::Trained && !r.shuffled);
    let (Some(pos), Some(trained)) = (positive_on(false), trained) else { return Vec::new() };
    let negatives: Vec<(&Row, &Row)> = rows
        .iter()
        .filter(|r| r.role == Role::Negative && !r.shuffled || r.role == Role::Positive && r.shuffled)
        .filter_map(|r| Some((r, positive_on(r.on_pool)?)))
        .collect();
    METRICS
        .iter()
        .map(|(name, f)| {
            let negatives: Vec<VersusNegative> = negatives
                .iter()
                .map(|(r, p)| {
                    let (value, positive) = (f(&r.scores), f(&p.scores));
                    VersusNegative {
                        negative: r.name(),
                        value,
                        positive,
                        by_mean: positive.mean > value.mean,
                        by_interval: positive.lo() > value.hi(),
                    }
                })
                .collect();
            Reading {
                metric: name.to_string(),
                positive: f(&pos.scores),
                separates: negatives.iter().all(|n| n.by_interval),
                separates_by_mean: negatives.iter().all(|n| n.by_mean),
                negatives,
                trained: f(&trained.scores),
            }
        })
        .collect()
}
