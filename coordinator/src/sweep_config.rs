//! Sweep configs (`configs/sweeps/*.toml`): a base experiment config, seeds, fixed overrides and a grid of
//! config keys, expanded into a [`Plan`] of (configuration × seed) jobs. Unknown keys are rejected and
//! every value is checked here, once, with errors that name the field.
//!
//! ```toml
//! base = "../dj30-small.toml"      # experiment config, relative to this file
//! seeds = [0, 1, 2]
//! max_retries = 2                   # attempts = 1 + max_retries
//! max_attempt_seconds = 7200        # optional: cancel (and count as failed) an attempt running longer
//! set = ["train.epochs=2"]          # overrides applied to every job
//! tasks = ["eval", "backtest"]      # after pretraining (also "export", "trade")
//! [grid]
//! "model.codebook_size" = [256, 512, 1024]
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storm_shared::config::{ExperimentConfig, ModelKind};
use storm_shared::error::{Error, Result};

use crate::plan::{job_id, label, Plan, PlannedJob};
use crate::tasks::{validate_tasks, BacktestSettings, JobTasks, Task, TradeSettings};

pub const DEFAULT_MAX_RETRIES: u32 = 2;
const MAX_RETRIES_LIMIT: u32 = 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepConfig {
    /// Sweep name for reports (default: the file stem).
    #[serde(default)]
    pub name: Option<String>,
    /// Experiment config every job starts from, relative to the sweep file.
    pub base: PathBuf,
    pub seeds: Vec<u64>,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Seconds one attempt may run before it is cancelled and counted as failed (then retried like any
    /// failure); off by default. For hosts that can hang without dying.
    #[serde(default)]
    pub max_attempt_seconds: Option<u64>,
    /// `key=value` overrides applied to every job before the grid's.
    #[serde(default)]
    pub set: Vec<String>,
    /// Stop each pretraining after this many optimizer steps (smoke runs, tests).
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default = "default_tasks")]
    pub tasks: Vec<Task>,
    /// Config key → list of values; the sweep runs every combination for every seed.
    #[serde(default)]
    pub grid: toml::Table,
    #[serde(default)]
    pub backtest: BacktestSettings,
    #[serde(default)]
    pub trade: TradeSettings,
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

fn default_tasks() -> Vec<Task> {
    vec![Task::Eval, Task::Backtest]
}

/// Parses TOML into `T` with the failing field's path in the error.
pub fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, origin: &str) -> Result<T> {
    let value: toml::Value = toml::from_str(text)
        .map_err(|e| Error::config(origin, "<syntax>", e.message().to_string()))?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let field = e.path().to_string();
        Error::config(origin, field, e.into_inner().to_string())
    })
}

/// Checks the settings every plan file shares.
/// The longest `max_attempt_seconds` accepted: 30 days.
const MAX_ATTEMPT_SECONDS_LIMIT: u64 = 30 * 24 * 3600;

pub fn validate_common(
    origin: &str,
    max_retries: u32,
    set: &[String],
    max_steps: Option<u64>,
    max_attempt_seconds: Option<u64>,
) -> Result<()> {
    if let Some(s) = max_attempt_seconds.filter(|s| !(1..=MAX_ATTEMPT_SECONDS_LIMIT).contains(s)) {
        return Err(Error::config(
            origin,
            "max_attempt_seconds",
            format!("{s} is out of range 1..={MAX_ATTEMPT_SECONDS_LIMIT} (30 days); leave it out for no limit"),
        ));
    }
    if max_retries > MAX_RETRIES_LIMIT {
        return Err(Error::config(
            origin,
            "max_retries",
            format!("{max_retries} is out of range 0..={MAX_RETRIES_LIMIT}"),
        ));
    }
    if let Some(s) = set.iter().find(|s| !s.contains('=')) {
        return Err(Error::config(
            origin,
            "set",
            format!("`{s}` must look like key=value, e.g. train.epochs=2"),
        ));
    }
    if max_steps == Some(0) {
        return Err(Error::config(origin, "max_steps", "must be at least 1"));
    }
    Ok(())
}

