//! Paper configs (`configs/paper/*.toml`): the paper's whole protocol as one plan — every listed model
//! (STORM, its ablations, baselines) pretrained for each seed, evaluated (RankIC/RankICIR), backtested
//! (TopK-Drop) and, for the first `trade.seeds` seeds, traded on each `trade.tickers` (PPO on the factors
//! of models with `trade`, the signal rule on every model's predictions).
//!
//! ```toml
//! base = "../dj30-small.toml"
//! seeds = 10
//! set = ["train.epochs=20"]
//! [[models]]
//! name = "STORM"
//! set = []
//! [[models]]
//! name = "STORM-w/o-TS"
//! set = ["model.use_ts=false"]
//! [[models]]                   # no PPO on its factors; its predictions still trade (signal rule)
//! name = "LSTM"
//! set = ["model.kind=lstm"]
//! trade = false
//! [[models]]                   # a zero-training reference factor: one job (seed 0), never traded
//! name = "1-day reversal"
//! set = ["model.kind=reference", "model.reference=reversal_1d"]
//! [trade]
//! seeds = 5
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storm_shared::config::{ModelKind, BUILTIN_DJ30};
use storm_shared::error::{Error, Result};

use crate::plan::{job_id, Plan, PlannedJob};
use crate::sweep_config::{parse_toml, resolve_base, resolve_job_config, validate_common};
use crate::tasks::{BacktestSettings, JobTasks, Task, TradeSettings};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperConfig {
    #[serde(default)]
    pub name: Option<String>,
    /// Experiment config every model starts from, relative to this file.
    pub base: PathBuf,
    /// Seeds 0..seeds (overridden by `storm paper --seeds`).
    #[serde(default = "default_seeds")]
    pub seeds: u64,
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    /// Seconds one attempt may run before it is cancelled and counted as failed (then retried like any
    /// failure); off by default. For hosts that can hang without dying.
    #[serde(default)]
    pub max_attempt_seconds: Option<u64>,
    #[serde(default)]
    pub set: Vec<String>,
    #[serde(default)]
    pub max_steps: Option<u64>,
    pub models: Vec<ModelEntry>,
    #[serde(default)]
    pub backtest: BacktestSettings,
    #[serde(default = "default_trade")]
    pub trade: TradeSettings,
}

/// One row of the paper's tables.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    /// Overrides that make this model out of the base config, e.g. `model.use_ts=false`, `model.kind=lstm`.
    #[serde(default)]
    pub set: Vec<String>,
    /// Whether this model's factor embeddings are traded with PPO (false for models without `storm export`).
    /// Its predictions are traded by the signal rule either way (`trade.signals`), unless it is a
    /// reference factor.
    #[serde(default = "yes")]
    pub trade: bool,
}

fn default_seeds() -> u64 {
    10
}
fn default_max_retries() -> u32 {
    crate::sweep_config::DEFAULT_MAX_RETRIES
}
fn yes() -> bool {
    true
}
fn default_trade() -> TradeSettings {
    TradeSettings {
        seeds: 5,
        ..TradeSettings::default()
    }
}

/// What `storm paper` changes on top of the file.
#[derive(Debug, Clone, Default)]
pub struct PaperOverrides {
    /// `dj30`, `builtin:dj30` or a price file: replaces `data.source` of every job.
    pub data: Option<String>,
    pub seeds: Option<u64>,
    /// Extra `key=value` overrides for every job (after the file's).
    pub set: Vec<String>,
    pub max_steps: Option<u64>,
}

/// `dj30` → `builtin:dj30`; a file path → its absolute path (it must exist).
pub fn data_source(data: &str) -> Result<String> {
    if data == "dj30" || data == BUILTIN_DJ30 {
        return Ok(BUILTIN_DJ30.to_string());
    }
    let p = Path::new(data);
    if !p.is_file() {
        return Err(Error::Sweep(format!(
            "--data {data}: no such file; pass dj30 (the bundled DJ30 prices) or a price file \
             (CSV, CSV.gz or Parquet)"
        )));
    }
    let abs = std::path::absolute(p).map_err(|e| Error::io(p, e))?;
    Ok(abs.display().to_string())
}

