//! The flat metrics of a job (`result.json`'s `metrics` map, the sweep tables' `metric` column): one
//! [`MetricKey`] type, whose [`MetricKey::name`] is the only place a metric name is spelled, and the
//! functions that take each step's typed result to its metrics.
//!
//! Names: `train_steps`, `train_seconds`, `train_samples_per_s`, `train_final_loss`, `best_valid_rank_ic`;
//! `<split>_rank_ic`, `_rank_icir`, `_rank_ic_t`, `_ic`, `_icir`, `_codebook_usage_ts|cs`, `_codebook_perplexity_ts|cs`;
//! `<scope>_<financial>` for the scopes `pm` (the backtest's strategy), `ew`, `index`, `trade_<T>`,
//! `trade_<T>_raw`, `bh_<T>` and the financial metrics [`Financial::ALL`]; `trade_<T>[_raw]_trades`.

use std::path::Path;

use serde::Deserialize;

use super::dir::RunDir;
use super::evaluate::EvalReport;
use crate::config::Split;
use crate::error::Result;
use crate::portfolio::report::BacktestReport;
use crate::stats::financial::FinancialMetrics;
use crate::trading::learner::Algorithm;
use crate::trading::task::{trade_stem, FeatureSource, TradeReport};

/// The financial metrics every strategy reports (in this order in tables).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Financial {
    Apy,
    Cw,
    Cr,
    Asr,
    Mdd,
    Avo,
    Turnover,
}

impl Financial {
    pub const ALL: [Financial; 7] = [
        Financial::Apy,
        Financial::Cw,
        Financial::Cr,
        Financial::Asr,
        Financial::Mdd,
        Financial::Avo,
        Financial::Turnover,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Financial::Apy => "apy",
            Financial::Cw => "cw",
            Financial::Cr => "cr",
            Financial::Asr => "asr",
            Financial::Mdd => "mdd",
            Financial::Avo => "avo",
            Financial::Turnover => "turnover",
        }
    }

    pub fn of(self, m: &FinancialMetrics) -> f64 {
        match self {
            Financial::Apy => m.apy,
            Financial::Cw => m.cw,
            Financial::Cr => m.cr,
            Financial::Asr => m.asr,
            Financial::Mdd => m.mdd,
            Financial::Avo => m.avo,
            Financial::Turnover => m.turnover,
        }
    }
}

/// Whose financial metrics: the backtest's strategy and benchmarks, or one ticker's trading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The backtest's TopK-Drop strategy.
    Pm,
    /// TopK-Drop traded this many days after its scores (`--delay`).
    PmDelayed(usize),
    /// The equal-weight benchmark.
    Ew,
    /// The index benchmark.
    Index,
    /// An RL policy on one ticker with factor or raw states, trading `delay` days after its state.
    Trade {
        ticker: String,
        source: FeatureSource,
        algorithm: Algorithm,
        delay: usize,
    },
    /// Buy&Hold of one ticker, over the days a policy trading `delay` days late trades.
    BuyHold { ticker: String, delay: usize },
}

impl Scope {
    fn prefix(&self) -> String {
        match self {
            Scope::Pm => "pm".into(),
            Scope::PmDelayed(delay) => format!("pm_delay{delay}"),
            Scope::Ew => "ew".into(),
            Scope::Index => "index".into(),
            Scope::Trade {
                ticker,
                source,
                algorithm,
                delay,
            } => format!("trade_{}", trade_stem(ticker, *source, *algorithm, *delay)),
            Scope::BuyHold { ticker, delay: 0 } => format!("bh_{ticker}"),
            Scope::BuyHold { ticker, delay } => format!("bh_{ticker}_delay{delay}"),
        }
    }
}

/// What pretraining reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainMetric {
    Steps,
    Seconds,
    SamplesPerSecond,
    FinalLoss,
    BestValidRankIc,
}

/// What evaluation on a split reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalMetric {
    RankIc,
    RankIcir,
    /// The RankIC's Newey–West t-statistic over the split's days.
    RankIcT,
    Ic,
    Icir,
    CodebookUsageTs,
    CodebookUsageCs,
    CodebookPerplexityTs,
    CodebookPerplexityCs,
}

impl EvalMetric {
    pub const ALL: [EvalMetric; 9] = [
        EvalMetric::RankIc,
        EvalMetric::RankIcir,
        EvalMetric::RankIcT,
        EvalMetric::Ic,
        EvalMetric::Icir,
        EvalMetric::CodebookUsageTs,
        EvalMetric::CodebookUsageCs,
        EvalMetric::CodebookPerplexityTs,
        EvalMetric::CodebookPerplexityCs,
    ];