/// Loads the base experiment config with `overrides`, naming the sweep file and job in errors.
pub fn resolve_job_config(
    base: &Path,
    overrides: &[String],
    sweep_origin: &str,
    id: &str,
) -> Result<ExperimentConfig> {
    ExperimentConfig::load(base, overrides).map_err(|e| match e {
        Error::Config {
            origin,
            field,
            message,
        } => Error::Config {
            origin: format!("{origin} (job {id} of {sweep_origin})"),
            field,
            message,
        },
        Error::Io {
            path,
            error: source,
        } => Error::Sweep(format!(
            "{sweep_origin}: base config {}: {source}",
            path.display()
        )),
        other => other,
    })
}

/// The base path as written, resolved against the directory of the file that names it.
pub fn resolve_base(base: &Path, file: &Path) -> PathBuf {
    let joined = if base.is_relative() {
        file.parent().unwrap_or(Path::new(".")).join(base)
    } else {
        base.to_path_buf()
    };
    std::fs::canonicalize(&joined)
        .or_else(|_| std::path::absolute(&joined))
        .unwrap_or(joined)
}

impl SweepConfig {
    pub fn load(path: &Path) -> Result<SweepConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let origin = path.display().to_string();
        let cfg: SweepConfig = parse_toml(&text, &origin)?;
        cfg.validate(&origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let fail = |f: String, m: String| Err(Error::config(origin, f, m));
        if self.seeds.is_empty() {
            return fail("seeds".into(), "must list at least one seed".into());
        }
        for (i, s) in self.seeds.iter().enumerate() {
            if self.seeds[..i].contains(s) {
                return fail("seeds".into(), format!("seed {s} is listed twice"));
            }
        }
        validate_common(
            origin,
            self.max_retries,
            &self.set,
            self.max_steps,
            self.max_attempt_seconds,
        )?;
        validate_tasks(&self.tasks, origin)?;
        for (key, values) in &self.grid {
            let field = format!("grid.\"{key}\"");
            if key.trim().is_empty() || key.split('.').any(str::is_empty) {
                return fail(field, "is not a config key like model.codebook_size".into());
            }
            if key == "train.seed" {
                return fail(
                    field,
                    "seeds are swept by the top-level `seeds` list".into(),
                );
            }
            let Some(list) = values.as_array() else {
                return fail(field, "must be a list of values, e.g. [256, 512]".into());
            };
            if list.is_empty() {
                return fail(field, "must list at least one value".into());
            }
            for (i, v) in list.iter().enumerate() {
                if matches!(v, toml::Value::Array(_) | toml::Value::Table(_)) {
                    return fail(field, format!("{v} is not a single value"));
                }
                if list[..i].contains(v) {
                    return fail(field, format!("{v} is listed twice"));
                }
            }
        }
        self.backtest.validate(origin)?;
        self.trade
            .validate(origin, self.tasks.contains(&Task::Trade))?;
        Ok(())
    }