impl PaperConfig {
    pub fn load(path: &Path) -> Result<PaperConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let origin = path.display().to_string();
        let cfg: PaperConfig = parse_toml(&text, &origin)?;
        cfg.validate(&origin)?;
        Ok(cfg)
    }

    fn validate(&self, origin: &str) -> Result<()> {
        let fail = |f: String, m: String| Err(Error::config(origin, f, m));
        if self.seeds == 0 {
            return fail("seeds".into(), "must be at least 1".into());
        }
        validate_common(
            origin,
            self.max_retries,
            &self.set,
            self.max_steps,
            self.max_attempt_seconds,
        )?;
        if self.models.is_empty() {
            return fail("models".into(), "list at least one [[models]] entry".into());
        }
        for (i, m) in self.models.iter().enumerate() {
            if m.name.trim().is_empty() {
                return fail(format!("models[{i}].name"), "must not be empty".into());
            }
            if self.models[..i].iter().any(|o| o.name == m.name) {
                return fail(
                    format!("models[{i}].name"),
                    format!("`{}` is listed twice", m.name),
                );
            }
            if let Some(s) = m.set.iter().find(|s| !s.contains('=')) {
                return fail(
                    format!("models[{i}].set"),
                    format!("`{s}` must look like key=value"),
                );
            }
        }
        self.backtest.validate(origin)?;
        self.trade.validate(origin, true)
    }

    /// Every (model × seed) job. Trading runs in the first `trade.seeds` seeds of models with `trade`;
    /// the raw-feature PPO baseline in the jobs of the first model that trades.
    pub fn plan(&self, path: &Path, o: &PaperOverrides) -> Result<Plan> {
        let origin = path.display().to_string();
        let base = resolve_base(&self.base, path);
        let seeds = o.seeds.unwrap_or(self.seeds);
        if seeds == 0 {
            return Err(Error::Sweep("--seeds must be at least 1".into()));
        }
        let source = o.data.as_deref().map(data_source).transpose()?;
        let max_steps = o.max_steps.or(self.max_steps);
        let trade_seeds = match self.trade.seeds {
            0 => seeds,
            n => n as u64,
        };
        let keys = vec!["model".to_string()];
        let tasks = [Task::Eval, Task::Backtest, Task::Trade];
        // the raw-feature PPO baseline runs once per seed, in the jobs of the first model that trades
        let raw_model = self.models.iter().position(|m| m.trade);
        let mut jobs = Vec::new();
        for (mi, model) in self.models.iter().enumerate() {
            for seed in 0..seeds {
                let labels = vec![model.name.clone()];
                let id = job_id(&keys, &labels, seed);
                let mut overrides = self.set.clone();
                overrides.extend(model.set.iter().cloned());
                overrides.extend(o.set.iter().cloned());
                if let Some(src) = &source {
                    overrides.push(format!("data.source={}", toml::Value::String(src.clone())));
                }
                overrides.push(format!("train.seed={seed}"));
                let config = resolve_job_config(&base, &overrides, &origin, &id)?;
                // a reference factor is deterministic: one job; a model without embeddings (a reference factor,
                // LightGBM) is never traded with PPO, and a reference's score is no return forecast to signal on
                let reference = config.model.kind == ModelKind::Reference;
                if reference && seed > 0 {
                    break;
                }
                let steps = JobTasks {
                    tasks: &tasks,
                    backtest: &self.backtest,
                    trade: &self.trade,
                    trades: model.trade && config.model.kind.has_embeddings() && seed < trade_seeds,
                    raw_baseline: Some(mi) == raw_model,
                    signals: !reference && seed < trade_seeds,
                }
                .steps(seed);
                jobs.push(PlannedJob {
                    id,
                    labels,
                    seed,
                    config,
                    steps,
                });
            }
        }
        let name = self.name.clone().unwrap_or_else(|| {
            path.file_stem()
                .map_or("paper".into(), |s| s.to_string_lossy().to_string())
        });
        let plan = Plan {
            name,
            keys,
            max_retries: self.max_retries,
            max_attempt_seconds: self.max_attempt_seconds,
            max_steps,
            jobs,
        };
        plan.check_unique_ids(&origin, "models")?;
        Ok(plan)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped paper config loads and plans: each model has one job per seed, a reference factor
    /// one job, and the model kinds the entries name are the ones planned.
    #[test]
    fn every_shipped_paper_config_plans() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/paper");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let cfg =
                PaperConfig::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let plan = cfg
                .plan(&path, &PaperOverrides::default())
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for model in &cfg.models {
                let jobs: Vec<_> = plan
                    .jobs
                    .iter()
                    .filter(|j| j.labels[0] == model.name)
                    .collect();
                let reference = jobs[0].config.model.kind == ModelKind::Reference;
                let expected = if reference { 1 } else { cfg.seeds as usize };
                assert_eq!(jobs.len(), expected, "{}: {}", path.display(), model.name);
                if let Some(kind) = model.set.iter().find_map(|s| s.strip_prefix("model.kind=")) {
                    assert_eq!(jobs[0].config.model.kind.name(), kind, "{}", model.name);
                }
            }
            seen += 1;
        }
        assert!(seen >= 5, "only {seen} paper configs in {}", dir.display());
    }

    fn setup(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("base.toml"),
            "name = \"b\"\n[train]\nwarmup_epochs = 1\n",
        )
        .unwrap();
        let p = dir.path().join("paper.toml");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    const PAPER: &str = r#"
