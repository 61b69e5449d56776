//! Benchmarks on the same dates as a strategy: equal-weight buy-and-hold of the whole universe, and a market
//! index (the embedded Dow Jones index or a user file with date and close columns).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;

use super::topk_drop::validate_cost_and_cash;
use super::{Market, WealthSeries};
use crate::data::dates::date_from_days;
use crate::data::embedded::DJI_CSV_GZ;
use crate::data::ingest::{parse_table, read_table, Format};
use crate::error::{Error, Result};

/// The name of the embedded Dow Jones Industrial Average closes.
pub const BUILTIN_DJI: &str = "builtin:dji";

/// Equal-weight buy-and-hold: at the close of D_0 buy 1/N of the cash (net of the buy cost) in each of
/// the N stocks that have a label that day, then hold without rebalancing; a position earns 0 on a day its
/// label is null. The cost is paid once, on day 0.
pub fn equal_weight(market: &Market, cost_rate: f64, cash: f64) -> Result<WealthSeries> {
    validate_cost_and_cash(cost_rate, cash)?;
    let bought: Vec<usize> = (0..market.n_tickers())
        .filter(|&j| market.label(0, j).is_some())
        .collect();
    if bought.is_empty() {
        return Err(Error::Backtest(format!(
            "no stock has a label on the first date {}: nothing to buy",
            market.dates[0]
        )));
    }
    let each = cash / (bought.len() as f64 * (1.0 + cost_rate));
    let mut values = vec![each; bought.len()];
    let days = market.n_trading_days();
    let mut wealth = Vec::with_capacity(days + 1);
    wealth.push(cash);
    for day in 0..days {
        for (value, &j) in values.iter_mut().zip(&bought) {
            if let Some(r) = market.label(day, j) {
                *value *= 1.0 + r;
            }
        }
        wealth.push(values.iter().sum());
    }
    let mut traded_value = vec![0.0; days];
    let mut cost = vec![0.0; days];
    traded_value[0] = each * bought.len() as f64;
    cost[0] = traded_value[0] * cost_rate;
    Ok(WealthSeries {
        wealth,
        traded_value,
        cost,
    })
}

/// Daily closes of an index, ascending by date.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexPrices {
    /// Where the closes came from (`builtin:dji` or the file path), for messages.
    pub name: String,
    pub closes: Vec<(NaiveDate, f64)>,
}

/// Where index closes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum IndexSource {
    BuiltinDji,
    File(PathBuf),
}

impl IndexSource {
    pub fn name(&self) -> String {
        match self {
            IndexSource::BuiltinDji => BUILTIN_DJI.to_string(),
            IndexSource::File(p) => p.display().to_string(),
        }
    }

    /// Reads the closes: the embedded gzipped CSV, or a `.csv`, `.csv.gz` or `.parquet` file with a date
    /// column and a close column (`close`, else `adj_close`), matched case-insensitively.
    pub fn read(&self) -> Result<IndexPrices> {
        let path = PathBuf::from(self.name());
        let frame = match self {
            IndexSource::BuiltinDji => parse_table(&path, DJI_CSV_GZ.to_vec(), Format::CsvGz)?,
            IndexSource::File(p) => read_table(p)?,
        };
        Ok(IndexPrices {
            name: self.name(),
            closes: closes(&path, &frame)?,
        })
    }
}

/// The first column whose lower-cased, trimmed name (spaces and dashes as '_') is one of `names`.
fn find_column<'a>(frame: &'a DataFrame, names: &[&str]) -> Option<&'a Column> {
    let canon = |s: &str| s.trim().to_lowercase().replace([' ', '-'], "_");
    names.iter().find_map(|want| {
        frame
            .columns()
            .iter()
            .find(|c| canon(c.name().as_str()) == *want)
    })
}

fn closes(path: &Path, frame: &DataFrame) -> Result<Vec<(NaiveDate, f64)>> {
    let missing = |what: &str| {
        let found: Vec<String> = frame
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        Error::input(
            path,
            format!(
                "missing column `{what}`; columns found: {}",
                found.join(", ")
            ),
        )
    };
    let date = find_column(frame, &["date", "timestamp", "datetime", "day"])
        .ok_or_else(|| missing("date"))?;
    let close =
        find_column(frame, &["close", "adj_close", "adjclose"]).ok_or_else(|| missing("close"))?;
    let dates = parse_dates(path, date)?;
    let values = parse_closes(path, close)?;
    let mut out: Vec<(NaiveDate, f64)> = dates.into_iter().zip(values).collect();
    out.sort_by_key(|(d, _)| *d);
    if let Some(w) = out.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(Error::input(
            path,
            format!("date {} appears more than once", w[0].0),
        ));
    }
    Ok(out)
}

/// Line in a CSV file of 0-based data row `i` (the header is line 1).
fn line_of(i: usize) -> usize {
    i + 2
}

