//! `storm backtest`: the portfolio-management task on a run's predictions — TopK-Drop against equal weight
//! and an index, metrics printed as a Markdown table and written into the run directory.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use storm_shared::config::Split;
use storm_shared::portfolio::analytics;
use storm_shared::portfolio::report::{
    index_label, parse_index, strategy_label, BacktestParams, MAX_DELAY,
};
use storm_shared::run::backtest::backtest;
use storm_shared::run::RunDir;
use storm_shared::stats::financial::FinancialMetrics;

/// Defaults of the flags a sweep job does not set.
pub const DEFAULT_CASH: f64 = 1e6;
pub const DEFAULT_RISK_FREE: f64 = 0.0;
pub const DEFAULT_RISK_AVERSION: f64 = 0.0;

#[derive(Args)]
pub struct BacktestArgs {
    /// Run directory holding predictions_<split>.parquet (written by `storm eval`).
    #[arg(long)]
    pub run: PathBuf,
    /// Split whose predictions to trade.
    #[arg(long, default_value = "test")]
    pub split: Split,
    /// Names held at most.
    #[arg(long, default_value_t = 5, allow_negative_numbers = true)]
    pub k: i64,
    /// Names sold per day at most (0 ≤ drop ≤ k).
    #[arg(long, default_value_t = 3, allow_negative_numbers = true)]
    pub drop: i64,
    /// Transaction cost per unit of traded value, on buys and sells (1e-4 = 1 basis point).
    #[arg(long, default_value_t = 1e-4, allow_negative_numbers = true)]
    pub cost: f64,
    /// Starting cash.
    #[arg(long, default_value_t = DEFAULT_CASH, allow_negative_numbers = true)]
    pub cash: f64,
    /// Annual risk-free rate for the Sharpe ratio.
    #[arg(long, default_value_t = DEFAULT_RISK_FREE, allow_negative_numbers = true)]
    pub risk_free: f64,
    /// Risk aversion η of FactorVAE's TDrisk: rank by predicted return − η · predicted std (needs a model
    /// with a risk estimate: storm or factorvae). Results go to portfolio_<split>_tdrisk.* . 0 = TopK-Drop.
    #[arg(long, default_value_t = DEFAULT_RISK_AVERSION, allow_negative_numbers = true)]
    pub risk_aversion: f64,
    /// Execution delay in trading days: 0 trades day t's scores at day t's close (the paper), 1 at the next
    /// close. A delayed backtest writes portfolio_<split>[_tdrisk]_delay<d>.* beside the undelayed one.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub delay: i64,
    /// Index benchmark: builtin:dji, a CSV/CSV.gz/Parquet file with date and close columns, or none.
    #[arg(long, default_value = "builtin:dji")]
    pub index: String,
}

/// Counts arrive signed so that a negative value gets the same clear message as any other bad value.
fn params(a: &BacktestArgs) -> Result<BacktestParams> {
    let k = usize::try_from(a.k)
        .map_err(|_| anyhow::anyhow!("--k must be at least 1 (got {})", a.k))?;
    let drop = usize::try_from(a.drop)
        .map_err(|_| anyhow::anyhow!("--drop must be between 0 and --k = {k} (got {})", a.drop))?;
    let delay = usize::try_from(a.delay).map_err(|_| {
        anyhow::anyhow!(
            "--delay must be between 0 and {MAX_DELAY} trading days (got {})",
            a.delay
        )
    })?;
    let params = BacktestParams {
        k,
        drop,
        cost: a.cost,
        cash: a.cash,
        risk_free: a.risk_free,
        index: parse_index(&a.index)?,
        risk_aversion: a.risk_aversion,
        delay,
    };
    params.validate()?;
    Ok(params)
}

fn row(name: &str, m: &FinancialMetrics) -> String {
    super::metrics_row(name, m, &super::cell(m.turnover))
}

pub fn run(a: BacktestArgs) -> Result<()> {
    let params = params(&a)?;
    backtest_split(&RunDir::new(&a.run), a.split, &params)
}

/// `storm backtest` (and a job's backtest step): backtest, refresh the report, print the table.
pub fn backtest_split(run: &RunDir, split: Split, params: &BacktestParams) -> Result<()> {
    let out = backtest(run, split, params)
        .with_context(|| format!("backtesting {}", run.path().display()))?;
    super::report::refresh(run);
    let r = &out.report;
    println!(
        "{} split, {} .. {} ({} trading days, {} stocks), cost {}, cash {}, delay {}",
        split.name(),
        r.period.first_date,
        r.period.last_date,
        r.period.n_trading_days,
        r.period.n_stocks,
        params.cost,
        params.cash,
        params.delay
    );
    println!();
    println!("| strategy | APY | CW | CR | ASR | MDD | AVO | turnover |");
    println!("|---|---|---|---|---|---|---|---|");
    println!("{}", row(&strategy_label(params), &r.strategy));
    println!("{}", row("Equal weight", &r.equal_weight));
    if let Some(m) = &r.index {
        println!("{}", row(&index_label(params), m));
    }
    println!();
    let sweep: Vec<String> = r
        .cost_sweep
        .iter()
        .map(|c| {
            format!(
                "{} bp CW {:.4} (equal weight {:.4})",
                c.cost_bps, c.cw, c.equal_weight_cw
            )
        })
        .collect();
    if !sweep.is_empty() {
        println!("cost sweep, per side: {}", sweep.join(", "));
    }
    if let Some(b) = &r.break_even {
        println!("break-even cost: {}", b.describe());
    }
    println!();
    if let Some(a) = &r.analytics {
        println!("{}", analytics::markdown(a, params.index.as_ref()));
    }
    super::print_written(&out.json, &out.csv, out.png.as_deref());
    Ok(())
}