base = "base.toml"
seeds = 3
[[models]]
name = "STORM"
[[models]]
name = "STORM-w/o-TS"
set = ["model.use_ts=false"]
[[models]]
name = "NoTrade"
set = ["model.use_cs=false"]
trade = false
[trade]
seeds = 2
tickers = ["AAPL"]
"#;

    #[test]
    fn models_times_seeds_with_trading_in_the_first_seeds() {
        let (_d, p) = setup(PAPER);
        let cfg = PaperConfig::load(&p).unwrap();
        let plan = cfg.plan(&p, &PaperOverrides::default()).unwrap();
        assert_eq!(plan.jobs.len(), 9);
        assert_eq!(plan.keys, ["model"]);
        let keys =
            |i: usize| -> Vec<String> { plan.jobs[i].steps.iter().map(|s| s.key()).collect() };
        assert_eq!(plan.jobs[0].id, "model=STORM_seed=0");
        assert!(
            keys(0).contains(&"trade_AAPL_raw".to_string()),
            "first model runs the raw baseline"
        );
        assert!(
            !keys(2).iter().any(|k| k.starts_with("trade")),
            "seed 2 does not trade"
        );
        assert_eq!(plan.jobs[3].id, "model=STORM-w_o-TS_seed=0");
        assert!(!plan.jobs[3].config.model.use_ts);
        assert!(keys(3).contains(&"trade_AAPL".to_string()));
        assert!(!keys(3).contains(&"trade_AAPL_raw".to_string()));
        assert_eq!(
            keys(6)
                .iter()
                .filter(|k| k.starts_with("trade"))
                .collect::<Vec<_>>(),
            ["trade_AAPL_signal"],
            "trade = false: no PPO on its factors, but its predictions are traded"
        );
        assert!(keys(0).contains(&"trade_AAPL_signal".to_string()));
    }

    #[test]
    fn command_line_overrides_apply() {
        let (d, p) = setup(PAPER);
        let prices = d.path().join("prices.csv");
        std::fs::write(&prices, "x").unwrap();
        let cfg = PaperConfig::load(&p).unwrap();
        let o = PaperOverrides {
            data: Some(prices.display().to_string()),
            seeds: Some(1),
            set: vec!["train.epochs=1".into()],
            max_steps: Some(5),
        };
        let plan = cfg.plan(&p, &o).unwrap();
        assert_eq!(plan.jobs.len(), 3);
        assert_eq!(plan.max_steps, Some(5));
        assert_eq!(plan.jobs[0].config.train.epochs, 1);
        assert_eq!(
            plan.jobs[0].config.data.source,
            prices.display().to_string()
        );
        let err = data_source("/no/such/prices.csv").unwrap_err().to_string();
        assert!(err.contains("pass dj30"), "{err}");
        assert_eq!(data_source("dj30").unwrap(), "builtin:dj30");
    }

    #[test]
    fn bad_model_lists_are_rejected() {
        let (_d, p) = setup("base = \"base.toml\"\nmodels = []\n");
        assert!(PaperConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("models"));
        let (_d, p) =
            setup("base = \"base.toml\"\n[[models]]\nname = \"A\"\n[[models]]\nname = \"A\"\n");
        let e = PaperConfig::load(&p).unwrap_err().to_string();
        assert!(e.contains("models[1].name") && e.contains("twice"), "{e}");
        let (_d, p) = setup(
            "base = \"base.toml\"\nseeds = 1\n[[models]]\nname = \"STORM w/o TS\"\n[[models]]\nname = \"STORM_w/o_TS\"\n",
        );
        let cfg = PaperConfig::load(&p).unwrap();
        let e = cfg
            .plan(&p, &PaperOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`model=STORM w/o TS` (seed 0) and `model=STORM_w/o_TS` (seed 0)")
                && e.contains("model=STORM_w_o_TS_seed=0"),
            "{e}"
        );
        let (_d, p) = setup("base = \"base.toml\"\n[[models]]\nname = \"A\"\nsets = []\n");
        assert!(PaperConfig::load(&p)
            .unwrap_err()
            .to_string()
            .contains("unknown field"));
    }
}
