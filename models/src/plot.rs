//! Line charts as PNG with `plotters`: a title, labelled axes with units, a legend. Used for
//! the training loss now, and for reward and PSNR curves later. The text is rendered with an
//! embedded font (`models/assets/fonts/`), so no system fonts are needed.

use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

const FONT: &[u8] = include_bytes!("../assets/fonts/DejaVuSansMono.ttf");
const WIDTH: u32 = 900;
const HEIGHT: u32 = 520;

/// One curve of a chart.
pub struct Series<'a> {
    /// Legend text.
    pub name: &'a str,
    /// (x, y) points in order of x.
    pub points: Vec<(f64, f64)>,
    /// Line colour.
    pub color: RGBColor,
    /// Line width in pixels.
    pub width: u32,
}

/// A line chart: `title`, axis labels (with units, e.g. `"loss (nats per token)"`) and curves.
pub struct Chart<'a> {
    /// Title above the plot.
    pub title: &'a str,
    /// Label of the x axis.
    pub x_label: &'a str,
    /// Whether x values are counts (steps): ticks print as whole numbers.
    pub x_integer: bool,
    /// Label of the y axis.
    pub y_label: &'a str,
    /// The curves.
    pub series: Vec<Series<'a>>,
}

fn register_font() -> Result<(), String> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
            .map_err(|_| "the embedded chart font is invalid".to_string());
    });
    result
}

impl Chart<'_> {
    /// Draws the chart into a PNG file. Non-finite points are left out.
    pub fn write_png(&self, path: &Path) -> Result<(), String> {
        register_font()?;
        let pts = || {
            self.series
                .iter()
                .flat_map(|s| s.points.iter())
                .filter(|(x, y)| x.is_finite() && y.is_finite())
        };
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts() {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x), y0.min(y), y1.max(y));
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        let pad = ((y1 - y0) * 0.05).max(1e-9);
        let (x1, y0, y1) = (x1.max(x0 + 1.0), y0 - pad, y1 + pad);
        let err = |e: DrawingAreaErrorKind<_>| format!("{}: {e}", path.display());
        let root = BitMapBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(self.title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_label)
            .x_label_formatter(&|x| {
                if self.x_integer {
                    format!("{x:.0}")
                } else {
                    format!("{x}")
                }
            })
            .y_desc(self.y_label)
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 16))
            .draw()
            .map_err(err)?;
        for s in &self.series {
            let style = ShapeStyle::from(&s.color).stroke_width(s.width);
            let points = s
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite());
            chart
                .draw_series(LineSeries::new(points, style))
                .map_err(err)?
                .label(s.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font(("sans-serif", 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)
    }
}

/// The 20-point trailing moving average of `raw`.
fn moving_average(raw: &[(f64, f64)]) -> Vec<(f64, f64)> {
    (0..raw.len())
        .map(|i| {
            let w = &raw[i.saturating_sub(19)..=i];
            (
                raw[i].0,
                w.iter().map(|p| p.1).sum::<f64>() / w.len() as f64,
            )
        })
        .collect()
}

/// The trainer's loss chart: the loss of every step and its 20-step moving average.
pub fn loss_curve_png(points: &[(usize, f64)], path: &Path) -> Result<(), String> {
    step_chart(
        "mmada train: masked-diffusion loss",
        "loss (nats per token)",
        "loss per step",
        points,
        path,
    )
}

/// A chart of one metric per step (`title`, `y_label`) and its 20-step moving average: the
/// reward and KL curves of UniGRPO.
pub fn metric_curve_png(
    title: &str,
    y_label: &str,
    points: &[(usize, f64)],
    path: &Path,
) -> Result<(), String> {
    step_chart(title, y_label, "per step", points, path)
}