    fn name(self) -> &'static str {
        match self {
            EvalMetric::RankIc => "rank_ic",
            EvalMetric::RankIcir => "rank_icir",
            EvalMetric::RankIcT => "rank_ic_t",
            EvalMetric::Ic => "ic",
            EvalMetric::Icir => "icir",
            EvalMetric::CodebookUsageTs => "codebook_usage_ts",
            EvalMetric::CodebookUsageCs => "codebook_usage_cs",
            EvalMetric::CodebookPerplexityTs => "codebook_perplexity_ts",
            EvalMetric::CodebookPerplexityCs => "codebook_perplexity_cs",
        }
    }

    fn of(self, r: &EvalReport) -> Option<f64> {
        match self {
            EvalMetric::RankIc => Some(r.rank_ic),
            EvalMetric::RankIcir => Some(r.rank_icir),
            EvalMetric::RankIcT => r.rank_ic_t,
            EvalMetric::Ic => Some(r.ic),
            EvalMetric::Icir => Some(r.icir),
            EvalMetric::CodebookUsageTs => r.codebook_usage_ts,
            EvalMetric::CodebookUsageCs => r.codebook_usage_cs,
            EvalMetric::CodebookPerplexityTs => r.codebook_perplexity_ts,
            EvalMetric::CodebookPerplexityCs => r.codebook_perplexity_cs,
        }
    }
}

/// One metric of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricKey {
    Train(TrainMetric),
    Eval(Split, EvalMetric),
    Financial(Scope, Financial),
    /// Trades made by an RL policy on one ticker.
    Trades {
        ticker: String,
        source: FeatureSource,
        algorithm: Algorithm,
        delay: usize,
    },
}

impl MetricKey {
    /// The metric's name in `result.json` and the sweep tables.
    pub fn name(&self) -> String {
        match self {
            MetricKey::Train(m) => match m {
                TrainMetric::Steps => "train_steps",
                TrainMetric::Seconds => "train_seconds",
                TrainMetric::SamplesPerSecond => "train_samples_per_s",
                TrainMetric::FinalLoss => "train_final_loss",
                TrainMetric::BestValidRankIc => "best_valid_rank_ic",
            }
            .to_string(),
            MetricKey::Eval(split, m) => format!("{}_{}", split.name(), m.name()),
            MetricKey::Financial(scope, f) => format!("{}_{}", scope.prefix(), f.name()),
            MetricKey::Trades {
                ticker,
                source,
                algorithm,
                delay,
            } => {
                let scope = Scope::Trade {
                    ticker: ticker.clone(),
                    source: *source,
                    algorithm: *algorithm,
                    delay: *delay,
                };
                format!("{}_trades", scope.prefix())
            }
        }
    }

    /// Shorthand for a financial metric of a scope.
    pub fn financial(scope: Scope, f: Financial) -> Self {
        MetricKey::Financial(scope, f)
    }
}

/// A metric value as `result.json` holds it: `None` where undefined (JSON has no NaN).
pub type Value = Option<f64>;

fn finite(v: f64) -> Value {
    Some(v).filter(|v| v.is_finite())
}

/// The fields of `train.json` (the trainer's outcome) that become metrics; absent or null fields are None.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct TrainSummary {
    pub steps: Option<f64>,
    pub seconds: Option<f64>,
    pub samples_per_second: Option<f64>,
    pub final_loss: Option<f64>,
    pub best_valid_rank_ic: Option<f64>,
}

impl TrainSummary {
    /// Reads `train.json`; Ok(None) when pretraining wrote none.
    pub fn load(run: &RunDir) -> Result<Option<Self>> {
        let path = run.train_json();
        if !Path::new(&path).exists() {
            return Ok(None);
        }
        super::load_json(&path).map(Some)
    }
}

pub fn train_metrics(s: &TrainSummary) -> Vec<(MetricKey, Value)> {
    [
        (TrainMetric::Steps, s.steps),
        (TrainMetric::Seconds, s.seconds),
        (TrainMetric::SamplesPerSecond, s.samples_per_second),
        (TrainMetric::FinalLoss, s.final_loss),
        (TrainMetric::BestValidRankIc, s.best_valid_rank_ic),
    ]
    .into_iter()
    .map(|(m, v)| (MetricKey::Train(m), v.and_then(finite)))
    .collect()
}

pub fn eval_metrics(split: Split, r: &EvalReport) -> Vec<(MetricKey, Value)> {
    EvalMetric::ALL
        .into_iter()
        .map(|m| (MetricKey::Eval(split, m), m.of(r).and_then(finite)))
        .collect()
}

