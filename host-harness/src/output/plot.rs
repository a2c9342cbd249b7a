//! Line charts as PNG: one or more panels side by side, each with labelled series, written once for every
//! experiment's pictures.
//!
//! Text needs a TrueType font: `DUALFORM_FONT` if set, else DejaVu Sans or Liberation Sans from the usual system
//! folders (Debian's `fonts-dejavu-core`). Without one, plotting returns an error and the run notes it.

use crate::HarnessError;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// One line of a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points `(x, y)`; non-finite points are left out.
    pub points: Vec<(f64, f64)>,
    /// Draw dashed (references) rather than solid (trained models).
    pub dashed: bool,
    /// Also mark each point.
    pub markers: bool,
    /// Draw the line (false: points only, for sparse reference figures).
    pub line: bool,
    /// Index into the palette (default: the series' position in its panel).
    pub color: Option<usize>,
}

impl Series {
    /// A solid line.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, dashed: false, markers: false, line: true, color: None }
    }

    /// A dashed line (a reference).
    pub fn dashed(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, dashed: true, markers: false, line: true, color: None }
    }

    /// Points only, no line (sparse reference figures).
    pub fn points(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Self { label: label.into(), points, dashed: false, markers: true, line: false, color: None }
    }

    /// In the palette's colour `index` (series that belong together, such as one model at two depths, share one).
    pub fn with_color(mut self, index: usize) -> Self {
        self.color = Some(index);
        self
    }

    /// With a marker on every point.
    pub fn with_markers(mut self) -> Self {
        self.markers = true;
        self
    }
}

/// One chart.
#[derive(Clone, Debug, PartialEq)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Logarithmic y axis.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

impl Panel {
    /// A panel with linear axes.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        Self { title: title.into(), x_label: x_label.into(), y_label: y_label.into(), log_y: false, series: vec![] }
    }

    /// With a logarithmic y axis.
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }

    /// Adds a series.
    pub fn with(mut self, s: Series) -> Self {
        self.series.push(s);
        self
    }
}

const FONT_PATHS: [&str; 4] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// Registers the plots' font once per process: `DUALFORM_FONT`, else the first of the usual system paths that loads;
/// an error naming what to install when none does.
pub fn register_font() -> Result<(), String> {
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

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(80, 80, 80),
];

/// Draws `panels` side by side into `path` (PNG, 500 x 460 pixels per panel).
pub fn draw(path: &Path, panels: &[Panel]) -> Result<(), HarnessError> {
    register_font().map_err(HarnessError::Io)?;
    if panels.is_empty() {
        return Err(HarnessError::Io("plot: no panels".into()));
    }
    let (w, h) = (500 * panels.len() as u32, 460);
    let mut rgb = vec![0u8; 3 * w as usize * h as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        for (area, panel) in root.split_evenly((1, panels.len())).iter().zip(panels) {
            draw_panel(area, panel)?;
        }
        root.present().map_err(draw_err)?;
    }
    write_png(path, &rgb, w, h)
}

/// Writes 8-bit RGB pixels as a PNG (fast compression, adaptive filtering).
fn write_png(path: &Path, rgb: &[u8], w: u32, h: u32) -> Result<(), HarnessError> {
    let io = |e: &dyn std::fmt::Display| HarnessError::Io(format!("plot {}: {e}", path.display()));
    let file = std::fs::File::create(path).map_err(|e| io(&e))?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    encoder.set_compression(png::Compression::Fast);
    encoder.set_filter(png::FilterType::Sub);
    encoder.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
    let mut writer = encoder.write_header().map_err(|e| io(&e))?;
    writer.write_image_data(rgb).map_err(|e| io(&e))?;
    writer.finish().map_err(|e| io(&e))
}

fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>, p: &Panel) -> Result<(), HarnessError> {
    let pts = || p.series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    let (mut x0, mut x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (x, _)| (a.min(*x), b.max(*x)));
    let (mut y0, mut y1) = pts()
        .filter(|(_, y)| !p.log_y || *y > 0.0)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), (_, y)| (a.min(*y), b.max(*y)));
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if !y0.is_finite() {
        (y0, y1) = (if p.log_y { 0.1 } else { 0.0 }, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    // A log axis only where the data span more than a factor of 20 (a narrower log axis gets no tick labels).
    let log_y = p.log_y && y0 > 0.0 && y1 / y0 > 20.0;
    let font = ("sans-serif", 18);
    let mut builder = ChartBuilder::on(area);
    builder.caption(&p.title, font).margin(12).x_label_area_size(36).y_label_area_size(64);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .light_line_style(TRANSPARENT)
                .bold_line_style(BLACK.mix(0.15))
                .x_desc(&p.x_label)
                .y_desc(&p.y_label)
                .x_label_formatter(&|v| tick(*v))
                .y_label_formatter(&|v| tick(*v))
                .draw()
                .map_err(draw_err)?;
            for (i, s) in p.series.iter().enumerate() {
                let color = COLORS[s.color.unwrap_or(i) % COLORS.len()];
                let style = color.stroke_width(if s.dashed { 1 } else { 2 });
                let data: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                    .collect();
                let anno = if !s.line {
                    chart
                        .draw_series(data.iter().map(|&(x, y)| Cross::new((x, y), 6, color.stroke_width(2))))
                        .map_err(draw_err)?
                } else if s.dashed {
                    chart.draw_series(DashedLineSeries::new(data.clone(), 6, 4, style)).map_err(draw_err)?
                } else {
                    chart.draw_series(LineSeries::new(data.clone(), style)).map_err(draw_err)?
                };
                anno.label(s.label.clone()).legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
                if s.markers && s.line {
                    chart
                        .draw_series(data.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))
                        .map_err(draw_err)?;
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(draw_err)?;
        }};
    }
    if log_y {
        let (lo, hi) = (y0 * 0.8, y1 * 1.25);
        finish!(builder.build_cartesian_2d(x0..x1, (lo..hi).log_scale()).map_err(draw_err)?);
    } else {
        let pad = (y1 - y0).abs().max(1e-9) * 0.05;
        finish!(builder.build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad)).map_err(draw_err)?);
    }
    Ok(())
}

