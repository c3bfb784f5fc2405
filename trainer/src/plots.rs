//! PNG plots for reports: line charts (training curves, GAN losses and D(x)/D(G(z)) scores),
//! ROC curves, reliability diagrams, confusion-matrix heatmaps, grouped bars and per-class
//! verdict bars.
//!
//! Text is drawn with a font compiled into the binary (a Latin subset of DejaVu Sans, see
//! `trainer/assets/fonts/`) through plotters' `ab_glyph` backend, so plots render the same on a
//! bare CI image: plotters' `ttf` feature would look fonts up through fontconfig and fail where
//! none are installed. Images are rendered in memory and written atomically.

use std::ops::Range;
use std::path::Path;
use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::error::{Error, Result};
use crate::metrics::{trapezoid_area, ReliabilityBin, RocPoint};

/// Width and height in pixels of every plot.
pub const PLOT_SIZE: (u32, u32) = (800, 600);

/// The embedded font (license in `trainer/assets/fonts/LICENSE`).
static FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSans-subset.ttf");
const FAMILY: &str = "sans-serif";

/// Series colours: matplotlib's "tab10", distinguishable and familiar from papers.
const COLOURS: [RGBColor; 10] = [
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
];

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| {
        ok = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok();
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(
            "the embedded plot font does not parse".into(),
        ))
    }
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("cannot draw {}: {e}", path.display()))
}

/// The chart type every plot here draws on: f64 × f64 coordinates in a bitmap.
type Chart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A captioned chart over `x` × `y` with room for axis labels.
fn framed<'a, 'b>(
    root: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    path: &Path,
    title: &str,
    x: Range<f64>,
    y: Range<f64>,
) -> Result<Chart<'a, 'b>> {
    ChartBuilder::on(root)
        .caption(title, (FAMILY, 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(|e| plot_err(path, e))
}

/// The legend box, at `position`.
fn legend<'a, 'b: 'a>(
    chart: &mut Chart<'a, 'b>,
    path: &Path,
    position: SeriesLabelPosition,
) -> Result<()> {
    chart
        .configure_series_labels()
        .label_font((FAMILY, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .position(position)
        .draw()
        .map_err(|e| plot_err(path, e))
}

/// Renders with `draw` onto a white canvas of [`PLOT_SIZE`] and writes it as PNG, atomically.
fn render(
    path: &Path,
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    render_sized(path, PLOT_SIZE, draw)
}

/// [`render`] on a canvas of `(w, h)` pixels (for charts whose rows grow with the data).
fn render_sized(
    path: &Path,
    (w, h): (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<()>,
) -> Result<()> {
    register_font()?;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        draw(&root)?;
        root.present().map_err(|e| plot_err(path, e))?;
    }
    let img = image::RgbImage::from_raw(w, h, buf).expect("buffer matches size");
    let mut png = std::io::Cursor::new(Vec::new());
    img.write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| plot_err(path, e))?;
    crate::atomic::write_atomic(path, png.get_ref())
}

/// A range covering `values` with 5 % headroom (a unit range around a single value).
fn padded(values: impl Iterator<Item = f64>) -> Range<f64> {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-12 {
        return lo - 0.5..hi + 0.5;
    }
    let pad = (hi - lo) * 0.05;
    lo - pad..hi + pad
}

/// A line chart of named series of (x, y) points, each in its own colour with a legend; the
/// axes fit the data. Non-finite points are skipped. Reusable for any curve: training loss and
/// accuracy per epoch, GAN generator/discriminator losses and D(x) / D(G(z)) per step.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    let finite = |s: &[(f64, f64)]| -> Vec<(f64, f64)> {
        s.iter()
            .copied()
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect()
    };
    let x_range = padded(series.iter().flat_map(|(_, s)| s.iter().map(|p| p.0)));
    let y_range = padded(series.iter().flat_map(|(_, s)| s.iter().map(|p| p.1)));
    render(path, |root| {
        let mut chart = framed(root, path, title, x_range, y_range)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (i, (name, points)) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            chart
                .draw_series(LineSeries::new(finite(points), colour.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?
                .label(*name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
                });
        }
        legend(&mut chart, path, SeriesLabelPosition::UpperRight)
    })
}

