//! The run layer: everything that works on a run directory, above the model, training, evaluation,
//! portfolio and trading modules (none of which imports this one).
//!
//! - [`dir`]: [`RunDir`], the one owner of every file name in a run directory.
//! - [`info`]: creating and reopening a run (`config.toml`, `run.json`).
//! - [`trained`]: [`TrainedRun`], a run opened with its model restored from the evaluation checkpoint.
//! - [`evaluate`], [`export`], [`backtest`], [`trade`]: the tasks on a trained run, each returning a typed
//!   result that it also writes and that can be loaded back ([`EvalReport`], [`ExportSummary`],
//!   [`BacktestReport`](crate::portfolio::report::BacktestReport),
//!   [`TradeReport`](crate::trading::task::TradeReport)).
//! - [`metrics`]: the flat metric names of a job's `result.json`, built from those results.
//! - [`report`], [`csv_log`]: `report.md` and `loss_curves.png` from the files present.

pub mod backtest;
pub mod csv_log;
pub mod diagnose;
pub mod dir;
pub mod evaluate;
pub mod export;
pub mod info;
pub mod metrics;
pub mod prior_agreement;
pub mod publish;
pub mod report;
pub mod trade;
pub mod trained;

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

pub use dir::{PortfolioVariant, RunDir, TradeTask};
pub use evaluate::EvalReport;
pub use export::ExportSummary;
pub use info::RunInfo;
pub use trained::TrainedRun;

/// Reads a typed JSON result; a missing file is an error that names it.
pub(crate) fn load_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Run(format!("{} is missing", path.display()))
        } else {
            Error::io(path, e)
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::input(path, format!("invalid JSON: {e}")))
}

/// serde_json writes a non-finite f64 as `null`; read it back as NaN.
fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}
