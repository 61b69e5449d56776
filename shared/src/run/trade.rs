//! `storm trade` on a run directory: one ticker's daily states (the run's exported factor embeddings, or
//! the raw scaled features of its prepared data) and prices per split, and the outputs of the trading task
//! written atomically: `trading_<T>[_raw].json` ([`TradeReport`]), `_actions.csv` and the wealth chart.
//!
//! The day → split assignment always comes from the run's `factors.parquet` (written by `storm export`),
//! so the raw-feature baseline trades exactly the days the factor policy trades. The signal rule reads
//! the run's `predictions_valid.parquet` and `predictions_test.parquet` instead ([`load_signal`]): it needs
//! `storm eval`, not `storm export`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use chrono::NaiveDate;
use polars::prelude::*;

use super::dir::{RunDir, TradeTask};
use super::publish::{publish, ReportFiles};
use crate::config::Split;
use crate::data::dates::date_from_days;
use crate::data::Panel;
use crate::error::{Error, Result};
use crate::trading::signal::SignalData;
use crate::trading::task::{
    actions_csv, FeatureSource, SplitSeries, StateKind, TickerData, TradeOutcome, TradeReport,
};
use crate::trading::PriceSeries;

impl TradeReport {
    /// Reads the report `storm trade` wrote for `ticker` and that task.
    pub fn load(run: &RunDir, ticker: &str, task: TradeTask) -> Result<Self> {
        super::load_json(&run.trade_json(ticker, task))
    }

    /// Which task's files this report belongs with.
    pub fn task(&self) -> TradeTask {
        TradeTask {
            source: self.features,
            algorithm: self.algorithm,
            delay: self.delay,
        }
    }
}

/// The rows of `factors.parquet` for one ticker: day numbers (days since 1970-01-01), splits, states.
struct FactorRows {
    kind: StateKind,
    days: Vec<i32>,
    splits: Vec<String>,
    /// rows × dim, row-major.
    factors: Vec<f32>,
    dim: usize,
}

/// The columns `<prefix>0`, `<prefix>1`, … in index order.
fn numbered_columns(frame: &DataFrame, prefix: &str) -> Vec<(usize, String)> {
    let mut cols: Vec<(usize, String)> = frame
        .get_column_names()
        .iter()
        .filter_map(|n| {
            let k = n.strip_prefix(prefix)?.parse::<usize>().ok()?;
            Some((k, n.to_string()))
        })
        .collect();
    cols.sort();
    cols
}

/// The factor-state columns: paper 003's state (`state_*`: the stock's TS and the day's CS factor
/// embeddings) where the model exported it (STORM), else the factor embedding (`factor_*`).
fn state_columns(frame: &DataFrame) -> (StateKind, Vec<(usize, String)>) {
    let paper = numbered_columns(frame, "state_");
    if paper.is_empty() {
        (
            StateKind::FactorEmbedding,
            numbered_columns(frame, "factor_"),
        )
    } else {
        (StateKind::CsTsEmbeddings, paper)
    }
}