/// Training curves: named series per epoch (e.g. "train loss", "val loss", "val accuracy").
pub fn training_curves(path: &Path, title: &str, series: &[(&str, Vec<(f64, f64)>)]) -> Result<()> {
    line_chart(path, title, "epoch", "value", series)
}

/// ROC curves (one per named set of points, e.g. per fold), each labelled with its AUC, over
/// the chance diagonal.
pub fn roc_plot(path: &Path, title: &str, curves: &[(&str, Vec<RocPoint>)]) -> Result<()> {
    render(path, |root| {
        let mut chart = framed(root, path, title, 0.0..1.0, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (1 - specificity)")
            .y_desc("true positive rate (sensitivity)")
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                RGBColor(160, 160, 160).stroke_width(1),
            ))
            .map_err(|e| plot_err(path, e))?
            .label("chance")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], RGBColor(160, 160, 160)));
        for (i, (name, points)) in curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.fpr.is_finite() && p.tpr.is_finite())
                .map(|p| (p.fpr, p.tpr))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, colour.stroke_width(2)))
                .map_err(|e| plot_err(path, e))?
                .label(format!("{name} (AUC {:.3})", trapezoid_area(points)))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 24, y)], colour.stroke_width(3))
                });
        }
        legend(&mut chart, path, SeriesLabelPosition::LowerRight)
    })
}

/// Reliability diagram: per bin, the observed positive rate as a bar over the bin and as a
/// point at the bin's mean predicted probability, over the diagonal of perfect calibration;
/// the legend gives the ECE.
/// Empty bins are left blank.
pub fn reliability_diagram(path: &Path, title: &str, bins: &[ReliabilityBin]) -> Result<()> {
    let n: usize = bins.iter().map(|b| b.count).sum();
    let ece: f64 = bins
        .iter()
        .filter(|b| b.count > 0)
        .map(|b| b.count as f64 / n.max(1) as f64 * (b.observed - b.mean_predicted).abs())
        .sum();
    render(path, |root| {
        let mut chart = framed(root, path, title, 0.0..1.0, 0.0..1.0)?;
        chart
            .configure_mesh()
            .x_desc("predicted probability")
            .y_desc("observed frequency")
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let bar = COLOURS[0];
        chart
            .draw_series(bins.iter().filter(|b| b.count > 0).map(|b| {
                Rectangle::new(
                    [(b.lower, 0.0), (b.upper, b.observed)],
                    bar.mix(0.6).filled(),
                )
            }))
            .map_err(|e| plot_err(path, e))?
            .label(format!("observed (n = {n}, ECE {ece:.3})"))
            .legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 18, y + 6)], bar.mix(0.6).filled())
            });
        // The reliability curve proper: (mean predicted, observed) per bin, on the diagonal when
        // calibrated; the bars show the same observed rate over the bin's whole width.
        let curve: Vec<(f64, f64)> = bins
            .iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.mean_predicted, b.observed))
            .collect();
        chart
            .draw_series(LineSeries::new(curve.clone(), COLOURS[1].stroke_width(2)))
            .map_err(|e| plot_err(path, e))?;
        chart
            .draw_series(
                curve
                    .into_iter()
                    .map(|p| Circle::new(p, 4, COLOURS[1].filled())),
            )
            .map_err(|e| plot_err(path, e))?
            .label("(mean predicted, observed) per bin")
            .legend(|(x, y)| Circle::new((x + 9, y), 4, COLOURS[1].filled()));
        chart
            .draw_series(LineSeries::new(
                vec![(0.0, 0.0), (1.0, 1.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(|e| plot_err(path, e))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], BLACK));
        legend(&mut chart, path, SeriesLabelPosition::UpperLeft)
    })
}

