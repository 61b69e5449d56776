//! Reading and validating long-format daily prices (one row per date and ticker) from CSV, gzipped CSV or
//! Parquet. Column names are matched case-insensitively with common aliases; every problem is reported with
//! the file, and where it applies the row and column, so that a user can fix the input.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use sha2::{Digest, Sha256};

use super::dates::{day_string, days_from_date};
use super::embedded;
use crate::config::BUILTIN_DJ30;
use crate::error::{Error, Result};

/// Canonical column names of a validated price table.
pub const DATE: &str = "date";
pub const TICKER: &str = "ticker";
pub const OPEN: &str = "open";
pub const HIGH: &str = "high";
pub const LOW: &str = "low";
pub const CLOSE: &str = "close";
pub const ADJ_CLOSE: &str = "adj_close";
pub const VOLUME: &str = "volume";

const PRICE_COLUMNS: [&str; 4] = [OPEN, HIGH, LOW, CLOSE];

/// Accepted spellings of each column, compared after lower-casing and mapping spaces/dashes to '_'.
const ALIASES: [(&str, &[&str]); 8] = [
    (DATE, &["date", "timestamp", "datetime", "time", "day"]),
    (
        TICKER,
        &["ticker", "name", "symbol", "tic", "code", "stock", "asset"],
    ),
    (OPEN, &["open"]),
    (HIGH, &["high"]),
    (LOW, &["low"]),
    (CLOSE, &["close"]),
    (
        ADJ_CLOSE,
        &["adj_close", "adjclose", "adjcp", "adjusted_close", "adj_cp"],
    ),
    (VOLUME, &["volume", "vol"]),
];

/// Validated input: columns date (Date), ticker (String), open/high/low/close/adj_close/volume (Float64),
/// sorted by ticker then date. `adj_close` equals `close` when the file has none.
pub struct PriceTable {
    pub frame: DataFrame,
    pub source: String,
    pub source_sha256: String,
    pub has_adj_close: bool,
}

/// Where the raw bytes come from: a file on disk or the data set embedded in the binary.
pub enum Source {
    File(PathBuf),
    BuiltinDj30,
}

impl Source {
    pub fn parse(s: &str) -> Self {
        if s == BUILTIN_DJ30 {
            Source::BuiltinDj30
        } else {
            Source::File(PathBuf::from(s))
        }
    }

    fn display_path(&self) -> PathBuf {
        match self {
            Source::File(p) => p.clone(),
            Source::BuiltinDj30 => PathBuf::from(BUILTIN_DJ30),
        }
    }
}

/// How a table's bytes are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    CsvGz,
    Parquet,
}

/// The format named by a file's extension (.csv, .csv.gz, .parquet/.pq).
pub fn detect_format(path: &Path) -> Result<Format> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    if name.ends_with(".csv.gz") {
        Ok(Format::CsvGz)
    } else if name.ends_with(".csv") {
        Ok(Format::Csv)
    } else if name.ends_with(".parquet") || name.ends_with(".pq") {
        Ok(Format::Parquet)
    } else {
        Err(Error::input(
            path,
            "unknown format: expected a .csv, .csv.gz or .parquet file",
        ))
    }
}

/// Reads, normalises and validates a price file. Nothing is written.
pub fn read_prices(source: &Source) -> Result<PriceTable> {
    let path = source.display_path();
    let (bytes, format) = match source {
        Source::BuiltinDj30 => (embedded::DJ30_CSV_GZ.to_vec(), Format::CsvGz),
        Source::File(p) => {
            let format = detect_format(p)?;
            let bytes = std::fs::read(p).map_err(|e| Error::io(p, e))?;
            (bytes, format)
        }
    };
    let source_sha256 = hex(&Sha256::digest(&bytes));
    let raw = parse_table(&path, bytes, format)?;
    let (frame, has_adj_close) = normalise(&path, raw)?;
    validate(&path, &frame)?;
    Ok(PriceTable {
        frame,
        source: path.display().to_string(),
        source_sha256,
        has_adj_close,
    })
}

/// Reads any table file (CSV, CSV.gz, Parquet by extension); CSV columns come back as strings.
pub fn read_table(path: &Path) -> Result<DataFrame> {
    let format = detect_format(path)?;
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse_table(path, bytes, format)
}

