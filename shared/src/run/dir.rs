//! [`RunDir`]: the one place that knows the layout of a run directory. Every file a run holds is named
//! here; readers and writers ask a `RunDir` for the path instead of spelling the name.
//!
//! ```text
//! <run>/config.toml                      the resolved experiment config
//! <run>/run.json                         RunInfo: data directory, seed, device, version
//! <run>/data/                            the prepared feature store (unless an existing one was given)
//! <run>/losses.csv, valid.csv            training and validation logs
//! <run>/grad_norms.csv                   per-term gradient norms on the shared encoder (logging steps)
//! <run>/train.json                       the trainer's outcome
//! <run>/checkpoints/step-*/, best/       checkpoints
//! <run>/model.lgb.txt                    the booster of `model.kind = "lightgbm"` (instead of checkpoints)
//! <run>/predictions_<split>.parquet      `storm eval`
//! <run>/eval_<split>.json                `storm eval` (EvalReport)
//! <run>/codebook_usage_<split>.png       `storm eval`
//! <run>/portfolio_<split>[_tdrisk][_delay<d>].json  `storm backtest` (BacktestReport), with _daily.csv and
//! <run>/wealth_<split>[_tdrisk][_delay<d>].png      its chart
//! <run>/factors.parquet                  `storm export`
//! <run>/trading_<T>[_raw][_dqn|_sac].json  `storm trade` (TradeReport), with _actions.csv and .png
//! <run>/report.md, loss_curves.png       `storm report`
//! <run>/diagnose.json, diagnose.md       `storm diagnose` (DiagnoseReport)
//! ```

use std::path::{Path, PathBuf};

use crate::config::Split;
use crate::trading::learner::Algorithm;
use crate::trading::task::{trade_stem, FeatureSource};

/// A run directory (the path it lives at; nothing is read or created by making one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    root: PathBuf,
}

/// File and folder names of a run directory.
pub const CONFIG_FILE: &str = "config.toml";
pub const RUN_FILE: &str = "run.json";
pub const DATA_DIR: &str = "data";
// The trainer and the checkpointer sit below this layer and write these; their names are defined there once.
pub const LOSSES_FILE: &str = crate::train::trainer::LOSS_LOG;
pub const VALID_FILE: &str = crate::train::trainer::VALID_LOG;
pub const GRAD_NORMS_FILE: &str = crate::train::trainer::GRAD_NORM_LOG;
pub const TRAIN_FILE: &str = "train.json";
pub const CHECKPOINTS_DIR: &str = "checkpoints";
pub const BEST_CHECKPOINT_DIR: &str = crate::train::checkpoint::BEST_DIR;
pub const BOOSTER_FILE: &str = crate::train::boosting::BOOSTER_FILE;
pub const FACTORS_FILE: &str = "factors.parquet";
pub const REPORT_FILE: &str = "report.md";
pub const DIAGNOSE_JSON: &str = "diagnose.json";
pub const DIAGNOSE_MD: &str = "diagnose.md";
pub const LOSS_CURVES_PNG: &str = "loss_curves.png";
const TRADING_PREFIX: &str = "trading_";

/// Which backtest of a split a portfolio file holds: plain TopK-Drop or the risk-aware TDrisk, traded at the
/// scores' own close (delay 0) or `delay` days later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortfolioVariant {
    pub risk_aware: bool,
    pub delay: usize,
}

impl PortfolioVariant {
    /// TopK-Drop at delay 0: the paper's backtest.
    pub const PLAIN: PortfolioVariant = PortfolioVariant {
        risk_aware: false,
        delay: 0,
    };

    pub fn of(params: &crate::portfolio::report::BacktestParams) -> PortfolioVariant {
        PortfolioVariant {
            risk_aware: params.risk_aversion > 0.0,
            delay: params.delay,
        }
    }
}

/// `<split>`, then `_tdrisk` for the risk-aware variant and `_delay<d>` for a delayed one, so no backtest
/// overwrites another.
fn variant(split: Split, v: PortfolioVariant) -> String {
    let mut name = split.name().to_string();
    if v.risk_aware {
        name.push_str("_tdrisk");
    }
    if v.delay > 0 {
        name.push_str(&format!("_delay{}", v.delay));
    }
    name
}

