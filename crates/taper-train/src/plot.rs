//! PNG charts with plotters: line charts in panels (loss and accuracy curves) and a contour
//! map with optimizer trajectories.
//!
//! The font (DejaVu Sans, Bitstream Vera licence, `assets/`) is compiled in, so charts render
//! on a fresh machine with no system fonts.

use std::path::Path;
use std::sync::OnceLock;

use image::ImageEncoder;
use plotters::coord::types::RangedCoordf64;
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
    /// Plot log10(y) instead of y.
    pub log_y: bool,
    /// The lines.
    pub series: Vec<Series>,
}

const COLORS: [RGBColor; 12] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 0),
    RGBColor(255, 215, 0),
];

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

/// Draws one named line in `color`, with a legend entry `legend_width` pixels thick.
fn draw_line(
    chart: &mut Chart<'_, '_>,
    pts: Vec<(f64, f64)>,
    name: &str,
    color: RGBColor,
    legend_width: u32,
) -> std::result::Result<(), String> {
    chart
        .draw_series(LineSeries::new(pts, color.stroke_width(2)))
        .map_err(|x| x.to_string())?
        .label(name)
        .legend(move |(x, y)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(legend_width))
        });
    Ok(())
}

/// Draws the legend box, at `position` or plotters' default place.
fn draw_legend<'b>(
    chart: &mut Chart<'b, 'b>,
    position: Option<SeriesLabelPosition>,
) -> std::result::Result<(), String> {
    let mut labels = chart.configure_series_labels();
    if let Some(p) = position {
        labels.position(p);
    }
    labels
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|x| x.to_string())
}

/// Draws panels side by side into a PNG of `width` × `height` pixels.
pub fn plot_panels(
    path: impl AsRef<Path>,
    width: u32,
    height: u32,
    panels: &[Panel],
) -> Result<()> {
    let path = path.as_ref();
    ensure_font()?;
    let e = plot_err(path);
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let areas = root.split_evenly((1, panels.len().max(1)));
        for (area, panel) in areas.iter().zip(panels) {
            let tf = |y: f64| {
                if panel.log_y {
                    y.max(1e-300).log10()
                } else {
                    y
                }
            };
            let ((x0, x1), (y0, y1)) = bounds(
                panel
                    .series
                    .iter()
                    .flat_map(|s| s.points.iter().map(|&(x, y)| (x, tf(y)))),
            );
            let mut chart = ChartBuilder::on(area)
                .caption(&panel.title, ("sans-serif", 20))
                .margin(10)
                .x_label_area_size(35)
                .y_label_area_size(55)
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(|x| e(x.to_string()))?;
            let y_label = if panel.log_y {
                format!("log10 {}", panel.y_label)
            } else {
                panel.y_label.clone()
            };
            chart
                .configure_mesh()
                .x_desc(panel.x_label.as_str())
                .y_desc(y_label)
                .label_style(("sans-serif", 13))
                .draw()
                .map_err(|x| e(x.to_string()))?;
            for (i, s) in panel.series.iter().enumerate() {
                let color = COLORS[i % COLORS.len()];
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .map(|&(x, y)| (x, tf(y)))
                    .filter(|(x, y)| x.is_finite() && y.is_finite())
                    .collect();
                draw_line(&mut chart, pts, &s.name, color, 2).map_err(&e)?;
            }
            if !panel.series.is_empty() {
                draw_legend(&mut chart, None).map_err(&e)?;
            }
        }
        root.present().map_err(|x| e(x.to_string()))?;
    }
    write_png(path, &pixels, (width, height))
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

/// A contour map of `f` over the box (colour by log of f above its minimum) with `paths`
/// drawn on top: optimizer trajectories on Rosenbrock or Beale.
pub fn contour_with_paths(
    path: impl AsRef<Path>,
    title: &str,
    f: impl Fn(f64, f64) -> f64,
    x: (f64, f64),
    y: (f64, f64),
    paths: &[Series],
) -> Result<()> {
    let path = path.as_ref();
    ensure_font()?;
    let e = plot_err(path);
    let (width, height) = (900u32, 700u32);
    let mut pixels = vec![0u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(x.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)
            .map_err(|x| e(x.to_string()))?;
        chart
            .configure_mesh()
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(|x| e(x.to_string()))?;
        const N: usize = 150;
        let (dx, dy) = ((x.1 - x.0) / N as f64, (y.1 - y.0) / N as f64);
        let mut grid = Vec::with_capacity(N * N);
        for i in 0..N {
            for j in 0..N {
                let (cx, cy) = (x.0 + (i as f64 + 0.5) * dx, y.0 + (j as f64 + 0.5) * dy);
                grid.push((i, j, f(cx, cy)));
            }
        }
        let lo = grid.iter().map(|g| g.2).fold(f64::INFINITY, f64::min);
        let logs: Vec<f64> = grid.iter().map(|g| (g.2 - lo + 1e-3).ln()).collect();
        let (lmin, lmax) = logs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        chart
            .draw_series(grid.iter().zip(&logs).map(|(&(i, j, _), &l)| {
                let t = ((l - lmin) / (lmax - lmin + 1e-12)).clamp(0.0, 1.0);
                // Banded shading makes the level sets visible.
                let band = ((t * 14.0).floor() / 14.0) * 0.85 + 0.1;
                let c = (255.0 * band) as u8;
                let (x0, y0) = (x.0 + i as f64 * dx, y.0 + j as f64 * dy);
                Rectangle::new(
                    [(x0, y0), (x0 + dx, y0 + dy)],
                    RGBColor(c, c, 255u8.saturating_sub(c / 3)).filled(),
                )
            }))
            .map_err(|x| e(x.to_string()))?;
        for (k, s) in paths.iter().enumerate() {
            let color = COLORS[k % COLORS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .copied()
                .filter(|(a, b)| a.is_finite() && b.is_finite())
                .map(|(a, b)| (a.clamp(x.0, x.1), b.clamp(y.0, y.1)))
                .collect();
            draw_line(&mut chart, pts, &s.name, color, 3).map_err(&e)?;
        }
        draw_legend(&mut chart, Some(SeriesLabelPosition::LowerLeft)).map_err(&e)?;
        root.present().map_err(|x| e(x.to_string()))?;
    }
    write_png(path, &pixels, (width, height))
}
