//! PNG charts (plotters, bitmap backend): the codebook usage histogram now; loss and wealth curves join
//! later. Text needs a TrueType font, read at run time from the usual system locations (Debian's
//! fonts-dejavu-core); without one the chart is skipped with a clear error rather than drawn unlabeled.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

use crate::error::{Error, Result};

const FONT_CANDIDATES: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
];

/// Registers a system font as "sans-serif" once per process.
fn ensure_font() -> Result<()> {
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
