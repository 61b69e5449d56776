//! PNG charts of sweep results (plotters): a metric against an ordered grid value (the paper's Figure 3b,
//! metric vs codebook size), bars per model with min–max whiskers, and mean wealth curves. Needs the font
//! that `storm_shared::plot` registers; without one the caller skips the chart with a warning.

use std::path::Path;

use plotters::prelude::*;
use storm_shared::error::{Error, Result};

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn color(i: usize) -> RGBColor {
    PALETTE[i % PALETTE.len()]
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Chart(format!("drawing chart: {e}"))
}

/// Mean with the observed min and max over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}
type CategoryChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A panel whose x axis has one tick per category (at 0, 1, …, labelled by name) and y in `y_range`.
fn category_axes<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, plotters::coord::Shift>,
    caption: &str,
    categories: &[String],
    (lo, hi): (f64, f64),
    x_desc: &str,
) -> Result<CategoryChart<'a, 'b>> {
    let n = categories.len();
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), lo..hi)
        .map_err(draw_err)?;
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            categories[i as usize].clone()
        } else {
            String::new()
        }
    };
    chart
        .configure_mesh()
        .x_labels(n.max(1) * 2 + 1)
        .x_label_formatter(&label)
        .x_desc(x_desc)
        .disable_x_mesh()
        .draw()
        .map_err(draw_err)?;
    Ok(chart)
}

/// A named line: one optional band per x position.
pub type Line = (String, Vec<Option<Band>>);

fn y_range<'a>(bands: impl Iterator<Item = &'a Band>) -> (f64, f64) {
    let (lo, hi) = bands
        .flat_map(|b| [b.min, b.max, b.mean])
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (-1.0, 1.0);
    }
    let pad = ((hi - lo) * 0.1).max(1e-3);
    (lo - pad, hi + pad)
}

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// A vertical min–max whisker with caps at x.
fn whisker(chart: &mut Chart, x: f64, b: &Band, c: RGBColor) -> Result<()> {
    let cap = 0.08;
    let style = c.stroke_width(2);
    chart
        .draw_series([
            PathElement::new(vec![(x, b.min), (x, b.max)], style),
            PathElement::new(vec![(x - cap, b.min), (x + cap, b.min)], style),
            PathElement::new(vec![(x - cap, b.max), (x + cap, b.max)], style),
        ])
        .map_err(draw_err)?;
    Ok(())
}

/// One panel per metric: each line's mean over the ordered x labels, with min–max whiskers.
pub fn lines_with_ranges(
    path: &Path,
    title: &str,
    x_desc: &str,
    x_labels: &[String],
    panels: &[(String, Vec<Line>)],
) -> Result<()> {
    storm_shared::plot::ensure_font()?;
    let root =
        BitMapBackend::new(path, (560 * panels.len().max(1) as u32, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
    for (area, (metric, lines)) in root
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(panels)
    {
        let (lo, hi) = y_range(lines.iter().flat_map(|(_, b)| b.iter().flatten()));
        let mut chart = category_axes(area, metric, x_labels, (lo, hi), x_desc)?;
        for (li, (name, bands)) in lines.iter().enumerate() {
            let c = color(li);
            let points: Vec<(f64, Band)> = bands
                .iter()
                .enumerate()
                .filter_map(|(i, b)| b.map(|b| (i as f64, b)))
                .collect();
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(x, b)| (*x, b.mean)),
                    c.stroke_width(2),
                ))
                .map_err(draw_err)?
                .label(name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2))
                });
            for (x, b) in &points {
                whisker(&mut chart, *x, b, c)?;
            }
            chart
                .draw_series(
                    points
                        .iter()
                        .map(|(x, b)| Circle::new((*x, b.mean), 4, c.filled())),
                )
                .map_err(draw_err)?;
        }
        if lines.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font(("sans-serif", 13))
                .draw()
                .map_err(draw_err)?;
        }
    }
    root.present().map_err(draw_err)
}

