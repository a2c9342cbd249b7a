//! The heat maps of a sweep over (N / d, d): the verdict, the loss gap to GD, the loss gap to preconditioned GD.

use super::cell::CellResult;
use super::spec::{Cell, Spec};
use crate::output::plot::{draw_heatmaps, HeatPanel, Rgb};
use crate::HarnessError;
use std::collections::BTreeSet;
use std::path::Path;

/// The verdict's colour and its legend word.
fn verdict_colour(outcome: &str, status: &str) -> (Rgb, &'static str) {
    match (status, outcome) {
        ("ok", "implements_gd" | "matches_gd") => ((44, 160, 44), "GD"),
        ("ok", "implements_preconditioned_gd") => ((31, 119, 180), "preconditioned GD"),
        ("ok", "matches_gd_per_step" | "matches_gd_plus_plus") => ((23, 190, 207), "GD per step / GD++"),
        ("ok", "matches_loss_only") => ((255, 170, 60), "GD's loss or better, not identified"),
        ("ok", "mixed") => ((200, 200, 120), "seeds disagree"),
        ("ok", _) => ((214, 39, 40), "neither"),
        _ => ((150, 150, 150), "not finished"),
    }
}

/// A colour for a relative gap: white at 0, red above (worse than the reference), blue below, saturating at 30%.
fn gap_colour(gap: f64) -> Rgb {
    let t = (gap.abs() / 0.3).min(1.0);
    let fade = |c: u8| (255.0 - t * (255.0 - c as f64)).round() as u8;
    if gap >= 0.0 {
        (fade(214), fade(39), fade(40))
    } else {
        (fade(31), fade(119), fade(180))
    }
}

/// A heat map cell's colour and text for a cell's result (`None`: left blank).
type CellShade<'a> = dyn Fn(&CellResult) -> Option<(Rgb, String)> + 'a;

/// The heat maps of a sweep, each over (N / d, d) with one panel per variance ratio, depth and noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Map {
    /// The verdict (colour) and the loss gap to GD (text).
    Verdict,
    /// The loss gap to GD (K steps with one tuned rate at depth K).
    GapGd,
    /// The loss gap to preconditioned GD (depth 1 only).
    GapPgd,
}

impl Map {
    /// Every map.
    pub const ALL: [Map; 3] = [Map::Verdict, Map::GapGd, Map::GapPgd];

    /// Its file.
    pub fn file(self) -> &'static str {
        match self {
            Map::Verdict => "heatmap-verdict.png",
            Map::GapGd => "heatmap-gap-gd.png",
            Map::GapPgd => "heatmap-gap-pgd.png",
        }
    }

    /// Its caption.
    pub fn caption(self) -> &'static str {
        match self {
            Map::Verdict => "The verdict over d and N / d (colour) with the loss gap to GD (text), per depth and input anisotropy",
            Map::GapGd => "Loss gap to GD (K steps, one tuned rate) over d and N / d",
            Map::GapPgd => "Loss gap of the one-layer models to preconditioned GD over d and N / d",
        }
    }
}

/// Draws `map` of `results` into `path`; the preconditioned-GD map needs depth-1 cells (an error otherwise).
pub fn heatmap(map: Map, spec: &Spec, results: &[(Cell, Option<CellResult>)], path: &Path) -> Result<(), HarnessError> {
    let columns: Vec<String> = spec.n_over_d.iter().map(|r| format!("{r}")).collect();
    let rows: Vec<String> = spec.d.iter().map(|d| d.to_string()).collect();
    let mut groups: Vec<(f64, usize, f64)> = Vec::new();
    for (c, _) in results {
        if !groups.contains(&(c.variance_ratio, c.layers, c.noise)) && (map != Map::GapPgd || c.layers == 1) {
            groups.push((c.variance_ratio, c.layers, c.noise));
        }
    }
    if groups.is_empty() {
        return Err(HarnessError::Io("no cells for this map".into()));
    }
    let title = |what: &str, (ratio, k, noise): (f64, usize, f64)| {
        let noise = if spec.noise.len() > 1 { format!(", noise {noise}") } else { String::new() };
        format!("{what}: K = {k}, variance ratio {ratio}{noise}")
    };
    let panel = |what: &str, g: (f64, usize, f64), shade: &CellShade<'_>| HeatPanel {
        title: title(what, g),
        x_label: "N / d".into(),
        y_label: "d".into(),
        columns: columns.clone(),
        rows: rows.clone(),
        cells: results
            .iter()
            .filter(|(c, _)| (c.variance_ratio, c.layers, c.noise) == g)
            .filter_map(|(c, r)| {
                let x = spec.n_over_d.iter().position(|r| *r == c.n_over_d)?;
                let y = spec.d.iter().position(|d| *d == c.d)?;
                let (colour, text) = shade(r.as_ref()?)?;
                Some((x, y, colour, text))
            })
            .collect(),
    };
    let gap = |f: fn(&CellResult) -> Option<f64>| {
        move |r: &CellResult| r.gap(f(r)).map(|v| (gap_colour(v), format!("{:+.1}%", 100.0 * v)))
    };
    let key = vec![(gap_colour(0.3), "loss above the reference".to_string()), (gap_colour(-0.3), "below".to_string())];
    let (panels, legend): (Vec<HeatPanel>, Vec<(Rgb, String)>) = match map {
        Map::Verdict => {
            let mut seen = BTreeSet::new();
            let mut legend = Vec::new();
            for r in results.iter().filter_map(|(_, r)| r.as_ref()) {
                let (colour, word) = verdict_colour(&r.outcome, &r.status);
                if seen.insert(word) {
                    legend.push((colour, word.to_string()));
                }
            }
            let shade = |r: &CellResult| {
                let gap = r.gap(r.gd_loss).map_or(String::new(), |v| format!("{:+.0}%", 100.0 * v));
                Some((verdict_colour(&r.outcome, &r.status).0, gap))
            };
            (groups.iter().map(|&g| panel("verdict", g, &shade)).collect(), legend)
        }
        Map::GapGd => (groups.iter().map(|&g| panel("loss gap to GD", g, &gap(|r| r.gd_loss))).collect(), key),
        Map::GapPgd => {
            (groups.iter().map(|&g| panel("loss gap to preconditioned GD", g, &gap(|r| r.pgd_loss))).collect(), key)
        }
    };
    draw_heatmaps(path, &panels, &legend)
}
