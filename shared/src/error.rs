//! Typed errors of the core library. Each variant carries enough context (file, row, column, field) for the
//! binary to print one clear message.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written. The OS message is part of this error's own message and is
    /// deliberately not also its `source()`: a printed chain (`{:#}`) would repeat it.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The input price file is malformed (missing column, bad value, duplicates, ...).
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    /// A config file or override is invalid; `field` names the offending key.
    #[error("config {origin}: {field}: {message}")]
    Config {
        origin: String,
        field: String,
        message: String,
    },
    /// The data is valid but cannot serve the request (e.g. a split with no complete window).
    #[error("{0}")]
    Data(String),
    /// A run directory cannot serve the request (not a run, written with another config, no checkpoint).
    #[error("{0}")]
    Run(String),
    /// A model cannot be built for the data, or its input has the wrong shape.
    #[error("{0}")]
    Model(String),
    /// Training cannot go on (non-finite losses in a row, a batch that does not split over the ranks,
    /// diverged replicas).
    #[error("{0}")]
    Training(String),
    /// A financial metric was asked of an inconsistent series (lengths, non-positive wealth).
    #[error("{0}")]
    Metrics(String),
    /// A portfolio backtest cannot run with these parameters or predictions.
    #[error("{0}")]
    Backtest(String),
    /// The trading task cannot run with these parameters or data.
    #[error("{0}")]
    Trading(String),
    /// The distributed environment (RANK, WORLD_SIZE, MASTER_*, Slurm) is missing or inconsistent.
    #[error("{0}")]
    DistEnv(String),
    /// The TCP rendezvous or collective failed: a connection, a peer, or the protocol.
    #[error("{0}")]
    Network(String),
    /// NCCL or the CUDA driver failed or is unavailable.
    #[error("{0}")]
    Nccl(String),
    /// The metrics registry or its HTTP endpoint failed.
    #[error("{0}")]
    Telemetry(String),
    /// A PNG chart could not be drawn.
    #[error("{0}")]
    Chart(String),
    /// A sweep cannot be planned, resumed or run (sweep directory, plan, actor runtime).
    #[error("{0}")]
    Sweep(String),
    /// The cluster of remote workers (cookie, listener, connection).
    #[error("{0}")]
    Cluster(String),
    #[error("polars: {0}")]
    Polars(#[from] polars::error::PolarsError),
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }

    pub fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn config(
        origin: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Error::Config {
            origin: origin.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_states_its_os_message_once_in_a_printed_chain() {
        let os = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = anyhow::Error::new(Error::io("prices.csv", os)).context("preparing");
        let printed = format!("{err:#}");
        assert_eq!(printed, "preparing: prices.csv: entity not found");
    }
}
