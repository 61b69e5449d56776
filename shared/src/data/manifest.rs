//! `manifest.json`: what a prepared feature store holds and where it came from. Written last, so its
//! presence marks a complete store. Fields added later default when absent, so older manifests still load.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::missing::Repair;
use crate::config::MissingPolicy;
use crate::error::{Error, Result};

pub const MANIFEST_FILE: &str = "manifest.json";
pub const FEATURES_FILE: &str = "features.parquet";
/// The features before scaling, written by `data prepare --unscaled`.
pub const RAW_FEATURES_FILE: &str = "features_raw.parquet";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub storm_version: String,
    pub source: String,
    pub source_sha256: String,
    pub has_adj_close: bool,
    pub tickers: Vec<String>,
    pub n_tickers: usize,
    pub feature_names: Vec<String>,
    pub n_features: usize,
    /// First and last date present in features.parquet (rows after warm-up).
    pub first_date: String,
    pub last_date: String,
    pub rows: usize,
    /// Input rows dropped because they lacked feature or scaling history.
    pub warmup_rows_dropped: usize,
    pub feature_history: usize,
    pub scaler_window: usize,
    /// First date with scaled features, per ticker (late listings start later).
    pub ticker_first_dates: BTreeMap<String, String>,
    pub label: String,
    /// The `data.missing` policy the store was prepared with.
    #[serde(default)]
    pub missing_policy: MissingPolicy,
    /// Every missing input cell of the selected rows and what the policy did with it.
    #[serde(default)]
    pub missing_values: Vec<Repair>,
    /// Bars kept although their open or close lies outside [low, high].
    #[serde(default)]
    pub bars_outside_range: usize,
    /// Whether `features_raw.parquet` (the features before scaling) belongs to this store.
    #[serde(default)]
    pub unscaled: bool,
}

impl Manifest {
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Data(format!(
                    "{} is not a prepared data directory (no {MANIFEST_FILE}); run `storm data prepare` first",
                    dir.display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .map_err(|e| Error::input(&path, format!("invalid manifest: {e}")))?;
        manifest.check().map_err(|why| {
            Error::input(
                &path,
                format!("{why}: the data directory is damaged; prepare it again"),
            )
        })?;
        Ok(manifest)
    }

    /// The counts the panel loader relies on agree with the lists they count.
    fn check(&self) -> std::result::Result<(), String> {
        if self.feature_names.len() != self.n_features {
            return Err(format!(
                "n_features is {} but {} feature names are listed",
                self.n_features,
                self.feature_names.len()
            ));
        }
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = self.tickers.iter().find(|t| !seen.insert(t.as_str())) {
            return Err(format!("ticker {dup} is listed twice"));
        }
        Ok(())
    }
}
