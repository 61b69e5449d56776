//! Creating and reopening a run directory: the resolved config (`config.toml`) and the [`RunInfo`]
//! (`run.json`) that say what the run is and where its data lives.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::dir::{RunDir, CONFIG_FILE, RUN_FILE};
use crate::atomic;
use crate::config::ExperimentConfig;
use crate::data::{self, Manifest, Source};
use crate::error::{Error, Result};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub data_dir: PathBuf,
    pub config_hash: String,
    pub seed: u64,
    pub device: String,
    pub storm_version: String,
}

impl RunDir {
    /// Creates (or reopens) the run directory for `cfg`: writes the resolved config and run info, and
    /// returns the info with the prepared data directory (given, already in the run, or prepared now into
    /// `<run>/data`).
    pub fn open(
        &self,
        cfg: &ExperimentConfig,
        data_dir: Option<&Path>,
        device: &str,
        progress: bool,
    ) -> Result<RunInfo> {
        let root = self.path();
        std::fs::create_dir_all(root).map_err(|e| Error::io(root, e))?;
        if let Ok(existing) = self.info() {
            if existing.config_hash != cfg.hash() {
                return Err(Error::Run(format!(
                    "{} was created with a different config (hash {} vs {}); choose a new --out, or run \
                     with the run's own {CONFIG_FILE}",
                    root.display(),
                    existing.config_hash,
                    cfg.hash()
                )));
            }
        }
        let data_dir = match data_dir {
            Some(d) => {
                Manifest::load(d)?;
                std::path::absolute(d).map_err(|e| Error::io(d, e))?
            }
            None => {
                let d = self.data();
                if Manifest::load(&d).is_err() {
                    data::prepare(&cfg.data, &Source::parse(&cfg.data.source), &d, progress)?;
                }
                std::path::absolute(&d).map_err(|e| Error::io(&d, e))?
            }
        };
        let info = RunInfo {
            data_dir,
            config_hash: cfg.hash(),
            seed: cfg.train.seed,
            device: device.to_string(),
            storm_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let toml = toml::to_string_pretty(cfg)
            .map_err(|e| Error::Run(format!("cannot serialise the config: {e}")))?;
        atomic::write_file(&self.config(), toml.as_bytes())?;
        atomic::write_file(&self.run_info(), &serde_json::to_vec_pretty(&info)?)?;
        Ok(info)
    }

    /// Reads `run.json` alone (what needs only the data directory needs no config file).
    pub fn info(&self) -> Result<RunInfo> {
        let path = self.run_info();
        let text = std::fs::read_to_string(&path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Run(format!(
                    "{} is not a run directory (no {RUN_FILE}); create one with `storm pretrain`",
                    self.path().display()
                ))
            } else {
                Error::io(&path, e)
            }
        })?;
        serde_json::from_str(&text)
            .map_err(|e| Error::input(&path, format!("invalid run info: {e}")))
    }

    /// Reads a run directory written by [`RunDir::open`]: its config and run info.
    pub fn load(&self) -> Result<(ExperimentConfig, RunInfo)> {
        let info = self.info()?;
        let cfg = ExperimentConfig::load(&self.config(), &[])?;
        Ok((cfg, info))
    }
}
