//! PNG charts with plotters: line charts in panels (loss, accuracy and learning-rate curves,
//! convergence), small-multiple contour maps with one optimizer trajectory each, and a
//! confusion-matrix heatmap.
//!
//! Every chart is laid out so it can be read at a glance: the legend sits in its own column
//! beside the data, never on it; series take one of 10 colours and one of 3 dash patterns
//! ([`series_style`]), so 30 lines stay distinguishable; log axes are real log axes; epoch
//! and step axes have whole-number ticks. Each drawing function returns the [`Figure`]
//! layout it drew (plot areas, legend areas, the styles used), which the tests check
//! against the pixels.
//!
//! The font (DejaVu Sans, Bitstream Vera licence, `assets/`) is compiled in, so charts render
//! on a fresh machine with no system fonts.

use std::path::Path;
use std::sync::OnceLock;

use image::ImageEncoder;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::{Error, Result};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font("sans-serif", FontStyle::Normal, FONT).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Plot {
            path: String::new(),
            reason: "the built-in font could not be loaded".into(),
        })
    }
}

/// A named line of (x, y) points.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub name: String,
    /// The points, in drawing order.
    pub points: Vec<(f64, f64)>,
}

impl Series {
    /// A series from y values at x = 1, 2, 3, ….
    pub fn from_values(name: impl Into<String>, ys: &[f64]) -> Self {
        Self {
            name: name.into(),
            points: ys
                .iter()
                .enumerate()
                .map(|(i, &y)| ((i + 1) as f64, y))
                .collect(),
        }
    }
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Title above the chart.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// A log y axis (ticks at the values themselves); non-positive values are left out.
    pub log_y: bool,
    /// Whole-number x ticks (epochs, steps).
    pub integer_x: bool,
    /// A vertical dashed marker line at x, with its label in the legend (e.g. the best
    /// epoch).
    pub mark_x: Option<(f64, String)>,
    /// The y range, when several panels must share one (small multiples); `None` fits the
    /// data.
    pub y_range: Option<(f64, f64)>,
    /// The lines.
    pub series: Vec<Series>,
}

impl Panel {
    /// A panel with no series, a linear y axis and real-valued x ticks.
    pub fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            log_y: false,
            integer_x: false,
            mark_x: None,
            y_range: None,
            series: Vec::new(),
        }
    }

    /// Adds a series.
    pub fn with(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// A log y axis.
    pub fn log_y(mut self) -> Self {
        self.log_y = true;
        self
    }

    /// Whole-number x ticks.
    pub fn integer_x(mut self) -> Self {
        self.integer_x = true;
        self
    }

    /// Marks x with a labelled vertical line.
    pub fn mark_x(mut self, x: f64, label: &str) -> Self {
        self.mark_x = Some((x, label.into()));
        self
    }
}

/// A line's dash pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dash {
    /// A solid line.
    Solid,
    /// Long dashes.
    Dashed,
    /// Short dots.
    Dotted,
}

/// The style of series `i`: colours cycle first (10 of them), then dash patterns, so
/// series 0–9 are solid, 10–19 dashed and 20–29 dotted, each in a different colour.
pub fn series_style(i: usize) -> (RGBColor, Dash) {
    let dash = match (i / COLORS.len()) % 3 {
        0 => Dash::Solid,
        1 => Dash::Dashed,
        _ => Dash::Dotted,
    };
    (COLORS[i % COLORS.len()], dash)
}

/// A rectangle in pixels: (left, top, right, bottom), right and bottom exclusive.
pub type Rect = (i32, i32, i32, i32);

/// Where one panel's parts were drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct PanelLayout {
    /// The data area (inside the axes).
    pub plot: Rect,
    /// The legend column, when the panel has a legend.
    pub legend: Option<Rect>,
    /// The style of each series, in order.
    pub styles: Vec<(RGBColor, Dash)>,
}

/// What a drawing function drew: the image size and each panel's layout.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// (width, height) in pixels.
    pub size: (u32, u32),
    /// Panels in drawing order.
    pub panels: Vec<PanelLayout>,
}

fn rect_of(area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>) -> Rect {
    let (x, y) = area.get_pixel_range();
    (x.start, y.start, x.end, y.end)
}

fn plot_rect(chart: &Chart<'_, '_>) -> Rect {
    let (x, y) = chart.plotting_area().get_pixel_range();
    (x.start, y.start, x.end, y.end)
}

/// Ten colours that stay apart (matplotlib's tab10, grey replaced by black).
const COLORS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(0, 0, 0),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Width of the legend column beside each panel's data.
const LEGEND_WIDTH: u32 = 190;

