//! `storm data synth`: a synthetic market with a planted, partly predictable factor structure, so that tests
//! can prove a model learns. Deterministic per seed. The model (docs/DATA.md has the derivation):
//!
//! - each stock has a hidden signal x[i,t], a stationary AR(1) with φ = 0.9 and unit variance;
//! - the signal is visible in trading volume, V[i,t] = V0[i]·exp(0.5·x[i,t] + 0.1·ν), and in the shape of
//!   the day's bar: the lower wick's share of the wicks is sigmoid(1.5·x[i,t] + 0.5·ν);
//! - returns: r[i,t+1] = m[t+1] + f[s(i),t+1] + κ·x[i,t] + ε, with a market factor m (σ 1%), three sector
//!   factors f (σ 0.8%), κ = 1.2% and idiosyncratic noise ε (σ 1.5%).
//!
//! Ranking stocks by x[i,t] is the oracle predictor of r[i,t+1]; its realised mean RankIC is written next
//! to the output together with the theoretical value.

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, Weekday};
use polars::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::Serialize;

use crate::atomic;
use crate::error::{Error, Result};
use crate::stats::rank_ic::{mean_std, spearman};

pub const SIGNAL_PERSISTENCE: f64 = 0.9;
pub const SIGNAL_LOADING: f64 = 0.012;
pub const MARKET_VOL: f64 = 0.01;
pub const SECTOR_VOL: f64 = 0.008;
pub const IDIO_VOL: f64 = 0.015;
pub const N_SECTORS: usize = 3;
const VOLUME_SIGNAL: f64 = 0.5;
const VOLUME_NOISE: f64 = 0.1;
const WICK_SIGNAL: f64 = 1.5;
const WICK_NOISE: f64 = 0.5;

#[derive(Debug, Clone, Serialize)]
pub struct OracleReport {
    pub seed: u64,
    pub tickers: usize,
    pub days: usize,
    /// Mean over days of Spearman(x[·,t], r[·,t+1]).
    pub oracle_rank_ic: f64,
    pub oracle_rank_ic_std: f64,
    /// (6/π)·asin(ρ/2) for the Gaussian cross-sectional correlation ρ implied by the parameters.
    pub theoretical_rank_ic: f64,
}

pub struct SynthMarket {
    pub frame: DataFrame,
    pub oracle: OracleReport,
}

fn trading_days(n: usize) -> Vec<NaiveDate> {
    let mut d = NaiveDate::from_ymd_opt(2000, 1, 3).expect("valid date");
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        if !matches!(d.weekday(), Weekday::Sat | Weekday::Sun) {
            out.push(d);
        }
        d = d.succ_opt().expect("date in range");
    }
    out
}

pub fn theoretical_rank_ic() -> f64 {
    let sector_var = SECTOR_VOL.powi(2) * (N_SECTORS as f64 - 1.0) / N_SECTORS as f64;
    let total = SIGNAL_LOADING.powi(2) + IDIO_VOL.powi(2) + sector_var;
    let rho = SIGNAL_LOADING / total.sqrt();
    6.0 / std::f64::consts::PI * (rho / 2.0).asin()
}

/// One stock-day of the synthetic market.
struct Bar {
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
}

/// A day's bar from the previous close, the day's return and the stock's signal (`z` draws N(0, 1)).
fn bar(prev: f64, ret: f64, signal: f64, base_volume: f64, z: &mut impl FnMut() -> f64) -> Bar {
    let close = (prev * (1.0 + ret)).max(0.01);
    let open = (prev * (1.0 + 0.002 * z())).max(0.01);
    // Wicks: total length ~|N(0, 1%)| of the price, split so that a high signal leaves a long lower
    // wick (the close sits near the day's high: "buying pressure").
    let wick = (0.002 + (0.01 * z()).abs()) * prev;
    let lower_share = 1.0 / (1.0 + (-(WICK_SIGNAL * signal + WICK_NOISE * z())).exp());
    let high = open.max(close) + wick * (1.0 - lower_share);
    let low = (open.min(close) - wick * lower_share).max(0.005);
    let volume = (base_volume * (VOLUME_SIGNAL * signal + VOLUME_NOISE * z()).exp()).round();
    Bar {
        open,
        high,
        low,
        close,
        volume,
    }
}

/// The long-format price columns, one row per (day, ticker).
struct Columns {
    date: Vec<NaiveDate>,
    ticker: Vec<String>,
    bars: Vec<Bar>,
}