/// One panel per metric: a bar per category (mean) with min–max whiskers.
pub fn bars_with_ranges(
    path: &Path,
    title: &str,
    categories: &[String],
    panels: &[(String, Vec<Option<Band>>)],
) -> Result<()> {
    storm_shared::plot::ensure_font()?;
    let root =
        BitMapBackend::new(path, (520 * panels.len().max(1) as u32, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(draw_err)?;
    for (area, (metric, bands)) in root
        .split_evenly((1, panels.len().max(1)))
        .iter()
        .zip(panels)
    {
        let (lo, hi) = y_range(bands.iter().flatten());
        let (lo, hi) = (lo.min(0.0), hi.max(0.0));
        let mut chart = category_axes(area, metric, categories, (lo, hi), "")?;
        for (i, b) in bands.iter().enumerate() {
            let Some(b) = b else { continue };
            let c = color(i);
            let x = i as f64;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(x - 0.3, 0.0), (x + 0.3, b.mean)],
                    c.mix(0.7).filled(),
                )))
                .map_err(draw_err)?;
            whisker(&mut chart, x, b, BLACK)?;
        }
    }
    root.present().map_err(draw_err)
}

/// Wealth curves over the same dates, each normalised to 1 at the first date.
pub fn wealth_lines(
    path: &Path,
    title: &str,
    dates: &[String],
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    storm_shared::plot::ensure_font()?;
    if dates.len() < 2
        || series
            .iter()
            .any(|(_, w)| w.len() != dates.len() || w[0] == 0.0)
    {
        return Err(Error::Chart(format!(
            "wealth chart needs at least 2 dates and one value per date ({} dates)",
            dates.len()
        )));
    }
    let norm: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, w)| w.iter().map(|v| v / w[0]).collect())
        .collect();
    let bands: Vec<Band> = norm
        .iter()
        .flatten()
        .map(|&v| Band {
            mean: v,
            min: v,
            max: v,
        })
        .collect();
    let (lo, hi) = y_range(bands.iter());
    let last = (dates.len() - 1) as f64;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last, lo..hi)
        .map_err(draw_err)?;
    let label = |x: &f64| dates[x.round().clamp(0.0, last) as usize].clone();
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&label)
        .y_desc("wealth (start = 1)")
        .draw()
        .map_err(draw_err)?;
    for (i, ((name, _), values)) in series.iter().zip(&norm).enumerate() {
        let c = color(i);
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(t, v)| (t as f64, *v)),
                c.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", 15))
        .draw()
        .map_err(draw_err)?;
    root.present().map_err(draw_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
    }

    #[test]
    fn charts_are_pngs() {
        if storm_shared::plot::ensure_font().is_err() {
            eprintln!("no font: chart test skipped");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let b = |m: f64| {
            Some(Band {
                mean: m,
                min: m - 0.01,
                max: m + 0.02,
            })
        };
        let xs = vec!["256".to_string(), "512".into(), "1024".into()];
        let p = dir.path().join("lines.png");
        lines_with_ranges(
            &p,
            "metric vs codebook size",
            "codebook size",
            &xs,
            &[
                (
                    "RankIC".into(),
                    vec![("all".into(), vec![b(0.01), None, b(0.03)])],
                ),
                (
                    "RankICIR".into(),
                    vec![("all".into(), vec![b(0.1), b(0.2), b(0.15)])],
                ),
            ],
        )
        .unwrap();
        assert!(is_png(&p));
        let p = dir.path().join("bars.png");
        bars_with_ranges(
            &p,
            "models",
            &xs,
            &[("RankIC".into(), vec![b(-0.01), b(0.02), None])],
        )
        .unwrap();
        assert!(is_png(&p));
        let p = dir.path().join("wealth.png");
        let dates: Vec<String> = (1..=5).map(|d| format!("2024-01-0{d}")).collect();
        wealth_lines(
            &p,
            "w",
            &dates,
            &[("a".into(), vec![1.0, 1.1, 1.0, 1.2, 1.3])],
        )
        .unwrap();
        assert!(is_png(&p));
        assert!(wealth_lines(&p, "w", &dates, &[("a".into(), vec![1.0])]).is_err());
    }
}
