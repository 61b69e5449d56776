//! Publishing a task's outputs into a run directory at once: a CSV table, an optional chart and the JSON
//! report (written last, so a reader that sees the report sees the rest), through one staging directory.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::dir::{file_name, RunDir};
use crate::atomic::Staging;
use crate::error::{Error, Result};

/// The files a task published (`png` is `None` when the chart could not be drawn).
#[derive(Debug, Clone)]
pub struct ReportFiles {
    pub json: PathBuf,
    pub csv: PathBuf,
    pub png: Option<PathBuf>,
}

/// Stages `csv` at `csv_path`, the chart `draw` writes for `png_path` and `report` as JSON at `json_path`,
/// then publishes them together. A chart that cannot be drawn is skipped with a warning, and an outdated
/// one from an earlier run is removed so that it cannot disagree with the new report.
pub fn publish(
    run: &RunDir,
    (json_path, csv_path, png_path): (PathBuf, PathBuf, PathBuf),
    csv: String,
    draw: impl FnOnce(&Path) -> Result<()>,
    report: &impl Serialize,
) -> Result<ReportFiles> {
    let (json, csv_name, png) = (
        file_name(&json_path),
        file_name(&csv_path),
        file_name(&png_path),
    );
    let staging = Staging::new(run.path())?;
    let staged_csv = staging.path(&csv_name);
    std::fs::write(&staged_csv, csv).map_err(|e| Error::io(&staged_csv, e))?;
    let png_ok = match draw(&staging.path(&png)) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("{} not written: {e}", png_path.display());
            remove_stale(&png_path);
            false
        }
    };
    let staged_json = staging.path(&json);
    std::fs::write(&staged_json, serde_json::to_vec_pretty(report)?)
        .map_err(|e| Error::io(&staged_json, e))?;
    let mut order = vec![csv_name.as_str()];
    if png_ok {
        order.push(png.as_str());
    }
    order.push(json.as_str());
    staging.commit(&order)?;
    Ok(ReportFiles {
        json: json_path,
        csv: csv_path,
        png: png_ok.then_some(png_path),
    })
}

fn remove_stale(path: &Path) {
    if path.exists() {
        match std::fs::remove_file(path) {
            Ok(()) => tracing::warn!("removed the outdated {}", path.display()),
            Err(e) => tracing::warn!("could not remove the outdated {}: {e}", path.display()),
        }
    }
}