fn plot_err(path: &Path) -> impl Fn(String) -> Error + '_ {
    move |reason| Error::Plot {
        path: path.display().to_string(),
        reason,
    }
}

fn bounds(points: impl Iterator<Item = (f64, f64)>) -> ((f64, f64), (f64, f64)) {
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for (x, y) in points.filter(|(x, y)| x.is_finite() && y.is_finite()) {
        (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
    }
    if !x0.is_finite() {
        return ((0.0, 1.0), (0.0, 1.0));
    }
    let pad = |a: f64, b: f64| {
        if b - a < 1e-12 {
            (a - 0.5, b + 0.5)
        } else {
            (a, b + (b - a) * 0.02)
        }
    };
    (pad(x0, x1), pad(y0, y1))
}

/// The charts here: f64 on both axes, drawn into a PNG.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Draws a line in a series style.
fn draw_styled<Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    pts: Vec<(f64, f64)>,
    (color, dash): (RGBColor, Dash),
    width: u32,
) -> std::result::Result<(), String> {
    let style = color.stroke_width(width);
    let r = match dash {
        Dash::Solid => chart.draw_series(LineSeries::new(pts, style)).map(|_| ()),
        Dash::Dashed => chart
            .draw_series(DashedLineSeries::new(pts, 9, 5, style))
            .map(|_| ()),
        Dash::Dotted => chart
            .draw_series(DashedLineSeries::new(pts, 2, 4, style))
            .map(|_| ()),
    };
    r.map_err(|x| x.to_string())
}

/// Draws the legend of `styles`/`names` as a column in `area` (beside the data).
fn draw_legend_column(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    names: &[&str],
    styles: &[(RGBColor, Dash)],
) -> std::result::Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let row = 18i32;
    let top = 40i32;
    // Small legends sit near the top; long ones use the whole column.
    let fits = ((h as i32 - top) / row).max(1) as usize;
    let font = ("sans-serif", if names.len() > fits { 11 } else { 13 });
    let row = if names.len() > fits {
        ((h as i32 - top) / names.len().max(1) as i32).max(9)
    } else {
        row
    };
    for (k, (name, &(color, dash))) in names.iter().zip(styles).enumerate() {
        let y = top + k as i32 * row;
        if y > h as i32 - 4 {
            break;
        }
        let style = color.stroke_width(3);
        let seg = vec![(6, y), (34, y)];
        match dash {
            Dash::Solid => area.draw(&PathElement::new(seg, style)),
            Dash::Dashed => area.draw(&DashedPathElement::new(seg, 7, 4, style)),
            Dash::Dotted => area.draw(&DashedPathElement::new(seg, 2, 4, style)),
        }
        .map_err(|x| x.to_string())?;
        let max_chars = ((w as i32 - 42) / 7).max(4) as usize;
        let label: String = if name.chars().count() > max_chars {
            name.chars().take(max_chars - 1).chain(['…']).collect()
        } else {
            name.to_string()
        };
        area.draw(&Text::new(label, (40, y - 7), font))
            .map_err(|x| x.to_string())?;
    }
    Ok(())
}

/// Draws panels side by side into a PNG of `width` × `height` pixels, each with its legend
/// in a column to the right of its data.
pub fn plot_panels(
    path: impl AsRef<Path>,
    width: u32,
    height: u32,
    panels: &[Panel],
) -> Result<Figure> {
    plot_grid(path, width, height, panels.len().max(1), panels)
}

