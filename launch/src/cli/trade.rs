//! `storm trade`: the single-stock trading task — PPO on one ticker's factor embeddings (or raw features)
//! against Buy&Hold on the test split; metrics printed as a Markdown table and written into the run.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use storm_shared::run::trade::{load_ticker, write_outputs};
use storm_shared::run::RunDir;
use storm_shared::stats::financial::FinancialMetrics;
use storm_shared::trading::ppo::PpoConfig;
use storm_shared::trading::task::{run_trading, FeatureSource, TradeParams};
use storm_shared::trading::EnvConfig;

use super::backtest::{DEFAULT_CASH, DEFAULT_RISK_FREE};

#[derive(Clone, Copy, ValueEnum)]
pub enum Features {
    /// The stock's STORM factor embedding (from `storm export`).
    Factors,
    /// The stock's scaled input features (the "PPO on raw features" baseline).
    Raw,
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
    /// PPO updates.
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
    /// Daily state the policy observes.
    #[arg(long, value_enum, default_value = "factors")]
    pub features: Features,
    #[command(flatten)]
    pub ppo: PpoArgs,
}

/// PPO hyper-parameters (the `[trade.ppo]` table of sweep and paper configs).
#[derive(Args)]
pub struct PpoArgs {
    /// Steps per environment per rollout.
    #[arg(long, default_value_t = PpoConfig::default().n_steps as i64, allow_negative_numbers = true)]
    pub n_steps: i64,
    /// Passes over each rollout.
    #[arg(long, default_value_t = PpoConfig::default().epochs as i64, allow_negative_numbers = true)]
    pub ppo_epochs: i64,
    /// Samples per gradient step.
    #[arg(long, default_value_t = PpoConfig::default().minibatch_size as i64, allow_negative_numbers = true)]
    pub minibatch_size: i64,
    #[arg(long, default_value_t = PpoConfig::default().learning_rate, allow_negative_numbers = true)]
    pub learning_rate: f64,
    #[arg(long, default_value_t = PpoConfig::default().gamma, allow_negative_numbers = true)]
    pub gamma: f64,
    /// GAE λ.
    #[arg(long, default_value_t = PpoConfig::default().lambda, allow_negative_numbers = true)]
    pub gae_lambda: f64,
    #[arg(long, default_value_t = PpoConfig::default().entropy_coef, allow_negative_numbers = true)]
    pub entropy_coef: f64,
    /// Width of the actor's and the critic's two hidden layers.
    #[arg(long, default_value_t = PpoConfig::default().hidden, allow_negative_numbers = true)]
    pub hidden: i64,
}

impl PpoArgs {
    fn config(&self) -> Result<PpoConfig> {
        let config = PpoConfig {
            n_steps: count("n-steps", self.n_steps, 1)?,
            epochs: count("ppo-epochs", self.ppo_epochs, 1)?,
            minibatch_size: count("minibatch-size", self.minibatch_size, 1)?,
            learning_rate: self.learning_rate,
            gamma: self.gamma,
            lambda: self.gae_lambda,
            entropy_coef: self.entropy_coef,
            hidden: self.hidden,
            ..PpoConfig::default()
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
        ppo: a.ppo.config()?,
        risk_free: a.risk_free,
    };
    p.validate()?;
    Ok(p)
}

fn row(name: &str, m: &FinancialMetrics, trades: &str) -> String {
    super::metrics_row(name, m, trades)
}

pub fn run(a: TradeArgs) -> Result<()> {
    let params = params(&a)?;
    let source = match a.features {
        Features::Factors => FeatureSource::Factors,
        Features::Raw => FeatureSource::Raw,
    };
    trade_ticker(&RunDir::new(&a.run), &a.ticker, source, &params)
}

/// `storm trade` (and a job's trade step): train and test the policy, write its outputs, refresh the
/// report, print the table.
pub fn trade_ticker(
    run: &RunDir,
    ticker: &str,
    source: FeatureSource,
    params: &TradeParams,
) -> Result<()> {
    let data = load_ticker(run, ticker, source)
        .with_context(|| format!("loading {ticker} from {}", run.path().display()))?;
    let out = run_trading(&data, params).context("training the trading policy")?;
    let files = write_outputs(run, &data, &out)?;
    super::report::refresh(run);
    let r = &out.report;
    println!(
        "{} ({} states), test {} .. {} ({} days; train {}, valid {}), cost {}, cash {}; best valid CW {:.4} \
         at update {}",
        r.ticker,
        r.features.name(),
        r.days.test_first_date,
        r.days.test_last_date,
        r.days.test_days,
        r.days.train_days,
        r.days.valid_days,
        params.env.cost_rate,
        params.env.initial_cash,
        r.best_valid_cw,
        r.best_update
    );
    println!();
    println!("| strategy | APY | CW | CR | ASR | MDD | AVO | trades |");
    println!("|---|---|---|---|---|---|---|---|");
    let ppo_name = format!("PPO ({})", r.features.name());
    println!(
        "{}",
        row(&ppo_name, &r.ppo.metrics, &r.ppo.trades.to_string())
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
        println!(
            "warning: the chosen policy (update {}) is no better than Buy&Hold on the valid days \
             (CW {:.4} vs {:.4}); its test result is not evidence of skill",
            r.best_update, r.best_valid_cw, bh
        );
    }
    super::print_written(&files.json, &files.csv, files.png.as_deref());
    Ok(())
}
