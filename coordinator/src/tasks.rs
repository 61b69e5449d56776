//! The downstream tasks a job runs after pretraining — evaluation, the TopK-Drop backtest, factor export and
//! PPO trading — with their settings as written in sweep and paper configs (`[backtest]`, `[trade]`), and
//! the job steps they expand into.

use serde::{Deserialize, Serialize};
use storm_shared::error::{Error, Result};
use storm_shared::portfolio::report::MAX_DELAY;
use storm_shared::trading::dqn::DqnConfig;
use storm_shared::trading::learner::Algorithm;
use storm_shared::trading::ppo::PpoConfig;
use storm_shared::trading::sac::SacConfig;
use storm_worker::{Step, TradeFeatures};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// RankIC/RankICIR on valid and test.
    Eval,
    /// TopK-Drop on the test predictions (needs eval).
    Backtest,
    /// Factor embeddings per (date, stock).
    Export,
    /// PPO on each `[trade].tickers` (adds export), and the signal rule on each model's predictions
    /// (with eval).
    Trade,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BacktestSettings {
    pub k: usize,
    pub drop: usize,
    pub cost: f64,
    /// `builtin:dji`, a CSV/Parquet file with date and close columns, or `none`.
    pub index: String,
    /// Execution delays to backtest, each its own step (0: the paper's same-close trade; 1: the next close).
    pub delays: Vec<usize>,
}