/// Draws panels as small multiples, `cols` a row (row by row), into a PNG of `width` ×
/// `height` pixels, each with its legend in a column to the right of its data: one family
/// of curves per panel instead of every curve on one axis.
pub fn plot_grid(
    path: impl AsRef<Path>,
    width: u32,
    height: u32,
    cols: usize,
    panels: &[Panel],
) -> Result<Figure> {
    let path = path.as_ref();
    let cols = cols.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(cols).max(1);
    ensure_font()?;
    let e = plot_err(path);
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    let mut layouts = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let areas = root.split_evenly((rows, cols));
        for (area, panel) in areas.iter().zip(panels) {
            let (aw, _) = area.dim_in_pixel();
            let with_legend = !panel.series.is_empty() && aw > 2 * LEGEND_WIDTH;
            let (data_area, legend_area) = if with_legend {
                let (l, r) = area.split_horizontally(aw - LEGEND_WIDTH);
                (l, Some(r))
            } else {
                (area.clone(), None)
            };
            let layout = draw_panel(&data_area, panel).map_err(&e)?;
            let legend = match &legend_area {
                Some(la) => {
                    let mut names: Vec<&str> =
                        panel.series.iter().map(|s| s.name.as_str()).collect();
                    let mut styles = layout.1.clone();
                    if let Some((_, label)) = &panel.mark_x {
                        names.push(label);
                        styles.push((BLACK, Dash::Dashed));
                    }
                    draw_legend_column(la, &names, &styles).map_err(&e)?;
                    Some(rect_of(la))
                }
                None => None,
            };
            layouts.push(PanelLayout {
                plot: layout.0,
                legend,
                styles: layout.1,
            });
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    write_png(path, &pixels, (width, height))?;
    Ok(Figure {
        size: (width, height),
        panels: layouts,
    })
}

/// One panel's axes, lines and marker; returns its data rectangle and the series styles.
fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    panel: &Panel,
) -> std::result::Result<(Rect, Vec<(RGBColor, Dash)>), String> {
    let usable = |y: f64| !panel.log_y || y > 0.0;
    let ((x0, x1), (mut y0, mut y1)) = bounds(
        panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied().filter(|&(_, y)| usable(y))),
    );
    if let Some((lo, hi)) = panel.y_range {
        (y0, y1) = if panel.log_y {
            (lo, hi)
        } else {
            let pad = 0.02 * (hi - lo).abs().max(f64::MIN_POSITIVE);
            (lo - pad, hi + pad)
        };
    }
    let styles: Vec<(RGBColor, Dash)> = (0..panel.series.len()).map(series_style).collect();
    let mut builder = ChartBuilder::on(area);
    builder
        .caption(&panel.title, ("sans-serif", 20))
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(65);
    let (x0, x1) = if panel.integer_x {
        // Whole-number ends, without the 2% padding (an epoch axis ends at the last epoch).
        let xs = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.0))
            .filter(|x| x.is_finite());
        let (lo, hi) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        if lo.is_finite() {
            (lo.floor(), hi.ceil().max(lo.floor() + 1.0))
        } else {
            (x0, x1)
        }
    } else {
        (x0, x1)
    };
    let x_ticks = if panel.integer_x {
        ((x1 - x0) as usize + 1).clamp(2, 11)
    } else {
        8
    };
    let x_fmt = |v: &f64| {
        if panel.integer_x {
            format!("{}", v.round() as i64)
        } else {
            format!("{v}")
        }
    };
    if panel.log_y {
        if y0 <= 0.0 {
            y0 = 1e-12;
        }
        if y1 <= y0 {
            y1 = y0 * 10.0;
        }
        let mut chart = builder
            .build_cartesian_2d(
                x0..x1,
                (y0..y1).log_scale().with_key_points(log_ticks(y0, y1)),
            )
            .map_err(|x| x.to_string())?;
        chart
            .configure_mesh()
            .x_desc(panel.x_label.as_str())
            .y_desc(panel.y_label.as_str())
            .x_labels(x_ticks)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&|v| log_label(*v))
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|x| x.to_string())?;
        draw_contents(&mut chart, panel, &styles, (y0, y1))?;
        let (x, y) = chart.plotting_area().get_pixel_range();
        return Ok(((x.start, y.start, x.end, y.end), styles));
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(|x| x.to_string())?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .x_labels(x_ticks)
        .x_label_formatter(&x_fmt)
        .label_style(("sans-serif", 13))
        .draw()
        .map_err(|x| x.to_string())?;
    draw_contents(&mut chart, panel, &styles, (y0, y1))?;
    Ok((plot_rect(&chart), styles))
}

/// The ticks of a log axis over [lo, hi]: every decade 10ᵏ inside it, and 2·10ᵏ and
/// 5·10ᵏ too when it spans fewer than three decades, so that every labelled value is one a
/// reader names at a glance.
pub fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let (a, b) = (lo.log10().floor() as i32, hi.log10().ceil() as i32);
    let steps: &[f64] = if (hi / lo).log10() < 3.0 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    (a..=b)
        .flat_map(|k| steps.iter().map(move |m| m * 10f64.powi(k)))
        .filter(|&v| v >= lo * (1.0 - 1e-9) && v <= hi * (1.0 + 1e-9))
        .collect()
}

