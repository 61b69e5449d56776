//! Writing the feature store one ticker at a time: each ticker's rows become Parquet row groups as soon as
//! they are computed, so the store is never held in memory whole (the peak stays near the input table's
//! size), and a summary of what was written feeds the manifest.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use polars::io::parquet::write::BatchedWriter;
use polars::prelude::*;

use super::features::{feature_names, LABEL, PRICE};
use super::ingest::{DATE, TICKER};
use crate::error::{Error, Result};

/// One ticker's rows of the store, warm-up rows dropped.
pub struct TickerPart {
    pub ticker: String,
    /// Days since 1970-01-01, ascending.
    pub dates: Vec<i32>,
    /// Causal z-scores, one vector per feature in [`feature_names`] order.
    pub scaled: Vec<Vec<f32>>,
    /// The same rows before scaling (`--unscaled` only).
    pub raw: Option<Vec<Vec<f64>>>,
    pub price: Vec<f64>,
    pub label: Vec<Option<f64>>,
}

/// What the store holds, for the manifest.
#[derive(Debug, Default)]
pub struct StoreSummary {
    pub rows: usize,
    /// Each ticker's first day in the store.
    pub ticker_first_days: BTreeMap<String, i32>,
    pub first_day: Option<i32>,
    pub last_day: Option<i32>,
}

impl StoreSummary {
    fn add(&mut self, part: &TickerPart) {
        let (Some(&first), Some(&last)) = (part.dates.first(), part.dates.last()) else {
            return;
        };
        self.rows += part.dates.len();
        self.ticker_first_days
            .entry(part.ticker.clone())
            .or_insert(first);
        self.first_day = Some(self.first_day.map_or(first, |d| d.min(first)));
        self.last_day = Some(self.last_day.map_or(last, |d| d.max(last)));
    }
}

/// One Parquet file written batch by batch; opened on the first batch, whose schema every later batch
/// shares.
enum ParquetFile {
    Pending(PathBuf),
    Open(Box<BatchedWriter<File>>),
}

impl ParquetFile {
    fn write(&mut self, frame: &DataFrame) -> Result<()> {
        if let ParquetFile::Pending(path) = self {
            let file = File::create(&*path).map_err(|e| Error::io(&*path, e))?;
            let writer = ParquetWriter::new(file)
                // scaled floats do not compress; compression would only cost time
                .with_compression(ParquetCompression::Uncompressed)
                .with_statistics(StatisticsOptions::empty())
                .batched(frame.schema())?;
            *self = ParquetFile::Open(Box::new(writer));
        }
        if let ParquetFile::Open(writer) = self {
            writer.write_batch(frame)?;
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            ParquetFile::Open(writer) => {
                writer.finish()?;
                Ok(())
            }
            ParquetFile::Pending(_) => Err(Error::Data("no tickers in the input".into())),
        }
    }
}

/// Writes `features.parquet` and, on request, `features_raw.parquet` (same rows and columns, features
/// before scaling), one ticker at a time in the order given.
pub struct StoreWriter {
    scaled: ParquetFile,
    raw: Option<ParquetFile>,
    summary: StoreSummary,
}

impl StoreWriter {
    pub fn new(scaled: &Path, raw: Option<&Path>) -> StoreWriter {
        StoreWriter {
            scaled: ParquetFile::Pending(scaled.to_path_buf()),
            raw: raw.map(|p| ParquetFile::Pending(p.to_path_buf())),
            summary: StoreSummary::default(),
        }
    }

    /// Appends the parts (one row group for all of them, in order).
    pub fn write(&mut self, parts: Vec<TickerPart>) -> Result<()> {
        let mut scaled = Vec::with_capacity(parts.len());
        let mut raw = Vec::with_capacity(parts.len());
        for part in parts {
            self.summary.add(&part);
            let (scaled_part, raw_part) = part_frames(part)?;
            scaled.push(scaled_part);
            raw.extend(raw_part);
        }
        self.scaled.write(&stacked(scaled)?)?;
        if let Some(file) = self.raw.as_mut() {
            file.write(&stacked(raw)?)?;
        }
        Ok(())
    }

    /// Closes the files (footers written; the caller's staging commit puts them on disk) and returns what
    /// they hold.
    pub fn finish(self) -> Result<StoreSummary> {
        self.scaled.finish()?;
        if let Some(raw) = self.raw {
            raw.finish()?;
        }
        Ok(self.summary)
    }
}

/// The part's rows of the scaled store and (when it has raw features) of the raw one.
fn part_frames(part: TickerPart) -> Result<(DataFrame, Option<DataFrame>)> {
    let TickerPart {
        ticker,
        dates,
        scaled,
        raw,
        price,
        label,
    } = part;
    let rows = dates.len();
    let names = feature_names();
    // built once: a polars column clone shares its buffer
    let date: Column = Int32Chunked::from_vec(DATE.into(), dates)
        .into_date()
        .into_series()
        .into();
    let ticker = Column::new(TICKER.into(), vec![ticker.as_str(); rows]);
    let (price, label) = (
        Column::new(PRICE.into(), price),
        Column::new(LABEL.into(), label),
    );
    let frame = |features: Vec<Column>| -> Result<DataFrame> {
        let mut columns = Vec::with_capacity(features.len() + 4);
        columns.extend([date.clone(), ticker.clone()]);
        columns.extend(features);
        columns.extend([price.clone(), label.clone()]);
        Ok(DataFrame::new(rows, columns)?)
    };
    let scaled = frame(named_columns(&names, scaled))?;
    let raw = raw
        .map(|values| frame(named_columns(&names, values)))
        .transpose()?;
    Ok((scaled, raw))
}

/// One frame of the given ones, in order, in one chunk per column (the Parquet writer's requirement).
fn stacked(frames: Vec<DataFrame>) -> Result<DataFrame> {
    let mut frames = frames.into_iter();
    let mut out = frames
        .next()
        .ok_or_else(|| Error::Data("no tickers in the input".into()))?;
    for frame in frames {
        out.vstack_mut_owned(frame)?;
    }
    out.rechunk_mut();
    Ok(out)
}

/// Feature columns named in [`feature_names`] order.
fn named_columns<T>(names: &[String], values: Vec<Vec<T>>) -> Vec<Column>
where
    Series: NamedFrom<Vec<T>, [T]>,
{
    names
        .iter()
        .zip(values)
        .map(|(n, v)| Column::new(n.as_str().into(), v))
        .collect()
}