/// Confusion-matrix heatmap: rows are true labels, columns predictions, shade by the share of
/// the row (so a rare class's errors show as clearly as a common one's), counts written in.
pub fn confusion_heatmap(
    path: &Path,
    title: &str,
    labels: &[String],
    matrix: &[Vec<usize>],
) -> Result<()> {
    let k = labels.len();
    if k == 0 || matrix.len() != k || matrix.iter().any(|r| r.len() != k) {
        return Err(Error::Invalid(format!(
            "a {k}-label confusion matrix must be {k}x{k}"
        )));
    }
    render(path, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 26))
            .margin(20)
            .x_label_area_size(60)
            .y_label_area_size(130)
            // A discrete integer range is inclusive: 0..k-1 gives exactly k cells.
            .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())
            .map_err(|e| plot_err(path, e))?;
        let name = |v: &SegmentValue<usize>, flip: bool| match v {
            SegmentValue::CenterOf(i) if *i < k => {
                labels[if flip { k - 1 - i } else { *i }].clone()
            }
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("predicted")
            .y_desc("true")
            .x_labels(k)
            .y_labels(k)
            .x_label_formatter(&|v| name(v, false))
            .y_label_formatter(&|v| name(v, true))
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 18))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        for (t, row) in matrix.iter().enumerate() {
            let total = row.iter().sum::<usize>().max(1) as f64;
            // Row 0 at the top, as matrices are read.
            let y = k - 1 - t;
            for (p, &count) in row.iter().enumerate() {
                let share = count as f64 / total;
                let shade = RGBColor(
                    (255.0 - share * (255.0 - 31.0)) as u8,
                    (255.0 - share * (255.0 - 119.0)) as u8,
                    (255.0 - share * (255.0 - 180.0)) as u8,
                );
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [
                            (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                            (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                        ],
                        shade.filled(),
                    )))
                    .map_err(|e| plot_err(path, e))?;
                let ink = if share > 0.5 { WHITE } else { BLACK };
                let style = TextStyle::from((FAMILY, 22).into_font())
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                chart
                    .draw_series(std::iter::once(Text::new(
                        count.to_string(),
                        (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                        style,
                    )))
                    .map_err(|e| plot_err(path, e))?;
            }
        }
        Ok(())
    })
}

/// Grouped bars with error bars: for each metric (x groups), one bar per arm (`mean ± std`).
/// Used for the ablation's comparison of training-data variants.
pub fn grouped_bars(
    path: &Path,
    title: &str,
    metrics: &[&str],
    arms: &[(&str, Vec<(f64, f64)>)],
) -> Result<()> {
    if arms.iter().any(|(_, v)| v.len() != metrics.len()) {
        return Err(Error::Invalid(
            "every arm needs one (mean, std) per metric".into(),
        ));
    }
    let k = arms.len().max(1) as f64;
    render(path, |root| {
        let mut chart = framed(
            root,
            path,
            title,
            -0.5f64..metrics.len() as f64 - 0.5,
            0f64..1.05,
        )?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(metrics.len())
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < metrics.len() {
                    metrics[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("mean ± std over folds")
            .label_style((FAMILY, 16))
            .axis_desc_style((FAMILY, 18))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        let width = 0.8 / k;
        for (a, (name, values)) in arms.iter().enumerate() {
            let colour = COLOURS[a % COLOURS.len()];
            let x0 = |m: usize| m as f64 - 0.4 + a as f64 * width;
            chart
                .draw_series(values.iter().enumerate().map(|(m, (mean, _))| {
                    Rectangle::new(
                        [(x0(m), 0.0), (x0(m) + width * 0.9, mean.max(0.0))],
                        colour.filled(),
                    )
                }))
                .map_err(|e| plot_err(path, e))?
                .label(*name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled())
                });
            chart
                .draw_series(values.iter().enumerate().map(|(m, (mean, std))| {
                    let x = x0(m) + width * 0.45;
                    // One fold has no spread (std NaN): no error bar rather than a full-height one.
                    let std = if std.is_finite() { *std } else { 0.0 };
                    PathElement::new(
                        vec![(x, (mean - std).max(0.0)), (x, (mean + std).min(1.05))],
                        BLACK.stroke_width(2),
                    )
                }))
                .map_err(|e| plot_err(path, e))?;
        }
        legend(&mut chart, path, SeriesLabelPosition::LowerRight)
    })
}