/// A compact tick label: up to four significant decimals, no trailing zeros, scientific when tiny or huge.
pub fn tick(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    if v.abs() >= 1e5 || v.abs() < 1e-3 {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// An RGB colour.
pub type Rgb = (u8, u8, u8);

/// One heat map: a grid of labelled cells, each with a fill colour (RGB) and a short text.
#[derive(Clone, Debug, PartialEq)]
pub struct HeatPanel {
    /// Panel title.
    pub title: String,
    /// The x axis's name.
    pub x_label: String,
    /// The y axis's name.
    pub y_label: String,
    /// Column names, left to right.
    pub columns: Vec<String>,
    /// Row names, bottom to top.
    pub rows: Vec<String>,
    /// `(column, row, colour, text)`; a cell not listed stays white.
    pub cells: Vec<(usize, usize, Rgb, String)>,
}

/// Draws heat maps side by side into `path` (PNG, 420 x 420 pixels per panel), with a legend line of `(colour,
/// meaning)` pairs under them (none if empty).
pub fn draw_heatmaps(path: &Path, panels: &[HeatPanel], legend: &[(Rgb, String)]) -> Result<(), HarnessError> {
    register_font().map_err(HarnessError::Io)?;
    if panels.is_empty() {
        return Err(HarnessError::Io("plot: no panels".into()));
    }
    let legend_h = if legend.is_empty() { 0 } else { 36 };
    let (w, h) = (420 * panels.len() as u32, 420 + legend_h);
    let mut rgb = vec![0u8; 3 * w as usize * h as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let (top, bottom) = root.split_vertically(420);
        for (area, p) in top.split_evenly((1, panels.len())).iter().zip(panels) {
            let (nx, ny) = (p.columns.len().max(1) as i32, p.rows.len().max(1) as i32);
            let mut chart = ChartBuilder::on(area)
                .caption(&p.title, ("sans-serif", 17))
                .margin(10)
                .x_label_area_size(40)
                .y_label_area_size(50)
                // A segmented range covers its end too: 0..n - 1 gives the n cells.
                .build_cartesian_2d((0..nx - 1).into_segmented(), (0..ny - 1).into_segmented())
                .map_err(draw_err)?;
            let name = |names: &[String], v: &SegmentValue<i32>| match v {
                SegmentValue::CenterOf(i) => usize::try_from(*i).ok().and_then(|i| names.get(i).cloned()),
                _ => None,
            };
            chart
                .configure_mesh()
                .disable_mesh()
                .x_desc(&p.x_label)
                .y_desc(&p.y_label)
                .x_label_formatter(&|v| name(&p.columns, v).unwrap_or_default())
                .y_label_formatter(&|v| name(&p.rows, v).unwrap_or_default())
                .draw()
                .map_err(draw_err)?;
            for (cx, cy, (r, g, b), text) in &p.cells {
                let (x, y) = (*cx as i32, *cy as i32);
                let corners = [
                    (SegmentValue::Exact(x), SegmentValue::Exact(y)),
                    (SegmentValue::Exact(x + 1), SegmentValue::Exact(y + 1)),
                ];
                chart
                    .draw_series([Rectangle::new(corners.clone(), RGBColor(*r, *g, *b).filled())])
                    .map_err(draw_err)?;
                chart.draw_series([Rectangle::new(corners, WHITE.stroke_width(2))]).map_err(draw_err)?;
                let style = TextStyle::from(("sans-serif", 14).into_font()).pos(text_anchor_center());
                let centre = (SegmentValue::CenterOf(x), SegmentValue::CenterOf(y));
                chart.draw_series([Text::new(text.clone(), centre, style)]).map_err(draw_err)?;
            }
        }
        let mut x = 12;
        for ((r, g, b), meaning) in legend {
            bottom.draw(&Rectangle::new([(x, 10), (x + 16, 26)], RGBColor(*r, *g, *b).filled())).map_err(draw_err)?;
            bottom.draw(&Text::new(meaning.clone(), (x + 22, 11), ("sans-serif", 15))).map_err(draw_err)?;
            x += 30 + 8 * meaning.len() as i32;
        }
        root.present().map_err(draw_err)?;
    }
    write_png(path, &rgb, w, h)
}

fn text_anchor_center() -> plotters::style::text_anchor::Pos {
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    Pos::new(HPos::Center, VPos::Center)
}
