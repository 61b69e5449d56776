//! `storm trade`: the single-stock trading task — PPO, DQN or SAC on one ticker's factor embeddings (or raw
//! features), or the signal rule on the run's predicted returns, against Buy&Hold on the test split;
//! metrics printed as a Markdown table and written into the run.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use storm_shared::run::trade::{load_signal, load_ticker, write_outputs};
use storm_shared::run::RunDir;
use storm_shared::stats::financial::FinancialMetrics;
use storm_shared::trading::dqn::DqnConfig;
use storm_shared::trading::learner::Algorithm;
use storm_shared::trading::ppo::PpoConfig;
use storm_shared::trading::sac::SacConfig;
use storm_shared::trading::signal::run_signal;
use storm_shared::trading::task::{run_trading, FeatureSource, TradeOutcome, TradeParams};
use storm_shared::trading::EnvConfig;

use super::backtest::{DEFAULT_CASH, DEFAULT_RISK_FREE};

#[derive(Clone, Copy, ValueEnum)]
pub enum Features {
    /// The stock's STORM factor embedding (from `storm export`).
    Factors,
    /// The stock's scaled input features (the "PPO on raw features" baseline).
    Raw,
    /// The model's predicted next-day returns (from `storm eval` on valid and test): what the signal rule
    /// trades, and only it.
    Predictions,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum AlgorithmArg {
    /// Proximal policy optimisation (the paper's).
    Ppo,
    /// Double DQN with replay and a target network.
    Dqn,
    /// Soft actor-critic for discrete actions.
    Sac,
    /// No learning: long when the model's predicted next-day return is positive, flat otherwise (reads
    /// the run's predictions; needs `storm eval` on valid and test, not `storm export`).
    Signal,
}

#[derive(Args)]
pub struct TradeArgs {
    /// Run directory holding run.json and factors.parquet (written by `storm export`).
    #[arg(long)]
    pub run: PathBuf,
    /// Stock to trade.
    #[arg(long)]
    pub ticker: String,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub seed: i64,
    /// Training environments (seeded windows of the train days).
    #[arg(long, default_value_t = 16, allow_negative_numbers = true)]
    pub envs: i64,
    /// The learning algorithm.
    #[arg(long, value_enum, default_value = "ppo")]
    pub algorithm: AlgorithmArg,
    /// Training rounds (PPO: rollout + update; DQN and SAC: n-steps of acting + gradient steps).
    #[arg(long, default_value_t = 50, allow_negative_numbers = true)]
    pub updates: i64,
    /// Greedy valid evaluation (model selection) every this many updates.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub eval_every: i64,
    /// Steps per training episode.
    #[arg(long, default_value_t = 128, allow_negative_numbers = true)]
    pub window: i64,
    /// Transaction cost per unit of traded value (1e-4 = 1 basis point).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub cost: f64,
    /// Starting cash.
    #[arg(long, default_value_t = DEFAULT_CASH, allow_negative_numbers = true)]
    pub cash: f64,
    /// Annual risk-free rate for the Sharpe ratio.
    #[arg(long, default_value_t = DEFAULT_RISK_FREE, allow_negative_numbers = true)]
    pub risk_free: f64,
    /// Daily state the policy observes [default: factors; predictions for the signal rule].
    #[arg(long, value_enum)]
    pub features: Option<Features>,
    /// Trade day t's decision at day t+DELAY's close (0: the paper's same-day close; 1: what a practitioner
    /// can trade). Every split is shifted, so selection and Buy&Hold use the same trading days; outputs get
    /// a `_delay<d>` suffix.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub delay: i64,
    #[command(flatten)]
    pub ppo: PpoArgs,
}

/// Hyper-parameters (the `[trade.ppo]`, `[trade.dqn]` and `[trade.sac]` tables of sweep and paper configs).
/// The flags without a `ppo` in their name apply to the chosen algorithm; unset, they take its default.
#[derive(Args)]
pub struct PpoArgs {
    /// Steps per environment per round [default: PPO 128, DQN and SAC 16].
    #[arg(long, allow_negative_numbers = true)]
    pub n_steps: Option<i64>,
    /// Passes over each rollout.
    #[arg(long, default_value_t = PpoConfig::default().epochs as i64, allow_negative_numbers = true)]
    pub ppo_epochs: i64,
    /// Samples per gradient step.
    #[arg(long, default_value_t = PpoConfig::default().minibatch_size as i64, allow_negative_numbers = true)]
    pub minibatch_size: i64,
    /// [default: PPO 3e-4, DQN 5e-4, SAC 3e-4]
    #[arg(long, allow_negative_numbers = true)]
    pub learning_rate: Option<f64>,
    /// Discount factor [default: 0.99].
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// GAE λ.
    #[arg(long, default_value_t = PpoConfig::default().lambda, allow_negative_numbers = true)]
    pub gae_lambda: f64,
    #[arg(long, default_value_t = PpoConfig::default().entropy_coef, allow_negative_numbers = true)]
    pub entropy_coef: f64,
    /// Width of the networks' two hidden layers [default: 64].
    #[arg(long, allow_negative_numbers = true)]
    pub hidden: Option<i64>,
}

impl PpoArgs {
    fn n_steps(&self, default: usize) -> Result<usize> {
        self.n_steps.map_or(Ok(default), |n| count("n-steps", n, 1))
    }

