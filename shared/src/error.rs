//! Typed errors of the core library. Each variant carries enough context (file, row, column, field) for the
//! binary to print one clear message.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
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
            source,
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
