//! PNG charts (plotters, bitmap backend): the codebook usage histogram and backtest wealth curves; loss
//! curves join later. Text needs a TrueType font, read at run time from the usual system locations
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
        Err(Error::Data(
            "no TrueType font found for charts: install fonts-dejavu-core or set STORM_FONT".into(),
        ))
    }
}

fn draw_err(e: impl std::fmt::Display) -> Error {
    Error::Data(format!("drawing chart: {e}"))
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
        return Err(Error::Data(format!(
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
