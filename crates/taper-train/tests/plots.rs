//! Plots checked against their pixels, not just written: each panel shows the expected
//! number of distinct series colours inside its data area, every series has a distinct
//! (colour, dash) style, and the legend sits beside the data, never on it.

use taper_train::plot::{
    confusion_heatmap, contour_panels, plot_panels, series_style, Figure, Panel, Rect, Series,
};
use taper_train::ConfusionMatrix;

fn out(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("taper-plot-{name}-{}.png", std::process::id()))
}

fn pixels(path: &std::path::Path) -> image::RgbImage {
    image::open(path).unwrap().to_rgb8()
}

/// Distinct colours of `styles` found in `rect` of the image.
fn colours_in(img: &image::RgbImage, rect: Rect, styles: &[(image::Rgb<u8>, ())]) -> usize {
    let (l, t, r, b) = rect;
    styles
        .iter()
        .filter(|(c, _)| {
            (t.max(0)..b.min(img.height() as i32)).any(|y| {
                (l.max(0)..r.min(img.width() as i32))
                    .any(|x| img.get_pixel(x as u32, y as u32) == c)
            })
        })
        .count()
}

fn overlap(a: Rect, b: Rect) -> bool {
    a.0 < b.2 && b.0 < a.2 && a.1 < b.3 && b.1 < a.3
}

fn distinct_colours(fig: &Figure, panel: usize) -> Vec<(image::Rgb<u8>, ())> {
    let mut v: Vec<(image::Rgb<u8>, ())> = fig.panels[panel]
        .styles
        .iter()
        .map(|(c, _)| (image::Rgb([c.0, c.1, c.2]), ()))
        .collect();
    v.sort_by_key(|(c, _)| c.0);
    v.dedup();
    v
}

#[test]
fn panels_show_every_series_apart_with_the_legend_beside_the_data() {
    let lines = |n: usize| -> Vec<Series> {
        (0..n)
            .map(|k| Series {
                name: format!("series {k}"),
                points: (0..=50)
                    .map(|i| (i as f64, 10f64.powf(-(k as f64 + 1.0) * i as f64 / 50.0)))
                    .collect(),
            })
            .collect()
    };
    let path = out("panels");
    let panels = [
        Panel {
            series: lines(3),
            ..Panel::new("three", "epoch", "loss")
                .integer_x()
                .mark_x(20.0, "best")
        },
        Panel {
            series: lines(25),
            ..Panel::new("twenty-five", "step", "loss").log_y()
        },
    ];
    let fig = plot_panels(&path, 1600, 600, &panels).unwrap();
    let img = pixels(&path);
    assert_eq!(fig.size, (img.width(), img.height()));
    for (k, n) in [(0, 3usize), (1, 25)] {
        let p = &fig.panels[k];
        assert_eq!(p.styles.len(), n);
        let mut styles = p.styles.clone();
        styles.sort_by_key(|(c, d)| (c.0, c.1, c.2, format!("{d:?}")));
        styles.dedup();
        assert_eq!(styles.len(), n, "panel {k}: every series has its own style");
        let colours = distinct_colours(&fig, k);
        assert_eq!(colours.len(), n.min(10));
        assert_eq!(
            colours_in(&img, p.plot, &colours),
            n.min(10),
            "panel {k}: each colour is drawn in the data area"
        );
        let legend = p.legend.expect("a legend");
        assert!(
            !overlap(legend, p.plot),
            "panel {k}: legend {legend:?} on data {:?}",
            p.plot
        );
        assert_eq!(
            colours_in(&img, legend, &colours),
            n.min(10),
            "panel {k}: the legend shows each colour"
        );
    }
    assert!(!overlap(fig.panels[0].plot, fig.panels[1].plot));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn thirty_styles_are_distinct() {
    let mut s: Vec<String> = (0..30).map(|i| format!("{:?}", series_style(i))).collect();
    s.sort();
    s.dedup();
    assert_eq!(s.len(), 30);
}

#[test]
fn contour_small_multiples_get_one_panel_per_run_and_a_heatmap_draws() {
    let runs: Vec<Series> = (0..7)
        .map(|k| Series {
            name: format!("run {k}"),
            points: (0..40)
                .map(|i| {
                    let t = i as f64 / 39.0;
                    (-1.5 + 2.5 * t, 2.0 - (1.0 + 0.1 * k as f64) * t)
                })
                .collect(),
        })
        .collect();
    let path = out("contours");
    let f = |x: f64, y: f64| (1.0 - x).powi(2) + 100.0 * (y - x * x).powi(2);
    let fig = contour_panels(
        &path,
        "test",
        f,
        (-2.0, 2.0),
        (-1.0, 3.0),
        (1.0, 1.0),
        &runs,
        3,
    )
    .unwrap();
    let img = pixels(&path);
    assert_eq!(fig.panels.len(), 7);
    assert_eq!((img.width(), img.height()), (900, 3 * 260 + 40));
    for (k, p) in fig.panels.iter().enumerate() {
        assert!(p.legend.is_none());
        let c = distinct_colours(&fig, k);
        assert_eq!(colours_in(&img, p.plot, &c), 1, "panel {k} draws its run");
        for q in &fig.panels[k + 1..] {
            assert!(!overlap(p.plot, q.plot));
        }
    }
    let _ = std::fs::remove_file(&path);

    let logits = taper_tensor::Tensor::new(
        &[[2f32, 0.0, 0.0], [0.0, 2.0, 0.0], [2.0, 0.0, 0.0]],
        &taper_tensor::Device::Cpu,
    )
    .unwrap();
    let targets = taper_tensor::Tensor::new(&[0u32, 1, 2], &taper_tensor::Device::Cpu).unwrap();
    let mut m = ConfusionMatrix::new(3);
    m.update(&logits, &targets).unwrap();
    let path = out("confusion");
    let fig = confusion_heatmap(&path, "confusion", &m, 3).unwrap();
    let img = pixels(&path);
    // Full rows (recall 1) are the darkest blue: class 0 and 1's diagonal cells.
    let (l, t, r, b) = fig.panels[0].plot;
    let cell = |row: i32, col: i32| {
        let x = l + (2 * col + 1) * (r - l) / 6;
        let y = t + (2 * row + 1) * (b - t) / 6 + 8;
        *img.get_pixel(x as u32, y as u32)
    };
    assert_eq!(cell(0, 0), image::Rgb([0, 0, 255]));
    assert_eq!(cell(2, 1), image::Rgb([255, 255, 255]));
    let _ = std::fs::remove_file(&path);
}

/// Log axes are labelled 10ᵏ (or plain decimals between decades), every decade that has a
/// grid line; short ranges get 2× and 5× ticks too.
#[test]
fn log_axes_label_decades_as_powers_of_ten() {
    use taper_train::plot::{log_label, log_ticks};
    assert_eq!(log_ticks(0.003, 20.0), [0.01, 0.1, 1.0, 10.0]);
    let short = log_ticks(0.04, 2.5);
    assert_eq!(short.len(), 6, "{short:?}");
    for (v, want) in [
        (1e-3, "10⁻³"),
        (0.1, "10⁻¹"),
        (1.0, "1"),
        (10.0, "10"),
        (1e4, "10⁴"),
    ] {
        assert_eq!(log_label(v), want);
    }
    assert_eq!(log_label(0.2), "0.2");
    assert_eq!(log_label(50.0), "50");
}
