//! Reading and validating long-format daily prices (one row per date and ticker) from CSV, gzipped CSV or
//! Parquet. Column names are matched case-insensitively with common aliases; every problem is reported with
//! the file, and where it applies the row and column, so that a user can fix the input. Empty price and
//! volume fields are kept as nulls here; `missing.rs` applies the configured policy to them.

use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use polars::prelude::*;
use sha2::{Digest, Sha256};

use super::csv_text::{find_ragged_line, printable};
use super::dates::days_from_date;
use super::embedded;
use super::validate;
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
/// Where each row sits in the source file (see [`RowUnit`]); dropped before features are computed.
pub const LINE: &str = "_line";

/// The price columns, `adj_close` last (it is a copy of `close` when the file has none).
pub const PRICE_COLUMNS: [&str; 5] = [OPEN, HIGH, LOW, CLOSE, ADJ_CLOSE];

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

/// Validated input in file order: columns date (Date), ticker (String), open/high/low/close/adj_close/volume
/// (Float64, null where the file has an empty field) and [`LINE`] (UInt32). `adj_close` equals `close` when
/// the file has none.
pub struct PriceTable {
    pub frame: DataFrame,
    pub path: PathBuf,
    pub source: String,
    pub source_sha256: String,
    pub has_adj_close: bool,
    pub row_unit: RowUnit,
}

/// How the [`LINE`] column counts: file lines of a CSV (header = line 1) or 1-based rows of a Parquet file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowUnit {
    Line,
    Row,
}

impl RowUnit {
    fn of(format: Format) -> Self {
        match format {
            Format::Parquet => RowUnit::Row,
            Format::Csv | Format::CsvGz => RowUnit::Line,
        }
    }

    /// The number naming 0-based data row `i`.
    pub fn number(self, i: usize) -> usize {
        match self {
            RowUnit::Line => i + 2,
            RowUnit::Row => i + 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RowUnit::Line => "line",
            RowUnit::Row => "row",
        }
    }
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
    let row_unit = RowUnit::of(format);
    let (frame, has_adj_close) = normalise(&path, raw, row_unit)?;
    validate::rows(&path, &frame, row_unit)?;
    Ok(PriceTable {
        frame,
        source: path.display().to_string(),
        path,
        source_sha256,
        has_adj_close,
        row_unit,
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
            let text = gunzip_capped(&bytes, max_decompressed_bytes())
                .map_err(|why| Error::input(path, why))?;
            read_csv_strings(path, text)
        }
        Format::Parquet => ParquetReader::new(Cursor::new(bytes))
            .finish()
            .map_err(|e| Error::input(path, format!("not a readable Parquet file: {e}"))),
    }
}

/// Default cap on what a `.csv.gz` may decompress to (`STORM_MAX_DECOMPRESSED_BYTES` overrides it): far above
/// any real price file (5,000 stocks × 25 years is ~3 GB of CSV), far below what would exhaust memory.
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: u64 = 8 << 30;

fn max_decompressed_bytes() -> u64 {
    std::env::var("STORM_MAX_DECOMPRESSED_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_MAX_DECOMPRESSED_BYTES)
}

/// The decompressed bytes of a gzip file, refused beyond `limit` (a gzip bomb stops at the cap instead of
/// filling memory).
fn gunzip_capped(bytes: &[u8], limit: u64) -> std::result::Result<Vec<u8>, String> {
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit.saturating_add(1))
        .read_to_end(&mut text)
        .map_err(|e| format!("not a valid gzip file: {e}"))?;
    if text.len() as u64 > limit {
        return Err(format!(
            "decompresses to more than {limit} bytes (the limit; set STORM_MAX_DECOMPRESSED_BYTES to raise \
             it): refusing what looks like a gzip bomb"
        ));
    }
    Ok(text)
}

fn read_csv_strings(path: &Path, bytes: Vec<u8>) -> Result<DataFrame> {
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::input(path, "the file is empty"));
    }
    let parsed = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0))
        .into_reader_with_file_handle(Cursor::new(bytes.as_slice()))
        .finish();
    parsed.map_err(|e| match find_ragged_line(&bytes) {
        Some(r) => Error::input(
            path,
            format!(
                "line {}: {} fields, but the header has {}",
                r.line, r.fields, r.header_fields
            ),
        ),
        None => Error::input(path, format!("cannot parse CSV: {e}")),
    })
}