fn read_factor_rows(path: &Path, ticker: &str) -> Result<FactorRows> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let frame = ParquetReader::new(file).finish()?;
    let tickers = frame.column("ticker")?.str()?.clone();
    let rows: Vec<usize> = (0..frame.height())
        .filter(|&i| tickers.get(i) == Some(ticker))
        .collect();
    if rows.is_empty() {
        let known: BTreeSet<&str> = tickers.iter().flatten().collect();
        return Err(Error::Trading(format!(
            "unknown ticker {ticker}; {} has: {}",
            path.display(),
            known.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    let dates = frame.column("date")?.date()?.clone();
    let splits = frame.column("split")?.str()?.clone();
    let (kind, cols) = state_columns(&frame);
    if cols.is_empty() {
        return Err(Error::input(path, "no factor_* or state_* columns"));
    }
    let values: Vec<Float32Chunked> = cols
        .iter()
        .map(|(_, n)| Ok(frame.column(n)?.cast(&DataType::Float32)?.f32()?.clone()))
        .collect::<Result<_>>()?;
    let mut out = FactorRows {
        kind,
        days: Vec::with_capacity(rows.len()),
        splits: Vec::with_capacity(rows.len()),
        factors: Vec::with_capacity(rows.len() * cols.len()),
        dim: cols.len(),
    };
    for &i in &rows {
        let (Some(day), Some(split)) = (dates.physical().get(i), splits.get(i)) else {
            return Err(Error::input(path, format!("row {i} has no date or split")));
        };
        out.days.push(day);
        out.splits.push(split.to_string());
        for v in &values {
            out.factors.push(v.get(i).unwrap_or(f32::NAN));
        }
    }
    Ok(out)
}

/// Collects one split's days (in date order) that have a finite positive price and a finite state.
#[derive(Default)]
struct SplitBuilder {
    rows: Vec<(NaiveDate, f64, Vec<f32>)>,
}

impl SplitBuilder {
    fn finish(mut self, name: &str, ticker: &str) -> Result<SplitSeries> {
        self.rows.sort_by_key(|r| r.0);
        if self.rows.len() < 2 {
            return Err(Error::Trading(format!(
                "{ticker} has {} {name} day(s) with both a state and a price; at least 2 are needed",
                self.rows.len()
            )));
        }
        let dim = self.rows[0].2.len();
        let dates = self.rows.iter().map(|r| r.0).collect();
        let prices = self.rows.iter().map(|r| r.1).collect();
        let states = self.rows.into_iter().flat_map(|r| r.2).collect();
        Ok(SplitSeries {
            dates,
            series: Arc::new(PriceSeries::new(prices, states, dim)?),
        })
    }
}

/// Loads `ticker`'s predicted returns on the valid and test days from the run's predictions (gaps in the
/// calendar refused as the backtest refuses them), with the prepared data's adjusted closes; a day
/// without a finite score or price is left out, so the position held before it is held across it.
pub fn load_signal(run: &RunDir, ticker: &str) -> Result<SignalData> {
    let info = run.info()?;
    let panel = Panel::load(&info.data_dir)?;
    let n = ticker_index(&panel, ticker, &info.data_dir)?;
    let day_index = day_index(&panel);
    let split = |split: Split| -> Result<SplitSeries> {
        let market = super::backtest::load_split(run, split, 0.0)?;
        let j = market
            .tickers
            .iter()
            .position(|t| t == ticker)
            .ok_or_else(|| {
                Error::Trading(format!(
                    "{ticker} has no predictions in {}",
                    run.predictions(split).display()
                ))
            })?;
        let mut builder = SplitBuilder::default();
        for (t, date) in market.dates.iter().enumerate() {
            let score = market.scores[t * market.n_tickers() + j];
            let price = day_index
                .get(date)
                .map(|&d| panel.prices[d * panel.n_tickers() + n]);
            if let (Some(score), Some(price)) = (score, price) {
                if price.is_finite() && price > 0.0 {
                    builder.rows.push((*date, price, vec![score as f32]));
                }
            }
        }
        builder.finish(split.name(), ticker)
    };
    Ok(SignalData {
        ticker: ticker.to_string(),
        valid: split(Split::Valid)?,
        test: split(Split::Test)?,
    })
}

/// Each date of the prepared data → its row.
fn day_index(panel: &Panel) -> HashMap<NaiveDate, usize> {
    panel
        .dates
        .iter()
        .enumerate()
        .map(|(i, d)| (*d, i))
        .collect()
}

/// The position of `ticker` in the prepared data.
fn ticker_index(panel: &Panel, ticker: &str, data_dir: &Path) -> Result<usize> {
    panel
        .tickers
        .iter()
        .position(|t| t == ticker)
        .ok_or_else(|| {
            Error::Trading(format!(
                "{ticker} is not in the prepared data {} ({} tickers: {})",
                data_dir.display(),
                panel.n_tickers(),
                panel.tickers.join(", ")
            ))
        })
}

/// Loads `ticker` of the run with states from `source`; prices are the prepared data's adjusted closes.
/// Only days with both a state and a price are kept. Needs `run.json` (for the data directory) and
/// `factors.parquet`, not the config.
pub fn load_ticker(run: &RunDir, ticker: &str, source: FeatureSource) -> Result<TickerData> {
    if source == FeatureSource::Predictions {
        return Err(Error::Trading(
            "predicted returns are traded by the signal rule, which reads them with load_signal"
                .into(),
        ));
    }
    let info = run.info()?;
    let factors_path = run.factors();
    if !factors_path.is_file() {
        return Err(Error::Trading(format!(
            "{} not found: run `storm export --run {}` first",
            factors_path.display(),
            run.path().display()
        )));
    }
    let rows = read_factor_rows(&factors_path, ticker)?;
    let panel = Panel::load(&info.data_dir)?;
    let n = ticker_index(&panel, ticker, &info.data_dir)?;
    let [train, valid, test] = split_rows(&panel, n, &rows, source);
    Ok(TickerData {
        ticker: ticker.to_string(),
        source,
        state: match source {
            FeatureSource::Factors => rows.kind,
            FeatureSource::Raw => StateKind::RawFeatures,
            FeatureSource::Predictions => StateKind::PredictedReturn,
        },
        train: train.finish("train", ticker)?,
        valid: valid.finish("valid", ticker)?,
        test: test.finish("test", ticker)?,
    })
}

/// Sorts the factor rows of stock `n` into train, valid and test days with their price and state.
fn split_rows(
    panel: &Panel,
    n: usize,
    rows: &FactorRows,
    source: FeatureSource,
) -> [SplitBuilder; 3] {
    let day_index = day_index(panel);
    let (nt, d) = (panel.n_tickers(), panel.n_features());
    let mut builders: [SplitBuilder; 3] = Default::default();
    for (r, (&day, split)) in rows.days.iter().zip(&rows.splits).enumerate() {
        let k = match split.as_str() {
            "train" => 0,
            "valid" => 1,
            "test" => 2,
            _ => continue,
        };
        let Some(date) = date_from_days(day) else {
            continue;
        };
        let Some(&t) = day_index.get(&date) else {
            continue;
        };
        let price = panel.prices[t * nt + n];
        let state: Vec<f32> = match source {
            FeatureSource::Factors => rows.factors[r * rows.dim..(r + 1) * rows.dim].to_vec(),
            FeatureSource::Raw if panel.present[t * nt + n] => {
                let at = (t * nt + n) * d;
                panel.features[at..at + d].to_vec()
            }
            FeatureSource::Raw | FeatureSource::Predictions => continue,
        };
        if price.is_finite() && price > 0.0 && state.iter().all(|v| v.is_finite()) {
            builders[k].rows.push((date, price, state));
        }
    }
    builders
}

/// Paths written by [`write_outputs`] (`png` is `None` when the chart could not be drawn).
pub type TradeFiles = ReportFiles;

/// Writes the JSON report, the actions CSV and the wealth chart into the run atomically.
pub fn write_outputs(run: &RunDir, out: &TradeOutcome) -> Result<TradeFiles> {
    let (t, task) = (&out.report.ticker, out.report.task());
    let paths = (
        run.trade_json(t, task),
        run.trade_actions_csv(t, task),
        run.trade_png(t, task),
    );
    let draw = |png: &Path| draw_wealth(png, out);
    publish(run, paths, actions_csv(&out.actions), draw, &out.report)
}

/// The policy's and Buy&Hold's wealth on the days traded (those of the actions, shifted by any delay).
fn draw_wealth(path: &Path, out: &TradeOutcome) -> Result<()> {
    let r = &out.report;
    let title = format!(
        "{} ({}, {} states), test {} .. {}, cost {}",
        r.ticker,
        r.algorithm.label(),
        r.features.name(),
        r.days.test_first_date,
        r.days.test_last_date,
        r.params.cost
    );
    let dates: Vec<NaiveDate> = out.actions.iter().map(|a| a.date).collect();
    let series: [(&str, &[f64]); 2] = [
        (r.algorithm.label(), &out.policy_wealth),
        ("Buy&Hold", &out.buy_and_hold_wealth),
    ];
    crate::plot::wealth_curves(path, &title, &dates, &series)
}
