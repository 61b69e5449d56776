//! The predictions of one split (`predictions_<split>.parquet`: date, ticker, score, label) as a dense
//! (day × ticker) grid, the input of every backtest. Tickers are sorted by name, so a ticker's index order
//! is its name order (the deterministic tie-break of rankings).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::*;

use crate::data::dates::date_from_days;
use crate::eval::frame::{LABEL_END_COLUMN, RISK_COLUMN};

use crate::error::{Error, Result};

pub struct Market {
    /// D_0..D_T, ascending.
    pub dates: Vec<NaiveDate>,
    /// Ascending by name.
    pub tickers: Vec<String>,
    /// (T + 1, N) row-major; None where the ticker has no (finite) score that day.
    pub scores: Vec<Option<f64>>,
    /// (T + 1, N) row-major next-day returns; None where unknown.
    pub labels: Vec<Option<f64>>,
}

/// One (date, ticker, score, label) row.
pub type Row = (NaiveDate, String, Option<f64>, Option<f64>);

impl Market {
    pub fn n_tickers(&self) -> usize {
        self.tickers.len()
    }

    /// T: days on which a trade earns a return (every date but the last).
    pub fn n_trading_days(&self) -> usize {
        self.dates.len().saturating_sub(1)
    }

    pub fn score(&self, day: usize, ticker: usize) -> Option<f64> {
        self.scores[day * self.n_tickers() + ticker]
    }

    pub fn label(&self, day: usize, ticker: usize) -> Option<f64> {
        self.labels[day * self.n_tickers() + ticker]
    }

    /// The same market traded `days` dates late: the score known at the close of D_t is acted on at the
    /// close of D_{t+days} (the first `days` dates have no score, so the book starts in cash). Labels, and
    /// so the returns a position earns, stay where they are.
    pub fn delayed(&self, days: usize) -> Market {
        let n = self.n_tickers();
        let cells = self.scores.len();
        let shift = (days * n).min(cells);
        let mut scores = vec![None; shift];
        scores.extend_from_slice(&self.scores[..cells - shift]);
        Market {
            dates: self.dates.clone(),
            tickers: self.tickers.clone(),
            scores,
            labels: self.labels.clone(),
        }
    }

    /// Builds the grid from rows in any order; non-finite values count as missing. A repeated
    /// (date, ticker) is an error, and a backtest needs at least two dates.
    pub fn from_rows(rows: impl IntoIterator<Item = Row>) -> Result<Market> {
        let rows: Vec<Row> = rows.into_iter().collect();
        let dates: Vec<NaiveDate> = rows
            .iter()
            .map(|r| r.0)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let tickers: Vec<String> = rows
            .iter()
            .map(|r| r.1.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        if dates.len() < 2 {
            return Err(Error::Backtest(format!(
                "a backtest needs predictions on at least 2 dates, found {}",
                dates.len()
            )));
        }
        let day_index: HashMap<NaiveDate, usize> =
            dates.iter().enumerate().map(|(i, d)| (*d, i)).collect();
        let ticker_index: HashMap<&str, usize> = tickers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let n = tickers.len();
        let mut seen = vec![false; dates.len() * n];
        let mut scores = vec![None; dates.len() * n];
        let mut labels = vec![None; dates.len() * n];
        for (date, ticker, score, label) in &rows {
            let cell = day_index[date] * n + ticker_index[ticker.as_str()];
            if seen[cell] {
                return Err(Error::Backtest(format!(
                    "predictions have more than one row for {ticker} on {date}"
                )));
            }
            seen[cell] = true;
            scores[cell] = score.filter(|v| v.is_finite());
            labels[cell] = label.filter(|v| v.is_finite());
        }
        Ok(Market {
            dates,
            tickers,
            scores,
            labels,
        })
    }

    /// Reads a predictions Parquet file written by `storm eval`.
    ///
    /// With `risk_aversion` η > 0 a stock is ranked by its risk-adjusted score μ − η·σ (FactorVAE's TDrisk),
    /// σ being the file's `risk` column, which only probabilistic models write.
    pub fn load_predictions(path: &Path, risk_aversion: f64) -> Result<Market> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let frame = ParquetReader::new(file)
            .finish()
            .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}")))?;
        let mut rows = frame_rows(path, &frame)?;
        if risk_aversion > 0.0 {
            if frame.column(RISK_COLUMN).is_err() {
                return Err(Error::input(
                    path,
                    format!(
                        "no `{RISK_COLUMN}` column: risk-aware ranking needs a model with a risk \
                         estimate (storm or factorvae)"
                    ),
                ));
            }
            let risks = floats(path, &frame, RISK_COLUMN)?;
            for (row, risk) in rows.iter_mut().zip(risks) {
                row.2 = match (row.2, risk) {
                    (Some(mu), Some(sigma)) => Some(mu - risk_aversion * sigma),
                    _ => None,
                };
            }
        }
        let market = Market::from_rows(rows).map_err(|e| Error::input(path, e.to_string()))?;
        if frame.column(LABEL_END_COLUMN).is_ok() {
            refuse_gaps(path, &market, &label_ends(path, &frame)?)?;
        }
        Ok(market)
    }
}