impl Default for BacktestSettings {
    fn default() -> Self {
        BacktestSettings {
            k: 5,
            drop: 3,
            cost: 1e-4,
            index: "builtin:dji".into(),
            delays: vec![0],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TradeSettings {
    pub tickers: Vec<String>,
    /// Trade only in the jobs of the first this-many seeds (the paper: 5 of 10); 0 = every seed.
    pub seeds: usize,
    pub updates: usize,
    pub envs: usize,
    pub window: usize,
    pub eval_every: usize,
    pub cost: f64,
    /// Also run the RL baselines on raw features (Table 3's PPO, DQN, SAC rows), in the jobs of the first
    /// model only.
    pub raw_baseline: bool,
    /// The algorithms of those raw-feature baselines (PPO alone by default; the paper's full table lists
    /// DQN and SAC too). Factor states are always traded with PPO, the paper's choice.
    pub baselines: Vec<Algorithm>,
    /// Also trade each model's own predictions with the signal rule (long when the predicted return is
    /// positive; Table 3's LightGBM, LSTM and Transformer rows), in the jobs of every model but the
    /// reference factors. Needs eval; trains nothing.
    pub signals: bool,
    /// Hyper-parameters (`[trade.ppo]`, `[trade.dqn]`, `[trade.sac]`).
    pub ppo: PpoConfig,
    pub dqn: DqnConfig,
    pub sac: SacConfig,
    /// Execution delays to trade at, each its own steps (0: the paper's same close; 1: the next close).
    pub delays: Vec<usize>,
}

impl Default for TradeSettings {
    fn default() -> Self {
        TradeSettings {
            tickers: ["AAPL", "JPM", "IBM", "INTC", "MSFT"]
                .map(String::from)
                .to_vec(),
            seeds: 0,
            updates: 50,
            envs: 16,
            window: 128,
            eval_every: 5,
            cost: 1e-4,
            raw_baseline: true,
            baselines: vec![Algorithm::Ppo],
            signals: true,
            ppo: PpoConfig::default(),
            dqn: DqnConfig::default(),
            sac: SacConfig::default(),
            delays: vec![0],
        }
    }
}

impl BacktestSettings {
    pub fn validate(&self, origin: &str) -> Result<()> {
        let fail = |f: &str, m: String| Err(Error::config(origin, format!("backtest.{f}"), m));
        if self.k == 0 {
            return fail("k", "must be at least 1".into());
        }
        if self.drop > self.k {
            return fail(
                "drop",
                format!("{} must be at most backtest.k = {}", self.drop, self.k),
            );
        }
        if !(self.cost.is_finite() && (0.0..1.0).contains(&self.cost)) {
            return fail("cost", format!("{} must be in [0, 1)", self.cost));
        }
        if self.index.trim().is_empty() {
            return fail("index", "must be builtin:dji, a file or none".into());
        }
        check_delays(&self.delays).or_else(|m| fail("delays", m))
    }
}

/// A list of execution delays: at least one, each at most [`MAX_DELAY`] days, none twice.
fn check_delays(delays: &[usize]) -> std::result::Result<(), String> {
    if delays.is_empty() {
        return Err("must list at least one delay (0 is the paper's)".into());
    }
    if let Some(d) = delays.iter().find(|d| **d > MAX_DELAY) {
        return Err(format!("{d} must be at most {MAX_DELAY} trading days"));
    }
    let mut sorted = delays.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != delays.len() {
        return Err(format!("{delays:?} lists a delay twice"));
    }
    Ok(())
}

impl TradeSettings {
    pub fn validate(&self, origin: &str, used: bool) -> Result<()> {
        let fail = |f: &str, m: String| Err(Error::config(origin, format!("trade.{f}"), m));
        if used && self.tickers.is_empty() {
            return fail("tickers", "must name at least one ticker to trade".into());
        }
        if let Some(t) = self.tickers.iter().find(|t| t.trim().is_empty()) {
            return fail("tickers", format!("`{t}` is not a ticker"));
        }
        for (f, v) in [
            ("updates", self.updates),
            ("envs", self.envs),
            ("window", self.window),
            ("eval_every", self.eval_every),
        ] {
            if v == 0 {
                return fail(f, "must be at least 1".into());
            }
        }
        if !(self.cost.is_finite() && (0.0..1.0).contains(&self.cost)) {
            return fail("cost", format!("{} must be in [0, 1)", self.cost));
        }
        check_delays(&self.delays).or_else(|m| fail("delays", m))?;
        if let Some(a) = self.baselines.iter().find(|a| !a.is_learned()) {
            return fail(
                "baselines",
                format!(
                    "`{}` is not a learning algorithm (ppo, dqn, sac); the signal rule is `trade.signals`",
                    a.name()
                ),
            );
        }
        if self.raw_baseline && self.baselines.is_empty() {
            return fail(
                "baselines",
                "must list at least one algorithm (ppo, dqn, sac) when raw_baseline is on".into(),
            );
        }
        let mut sorted = self.baselines.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.baselines.len() {
            return fail(
                "baselines",
                format!("{:?} lists an algorithm twice", self.baselines).to_lowercase(),
            );
        }
        self.ppo.validate_as(origin, "trade.ppo.")?;
        if self.baselines.contains(&Algorithm::Dqn) {
            self.dqn.validate_as(origin, "trade.dqn.")?;
        }
        if self.baselines.contains(&Algorithm::Sac) {
            self.sac.validate_as(origin, "trade.sac.")?;
        }
        Ok(())
    }
}

/// Checks a task list: known combinations only, each task once.
pub fn validate_tasks(tasks: &[Task], origin: &str) -> Result<()> {
    for (i, t) in tasks.iter().enumerate() {
        if tasks[..i].contains(t) {
            return Err(Error::config(
                origin,
                "tasks",
                format!("{t:?} is listed twice").to_lowercase(),
            ));
        }
    }
    if tasks.contains(&Task::Backtest) && !tasks.contains(&Task::Eval) {
        return Err(Error::config(
            origin,
            "tasks",
            "backtest trades the test predictions, so it needs eval in the list too",
        ));
    }
    Ok(())
}

/// What one job runs beyond pretraining.
pub struct JobTasks<'a> {
    pub tasks: &'a [Task],
    pub backtest: &'a BacktestSettings,
    pub trade: &'a TradeSettings,
    /// Whether this job trades (its seed is among the first `trade.seeds`, its model trades).
    pub trades: bool,
    /// Whether this job also runs the raw-feature PPO baseline.
    pub raw_baseline: bool,
    /// Whether this job trades its predictions with the signal rule (its seed is among the first
    /// `trade.seeds`, its model predicts returns).
    pub signals: bool,
}

impl JobTasks<'_> {
    pub fn steps(&self, seed: u64) -> Vec<Step> {
        let mut steps = vec![Step::Pretrain];
        let has = |t| self.tasks.contains(&t);
        if has(Task::Eval) {
            for split in ["valid", "test"] {
                steps.push(Step::Eval {
                    split: split.into(),
                });
            }
        }
        if has(Task::Backtest) {
            let b = self.backtest;
            for &delay in &b.delays {
                steps.push(Step::Backtest {
                    split: "test".into(),
                    k: b.k,
                    drop: b.drop,
                    cost: b.cost,
                    index: b.index.clone(),
                    delay,
                });
            }
        }
        let t = self.trade;
        let trades = has(Task::Trade) && self.trades;
        let signals = has(Task::Trade) && has(Task::Eval) && self.signals && t.signals;
        if has(Task::Export) || trades {
            steps.push(Step::Export);
        }
        let mut kinds = Vec::new();
        if trades {
            kinds.push((TradeFeatures::Factors, Algorithm::Ppo));
            if self.raw_baseline && t.raw_baseline {
                kinds.extend(t.baselines.iter().map(|&a| (TradeFeatures::Raw, a)));
            }
        }
        if signals {
            kinds.push((TradeFeatures::Predictions, Algorithm::Signal));
        }
        if !kinds.is_empty() {
            for &delay in &t.delays {
                for ticker in &t.tickers {
                    for &(features, algorithm) in &kinds {
                        steps.push(Step::Trade {
                            ticker: ticker.clone(),
                            features,
                            seed,
                            updates: t.updates,
                            envs: t.envs,
                            window: t.window,
                            eval_every: t.eval_every,
                            cost: t.cost,
                            algorithm,
                            ppo: t.ppo,
                            dqn: t.dqn,
                            sac: t.sac,
                            delay,
                        });
                    }
                }
            }
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_expand_into_ordered_steps() {
        let (b, t) = (
            BacktestSettings::default(),
            TradeSettings {
                tickers: vec!["AAPL".into(), "MSFT".into()],
                ..TradeSettings::default()
            },
        );
        let all = [Task::Eval, Task::Backtest, Task::Trade];
        let jt = JobTasks {
            tasks: &all,
            backtest: &b,
            trade: &t,
            trades: true,
            raw_baseline: true,
            signals: true,
        };
        let keys: Vec<String> = jt.steps(3).iter().map(Step::key).collect();
        assert_eq!(
            keys,
            [
                "pretrain",
                "eval_valid",
                "eval_test",
                "backtest_test",
                "export",
                "trade_AAPL",
                "trade_AAPL_raw",
                "trade_AAPL_signal",
                "trade_MSFT",
                "trade_MSFT_raw",
                "trade_MSFT_signal"
            ]
        );
        let Some(Step::Trade { features, cost, .. }) = jt
            .steps(3)
            .into_iter()
            .find(|s| s.key() == "trade_MSFT_signal")
        else {
            panic!("no signal step")
        };
        assert_eq!((features, cost), (TradeFeatures::Predictions, t.cost));
        // a model without factor embeddings still trades its predictions; without eval it has none
        let signal_only = JobTasks {
            trades: false,
            ..jt
        };
        let keys: Vec<String> = signal_only.steps(0).iter().map(Step::key).collect();
        assert_eq!(keys[4..], ["trade_AAPL_signal", "trade_MSFT_signal"]);
        let no_eval = JobTasks {
            tasks: &[Task::Trade],
            trades: false,
            ..jt
        };
        assert_eq!(no_eval.steps(0).len(), 1);
        let no_trade = JobTasks {
            trades: false,
            signals: false,
            ..jt
        };
        assert_eq!(no_trade.steps(0).len(), 4);
        let off = TradeSettings {
            signals: false,
            ..t.clone()
        };
        let no_signals = JobTasks { trade: &off, ..jt };
        assert_eq!(no_signals.steps(0).len(), 9);
    }

    #[test]
    fn each_backtest_delay_is_its_own_step() {
        let b: BacktestSettings = toml::from_str("delays = [0, 1]\n").unwrap();
        b.validate("s.toml").unwrap();
        let jt = JobTasks {
            tasks: &[Task::Eval, Task::Backtest],
            backtest: &b,
            trade: &TradeSettings::default(),
            trades: false,
            raw_baseline: false,
            signals: true,
        };
        let steps = jt.steps(0);
        let keys: Vec<String> = steps.iter().map(Step::key).collect();
        assert_eq!(
            keys[3..],
            ["backtest_test".to_string(), "backtest_test_delay1".into()]
        );
        for (bad, why) in [
            ("[]", "at least one"),
            ("[0, 0]", "twice"),
            ("[22]", "at most"),
        ] {
            let b: BacktestSettings = toml::from_str(&format!("delays = {bad}\n")).unwrap();
            let e = b.validate("s.toml").unwrap_err().to_string();
            assert!(e.contains("backtest.delays") && e.contains(why), "{e}");
        }
    }

    #[test]
    fn settings_are_checked_with_field_names() {
        let b = BacktestSettings {
            drop: 9,
            ..BacktestSettings::default()
        };
        let e = b.validate("s.toml").unwrap_err().to_string();
        assert!(e.contains("backtest.drop"), "{e}");
        let t = TradeSettings {
            tickers: vec![],
            ..TradeSettings::default()
        };
        assert!(t.validate("s.toml", false).is_ok());
        let e = t.validate("s.toml", true).unwrap_err().to_string();
        assert!(e.contains("trade.tickers"), "{e}");
        let e = validate_tasks(&[Task::Backtest], "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs eval"), "{e}");
        let e = validate_tasks(&[Task::Eval, Task::Eval], "s.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice"), "{e}");
    }

    /// The steps of a job that trades with these settings (raw baselines on).
    fn trade_steps(t: &TradeSettings) -> Vec<Step> {
        t.validate("p.toml", true).unwrap();
        let b = BacktestSettings::default();
        let jt = JobTasks {
            tasks: &[Task::Trade],
            backtest: &b,
            trade: t,
            trades: true,
            raw_baseline: true,
            signals: true,
        };
        jt.steps(0)
    }

    #[test]
    fn each_trade_delay_is_its_own_set_of_trade_steps() {
        let t: TradeSettings = toml::from_str("tickers = [\"AAPL\"]\ndelays = [0, 1]\n").unwrap();
        let keys: Vec<String> = trade_steps(&t).iter().map(Step::key).collect();
        assert_eq!(
            keys[2..],
            [
                "trade_AAPL",
                "trade_AAPL_raw",
                "trade_AAPL_delay1",
                "trade_AAPL_raw_delay1"
            ]
        );
        for (bad, why) in [
            ("[]", "at least one"),
            ("[1, 1]", "twice"),
            ("[22]", "at most"),
        ] {
            let t: TradeSettings = toml::from_str(&format!("delays = {bad}\n")).unwrap();
            let e = t.validate("p.toml", true).unwrap_err().to_string();
            assert!(e.contains("trade.delays") && e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn raw_baselines_run_each_listed_algorithm_and_factors_stay_ppo() {
        let t: TradeSettings = toml::from_str(
            "tickers = [\"AAPL\"]\nbaselines = [\"ppo\", \"dqn\", \"sac\"]\n[dqn]\nbatch_size = 8\n",
        )
        .unwrap();
        let steps = trade_steps(&t);
        let keys: Vec<String> = steps.iter().map(Step::key).collect();
        assert_eq!(
            keys[2..],
            [
                "trade_AAPL",
                "trade_AAPL_raw",
                "trade_AAPL_raw_dqn",
                "trade_AAPL_raw_sac"
            ]
        );
        let Some(Step::Trade { dqn, algorithm, .. }) = steps.get(4) else {
            panic!("{steps:?}")
        };
        assert_eq!((dqn.batch_size, *algorithm), (8, Algorithm::Dqn));
        for (bad, why) in [
            ("baselines = []", "at least one"),
            ("baselines = [\"dqn\", \"dqn\"]", "twice"),
            ("baselines = [\"sac\"]\n[sac]\ntau = 3.0", "trade.sac.tau"),
            ("baselines = [\"signal\"]", "trade.signals"),
        ] {
            let t: TradeSettings = toml::from_str(bad).unwrap();
            let e = t.validate("p.toml", true).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(toml::from_str::<TradeSettings>("baselines = [\"a2c\"]").is_err());
    }

    #[test]
    fn ppo_settings_are_read_checked_and_carried_into_the_steps() {
        let t: TradeSettings =
            toml::from_str("tickers = [\"AAPL\"]\n[ppo]\nn_steps = 32\nhidden = 16\n").unwrap();
        assert_eq!((t.ppo.n_steps, t.ppo.hidden), (32, 16));
        assert_eq!(
            t.ppo.epochs,
            PpoConfig::default().epochs,
            "unset fields keep the defaults"
        );
        let b = BacktestSettings::default();
        let jt = JobTasks {
            tasks: &[Task::Trade],
            backtest: &b,
            trade: &t,
            trades: true,
            raw_baseline: false,
            signals: true,
        };
        let steps = jt.steps(0);
        let Some(Step::Trade { ppo, .. }) = steps.last() else {
            panic!("{steps:?}")
        };
        assert_eq!(ppo.n_steps, 32);
        let bad: TradeSettings = toml::from_str("[ppo]\ngamma = 2.0\n").unwrap();
        let e = bad.validate("p.toml", false).unwrap_err().to_string();
        assert!(e.contains("p.toml") && e.contains("trade.ppo.gamma"), "{e}");
        assert!(
            toml::from_str::<TradeSettings>("[ppo]\nnsteps = 3\n").is_err(),
            "unknown keys are refused"
        );
    }
}
