//! The run directory: `config.toml` (the resolved config), `run.json` (where its data lives, seed, device),
//! `data/` (the prepared feature store unless an existing one was given), `losses.csv`, `valid.csv`,
//! `checkpoints/`, and what evaluation adds (`predictions_<split>.parquet`, `eval_<split>.json`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic;
use crate::config::ExperimentConfig;
use crate::data::{self, Manifest, Source};
use crate::error::{Error, Result};

pub const CONFIG_FILE: &str = "config.toml";
pub const RUN_FILE: &str = "run.json";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub data_dir: PathBuf,
    pub config_hash: String,
    pub seed: u64,
    pub device: String,
    pub storm_version: String,
}

/// Creates (or reopens) a run directory for `cfg`: writes the resolved config and run info, and returns the
/// prepared data directory (given, already in the run, or prepared now into `<run>/data`).
pub fn open_run(
    cfg: &ExperimentConfig,
    run_dir: &Path,
    data_dir: Option<&Path>,
    device: &str,
    progress: bool,
) -> Result<RunInfo> {
    std::fs::create_dir_all(run_dir).map_err(|e| Error::io(run_dir, e))?;
    if let Ok((_, existing)) = load_run(run_dir) {
        if existing.config_hash != cfg.hash() {
            return Err(Error::Data(format!(
                "{} was created with a different config (hash {} vs {}); choose a new --out, or run with \
                 the run's own {CONFIG_FILE}",
                run_dir.display(),
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
            let d = run_dir.join("data");
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
        .map_err(|e| Error::Data(format!("cannot serialise the config: {e}")))?;
    atomic::write_file(&run_dir.join(CONFIG_FILE), toml.as_bytes())?;
    atomic::write_file(&run_dir.join(RUN_FILE), &serde_json::to_vec_pretty(&info)?)?;
    Ok(info)
}

/// Reads a run directory written by [`open_run`].
pub fn load_run(run_dir: &Path) -> Result<(ExperimentConfig, RunInfo)> {
    let info_path = run_dir.join(RUN_FILE);
    let text = std::fs::read_to_string(&info_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Data(format!(
                "{} is not a run directory (no {RUN_FILE}); create one with `storm pretrain`",
                run_dir.display()
            ))
        } else {
            Error::io(&info_path, e)
        }
    })?;
    let info: RunInfo = serde_json::from_str(&text)
        .map_err(|e| Error::input(&info_path, format!("invalid run info: {e}")))?;
    let cfg = ExperimentConfig::load(&run_dir.join(CONFIG_FILE), &[])?;
    Ok((cfg, info))
}