/// A log axis label: 10ᵏ with a superscript exponent for a power of ten (`10⁻³`, `1`, `10`),
/// otherwise a plain decimal (`0.2`, `50`).
pub fn log_label(v: f64) -> String {
    let k = v.log10().round();
    if ((v / 10f64.powf(k)) - 1.0).abs() < 1e-9 {
        let k = k as i32;
        return match k {
            0 => "1".to_string(),
            1 => "10".to_string(),
            _ => {
                let sup: String = k
                    .to_string()
                    .chars()
                    .map(|c| match c {
                        '-' => '⁻',
                        d => ['⁰', '¹', '²', '³', '⁴', '⁵', '⁶', '⁷', '⁸', '⁹']
                            [d as usize - '0' as usize],
                    })
                    .collect();
                format!("10{sup}")
            }
        };
    }
    let s = format!("{v:.6}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A panel's lines (points a log axis cannot show left out) and its marker, on either kind
/// of y axis.
fn draw_contents<Y: Ranged<ValueType = f64>>(
    chart: &mut ChartContext<'_, BitMapBackend<'_>, Cartesian2d<RangedCoordf64, Y>>,
    panel: &Panel,
    styles: &[(RGBColor, Dash)],
    (y0, y1): (f64, f64),
) -> std::result::Result<(), String> {
    for (s, &st) in panel.series.iter().zip(styles) {
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|&(x, y)| x.is_finite() && y.is_finite() && (!panel.log_y || y > 0.0))
            .collect();
        draw_styled(chart, pts, st, 2)?;
    }
    if let Some((mx, _)) = &panel.mark_x {
        chart
            .draw_series(DashedLineSeries::new(
                vec![(*mx, y0), (*mx, y1)],
                6,
                4,
                BLACK.stroke_width(1),
            ))
            .map_err(|x| x.to_string())?;
    }
    Ok(())
}

/// Encodes RGB pixels as PNG and writes them atomically (a kill never leaves half a PNG).
fn write_png(path: &Path, pixels: &[u8], (width, height): (u32, u32)) -> Result<()> {
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(pixels, width, height, image::ColorType::Rgb8)
        .map_err(|x| plot_err(path)(x.to_string()))?;
    taper_tensor::write_atomic(path, &png)?;
    Ok(())
}

/// Small multiples of a 2-D function: one panel per trajectory in `runs` (titled with its
/// name), `cols` panels a row, each over the same filled contour map of `f` with
/// log-spaced levels (one band per half decade of f above its minimum on the box), the
/// start (green circle), the minimum `minimum` (black cross) and the final point (red
/// square) marked. Points outside the box are clamped to its edge.
#[allow(clippy::too_many_arguments)]
pub fn contour_panels(
    path: impl AsRef<Path>,
    title: &str,
    f: impl Fn(f64, f64) -> f64,
    x: (f64, f64),
    y: (f64, f64),
    minimum: (f64, f64),
    runs: &[Series],
    cols: usize,
) -> Result<Figure> {
    let path = path.as_ref();
    ensure_font()?;
    let e = plot_err(path);
    let cols = cols.clamp(1, runs.len().max(1));
    let rows = runs.len().div_ceil(cols).max(1);
    let (pw, ph) = (300u32, 260u32);
    let (width, height) = (pw * cols as u32, ph * rows as u32 + 40);
    // The shading once: a band index per cell, from log10 of f above its minimum.
    const N: usize = 90;
    let (dx, dy) = ((x.1 - x.0) / N as f64, (y.1 - y.0) / N as f64);
    let values: Vec<f64> = (0..N * N)
        .map(|k| {
            let (i, j) = (k / N, k % N);
            f(x.0 + (i as f64 + 0.5) * dx, y.0 + (j as f64 + 0.5) * dy)
        })
        .collect();
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let levels: Vec<f64> = values
        .iter()
        .map(|v| (2.0 * (v - lo + 1e-6).log10()).floor())
        .collect();
    let (lmin, lmax) = levels
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    let shade = |l: f64| {
        let t = ((l - lmin) / (lmax - lmin).max(1.0)).clamp(0.0, 1.0);
        // Light at the top of the range, deep blue in the valley.
        let c = (150.0 + 105.0 * t) as u8;
        RGBColor(c, c, 255)
    };
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    let mut layouts = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let (head, body) = root.split_vertically(40);
        head.titled(title, ("sans-serif", 22))
            .map_err(|x| e(x.to_string()))?;
        let areas = body.split_evenly((rows, cols));
        for (k, (area, run)) in areas.iter().zip(runs).enumerate() {
            let mut chart = ChartBuilder::on(area)
                .caption(&run.name, ("sans-serif", 15))
                .margin(6)
                .x_label_area_size(22)
                .y_label_area_size(30)
                .build_cartesian_2d(x.0..x.1, y.0..y.1)
                .map_err(|x| e(x.to_string()))?;
            chart
                .configure_mesh()
                .disable_mesh()
                .x_labels(5)
                .y_labels(5)
                .label_style(("sans-serif", 10))
                .draw()
                .map_err(|x| e(x.to_string()))?;
            chart
                .draw_series(levels.iter().enumerate().map(|(c, &l)| {
                    let (i, j) = (c / N, c % N);
                    let (cx, cy) = (x.0 + i as f64 * dx, y.0 + j as f64 * dy);
                    Rectangle::new([(cx, cy), (cx + dx, cy + dy)], shade(l).filled())
                }))
                .map_err(|x| e(x.to_string()))?;
            let pts: Vec<(f64, f64)> = run
                .points
                .iter()
                .copied()
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .map(|(a, b)| (a.clamp(x.0, x.1), b.clamp(y.0, y.1)))
                .collect();
            let style = series_style(k);
            draw_styled(&mut chart, pts.clone(), (style.0, Dash::Solid), 2).map_err(&e)?;
            if let (Some(&first), Some(&last)) = (pts.first(), pts.last()) {
                chart
                    .draw_series([Circle::new(first, 5, RGBColor(0, 150, 0).filled())])
                    .map_err(|x| e(x.to_string()))?;
                chart
                    .draw_series([Rectangle::new(
                        [
                            (last.0 - 0.012 * (x.1 - x.0), last.1 - 0.012 * (y.1 - y.0)),
                            (last.0 + 0.012 * (x.1 - x.0), last.1 + 0.012 * (y.1 - y.0)),
                        ],
                        RED.filled(),
                    )])
                    .map_err(|x| e(x.to_string()))?;
            }
            chart
                .draw_series([Cross::new(minimum, 6, BLACK.stroke_width(2))])
                .map_err(|x| e(x.to_string()))?;
            layouts.push(PanelLayout {
                plot: plot_rect(&chart),
                legend: None,
                styles: vec![(style.0, Dash::Solid)],
            });
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    write_png(path, &pixels, (width, height))?;
    Ok(Figure {
        size: (width, height),
        panels: layouts,
    })
}

/// A confusion-matrix heatmap: rows are the true class, columns the predicted one, each
/// cell shaded by the fraction of its row (recall on the diagonal) and labelled with its
/// count.
pub fn confusion_heatmap(
    path: impl AsRef<Path>,
    title: &str,
    matrix: &crate::ConfusionMatrix,
    classes: usize,
) -> Result<Figure> {
    let path = path.as_ref();
    ensure_font()?;
    let e = plot_err(path);
    let (width, height) = (640u32, 600u32);
    let n = classes.max(1);
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    let plot;
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0.0..n as f64, n as f64..0.0)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted class")
            .y_desc("true class")
            .x_labels(0)
            .y_labels(0)
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        for t in 0..n {
            let row: u64 = (0..n).map(|p| matrix.get(t, p)).sum();
            for p in 0..n {
                let count = matrix.get(t, p);
                let frac = if row > 0 {
                    count as f64 / row as f64
                } else {
                    0.0
                };
                let c = (255.0 * (1.0 - frac)) as u8;
                let cell = RGBColor(c, c, 255);
                let (x0, y0) = (p as f64, t as f64);
                chart
                    .draw_series([Rectangle::new(
                        [(x0, y0), (x0 + 1.0, y0 + 1.0)],
                        cell.filled(),
                    )])
                    .map_err(|x| e(x.to_string()))?;
                if count > 0 {
                    let ink = if frac > 0.5 { WHITE } else { BLACK };
                    chart
                        .draw_series([Text::new(
                            count.to_string(),
                            (x0 + 0.3, y0 + 0.35),
                            ("sans-serif", 12).into_font().color(&ink),
                        )])
                        .map_err(|x| e(x.to_string()))?;
                }
            }
        }
        // Class numbers at the cells' centres, beside the axes.
        for c in 0..n {
            let (px, _) = chart.backend_coord(&(c as f64 + 0.5, n as f64));
            let (_, py) = chart.backend_coord(&(0.0, c as f64 + 0.5));
            let (left, _, _, bottom) = plot_rect(&chart);
            root.draw(&Text::new(
                c.to_string(),
                (px - 4, bottom + 6),
                ("sans-serif", 13),
            ))
            .map_err(|x| e(x.to_string()))?;
            root.draw(&Text::new(
                c.to_string(),
                (left - 18, py - 7),
                ("sans-serif", 13),
            ))
            .map_err(|x| e(x.to_string()))?;
        }
        plot = plot_rect(&chart);
        root.present().map_err(|x| e(x.to_string()))?;
    }
    write_png(path, &pixels, (width, height))?;
    Ok(Figure {
        size: (width, height),
        panels: vec![PanelLayout {
            plot,
            legend: None,
            styles: Vec::new(),
        }],
    })
}