fn canonical_header(name: &str) -> String {
    name.trim()
        .to_lowercase()
        .chars()
        .map(|c| if c == ' ' || c == '-' { '_' } else { c })
        .collect()
}

/// Maps aliased columns to canonical names and parses dates and numbers with row-level error messages.
fn normalise(path: &Path, raw: DataFrame, unit: RowUnit) -> Result<(DataFrame, bool)> {
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
                        found
                            .iter()
                            .map(|n| printable(n))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
    let has_adj_close = picked.iter().any(|(c, _)| *c == ADJ_CLOSE);
    let mut columns: Vec<Column> = Vec::with_capacity(8);
    for (canon, name) in &picked {
        let col = raw.column(name)?;
        let shown = printable(name);
        let parsed = match *canon {
            DATE => parse_dates(path, &shown, col)?,
            TICKER => col
                .cast(&DataType::String)
                .map_err(|e| Error::input(path, format!("column `{shown}`: {e}")))?,
            _ => parse_numbers(path, &shown, col, unit)?,
        };
        columns.push(parsed.with_name((*canon).into()));
    }
    let mut frame = DataFrame::new_infer_height(columns)?;
    if !has_adj_close {
        let close = frame.column(CLOSE)?.clone().with_name(ADJ_CLOSE.into());
        frame.with_column(close)?;
    }
    let lines: Vec<u32> = (0..frame.height()).map(|i| unit.number(i) as u32).collect();
    frame.with_column(Column::new(LINE.into(), lines))?;
    let frame = frame.select([
        DATE, TICKER, OPEN, HIGH, LOW, CLOSE, ADJ_CLOSE, VOLUME, LINE,
    ])?;
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
                        "line {}, column `{name}`: cannot parse date \"{}\" (expected YYYY-MM-DD)",
                        line_of(i),
                        printable(s)
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

/// Parses a price or volume column; an empty field (or a Parquet null) stays null for the missing-value
/// policy, anything else that is not a finite number is an error.
fn parse_numbers(path: &Path, name: &str, col: &Column, unit: RowUnit) -> Result<Column> {
    if col.dtype().is_primitive_numeric() {
        let values = col.cast(&DataType::Float64)?;
        let ca = values.f64()?;
        if let Some(i) = ca.iter().position(|v| v.is_some_and(|x| !x.is_finite())) {
            return Err(Error::input(
                path,
                format!(
                    "{} {}, column `{name}`: value {} is not finite",
                    unit.name(),
                    unit.number(i),
                    ca.get(i).unwrap_or(f64::NAN)
                ),
            ));
        }
        return Ok(values.with_name(name.into()));
    }
    let strings = col.cast(&DataType::String)?;
    let ca = strings.str()?;
    let mut out: Vec<Option<f64>> = Vec::with_capacity(ca.len());
    for (i, v) in ca.iter().enumerate() {
        let s = v.map(str::trim).unwrap_or("");
        if s.is_empty() {
            out.push(None);
            continue;
        }
        match s.parse::<f64>() {
            Ok(x) if x.is_finite() => out.push(Some(x)),
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
                        "line {}, column `{name}`: cannot parse number \"{}\"",
                        line_of(i),
                        printable(s)
                    ),
                ))
            }
        }
    }
    Ok(
        Float64Chunked::from_iter_options(name.into(), out.into_iter())
            .into_series()
            .into(),
    )
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap_and_a_file_within_it_reads_whole() {
        // 4 MB of zeros compress to a few kB: the shape of a bomb, scaled down
        let bomb = gzip(&vec![0u8; 4 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        let err = gunzip_capped(&bomb, 1 << 20).unwrap_err();
        assert!(
            err.contains("more than 1048576 bytes") && err.contains("STORM_MAX_DECOMPRESSED_BYTES"),
            "{err}"
        );
        assert_eq!(gunzip_capped(&bomb, 4 << 20).unwrap().len(), 4 << 20);
        let err = gunzip_capped(b"not gzip at all", 1 << 20).unwrap_err();
        assert!(err.starts_with("not a valid gzip file"), "{err}");
    }
}