impl Columns {
    fn with_capacity(n: usize) -> Self {
        Columns {
            date: Vec::with_capacity(n),
            ticker: Vec::with_capacity(n),
            bars: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, date: NaiveDate, ticker: &str, bar: Bar) {
        self.date.push(date);
        self.ticker.push(ticker.to_string());
        self.bars.push(bar);
    }

    fn into_frame(self) -> Result<DataFrame> {
        let col = |f: fn(&Bar) -> f64| self.bars.iter().map(f).collect::<Vec<f64>>();
        let close = col(|b| b.close);
        Ok(DataFrame::new_infer_height(vec![
            Column::new("date".into(), self.date.clone()),
            Column::new("ticker".into(), self.ticker.clone()),
            Column::new("open".into(), col(|b| b.open)),
            Column::new("high".into(), col(|b| b.high)),
            Column::new("low".into(), col(|b| b.low)),
            Column::new("close".into(), close.clone()),
            Column::new("adj_close".into(), close),
            Column::new("volume".into(), col(|b| b.volume)),
        ])?)
    }
}

/// Generates `tickers` × `days` rows of OHLCV.
pub fn generate(tickers: usize, days: usize, seed: u64) -> Result<SynthMarket> {
    if tickers < 2 || days < 2 {
        return Err(Error::Data(
            "synthetic market needs at least 2 tickers and 2 days".into(),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let std_normal = Normal::<f64>::new(0.0, 1.0).expect("valid normal");
    let mut z = || -> f64 { std_normal.sample(&mut rng) };
    let dates = trading_days(days);
    let names: Vec<String> = (0..tickers).map(|i| format!("S{i:04}")).collect();
    let base_volume: Vec<f64> = (0..tickers).map(|_| 1e6 * (0.5 * z()).exp()).collect();
    let mut close: Vec<f64> = (0..tickers).map(|_| 50.0 * (0.5 * z()).exp()).collect();
    let mut signal: Vec<f64> = (0..tickers).map(|_| z()).collect();
    let innovation = (1.0 - SIGNAL_PERSISTENCE.powi(2)).sqrt();

    let mut rows = Columns::with_capacity(tickers * days);
    let mut daily_ic = Vec::with_capacity(days);
    for (t, date) in dates.iter().enumerate() {
        let market = MARKET_VOL * z();
        let sectors: Vec<f64> = (0..N_SECTORS).map(|_| SECTOR_VOL * z()).collect();
        let mut returns = vec![0.0; tickers];
        for i in 0..tickers {
            let r = if t == 0 {
                0.0
            } else {
                market + sectors[i % N_SECTORS] + SIGNAL_LOADING * signal[i] + IDIO_VOL * z()
            };
            returns[i] = r;
        }
        if t > 0 {
            if let Some(ic) = spearman(&signal, &returns) {
                daily_ic.push(ic);
            }
        }
        for i in 0..tickers {
            signal[i] = SIGNAL_PERSISTENCE * signal[i] + innovation * z();
            let b = bar(close[i], returns[i], signal[i], base_volume[i], &mut z);
            close[i] = b.close;
            rows.push(*date, &names[i], b);
        }
    }
    let (ic_mean, ic_std) = mean_std(&daily_ic);
    let frame = rows.into_frame()?;
    Ok(SynthMarket {
        frame,
        oracle: OracleReport {
            seed,
            tickers,
            days,
            oracle_rank_ic: ic_mean,
            oracle_rank_ic_std: ic_std,
            theoretical_rank_ic: theoretical_rank_ic(),
        },
    })
}

/// Path of the oracle report written beside a synthetic market file: `<stem>.oracle.json`.
pub fn oracle_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let stem = [".csv.gz", ".csv", ".parquet"]
        .iter()
        .find_map(|ext| name.strip_suffix(ext))
        .unwrap_or(&name)
        .to_string();
    out.with_file_name(format!("{stem}.oracle.json"))
}

/// Writes the market as CSV, CSV.gz or Parquet (by extension) plus its oracle report, atomically.
pub fn write_market(market: &mut SynthMarket, out: &Path) -> Result<()> {
    let name = out.to_string_lossy().to_lowercase();
    let mut bytes: Vec<u8> = Vec::new();
    if name.ends_with(".parquet") {
        ParquetWriter::new(&mut bytes).finish(&mut market.frame)?;
    } else if name.ends_with(".csv") || name.ends_with(".csv.gz") {
        CsvWriter::new(&mut bytes)
            .include_header(true)
            .finish(&mut market.frame)?;
        if name.ends_with(".gz") {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(&bytes).map_err(|e| Error::io(out, e))?;
            bytes = enc.finish().map_err(|e| Error::io(out, e))?;
        }
    } else {
        return Err(Error::input(
            out,
            "unknown output format: use .csv, .csv.gz or .parquet",
        ));
    }
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    atomic::write_file(out, &bytes)?;
    let json = serde_json::to_vec_pretty(&market.oracle)?;
    atomic::write_file(&oracle_path(out), &json)
}