    fn ppo(&self) -> Result<PpoConfig> {
        let d = PpoConfig::default();
        let config = PpoConfig {
            n_steps: self.n_steps(d.n_steps)?,
            epochs: count("ppo-epochs", self.ppo_epochs, 1)?,
            minibatch_size: count("minibatch-size", self.minibatch_size, 1)?,
            learning_rate: self.learning_rate.unwrap_or(d.learning_rate),
            gamma: self.gamma.unwrap_or(d.gamma),
            lambda: self.gae_lambda,
            entropy_coef: self.entropy_coef,
            hidden: self.hidden.unwrap_or(d.hidden),
            ..d
        };
        config.validate_as("storm trade", "--")?;
        Ok(config)
    }

    fn dqn(&self) -> Result<DqnConfig> {
        let d = DqnConfig::default();
        let config = DqnConfig {
            n_steps: self.n_steps(d.n_steps)?,
            learning_rate: self.learning_rate.unwrap_or(d.learning_rate),
            gamma: self.gamma.unwrap_or(d.gamma),
            hidden: self.hidden.unwrap_or(d.hidden),
            ..d
        };
        config.validate_as("storm trade", "--")?;
        Ok(config)
    }

    fn sac(&self) -> Result<SacConfig> {
        let d = SacConfig::default();
        let config = SacConfig {
            n_steps: self.n_steps(d.n_steps)?,
            learning_rate: self.learning_rate.unwrap_or(d.learning_rate),
            gamma: self.gamma.unwrap_or(d.gamma),
            hidden: self.hidden.unwrap_or(d.hidden),
            ..d
        };
        config.validate_as("storm trade", "--")?;
        Ok(config)
    }
}

/// Counts arrive signed so that a negative value gets the same clear message as zero.
fn count(name: &str, v: i64, min: i64) -> Result<usize> {
    if v < min {
        bail!("--{name} must be at least {min} (got {v})");
    }
    Ok(v as usize)
}

fn params(a: &TradeArgs) -> Result<TradeParams> {
    let seed = u64::try_from(a.seed)
        .map_err(|_| anyhow::anyhow!("--seed must be non-negative (got {})", a.seed))?;
    let algorithm = match a.algorithm {
        AlgorithmArg::Ppo => Algorithm::Ppo,
        AlgorithmArg::Dqn => Algorithm::Dqn,
        AlgorithmArg::Sac => Algorithm::Sac,
        AlgorithmArg::Signal => Algorithm::Signal,
    };
    let p = TradeParams {
        seed,
        n_envs: count("envs", a.envs, 1)?,
        n_updates: count("updates", a.updates, 1)?,
        eval_every: count("eval-every", a.eval_every, 1)?,
        window: count("window", a.window, 1)?,
        env: EnvConfig {
            cost_rate: a.cost,
            initial_cash: a.cash,
        },
        algorithm,
        ppo: a.ppo.ppo()?,
        dqn: DqnConfig::default(),
        sac: SacConfig::default(),
        risk_free: a.risk_free,
        delay: count("delay", a.delay, 0)?,
    };
    let p = match algorithm {
        Algorithm::Ppo | Algorithm::Signal => p,
        Algorithm::Dqn => TradeParams {
            dqn: a.ppo.dqn()?,
            ..p
        },
        Algorithm::Sac => TradeParams {
            sac: a.ppo.sac()?,
            ..p
        },
    };
    p.validate()?;
    Ok(p)
}

fn row(name: &str, m: &FinancialMetrics, trades: &str) -> String {
    super::metrics_row(name, m, trades)
}

pub fn run(a: TradeArgs) -> Result<()> {
    let params = params(&a)?;
    let source = match (a.features, params.algorithm) {
        (None, Algorithm::Signal) => FeatureSource::Predictions,
        (None, _) => FeatureSource::Factors,
        (Some(Features::Factors), _) => FeatureSource::Factors,
        (Some(Features::Raw), _) => FeatureSource::Raw,
        (Some(Features::Predictions), _) => FeatureSource::Predictions,
    };
    trade_ticker(&RunDir::new(&a.run), &a.ticker, source, &params)
}

/// Loads the ticker's states and trades them: the signal rule on predictions, a learner on the rest.
fn trade(
    run: &RunDir,
    ticker: &str,
    source: FeatureSource,
    params: &TradeParams,
) -> Result<TradeOutcome> {
    let loading = || format!("loading {ticker} from {}", run.path().display());
    match (params.algorithm, source) {
        (Algorithm::Signal, FeatureSource::Predictions) => {
            let data = load_signal(run, ticker).with_context(loading)?;
            run_signal(&data, params).context("trading the signal rule")
        }
        (Algorithm::Signal, _) | (_, FeatureSource::Predictions) => bail!(
            "the signal rule trades the model's predictions and nothing else trades them: use              `--algorithm signal` with `--features predictions` (its default), or another algorithm with              factors or raw features"
        ),
        _ => {
            let data = load_ticker(run, ticker, source).with_context(loading)?;
            run_trading(&data, params).context("training the trading policy")
        }
    }
}

/// `storm trade` (and a job's trade step): train and test the policy, write its outputs, refresh the
/// report, print the table.
pub fn trade_ticker(
    run: &RunDir,
    ticker: &str,
    source: FeatureSource,
    params: &TradeParams,
) -> Result<()> {
    let out = trade(run, ticker, source, params)?;
    let files = write_outputs(run, &out)?;
    super::report::refresh(run);
    let r = &out.report;
    let selected = match r.algorithm {
        Algorithm::Signal => format!("valid CW {:.4} (not trained)", r.best_valid_cw),
        _ => format!(
            "best valid CW {:.4} at update {}",
            r.best_valid_cw, r.best_update
        ),
    };
    println!(
        "{} ({} states), test {} .. {} ({} days; train {}, valid {}), cost {}, cash {}; {selected}",
        r.ticker,
        r.features.name(),
        r.days.test_first_date,
        r.days.test_last_date,
        r.days.test_days,
        r.days.train_days,
        r.days.valid_days,
        params.env.cost_rate,
        params.env.initial_cash,
    );
    if r.delay > 0 {
        println!(
            "traded {} day(s) late: each decision at the close {} trading day(s) after its state \
             (Buy&Hold over the same days)",
            r.delay, r.delay
        );
    }
    if let (Some(state), Some(dim)) = (r.state, r.state_dim) {
        println!("states: {state:?}, {dim} values a day, plus the position");
    }
    println!();
    println!("| strategy | APY | CW | CR | ASR | MDD | AVO | trades |");
    println!("|---|---|---|---|---|---|---|---|");
    let name = format!("{} ({})", r.algorithm.label(), r.features.name());
    println!(
        "{}",
        row(&name, &r.policy.metrics, &r.policy.trades.to_string())
    );
    println!("{}", row("Buy&Hold", &r.buy_and_hold, "1"));
    println!();
    if let Some(c) = r.train_coverage {
        println!(
            "training: {} episodes from {} distinct start days covered {} of {} train days",
            c.episodes, c.distinct_starts, c.days_seen, c.days
        );
    }
    if let (true, Some(bh)) = (
        r.no_better_than_buy_and_hold_on_valid(),
        r.valid_buy_and_hold_cw,
    ) {
        let who = match r.algorithm {
            Algorithm::Signal => "the signal rule".to_string(),
            _ => format!("the chosen policy (update {})", r.best_update),
        };
        println!(
            "warning: {who} is no better than Buy&Hold on the valid days (CW {:.4} vs {:.4}); its test \
             result is not evidence of skill",
            r.best_valid_cw, bh
        );
    }
    super::print_written(&files.json, &files.csv, files.png.as_deref());
    Ok(())
}
