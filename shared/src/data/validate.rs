//! Row-level checks of a price table: on the values as read (positive prices, non-negative volume,
//! high ≥ low, no duplicate (ticker, date)), and on the bars the model will see once missing values are
//! handled (high ≥ low again; open and close inside [low, high], a warning unless strict).

use std::path::Path;

use polars::prelude::*;

use super::csv_text::printable;
use super::dates::day_string;
use super::ingest::{RowUnit, CLOSE, DATE, HIGH, LINE, LOW, OPEN, PRICE_COLUMNS, TICKER, VOLUME};
use crate::error::{Error, Result};

/// The ticker of each row (an empty name where it is null).
pub fn ticker_names(frame: &DataFrame) -> Result<Vec<&str>> {
    Ok(frame
        .column(TICKER)?
        .str()?
        .iter()
        .map(|t| t.unwrap_or(""))
        .collect())
}

fn values(frame: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    Ok(frame.column(name)?.f64()?.iter().collect())
}

/// Checks on the canonical frame as read, still in file order so that row `i` is `unit.number(i)`.
/// Missing (null) values are skipped: the missing-value policy deals with them.
pub fn rows(path: &Path, frame: &DataFrame, unit: RowUnit) -> Result<()> {
    if frame.height() == 0 {
        return Err(Error::input(path, "the file has a header but no rows"));
    }
    let at = |i: usize| format!("{} {}", unit.name(), unit.number(i));
    let tickers = frame.column(TICKER)?.str()?.clone();
    for (i, t) in tickers.iter().enumerate() {
        if t.map(str::trim).unwrap_or("").is_empty() {
            return Err(Error::input(
                path,
                format!("{}, column `{TICKER}`: empty ticker", at(i)),
            ));
        }
    }
    for name in PRICE_COLUMNS {
        if let Some(i) = values(frame, name)?
            .iter()
            .position(|x| x.is_some_and(|x| x <= 0.0))
        {
            return Err(Error::input(
                path,
                format!("{}, column `{name}`: prices must be positive", at(i)),
            ));
        }
    }
    if let Some(i) = values(frame, VOLUME)?
        .iter()
        .position(|x| x.is_some_and(|x| x < 0.0))
    {
        return Err(Error::input(
            path,
            format!("{}, column `{VOLUME}`: volume must not be negative", at(i)),
        ));
    }
    let (high, low) = (values(frame, HIGH)?, values(frame, LOW)?);
    for (i, (h, l)) in high.iter().zip(&low).enumerate() {
        if let (Some(h), Some(l)) = (h, l) {
            if h < l {
                return Err(Error::input(
                    path,
                    format!("{}: high {h} is below low {l}", at(i)),
                ));
            }
        }
    }
    check_duplicates(path, frame, unit)
}

fn check_duplicates(path: &Path, frame: &DataFrame, unit: RowUnit) -> Result<()> {
    let dates: Vec<i32> = frame
        .column(DATE)?
        .date()?
        .physical()
        .into_no_null_iter()
        .collect();
    let tickers = ticker_names(frame)?;
    let mut order: Vec<usize> = (0..frame.height()).collect();
    order.sort_by(|&a, &b| (tickers[a], dates[a]).cmp(&(tickers[b], dates[b])));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if tickers[a] == tickers[b] && dates[a] == dates[b] {
            let day = day_string(dates[a]);
            return Err(Error::input(
                path,
                format!(
                    "duplicate row for ticker {} on {day} ({}s {} and {})",
                    printable(tickers[a]),
                    unit.name(),
                    unit.number(a.min(b)),
                    unit.number(a.max(b))
                ),
            ));
        }
    }
    Ok(())
}

/// Open or close outside [low, high] on some bars: vendors publish such bars, so by default they are
/// counted and reported once.
#[derive(Debug, Clone, PartialEq)]
pub struct OutsideRange {
    pub count: usize,
    /// The first such bar in file order.
    pub first: String,
}

/// Checks the final bars (no nulls left; any row order; [`LINE`] names each row). `high < low` is an
/// error (it can only appear here through a carried-forward value); open or close outside [low, high] is
/// an error when `strict`, else returned for a warning.
pub fn bars(
    path: &Path,
    frame: &DataFrame,
    unit: RowUnit,
    strict: bool,
) -> Result<Option<OutsideRange>> {
    let f64s = |name: &str| -> Result<Vec<f64>> {
        Ok(frame.column(name)?.f64()?.into_no_null_iter().collect())
    };
    let (open, high, low, close) = (f64s(OPEN)?, f64s(HIGH)?, f64s(LOW)?, f64s(CLOSE)?);
    let lines: Vec<u32> = frame.column(LINE)?.u32()?.into_no_null_iter().collect();
    let mut outside: Option<(usize, usize)> = None; // (count, row of the first in file order)
    for i in 0..frame.height() {
        if high[i] < low[i] {
            return Err(Error::input(
                path,
                format!(
                    "{} {}: high {} is below low {} once missing values are carried forward; \
                     use --missing drop for this file",
                    unit.name(),
                    lines[i],
                    high[i],
                    low[i]
                ),
            ));
        }
        let inside = |x: f64| low[i] <= x && x <= high[i];
        if !(inside(open[i]) && inside(close[i])) {
            outside = Some(match outside {
                None => (1, i),
                Some((n, j)) => (n + 1, if lines[i] < lines[j] { i } else { j }),
            });
        }
    }
    let Some((count, i)) = outside else {
        return Ok(None);
    };
    let tickers = frame.column(TICKER)?.str()?;
    let day = frame
        .column(DATE)?
        .date()?
        .physical()
        .get(i)
        .map(day_string);
    let first = format!(
        "{} {}, {} on {}: open {}, high {}, low {}, close {}",
        unit.name(),
        lines[i],
        printable(tickers.get(i).unwrap_or("")),
        day.unwrap_or_default(),
        open[i],
        high[i],
        low[i],
        close[i]
    );
    if strict {
        return Err(Error::input(
            path,
            format!(
                "{count} bar(s) with open or close outside [low, high] (first: {first}); \
                 without --strict they are kept with a warning"
            ),
        ));
    }
    Ok(Some(OutsideRange { count, first }))
}
