//! Numeric CSV logs of a run (`losses.csv`, `valid.csv`) as the report reads them, and the loss-curve chart
//! drawn from the loss log.

use std::fs;
use std::path::Path;

use super::dir::{LOSSES_FILE, LOSS_CURVES_PNG};
use crate::error::{Error, Result};

/// A numeric CSV log with a header row (`losses.csv`, `valid.csv`).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvLog {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

impl CsvLog {
    /// Reads `path`; Ok(None) when it does not exist. Values that do not parse are NaN (the trainer writes
    /// `NaN` for a skipped step's gradient norm); a row with the wrong number of fields is an error.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return Ok(None);
        };
        let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            let row: Vec<f64> = line
                .split(',')
                .map(|v| v.trim().parse::<f64>().unwrap_or(f64::NAN))
                .collect();
            if row.len() != columns.len() {
                return Err(Error::input(
                    path,
                    format!(
                        "line {}: {} fields, the header has {}",
                        i + 2,
                        row.len(),
                        columns.len()
                    ),
                ));
            }
            rows.push(row);
        }
        Ok(Some(CsvLog { columns, rows }))
    }

    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|r| r[i]).collect())
    }
}

/// Draws `loss_curves.png` from `losses.csv`: the total loss, learning rate, gradient norm and each term.
pub fn draw_loss_curves(log: &CsvLog, png: &Path) -> Result<()> {
    let steps = log
        .column("step")
        .ok_or_else(|| Error::Run(format!("{LOSSES_FILE} has no step column")))?;
    let skip = ["step", "epoch", "skipped"];
    let series: Vec<(String, Vec<f64>)> = log
        .columns
        .iter()
        .filter(|c| !skip.contains(&c.as_str()))
        .filter_map(|c| {
            let title = match c.as_str() {
                "loss" => "loss (weighted total)".to_string(),
                "lr" => "learning rate".to_string(),
                "grad_norm" => "gradient norm".to_string(),
                other => other.to_string(),
            };
            log.column(c).map(|v| (title, v))
        })
        .collect();
    let panels: Vec<(&str, &[f64])> = series
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let dir = png.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{LOSS_CURVES_PNG}.{}.png", std::process::id()));
    let drawn = crate::plot::loss_curves(&tmp, &steps, &panels)
        .and_then(|()| fs::rename(&tmp, png).map_err(|e| Error::io(png, e)));
    if drawn.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    drawn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_logs_parse_nan_and_reject_ragged_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.csv");
        fs::write(&p, "step,loss,grad_norm\n1,0.5,NaN\n2,0.4,1.2\n").unwrap();
        let log = CsvLog::read(&p).unwrap().unwrap();
        assert_eq!(log.column("loss").unwrap(), vec![0.5, 0.4]);
        assert!(log.column("grad_norm").unwrap()[0].is_nan());
        assert!(log.column("nope").is_none());
        fs::write(&p, "step,loss\n1,0.5\n2\n").unwrap();
        let err = CsvLog::read(&p).unwrap_err().to_string();
        assert!(err.contains("line 3: 1 fields, the header has 2"), "{err}");
        assert!(CsvLog::read(&dir.path().join("missing.csv"))
            .unwrap()
            .is_none());
    }
}