/// Each row's `label_end` date (files written before the column existed are not checked).
fn label_ends(path: &Path, frame: &DataFrame) -> Result<Vec<(NaiveDate, NaiveDate)>> {
    let dates = day_numbers(path, frame, "date")?;
    let ends = day_numbers(path, frame, LABEL_END_COLUMN)?;
    Ok(dates
        .into_iter()
        .zip(ends)
        .filter_map(|(d, e)| Some((date_from_days(d?)?, date_from_days(e?)?)))
        .collect())
}

/// A prediction date whose return runs to a date that is not the next prediction date means a day of the
/// data's calendar has no predictions: its return would silently drop out of every wealth series. Refused,
/// naming the day.
fn refuse_gaps(path: &Path, market: &Market, ends: &[(NaiveDate, NaiveDate)]) -> Result<()> {
    let next: HashMap<NaiveDate, NaiveDate> =
        market.dates.windows(2).map(|w| (w[0], w[1])).collect();
    for (date, end) in ends {
        if let Some(&following) = next.get(date) {
            if *end < following {
                return Err(Error::input(
                    path,
                    format!(
                        "the predictions skip {end}: {date}'s return runs to it, but the next date with \
                         predictions is {following}. The backtest would drop that day's return; a day with \
                         no windows inside a split means its data are missing for every stock (check the \
                         price file around {end})"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A Date (or Datetime) column as Polars day numbers.
fn day_numbers(path: &Path, frame: &DataFrame, name: &str) -> Result<Vec<Option<i32>>> {
    let col = column(path, frame, name)?;
    let col = match col.dtype() {
        DataType::Date => col.clone(),
        DataType::Datetime(_, _) => col.cast(&DataType::Date)?,
        other => {
            return Err(Error::input(
                path,
                format!("column `{name}` must be a Date, found {other}"),
            ))
        }
    };
    Ok(col.date()?.physical().iter().collect())
}

fn column<'a>(path: &Path, frame: &'a DataFrame, name: &str) -> Result<&'a Column> {
    frame.column(name).map_err(|_| {
        let found: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        Error::input(
            path,
            format!(
                "missing column `{name}`; columns found: {}",
                found.join(", ")
            ),
        )
    })
}

fn floats(path: &Path, frame: &DataFrame, name: &str) -> Result<Vec<Option<f64>>> {
    let col = column(path, frame, name)?;
    if !col.dtype().is_primitive_numeric() {
        return Err(Error::input(
            path,
            format!("column `{name}` must be numeric, found {}", col.dtype()),
        ));
    }
    Ok(col.cast(&DataType::Float64)?.f64()?.iter().collect())
}

fn frame_rows(path: &Path, frame: &DataFrame) -> Result<Vec<Row>> {
    let days = day_numbers(path, frame, "date")?;
    let tickers = column(path, frame, "ticker")?.cast(&DataType::String)?;
    let tickers = tickers.str()?;
    let scores = floats(path, frame, "score")?;
    let labels = floats(path, frame, "label")?;
    let mut rows = Vec::with_capacity(frame.height());
    for (i, (day, ticker)) in days.iter().zip(tickers.iter()).enumerate() {
        let (Some(day), Some(ticker)) = (day, ticker) else {
            return Err(Error::input(
                path,
                format!("row {}: missing date or ticker", i + 1),
            ));
        };
        let date = date_from_days(*day).ok_or_else(|| {
            Error::input(path, format!("row {}: date {day} is out of range", i + 1))
        })?;
        rows.push((date, ticker.to_string(), scores[i], labels[i]));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn grid_is_sorted_and_fills_missing_cells_with_none() {
        let rows = vec![
            (d("2024-01-03"), "B".to_string(), Some(1.0), None),
            (d("2024-01-02"), "B".to_string(), Some(f64::NAN), Some(0.1)),
            (d("2024-01-02"), "A".to_string(), Some(2.0), Some(0.2)),
        ];
        let m = Market::from_rows(rows).unwrap();
        assert_eq!(m.dates, vec![d("2024-01-02"), d("2024-01-03")]);
        assert_eq!(m.tickers, vec!["A", "B"]);
        assert_eq!(m.n_trading_days(), 1);
        assert_eq!((m.score(0, 0), m.label(0, 0)), (Some(2.0), Some(0.2)));
        assert_eq!((m.score(0, 1), m.label(0, 1)), (None, Some(0.1)));
        assert_eq!((m.score(1, 0), m.label(1, 0)), (None, None));
    }

    #[test]
    fn duplicates_and_single_dates_are_errors() {
        let row = (d("2024-01-02"), "A".to_string(), Some(1.0), Some(0.0));
        let other = (d("2024-01-03"), "A".to_string(), Some(1.0), None);
        let err = Market::from_rows(vec![row.clone(), other, row.clone()])
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .contains("more than one row for A on 2024-01-02"),
            "{err}"
        );
        let err = Market::from_rows(vec![row]).err().unwrap();
        assert!(err.to_string().contains("at least 2 dates"), "{err}");
    }

    /// Before, a day of the calendar with no predictions inside a split was silently skipped, and its
    /// return dropped out of every wealth series. With `label_end` (written by `storm eval`) it is refused.
    #[test]
    fn a_skipped_day_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, days: &[&str], ends: Option<&[&str]>| {
            let dates: Vec<NaiveDate> = days.iter().map(|s| d(s)).collect();
            let n = dates.len();
            let mut cols = vec![
                Column::new("date".into(), dates),
                Column::new("ticker".into(), vec!["A"; n]),
                Column::new("score".into(), vec![1.0f64; n]),
                Column::new("label".into(), vec![0.01f64; n]),
            ];
            if let Some(ends) = ends {
                let ends: Vec<NaiveDate> = ends.iter().map(|s| d(s)).collect();
                cols.push(Column::new(LABEL_END_COLUMN.into(), ends));
            }
            let path = dir.path().join(name);
            let mut frame = DataFrame::new_infer_height(cols).unwrap();
            ParquetWriter::new(std::fs::File::create(&path).unwrap())
                .finish(&mut frame)
                .unwrap();
            path
        };
        let days = ["2024-01-02", "2024-01-03", "2024-01-05"];
        let whole = write(
            "whole.parquet",
            &days,
            Some(&["2024-01-03", "2024-01-05", "2024-01-08"]),
        );
        assert_eq!(
            Market::load_predictions(&whole, 0.0).unwrap().dates.len(),
            3
        );
        let gap = write(
            "gap.parquet",
            &days,
            Some(&["2024-01-03", "2024-01-04", "2024-01-05"]),
        );
        let err = Market::load_predictions(&gap, 0.0)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("skip 2024-01-04") && err.contains("2024-01-05"),
            "{err}"
        );
        let old = write("old.parquet", &days, None);
        assert!(
            Market::load_predictions(&old, 0.0).is_ok(),
            "files without the column still load"
        );
    }
}