fn parse_dates(path: &Path, col: &Column) -> Result<Vec<NaiveDate>> {
    let as_date = match col.dtype() {
        DataType::Date => Some(col.clone()),
        DataType::Datetime(_, _) => Some(col.cast(&DataType::Date)?),
        _ => None,
    };
    if let Some(c) = as_date {
        return c
            .date()?
            .physical()
            .iter()
            .enumerate()
            .map(|(i, d)| {
                d.and_then(date_from_days).ok_or_else(|| {
                    Error::input(path, format!("row {}: missing or invalid date", i + 1))
                })
            })
            .collect();
    }
    const FORMATS: [&str; 4] = ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%m/%d/%Y"];
    let strings = col.cast(&DataType::String)?;
    strings
        .str()?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let s = v.map(str::trim).unwrap_or("");
            let head = s.split([' ', 'T']).next().unwrap_or("");
            FORMATS
                .iter()
                .find_map(|f| NaiveDate::parse_from_str(head, f).ok())
                .ok_or_else(|| {
                    Error::input(
                        path,
                        format!(
                            "line {}, column `{}`: cannot parse date {s:?}",
                            line_of(i),
                            col.name()
                        ),
                    )
                })
        })
        .collect()
}

fn parse_closes(path: &Path, col: &Column) -> Result<Vec<f64>> {
    let values: Vec<Option<f64>> = if col.dtype().is_primitive_numeric() {
        col.cast(&DataType::Float64)?.f64()?.iter().collect()
    } else {
        let strings = col.cast(&DataType::String)?;
        strings
            .str()?
            .iter()
            .map(|v| v.and_then(|s| s.trim().parse::<f64>().ok()))
            .collect()
    };
    values
        .into_iter()
        .enumerate()
        .map(|(i, v)| match v {
            Some(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err(Error::input(
                path,
                format!(
                    "line {}, column `{}`: the close must be a positive number",
                    line_of(i),
                    col.name()
                ),
            )),
        })
        .collect()
}

/// How many missing dates an error lists before summarising the rest.
const LIST_AT_MOST: usize = 10;

/// The index's wealth on `dates`: V_t = cash · close(D_t) / close(D_0), i.e. close-to-close returns
/// compounded. Every date must have a close; the missing ones are listed in the error.
pub fn index_wealth(index: &IndexPrices, dates: &[NaiveDate], cash: f64) -> Result<WealthSeries> {
    let by_date: HashMap<NaiveDate, f64> = index.closes.iter().copied().collect();
    let missing: Vec<NaiveDate> = dates
        .iter()
        .copied()
        .filter(|d| !by_date.contains_key(d))
        .collect();
    if !missing.is_empty() {
        let mut listed: Vec<String> = missing
            .iter()
            .take(LIST_AT_MOST)
            .map(|d| d.to_string())
            .collect();
        if missing.len() > LIST_AT_MOST {
            listed.push(format!("and {} more", missing.len() - LIST_AT_MOST));
        }
        return Err(Error::Backtest(format!(
            "index {} has no close on {} of the {} backtest dates: {} (use --index <file> with these \
             dates, or --index none)",
            index.name,
            missing.len(),
            dates.len(),
            listed.join(", ")
        )));
    }
    let Some(first) = dates.first().map(|d| by_date[d]) else {
        return Ok(WealthSeries::untraded(Vec::new()));
    };
    Ok(WealthSeries::untraded(
        dates.iter().map(|d| cash * by_date[d] / first).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn builtin_dji_reads_and_covers_2000_to_2025() {
        let prices = IndexSource::BuiltinDji.read().unwrap();
        assert_eq!(prices.closes.first().unwrap().0, d("2000-01-03"));
        assert_eq!(prices.closes.last().unwrap().0, d("2025-10-31"));
        assert!((prices.closes[0].1 - 11357.509765625).abs() < 1e-9);
    }

    #[test]
    fn index_file_csv_with_other_column_case() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx.csv");
        std::fs::write(
            &path,
            "Date,Open,Close\n2020-01-03,1,200\n2020-01-02,1,100\n",
        )
        .unwrap();
        let prices = IndexSource::File(path).read().unwrap();
        assert_eq!(
            prices.closes,
            vec![(d("2020-01-02"), 100.0), (d("2020-01-03"), 200.0)]
        );
    }

    #[test]
    fn index_file_errors_name_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idx.csv");
        std::fs::write(&path, "date,price\n2020-01-02,100\n").unwrap();
        let err = IndexSource::File(path.clone()).read().unwrap_err();
        assert!(err.to_string().contains("missing column `close`"), "{err}");
        std::fs::write(&path, "date,close\n2020-01-02,100\n2020-01-02,101\n").unwrap();
        let err = IndexSource::File(path.clone()).read().unwrap_err();
        assert!(err.to_string().contains("more than once"), "{err}");
        std::fs::write(&path, "date,close\n2020-01-02,abc\n").unwrap();
        let err = IndexSource::File(path).read().unwrap_err();
        assert!(err.to_string().contains("line 2"), "{err}");
    }
}