/// One horizontal bar per class, stacked by verdict share (likely mpox, uncertain, unlikely), with
/// each class's share at or above the threshold printed beside it: "false-positive rate on
/// psoriasis" at a glance. The canvas grows with the number of classes.
pub fn class_verdicts(
    path: &Path,
    title: &str,
    classes: &[crate::evaluate::ClassRates],
) -> Result<()> {
    let n = classes.len().max(1);
    let size = (PLOT_SIZE.0 + 300, (140 + 24 * n as u32).max(PLOT_SIZE.1));
    let label = |c: &crate::evaluate::ClassRates| {
        let mut name = c.class.clone();
        if name.chars().count() > 40 {
            name = name.chars().take(37).collect::<String>() + "...";
        }
        format!(
            "{name}{} (n={})",
            if c.positive { " [mpox]" } else { "" },
            c.photos
        )
    };
    render_sized(path, size, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FAMILY, 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(330)
            .build_cartesian_2d(0f64..1.6, -0.5f64..n as f64 - 0.5)
            .map_err(|e| plot_err(path, e))?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(n)
            .y_label_formatter(&|y| {
                let i = y.round();
                if (y - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < classes.len() {
                    label(&classes[classes.len() - 1 - i as usize])
                } else {
                    String::new()
                }
            })
            .x_label_formatter(&|x| {
                // The room right of 1 holds the rates and the legend, not shares.
                if *x <= 1.0 + 1e-9 {
                    format!("{x:.1}")
                } else {
                    String::new()
                }
            })
            .x_desc("share of the class's photos")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(|e| plot_err(path, e))?;
        type Span = fn(&crate::evaluate::ClassRates) -> (f64, f64);
        let parts: [(&str, RGBColor, Span); 3] = [
            ("likely mpox", COLOURS[3], |c| (0.0, c.likely_mpox)),
            ("uncertain", COLOURS[1], |c| {
                (c.likely_mpox, c.likely_mpox + c.uncertain)
            }),
            ("unlikely", COLOURS[2], |c| {
                (c.likely_mpox + c.uncertain, 1.0)
            }),
        ];
        for (name, colour, span) in parts {
            chart
                .draw_series(classes.iter().enumerate().map(|(i, c)| {
                    let y = (classes.len() - 1 - i) as f64;
                    let (a, b) = span(c);
                    Rectangle::new([(a, y - 0.38), (b, y + 0.38)], colour.filled())
                }))
                .map_err(|e| plot_err(path, e))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.filled())
                });
        }
        chart
            .draw_series(classes.iter().enumerate().map(|(i, c)| {
                let y = (classes.len() - 1 - i) as f64;
                Text::new(
                    format!("{:.0} % >= thr", 100.0 * c.at_threshold),
                    (1.02, y + 0.3),
                    (FAMILY, 13).into_font(),
                )
            }))
            .map_err(|e| plot_err(path, e))?;
        legend(&mut chart, path, SeriesLabelPosition::UpperRight)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{reliability_bins, roc_curve};

    fn check_png(path: &Path) -> image::RgbImage {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        let img = image::load_from_memory(&bytes).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), PLOT_SIZE);
        // Something besides the white background was drawn.
        let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(
            inked > 2_000,
            "{} looks blank ({inked} inked pixels)",
            path.display()
        );
        img
    }

    #[test]
    fn class_verdict_bars_grow_with_the_classes_and_show_each_verdict() {
        let dir = std::env::temp_dir().join(format!("mpox-plots-classes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rates: Vec<crate::evaluate::ClassRates> = (0..40)
            .map(|i| crate::evaluate::ClassRates {
                class: format!("negatives/condition-with-a-rather-long-name-{i}"),
                positive: i == 0,
                photos: 10,
                likely_mpox: 0.2,
                uncertain: 0.3,
                unlikely: 0.5,
                at_threshold: 0.4,
                at_half: 0.2,
            })
            .collect();
        let path = dir.join("classes.png");
        class_verdicts(&path, "verdicts", &rates).unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        assert!(img.height() > PLOT_SIZE.1, "40 rows need a taller canvas");
        // All three verdict colours were drawn.
        for k in [3, 1, 2] {
            let c = COLOURS[k];
            assert!(img.pixels().filter(|p| p.0 == [c.0, c.1, c.2]).count() > 500);
        }
    }

    #[test]
    fn font_renders_text() {
        // A caption alone must put ink on the canvas: the font is there and parses.
        let dir = crate::dataset::tests::temp_dir("plots-font");
        let path = dir.join("text.png");
        render(&path, |root| {
            root.draw(&Text::new(
                "Sensitivity 0.95 ± 0.02",
                (50, 50),
                (FAMILY, 40).into_font(),
            ))
            .map_err(|e| plot_err(&path, e))
        })
        .unwrap();
        let img = image::open(&path).unwrap().to_rgb8();
        let inked = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
        assert!(inked > 500, "no text drawn ({inked} pixels)");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_plot_writes_a_png_of_the_expected_size() {
        let dir = crate::dataset::tests::temp_dir("plots");
        let loss: Vec<(f64, f64)> = (0..30)
            .map(|e| (e as f64, 1.0 / (1.0 + e as f64)))
            .collect();
        let acc: Vec<(f64, f64)> = (0..30)
            .map(|e| (e as f64, 1.0 - 0.5 / (1.0 + e as f64)))
            .collect();
        let p = dir.join("curves.png");
        training_curves(
            &p,
            "MobileNetV2 fold 0",
            &[("train loss", loss.clone()), ("val accuracy", acc)],
        )
        .unwrap();
        check_png(&p);

        let p = dir.join("gan.png");
        let dx: Vec<(f64, f64)> = (0..100)
            .map(|s| (s as f64, 0.5 + 0.3 * (s as f64 / 10.0).sin()))
            .collect();
        line_chart(
            &p,
            "GAN",
            "step",
            "D output",
            &[("D(x)", dx), ("D(G(z))", loss), ("empty", vec![])],
        )
        .unwrap();
        check_png(&p);

        let probs = [0.95, 0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.25, 0.15, 0.05];
        let labels = [
            true, true, false, true, true, false, false, true, false, false,
        ];
        let p = dir.join("roc.png");
        roc_plot(
            &p,
            "ROC",
            &[("fold 0", roc_curve(&probs, &labels).unwrap())],
        )
        .unwrap();
        check_png(&p);

        let p = dir.join("reliability.png");
        reliability_diagram(
            &p,
            "Reliability",
            &reliability_bins(&probs, &labels, 15).unwrap(),
        )
        .unwrap();
        check_png(&p);

        let p = dir.join("confusion.png");
        let labels: Vec<String> = ["Chickenpox", "Measles", "Monkeypox", "Normal"]
            .map(String::from)
            .into();
        let m = vec![
            vec![20, 2, 5, 1],
            vec![3, 15, 2, 0],
            vec![4, 1, 50, 3],
            vec![0, 0, 2, 60],
        ];
        confusion_heatmap(&p, "Confusion", &labels, &m).unwrap();
        let img = check_png(&p);
        // The top-left cell (20 of 28) is shaded blue somewhere inside the plot.
        assert!(img.pixels().any(|p| p.0[2] > p.0[0] + 60));
        assert!(confusion_heatmap(&p, "bad", &labels, &m[..2]).is_err());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