/// A value per optimiser step (series `raw_name`) with its 20-step moving average.
fn step_chart(
    title: &str,
    y_label: &str,
    raw_name: &str,
    points: &[(usize, f64)],
    path: &Path,
) -> Result<(), String> {
    let raw: Vec<(f64, f64)> = points.iter().map(|&(s, l)| (s as f64, l)).collect();
    let avg = moving_average(&raw);
    Chart {
        title,
        x_label: "optimiser step",
        x_integer: true,
        y_label,
        series: vec![
            Series {
                name: raw_name,
                points: raw,
                color: RGBColor(150, 170, 220),
                width: 1,
            },
            Series {
                name: "moving average (20 steps)",
                points: avg,
                color: RGBColor(200, 40, 40),
                width: 2,
            },
        ],
    }
    .write_png(path)
}

/// The per-task chart of a mixed batch (`t2i`, `mmu`, `lm`): each task's loss as a 20-step
/// moving average, before its coefficient.
pub fn task_losses_png(tasks: &[(String, Vec<(usize, f64)>)], path: &Path) -> Result<(), String> {
    const COLORS: [RGBColor; 4] = [
        RGBColor(200, 40, 40),
        RGBColor(40, 110, 200),
        RGBColor(40, 150, 60),
        RGBColor(150, 80, 180),
    ];
    let series = tasks
        .iter()
        .enumerate()
        .map(|(i, (name, pts))| {
            let raw: Vec<(f64, f64)> = pts.iter().map(|&(s, l)| (s as f64, l)).collect();
            Series {
                name: name.as_str(),
                points: moving_average(&raw),
                color: COLORS[i % COLORS.len()],
                width: 2,
            }
        })
        .collect();
    Chart {
        title: "mmada train: loss per task (moving average of 20 steps)",
        x_label: "optimiser step",
        x_integer: true,
        y_label: "loss (nats per token)",
        series,
    }
    .write_png(path)
}

/// A bar chart of speed-ups (default time over tuned time), one bar per labelled item, with
/// the no-change line at 1.
pub fn speedup_bars_png(title: &str, bars: &[(String, f64)], path: &Path) -> Result<(), String> {
    register_font()?;
    let err = |e: DrawingAreaErrorKind<_>| format!("{}: {e}", path.display());
    let top = bars
        .iter()
        .map(|b| b.1)
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.1;
    let n = bars.len().max(1);
    let root =
        BitMapBackend::new(path, (WIDTH.max(24 * n as u32 + 140), HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..n as f64, 0f64..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("kernel (by tune key, in launch order; labels in the table)")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("speed-up over the default (×)")
        .label_style(("sans-serif", 14))
        .axis_desc_style(("sans-serif", 16))
        .draw()
        .map_err(err)?;
    let blue = RGBColor(31, 119, 180);
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let v = if v.is_finite() { *v } else { 0.0 };
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, v)],
                blue.filled(),
            )
        }))
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            [(0.0, 1.0), (n as f64, 1.0)],
            ShapeStyle::from(&BLACK).stroke_width(1),
        ))
        .map_err(err)?;
    root.present().map_err(err)
}

#[cfg(test)]
mod tests {
    #[test]
    fn writes_a_png_with_text_and_curves() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.png");
        let pts: Vec<(usize, f64)> = (0..120)
            .map(|i| (i, 9.0 / (1.0 + i as f64 * 0.05)))
            .collect();
        super::loss_curve_png(&pts, &p).unwrap();
        let bytes = std::fs::read(&p).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // Empty and non-finite inputs still give a chart, not an error.
        super::loss_curve_png(&[(0, f64::NAN)], &p).unwrap();
        super::loss_curve_png(&[], &p).unwrap();
        let tasks: Vec<(String, Vec<(usize, f64)>)> = ["t2i", "mmu", "lm"]
            .iter()
            .map(|t| (t.to_string(), pts.clone()))
            .collect();
        super::task_losses_png(&tasks, &p).unwrap();
        assert_eq!(&std::fs::read(&p).unwrap()[1..4], b"PNG");
    }
}