/// `trading_` + [`trade_stem`]: `_raw` for the raw-feature states, `_dqn` / `_sac` for those algorithms,
/// `_delay<d>` for a policy trading d days late.
fn trading_stem(ticker: &str, task: TradeTask) -> String {
    format!(
        "{TRADING_PREFIX}{}",
        trade_stem(ticker, task.source, task.algorithm, task.delay)
    )
}

/// Which trading task of a ticker a file belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TradeTask {
    pub source: FeatureSource,
    pub algorithm: Algorithm,
    pub delay: usize,
}

impl TradeTask {
    /// The task without delay.
    pub fn new(source: FeatureSource, algorithm: Algorithm) -> Self {
        TradeTask {
            source,
            algorithm,
            delay: 0,
        }
    }
}

/// The file name of a path this module built (for staging areas, which take names).
pub fn file_name(path: &Path) -> String {
    path.file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
}

impl RunDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RunDir { root: root.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The directory's own name (the report's title), else its whole path.
    pub fn name(&self) -> String {
        self.root.file_name().map_or_else(
            || self.root.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    }

    fn join(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Whether `run.json` exists (a folder of predictions only is not a run).
    pub fn is_run(&self) -> bool {
        self.run_info().is_file()
    }

    pub fn config(&self) -> PathBuf {
        self.join(CONFIG_FILE)
    }
    pub fn run_info(&self) -> PathBuf {
        self.join(RUN_FILE)
    }
    pub fn data(&self) -> PathBuf {
        self.join(DATA_DIR)
    }
    pub fn losses_csv(&self) -> PathBuf {
        self.join(LOSSES_FILE)
    }
    pub fn valid_csv(&self) -> PathBuf {
        self.join(VALID_FILE)
    }
    pub fn grad_norms_csv(&self) -> PathBuf {
        self.join(GRAD_NORMS_FILE)
    }
    pub fn train_json(&self) -> PathBuf {
        self.join(TRAIN_FILE)
    }
    pub fn checkpoints(&self) -> PathBuf {
        self.join(CHECKPOINTS_DIR)
    }
    pub fn best_checkpoint(&self) -> PathBuf {
        self.checkpoints().join(BEST_CHECKPOINT_DIR)
    }
    pub fn booster(&self) -> PathBuf {
        self.join(BOOSTER_FILE)
    }

    pub fn predictions(&self, split: Split) -> PathBuf {
        self.join(&format!("predictions_{}.parquet", split.name()))
    }
    pub fn eval_json(&self, split: Split) -> PathBuf {
        self.join(&format!("eval_{}.json", split.name()))
    }
    pub fn diagnose_json(&self) -> PathBuf {
        self.join(DIAGNOSE_JSON)
    }
    pub fn diagnose_md(&self) -> PathBuf {
        self.join(DIAGNOSE_MD)
    }
    pub fn codebook_usage_png(&self, split: Split) -> PathBuf {
        self.join(&format!("codebook_usage_{}.png", split.name()))
    }

    pub fn portfolio_json(&self, split: Split, v: PortfolioVariant) -> PathBuf {
        self.join(&format!("portfolio_{}.json", variant(split, v)))
    }
    pub fn portfolio_daily_csv(&self, split: Split, v: PortfolioVariant) -> PathBuf {
        self.join(&format!("portfolio_{}_daily.csv", variant(split, v)))
    }
    pub fn wealth_png(&self, split: Split, v: PortfolioVariant) -> PathBuf {
        self.join(&format!("wealth_{}.png", variant(split, v)))
    }

    pub fn factors(&self) -> PathBuf {
        self.join(FACTORS_FILE)
    }

    pub fn trade_json(&self, ticker: &str, task: TradeTask) -> PathBuf {
        self.join(&format!("{}.json", trading_stem(ticker, task)))
    }
    pub fn trade_actions_csv(&self, ticker: &str, task: TradeTask) -> PathBuf {
        self.join(&format!("{}_actions.csv", trading_stem(ticker, task)))
    }
    pub fn trade_png(&self, ticker: &str, task: TradeTask) -> PathBuf {
        self.join(&format!("{}.png", trading_stem(ticker, task)))
    }
    /// The chart next to a trading report found by [`RunDir::trade_reports`].
    pub fn trade_png_of(&self, report_name: &str) -> String {
        format!("{}.png", report_name.trim_end_matches(".json"))
    }
    /// Whether a file name is a trading report (`trading_*.json`).
    pub fn is_trade_report(name: &str) -> bool {
        name.starts_with(TRADING_PREFIX) && name.ends_with(".json")
    }

    pub fn report_md(&self) -> PathBuf {
        self.join(REPORT_FILE)
    }
    pub fn loss_curves_png(&self) -> PathBuf {
        self.join(LOSS_CURVES_PNG)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_documented_layout() {
        const TDRISK: PortfolioVariant = PortfolioVariant {
            risk_aware: true,
            delay: 0,
        };
        let run = RunDir::new("/r");
        let name = |p: PathBuf| file_name(&p);
        assert_eq!(
            name(run.predictions(Split::Test)),
            "predictions_test.parquet"
        );
        assert_eq!(name(run.eval_json(Split::Valid)), "eval_valid.json");
        assert_eq!(
            name(run.portfolio_json(Split::Test, TDRISK)),
            "portfolio_test_tdrisk.json"
        );
        assert_eq!(
            name(run.portfolio_json(
                Split::Test,
                PortfolioVariant {
                    risk_aware: true,
                    delay: 1
                }
            )),
            "portfolio_test_tdrisk_delay1.json"
        );
        assert_eq!(
            name(run.portfolio_daily_csv(Split::Test, PortfolioVariant::PLAIN)),
            "portfolio_test_daily.csv"
        );
        assert_eq!(
            name(run.wealth_png(Split::Valid, TDRISK)),
            "wealth_valid_tdrisk.png"
        );
        assert_eq!(
            name(run.trade_json("AAPL", TradeTask::new(FeatureSource::Raw, Algorithm::Ppo))),
            "trading_AAPL_raw.json"
        );
        assert_eq!(
            name(run.trade_json(
                "AAPL",
                TradeTask::new(FeatureSource::Factors, Algorithm::Sac)
            )),
            "trading_AAPL_sac.json"
        );
        assert_eq!(
            name(run.trade_png("AAPL", TradeTask::new(FeatureSource::Raw, Algorithm::Dqn))),
            "trading_AAPL_raw_dqn.png"
        );
        assert_eq!(
            name(run.trade_actions_csv(
                "AAPL",
                TradeTask::new(FeatureSource::Factors, Algorithm::Ppo)
            )),
            "trading_AAPL_actions.csv"
        );
        let late = TradeTask {
            delay: 1,
            ..TradeTask::new(FeatureSource::Raw, Algorithm::Sac)
        };
        assert_eq!(
            name(run.trade_json("AAPL", late)),
            "trading_AAPL_raw_sac_delay1.json"
        );
        assert_eq!(
            run.trade_png_of("trading_AAPL_raw.json"),
            "trading_AAPL_raw.png"
        );
        assert!(RunDir::is_trade_report("trading_AAPL.json"));
        assert!(!RunDir::is_trade_report("trading_AAPL_actions.csv"));
        assert_eq!(run.best_checkpoint(), PathBuf::from("/r/checkpoints/best"));
        assert_eq!(run.name(), "r");
    }

    /// The checkpointer builds its folder from the run directory itself; it must be the one read here.
    #[test]
    fn the_checkpointer_writes_where_this_layout_reads() {
        use crate::train::checkpoint::Checkpointer;
        let run = RunDir::new("/r");
        assert_eq!(Checkpointer::new(run.path(), 1).dir, run.checkpoints());
        assert_eq!(run.grad_norms_csv(), PathBuf::from("/r/grad_norms.csv"));
    }
}
