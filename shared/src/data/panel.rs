//! The feature store loaded as a dense (day × ticker × feature) panel over the union trading calendar, with
//! a presence mask: the in-memory form that windows are cut from.

use std::collections::HashMap;
use std::path::Path;

use chrono::NaiveDate;
use polars::prelude::*;

use super::dates::date_from_days;
use super::features::{LABEL, PRICE};
use super::ingest::{DATE, TICKER};
use super::manifest::{Manifest, FEATURES_FILE};
use crate::error::{Error, Result};

pub struct Panel {
    pub dates: Vec<NaiveDate>,
    pub tickers: Vec<String>,
    pub feature_names: Vec<String>,
    /// (T, N, D) row-major; zero where a ticker has no row that day.
    pub features: Vec<f32>,
    /// (T, N): the ticker has a scaled feature row that day.
    pub present: Vec<bool>,
    /// (T, N) next-day return; NaN where absent (last day, missing ticker).
    pub labels: Vec<f32>,
    /// (T, N) raw adjusted price; NaN where absent.
    pub prices: Vec<f64>,
}

impl Panel {
    pub fn n_days(&self) -> usize {
        self.dates.len()
    }
    pub fn n_tickers(&self) -> usize {
        self.tickers.len()
    }
    pub fn n_features(&self) -> usize {
        self.feature_names.len()
    }

    /// Loads `features.parquet` of a prepared directory.
    pub fn load(dir: &Path) -> Result<Panel> {
        let manifest = Manifest::load(dir)?;
        let path = dir.join(FEATURES_FILE);
        let file = std::fs::File::open(&path).map_err(|e| Error::io(&path, e))?;
        let frame = ParquetReader::new(file).finish()?;
        Self::from_frame(&frame, &manifest)
    }

    pub fn from_frame(frame: &DataFrame, manifest: &Manifest) -> Result<Panel> {
        let date_col = frame.column(DATE)?.date()?.clone();
        let day_numbers: Vec<i32> = date_col.physical().into_no_null_iter().collect();
        let mut unique = day_numbers.clone();
        unique.sort_unstable();
        unique.dedup();
        let day_index: HashMap<i32, usize> =
            unique.iter().enumerate().map(|(i, d)| (*d, i)).collect();
        let ticker_index: HashMap<&str, usize> = manifest
            .tickers
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i))
            .collect();
        let (t_len, n, d) = (unique.len(), manifest.tickers.len(), manifest.n_features);
        let mut features = vec![0f32; t_len * n * d];
        let mut present = vec![false; t_len * n];
        let mut labels = vec![f32::NAN; t_len * n];
        let mut prices = vec![f64::NAN; t_len * n];

        let mut cell = Vec::with_capacity(frame.height());
        for (ticker, day) in frame
            .column(TICKER)?
            .str()?
            .iter()
            .map(|t| t.unwrap_or(""))
            .zip(&day_numbers)
        {
            let j = *ticker_index.get(ticker).ok_or_else(|| {
                Error::Data(format!(
                    "ticker {ticker} is in features but not in the manifest"
                ))
            })?;
            let cell_index = day_index[day] * n + j;
            present[cell_index] = true;
            cell.push(cell_index);
        }
        for (k, name) in manifest.feature_names.iter().enumerate() {
            let values = frame.column(name)?.f32()?;
            for (row, v) in values.iter().enumerate() {
                features[cell[row] * d + k] = v.unwrap_or(0.0);
            }
        }
        for (row, v) in frame.column(LABEL)?.f64()?.iter().enumerate() {
            labels[cell[row]] = v.map(|x| x as f32).unwrap_or(f32::NAN);
        }
        for (row, v) in frame.column(PRICE)?.f64()?.iter().enumerate() {
            prices[cell[row]] = v.unwrap_or(f64::NAN);
        }
        let dates = unique
            .iter()
            .map(|&d| {
                date_from_days(d)
                    .ok_or_else(|| Error::Data(format!("features file: day {d} is out of range")))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Panel {
            dates,
            tickers: manifest.tickers.clone(),
            feature_names: manifest.feature_names.clone(),
            features,
            present,
            labels,
            prices,
        })
    }

    /// Days on which every ticker of the universe has a feature row.
    pub fn complete_days(&self) -> Vec<bool> {
        let n = self.n_tickers();
        self.present
            .chunks(n)
            .map(|row| row.iter().all(|&p| p))
            .collect()
    }

    /// Days on which every ticker has a next-day label.
    pub fn labelled_days(&self) -> Vec<bool> {
        let n = self.n_tickers();
        self.labels
            .chunks(n)
            .map(|row| row.iter().all(|v| v.is_finite()))
            .collect()
    }
}
