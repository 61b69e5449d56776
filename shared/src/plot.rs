//! PNG charts (plotters, bitmap backend): the codebook usage histogram, wealth curves and training loss
//! curves. Text needs a TrueType font, read at run time from the usual system locations
//! (Debian's fonts-dejavu-core); without one the chart is skipped with a clear error rather than drawn
//! unlabeled.

use std::path::Path;
use std::sync::OnceLock;

use chrono::NaiveDate;
use plotters::prelude::*;

use crate::error::{Error, Result};

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system font as "sans-serif" once per process (charts elsewhere, e.g. the sweep report,
/// call it too).
pub fn ensure_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        let path = std::env::var("STORM_FONT")
            .ok()
            .into_iter()
            .chain(FONT_CANDIDATES.iter().map(|s| s.to_string()))
            .find(|p| Path::new(p).exists());
        let Some(bytes) = path.and_then(|p| std::fs::read(p).ok()) else {
            return false;
        };
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(Error::Chart(
            "no TrueType font found for charts: install fonts-dejavu-core or set STORM_FONT".into(),
        ))
    }
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Chart(format!("drawing chart: {e}"))
}

/// Bar chart of counts per code index (paper Fig. 3a), one panel per codebook.
pub fn codebook_histogram(path: &Path, panels: &[(&str, &[i64])]) -> Result<()> {
    ensure_font()?;
    let root =
        BitMapBackend::new(path, (1000, 320 * panels.len().max(1) as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    for (area, (title, counts)) in root
        .split_evenly((panels.len().max(1), 1))
        .iter()
        .zip(panels)
    {
        let max = counts.iter().copied().max().unwrap_or(1).max(1);
        let mut chart = ChartBuilder::on(area)
            .caption(*title, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(0i64..counts.len() as i64, 0i64..max + max / 10 + 1)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc("code index")
            .y_desc("count")
            .disable_x_mesh()
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(counts.iter().enumerate().map(|(i, &c)| {
                Rectangle::new([(i as i64, 0), (i as i64 + 1, c)], BLUE.mix(0.7).filled())
            }))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)
}

/// Line colours of successive wealth curves (strategy, equal weight, index, ...).
const CURVE_COLORS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

/// Wealth curves on shared dates, each normalised to 1 at the first date, with a legend. The x axis is
/// the trading-day index labelled with dates (no gaps for weekends and holidays).
pub fn wealth_curves(
    path: &Path,
    title: &str,
    dates: &[NaiveDate],
    series: &[(&str, &[f64])],
) -> Result<()> {
    ensure_font()?;
    if dates.len() < 2 || series.iter().any(|(_, w)| w.len() != dates.len()) {
        return Err(Error::Chart(format!(
            "wealth chart needs at least 2 dates and one value per date ({} dates)",
            dates.len()
        )));
    }
    let normalised: Vec<Vec<f64>> = series
        .iter()
        .map(|(_, w)| w.iter().map(|v| v / w[0]).collect())
        .collect();
    let (lo, hi) = normalised
        .iter()
        .flatten()
        .filter(|v| v.is_finite())
        .fold((1.0f64, 1.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    let pad = ((hi - lo) * 0.05).max(1e-3);
    let last = (dates.len() - 1) as f64;
    let root = BitMapBackend::new(path, (1000, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..last, (lo - pad)..(hi + pad))
        .map_err(draw_err)?;
    let date_label = |x: &f64| {
        let i = x.round().clamp(0.0, last) as usize;
        dates[i].format("%Y-%m-%d").to_string()
    };
    chart
        .configure_mesh()
        .x_labels(6)
        .x_label_formatter(&date_label)
        .y_desc("wealth (start = 1)")
        .draw()
        .map_err(draw_err)?;
    for (i, ((name, _), values)) in series.iter().zip(&normalised).enumerate() {
        let color = CURVE_COLORS[i % CURVE_COLORS.len()];
        chart
            .draw_series(LineSeries::new(
                values.iter().enumerate().map(|(t, v)| (t as f64, *v)),
                color.stroke_width(2),
            ))
            .map_err(draw_err)?
            .label(*name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
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

/// A tick label for an axis whose ticks are about `step` apart: plain decimals (as many as the step needs)
/// for ordinary magnitudes, scientific for tiny or huge ones.
fn axis_number(y: f64, step: f64) -> String {
    let a = y.abs();
    if a == 0.0 || (1e-2..1e4).contains(&a) {
        let decimals = (-step.abs().max(1e-12).log10()).ceil().clamp(0.0, 8.0) as usize;
        format!("{y:.decimals$}")
    } else {
        format!("{y:.3e}")
    }
}

/// Most points drawn per loss curve; longer logs are averaged over equal runs of steps.
const MAX_CURVE_POINTS: usize = 1500;

/// Averages finite (x, y) points over `max` equal buckets of x order (non-finite y values are dropped).
pub fn downsample(xs: &[f64], ys: &[f64], max: usize) -> Vec<(f64, f64)> {
    let points: Vec<(f64, f64)> = xs
        .iter()
        .zip(ys)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .collect();
    if points.len() <= max || max == 0 {
        return points;
    }
    let per = points.len().div_ceil(max);
    points
        .chunks(per)
        .map(|c| {
            let n = c.len() as f64;
            (
                c.iter().map(|p| p.0).sum::<f64>() / n,
                c.iter().map(|p| p.1).sum::<f64>() / n,
            )
        })
        .collect()
}

/// Small multiples, one panel per column of a loss log (total, learning rate, gradient norm, each term),
/// over the step axis. Panels share nothing but x: the terms differ by orders of magnitude and sign.
pub fn loss_curves(path: &Path, steps: &[f64], panels: &[(&str, &[f64])]) -> Result<()> {
    ensure_font()?;
    if steps.is_empty() || panels.is_empty() {
        return Err(Error::Chart(
            "loss chart needs at least one step and one series".into(),
        ));
    }
    let cols = 4usize.min(panels.len());
    let rows = panels.len().div_ceil(cols);
    let root = BitMapBackend::new(path, (360 * cols as u32, 260 * rows as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_err)?;
    let (x_lo, x_hi) = (steps[0], steps[steps.len() - 1].max(steps[0] + 1.0));
    for (area, (name, values)) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let points = downsample(steps, values, MAX_CURVE_POINTS);
        let (lo, hi) = points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p.1), hi.max(p.1))
            });
        let (lo, hi) = if lo.is_finite() { (lo, hi) } else { (0.0, 1.0) };
        let pad = ((hi - lo) * 0.05).max(hi.abs().max(1e-12) * 1e-3);
        let mut chart = ChartBuilder::on(area)
            .caption(*name, ("sans-serif", 16))
            .margin(8)
            .x_label_area_size(28)
            .y_label_area_size(62)
            .build_cartesian_2d(x_lo..x_hi, (lo - pad)..(hi + pad))
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_labels(4)
            .y_labels(5)
            .x_label_formatter(&|x| format!("{x:.0}"))
            .y_label_formatter(&|y| axis_number(*y, (hi - lo + 2.0 * pad) / 5.0))
            .label_style(("sans-serif", 11))
            .draw()
            .map_err(draw_err)?;
        chart
            .draw_series(LineSeries::new(points, CURVE_COLORS[0].stroke_width(1)))
            .map_err(draw_err)?;
    }
    root.present().map_err(draw_err)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsampling_averages_buckets_and_drops_non_finite_values() {
        let xs: Vec<f64> = (0..10).map(f64::from).collect();
        let mut ys = xs.clone();
        ys[3] = f64::NAN;
        assert_eq!(downsample(&xs, &ys, 20).len(), 9);
        let d = downsample(&xs, &xs, 5);
        assert_eq!(
            d,
            vec![(0.5, 0.5), (2.5, 2.5), (4.5, 4.5), (6.5, 6.5), (8.5, 8.5)]
        );
    }

    #[test]
    fn axis_labels_show_the_digits_that_differ() {
        assert_eq!(axis_number(0.06741, 4e-5), "0.06741");
        assert_eq!(axis_number(5.0, 0.5), "5.0");
        assert_eq!(axis_number(120.0, 20.0), "120");
        assert_eq!(axis_number(2e-4, 1e-4), "2.000e-4");
        assert_eq!(axis_number(0.0, 1e-4), "0.0000");
    }

    #[test]
    fn loss_curves_draw_a_png_when_a_font_exists() {
        if ensure_font().is_err() {
            return; // no font on this machine: the chart is skipped by design
        }
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("loss.png");
        let steps: Vec<f64> = (1..=50).map(f64::from).collect();
        let loss: Vec<f64> = steps.iter().map(|s| 1.0 / s).collect();
        let neg: Vec<f64> = steps.iter().map(|s| -0.01 * s).collect();
        loss_curves(&png, &steps, &[("loss", &loss), ("diversity_ts", &neg)]).unwrap();
        assert!(std::fs::metadata(&png).unwrap().len() > 1000);
    }
}