/// Every financial metric of one scope.
pub fn financial_metrics(scope: &Scope, m: &FinancialMetrics) -> Vec<(MetricKey, Value)> {
    Financial::ALL
        .into_iter()
        .map(|f| (MetricKey::Financial(scope.clone(), f), finite(f.of(m))))
        .collect()
}

pub fn backtest_metrics(r: &BacktestReport) -> Vec<(MetricKey, Value)> {
    let strategy = match r.params.params.delay {
        0 => Scope::Pm,
        d => Scope::PmDelayed(d),
    };
    let mut out = financial_metrics(&strategy, &r.strategy);
    out.extend(financial_metrics(&Scope::Ew, &r.equal_weight));
    if let Some(index) = &r.index {
        out.extend(financial_metrics(&Scope::Index, index));
    }
    out
}

pub fn trade_metrics(r: &TradeReport) -> Vec<(MetricKey, Value)> {
    let (ticker, source, algorithm, delay) = (r.ticker.clone(), r.features, r.algorithm, r.delay);
    let mut out = financial_metrics(
        &Scope::Trade {
            ticker: ticker.clone(),
            source,
            algorithm,
            delay,
        },
        &r.policy.metrics,
    );
    out.push((
        MetricKey::Trades {
            ticker: ticker.clone(),
            source,
            algorithm,
            delay,
        },
        Some(r.policy.trades as f64),
    ));
    out.extend(financial_metrics(
        &Scope::BuyHold { ticker, delay },
        &r.buy_and_hold,
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_result_json_keys() {
        let t = |ticker: &str| ticker.to_string();
        let cases = [
            (
                MetricKey::Train(TrainMetric::SamplesPerSecond),
                "train_samples_per_s",
            ),
            (
                MetricKey::Train(TrainMetric::BestValidRankIc),
                "best_valid_rank_ic",
            ),
            (
                MetricKey::Eval(Split::Test, EvalMetric::RankIcir),
                "test_rank_icir",
            ),
            (
                MetricKey::Eval(Split::Valid, EvalMetric::CodebookPerplexityCs),
                "valid_codebook_perplexity_cs",
            ),
            (MetricKey::financial(Scope::Pm, Financial::Apy), "pm_apy"),
            (
                MetricKey::financial(Scope::Index, Financial::Turnover),
                "index_turnover",
            ),
            (
                MetricKey::financial(
                    Scope::Trade {
                        ticker: t("AAPL"),
                        source: FeatureSource::Raw,
                        algorithm: Algorithm::Ppo,
                        delay: 0,
                    },
                    Financial::Cw,
                ),
                "trade_AAPL_raw_cw",
            ),
            (
                MetricKey::financial(
                    Scope::Trade {
                        ticker: t("AAPL"),
                        source: FeatureSource::Raw,
                        algorithm: Algorithm::Dqn,
                        delay: 1,
                    },
                    Financial::Cw,
                ),
                "trade_AAPL_raw_dqn_delay1_cw",
            ),
            (
                MetricKey::financial(
                    Scope::BuyHold {
                        ticker: t("IBM"),
                        delay: 0,
                    },
                    Financial::Mdd,
                ),
                "bh_IBM_mdd",
            ),
            (
                MetricKey::Trades {
                    ticker: t("AAPL"),
                    source: FeatureSource::Factors,
                    algorithm: Algorithm::Ppo,
                    delay: 0,
                },
                "trade_AAPL_trades",
            ),
        ];
        for (key, name) in cases {
            assert_eq!(key.name(), name);
        }
    }

    #[test]
    fn undefined_values_become_none() {
        let m = FinancialMetrics {
            apy: 0.1,
            cw: 1.2,
            cr: f64::NAN,
            asr: f64::INFINITY,
            mdd: 0.0,
            avo: 0.3,
            turnover: 0.5,
            total_cost: 1.0,
            n_days: 3,
        };
        let got = financial_metrics(&Scope::Ew, &m);
        let names: Vec<String> = got.iter().map(|(k, _)| k.name()).collect();
        assert_eq!(
            names,
            [
                "ew_apy",
                "ew_cw",
                "ew_cr",
                "ew_asr",
                "ew_mdd",
                "ew_avo",
                "ew_turnover"
            ]
        );
        let values: Vec<Value> = got.into_iter().map(|(_, v)| v).collect();
        assert_eq!(
            values,
            [
                Some(0.1),
                Some(1.2),
                None,
                None,
                Some(0.0),
                Some(0.3),
                Some(0.5)
            ]
        );
    }
}