/// Parses table bytes; `path` only names the source in error messages.
pub fn parse_table(path: &Path, bytes: Vec<u8>, format: Format) -> Result<DataFrame> {
    match format {
        Format::Csv => read_csv_strings(path, bytes),
        Format::CsvGz => {
            let mut text = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut text)
                .map_err(|e| Error::input(path, format!("not a valid gzip file: {e}")))?;
            read_csv_strings(path, text)
        }
        Format::Parquet => ParquetReader::new(Cursor::new(bytes))
            .finish()
            .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}"))),
    }
}

fn read_csv_strings(path: &Path, bytes: Vec<u8>) -> Result<DataFrame> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::input(path, "the file is empty"));
    }
    CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(Cursor::new(bytes))
        .finish()
        .map_err(|e| Error::input(path, format!("cannot parse CSV: {e}")))
}

fn canonical_header(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

/// Maps aliased columns to canonical names and parses dates and numbers with row-level error messages.
fn normalise(path: &Path, raw: DataFrame) -> Result<(DataFrame, bool)> {
    let found: Vec<String> = raw
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut picked: Vec<(&str, String)> = Vec::new();
    for (canon, aliases) in ALIASES {
        let hit = found
            .iter()
            .find(|name| aliases.contains(&canonical_header(name).as_str()));
        match hit {
            Some(name) => picked.push((canon, name.clone())),
            None if canon == ADJ_CLOSE => {}
            None => {
                return Err(Error::input(
                    path,
                    format!(
                        "missing column `{canon}` (also accepted: {}); columns found: {}",
                        aliases.join(", "),
                        found.join(", ")
                    ),
                ))
            }
        }
    }
    let has_adj_close = picked.iter().any(|(c, _)| *c == ADJ_CLOSE);
    let mut columns: Vec<Column> = Vec::with_capacity(8);
    for (canon, name) in &picked {
        let col = raw.column(name)?;
        let parsed = match *canon {
            DATE => parse_dates(path, name, col)?,
            TICKER => col
                .cast(&DataType::String)
                .map_err(|e| Error::input(path, format!("column `{name}`: {e}")))?,
            _ => parse_numbers(path, name, col)?,
        };
        columns.push(parsed.with_name((*canon).into()));
    }
    let mut frame = DataFrame::new_infer_height(columns)?;
    if !has_adj_close {
        let close = frame.column(CLOSE)?.clone().with_name(ADJ_CLOSE.into());
        frame.with_column(close)?;
    }
    let frame = frame.select([DATE, TICKER, OPEN, HIGH, LOW, CLOSE, ADJ_CLOSE, VOLUME])?;
    Ok((frame, has_adj_close))
}

/// Line number in the source file of 0-based data row `i` (the header is line 1).
fn line_of(i: usize) -> usize {
    i + 2
}

fn parse_dates(path: &Path, name: &str, col: &Column) -> Result<Column> {
    if matches!(col.dtype(), DataType::Date) {
        return Ok(col.clone());
    }
    if let DataType::Datetime(_, _) = col.dtype() {
        return Ok(col.cast(&DataType::Date)?);
    }
    let strings = col.cast(&DataType::String)?;
    let ca = strings.str()?;
    const FORMATS: [&str; 4] = ["%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%m/%d/%Y"];
    let mut days: Vec<i32> = Vec::with_capacity(ca.len());
    for (i, v) in ca.iter().enumerate() {
        let s = v.map(str::trim).unwrap_or("");
        // Timestamps such as "2020-01-02 00:00:00" carry the date in their first 10 characters.
        let head = s.split([' ', 'T']).next().unwrap_or("");
        let parsed = FORMATS
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(head, f).ok());
        match parsed {
            Some(d) => days.push(days_from_date(d)),
            None => {
                return Err(Error::input(
                    path,
                    format!(
                        "line {}, column `{name}`: cannot parse date {s:?} (expected YYYY-MM-DD)",
                        line_of(i)
                    ),
                ))
            }
        }
    }
    Ok(Int32Chunked::from_vec(name.into(), days)
        .into_date()
        .into_series()
        .into())
}

