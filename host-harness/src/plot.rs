//! Training curves as a PNG in the style of the reference figure: losses of the trained model and of GD, the
//! cosine between their sensitivities, and the mean prediction difference, over training steps.
//!
//! Text needs a TrueType font: `DUALFORM_FONT` if set, else DejaVu Sans or Liberation Sans from the usual system
//! folders (Debian's `fonts-dejavu-core`). Without one, plotting returns an error and the run notes it.

use crate::HarnessError;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One logged point of a training run.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CurvePoint {
    /// Training step (1-based).
    pub step: u64,
    /// Mean loss of that step's training batch.
    pub train_loss: f64,
    /// Loss of the model on the probe tasks.
    pub probe_loss: f64,
    /// Loss of the tuned GD step on the probe tasks.
    pub gd_probe_loss: f64,
    /// Model cos against GD on the probe tasks.
    pub model_cos: f64,
    /// Preds diff against GD on the probe tasks.
    pub preds_diff: f64,
}

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

fn register_font() -> Result<(), String> {
    static FONT: OnceLock<Result<(), String>> = OnceLock::new();
    FONT.get_or_init(|| {
        let candidates = std::env::var("DUALFORM_FONT").into_iter().chain(FONT_PATHS.iter().map(|s| s.to_string()));
        for path in candidates {
            if let Ok(bytes) = std::fs::read(&path) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return Ok(());
                }
            }
        }
        Err("no TrueType font found for the plot (install fonts-dejavu-core or set DUALFORM_FONT)".to_string())
    })
    .clone()
}

fn draw_err<E: std::fmt::Debug>(e: E) -> HarnessError {
    HarnessError::Io(format!("plot: {e:?}"))
}

/// Draws the three panels into `path` (PNG, 1500 x 460).
pub fn curves_png(points: &[CurvePoint], zero_loss: f64, path: &Path) -> Result<(), HarnessError> {
    register_font().map_err(HarnessError::Io)?;
    if points.is_empty() {
        return Err(HarnessError::Io("plot: no curve points".into()));
    }
    let root = BitMapBackend::new(path, (1500, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let panels = root.split_evenly((1, 3));
    let last = points.last().map(|p| p.step).unwrap_or(1).max(1);
    let steps = 0u64..last;
    let font = ("sans-serif", 18);

    // Losses.
    let top = points.iter().map(|p| p.probe_loss.max(p.gd_probe_loss)).fold(zero_loss, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("Loss", font)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(steps.clone(), 0.0..top)
        .map_err(draw_err)?;
    chart.configure_mesh().x_desc("training step").y_desc("loss").draw().map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.step, p.probe_loss)), BLUE.stroke_width(2)))
        .map_err(draw_err)?
        .label("trained LSA")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLUE.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.step, p.gd_probe_loss)), RED.stroke_width(2)))
        .map_err(draw_err)?
        .label("one step of GD")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], RED.stroke_width(2)));
    chart
        .draw_series(LineSeries::new([(0, zero_loss), (last, zero_loss)], BLACK.mix(0.4)))
        .map_err(draw_err)?
        .label("predict 0")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 18, y)], BLACK.mix(0.4)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(draw_err)?;

    // Model cos.
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("Model cos (trained vs GD)", font)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(steps.clone(), 0.0..1.02)
        .map_err(draw_err)?;
    chart.configure_mesh().x_desc("training step").draw().map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.step, p.model_cos)), BLUE.stroke_width(2)))
        .map_err(draw_err)?;

    // Preds diff.
    let top = points.iter().map(|p| p.preds_diff).fold(1e-6, f64::max) * 1.05;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption("Preds diff (trained vs GD)", font)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(steps, 0.0..top)
        .map_err(draw_err)?;
    chart.configure_mesh().x_desc("training step").draw().map_err(draw_err)?;
    chart
        .draw_series(LineSeries::new(points.iter().map(|p| (p.step, p.preds_diff)), BLUE.stroke_width(2)))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}