    /// Every (grid combination × seed) job with its resolved, validated experiment config.
    pub fn plan(&self, path: &Path) -> Result<Plan> {
        let origin = path.display().to_string();
        let base = resolve_base(&self.base, path);
        let keys: Vec<String> = self.grid.keys().cloned().collect();
        let mut combos: Vec<Vec<&toml::Value>> = vec![vec![]];
        for key in &keys {
            let values = self.grid[key].as_array().map(Vec::as_slice).unwrap_or(&[]);
            combos = combos
                .into_iter()
                .flat_map(|c| {
                    values.iter().map(move |v| {
                        let mut next = c.clone();
                        next.push(v);
                        next
                    })
                })
                .collect();
        }
        let trade_seeds = match self.trade.seeds {
            0 => self.seeds.len(),
            n => n,
        };
        let mut jobs = Vec::new();
        for combo in &combos {
            let labels: Vec<String> = combo.iter().map(|v| label(v)).collect();
            for (i, &seed) in self.seeds.iter().enumerate() {
                let id = job_id(&keys, &labels, seed);
                let mut overrides = self.set.clone();
                overrides.extend(keys.iter().zip(combo).map(|(k, v)| format!("{k}={v}")));
                overrides.push(format!("train.seed={seed}"));
                let config = resolve_job_config(&base, &overrides, &origin, &id)?;
                let steps = JobTasks {
                    tasks: &self.tasks,
                    backtest: &self.backtest,
                    trade: &self.trade,
                    trades: i < trade_seeds,
                    raw_baseline: combos.first() == Some(combo),
                    signals: i < trade_seeds && config.model.kind != ModelKind::Reference,
                }
                .steps(seed);
                jobs.push(PlannedJob {
                    id,
                    labels: labels.clone(),
                    seed,
                    config,
                    steps,
                });
            }
        }
        let name = self.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or("sweep".into(), |s| s.to_string_lossy().to_string())
        });
        let plan = Plan {
            name,
            keys,
            max_retries: self.max_retries,
            max_attempt_seconds: self.max_attempt_seconds,
            max_steps: self.max_steps,
            jobs,
        };
        plan.check_unique_ids(&origin, "grid")?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn setup(sweep: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sweeps")).unwrap();
        write(
            dir.path(),
            "base.toml",
            "name = \"b\"\n[data]\nsource = \"m.csv\"\n[train]\nwarmup_epochs = 1\n",
        );
        let p = write(&dir.path().join("sweeps"), "s.toml", sweep);
        (dir, p)
    }

    #[test]
    fn a_grid_expands_into_every_combination_and_seed() {
        let (dir, p) = setup(
            r#"
base = "../base.toml"
seeds = [0, 1]
set = ["train.epochs=2"]
[grid]
"model.codebook_size" = [8, 16, 32]
"model.use_ts" = [true, false]
"#,
        );
        let plan = SweepConfig::load(&p).unwrap().plan(&p).unwrap();
        assert_eq!(plan.jobs.len(), 12);
        assert_eq!(plan.keys, ["model.codebook_size", "model.use_ts"]);
        assert_eq!(plan.max_retries, 2);
        let j = &plan.jobs[7];
        assert_eq!(j.id, "codebook_size=16_use_ts=false_seed=1");
        assert_eq!(j.config.model.codebook_size, 16);
        assert!(!j.config.model.use_ts);
        assert_eq!(j.config.train.seed, 1);
        assert_eq!(j.config.train.epochs, 2);
        assert_eq!(
            j.config.data.source,
            dir.path().join("m.csv").display().to_string(),
            "relative data paths resolve against the base config"
        );
        assert_eq!(j.config_label(&plan.keys), "codebook_size=16, use_ts=false");
        assert_eq!(plan.config_labels().len(), 6);
        let mut ids: Vec<&str> = plan.jobs.iter().map(|j| j.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 12, "ids are unique");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("base = \"../base.toml\"\nseeds = []", "seeds"),
            ("base = \"../base.toml\"\nseeds = [1, 1]", "listed twice"),
            (
                "base = \"../base.toml\"\nseeds = [1]\nbogus = 1",
                "unknown field `bogus`",
            ),
            (
                "base = \"../base.toml\"\nseeds = [1]\n[grid]\n\"train.seed\" = [1]",
                "top-level `seeds`",
            ),
            (
                "base = \"../base.toml\"\nseeds = [1]\n[grid]\n\"model.codebook_size\" = 8",
                "must be a list",
            ),
            (
                "base = \"../base.toml\"\nseeds = [1]\nmax_retries = 99",
                "max_retries",
            ),
            (
                "base = \"../base.toml\"\nseeds = [1]\nset = [\"x\"]",
                "key=value",
            ),
            (
                "base = \"../base.toml\"\nseeds = [1]\nmax_attempt_seconds = 0",
                "max_attempt_seconds",
            ),
            (
                "base = \"../base.toml\"\nseeds = [1]\ntasks = [\"fly\"]",
                "tasks",
            ),
            ("seeds = [1]", "missing field `base`"),
        ];
        for (text, want) in cases {
            let (_d, p) = setup(text);
            let err = SweepConfig::load(&p).unwrap_err().to_string();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn a_bad_grid_value_fails_at_plan_time_naming_the_key_and_job() {
        let (_d, p) =
            setup("base = \"../base.toml\"\nseeds = [0]\n[grid]\n\"model.codebook_size\" = [0]\n");
        let err = SweepConfig::load(&p)
            .unwrap()
            .plan(&p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.codebook_size"), "{err}");
        assert!(err.contains("job codebook_size=0_seed=0"), "{err}");
        let (_d, p) = setup("base = \"../nope.toml\"\nseeds = [0]\n");
        let err = SweepConfig::load(&p)
            .unwrap()
            .plan(&p)
            .unwrap_err()
            .to_string();
        assert!(err.contains("nope.toml"), "{err}");
    }
}