fn parse_numbers(path: &Path, name: &str, col: &Column) -> Result<Column> {
    if col.dtype().is_primitive_numeric() {
        let values = col.cast(&DataType::Float64)?;
        let ca = values.f64()?;
        if let Some(i) = ca.iter().position(|v| !v.is_some_and(f64::is_finite)) {
            let what = match ca.get(i) {
                Some(x) => format!("value {x} is not finite"),
                None => "missing value".to_string(),
            };
            return Err(Error::input(
                path,
                format!("row {}, column `{name}`: {what}", i + 1),
            ));
        }
        return Ok(values.with_name(name.into()));
    }
    let strings = col.cast(&DataType::String)?;
    let ca = strings.str()?;
    let mut out: Vec<f64> = Vec::with_capacity(ca.len());
    for (i, v) in ca.iter().enumerate() {
        let s = v.map(str::trim).unwrap_or("");
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() => out.push(x),
            Ok(x) => {
                return Err(Error::input(
                    path,
                    format!(
                        "line {}, column `{name}`: value {x} is not finite",
                        line_of(i)
                    ),
                ))
            }
            Err(_) => {
                return Err(Error::input(
                    path,
                    format!(
                        "line {}, column `{name}`: cannot parse number {s:?}",
                        line_of(i)
                    ),
                ))
            }
        }
    }
    Ok(Float64Chunked::from_vec(name.into(), out)
        .into_series()
        .into())
}

/// Row-level checks on the canonical frame (still in file order, so row numbers match the file).
fn validate(path: &Path, frame: &DataFrame) -> Result<()> {
    if frame.height() == 0 {
        return Err(Error::input(path, "the file has a header but no rows"));
    }
    let f64s = |name: &str| -> Result<Vec<f64>> {
        Ok(frame
            .column(name)?
            .f64()?
            .into_no_null_iter()
            .collect::<Vec<_>>())
    };
    let tickers = frame.column(TICKER)?.str()?.clone();
    for (i, t) in tickers.iter().enumerate() {
        if t.map(str::trim).unwrap_or("").is_empty() {
            return Err(Error::input(
                path,
                format!("line {}, column `{TICKER}`: empty ticker", line_of(i)),
            ));
        }
    }
    for name in PRICE_COLUMNS.iter().chain([&ADJ_CLOSE]) {
        if let Some(i) = f64s(name)?.iter().position(|&x| x <= 0.0) {
            return Err(Error::input(
                path,
                format!(
                    "line {}, column `{name}`: prices must be positive",
                    line_of(i)
                ),
            ));
        }
    }
    if let Some(i) = f64s(VOLUME)?.iter().position(|&x| x < 0.0) {
        return Err(Error::input(
            path,
            format!(
                "line {}, column `{VOLUME}`: volume must not be negative",
                line_of(i)
            ),
        ));
    }
    let (high, low) = (f64s(HIGH)?, f64s(LOW)?);
    if let Some(i) = high.iter().zip(&low).position(|(h, l)| h < l) {
        return Err(Error::input(
            path,
            format!(
                "line {}: high {} is below low {}",
                line_of(i),
                high[i],
                low[i]
            ),
        ));
    }
    check_duplicates(path, frame)
}

fn check_duplicates(path: &Path, frame: &DataFrame) -> Result<()> {
    let dates: Vec<i32> = frame
        .column(DATE)?
        .date()?
        .physical()
        .into_no_null_iter()
        .collect();
    let tickers: Vec<&str> = frame
        .column(TICKER)?
        .str()?
        .iter()
        .map(|t| t.unwrap_or(""))
        .collect();
    let mut order: Vec<usize> = (0..frame.height()).collect();
    order.sort_by(|&a, &b| (tickers[a], dates[a]).cmp(&(tickers[b], dates[b])));
    for pair in order.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if tickers[a] == tickers[b] && dates[a] == dates[b] {
            let day = day_string(dates[a]);
            return Err(Error::input(
                path,
                format!(
                    "duplicate row for ticker {} on {day} (lines {} and {})",
                    tickers[a],
                    line_of(a.min(b)),
                    line_of(a.max(b))
                ),
            ));
        }
    }
    Ok(())
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
