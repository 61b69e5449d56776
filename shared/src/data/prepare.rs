//! `storm data prepare`: price file → validated table → missing-value policy → per-ticker causal features,
//! labels and scaling → `features.parquet` (+ `features_raw.parquet` on request) + `manifest.json`, written
//! atomically.

use std::collections::BTreeMap;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::dates::{day_string, days_from_date};
use super::features::{compute, feature_names, Bars, FEATURE_HISTORY};
use super::ingest::{read_prices, PriceTable, Source, DATE, LINE, TICKER};
use super::manifest::{Manifest, FEATURES_FILE, MANIFEST_FILE, RAW_FEATURES_FILE};
use super::missing::{self, Repair};
use super::scaling::causal_zscore;
use super::store::{StoreSummary, StoreWriter, TickerPart};
use super::validate;
use crate::atomic::Staging;
use crate::config::DataConfig;
use crate::error::{Error, Result};

/// Choices of one `prepare` call that are not part of the experiment config.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrepareOptions {
    /// Draw a progress bar.
    pub progress: bool,
    /// Refuse bars whose open or close lies outside [low, high] instead of warning.
    pub strict: bool,
    /// Also write `features_raw.parquet`, the features before scaling.
    pub unscaled: bool,
}

/// Prepares the feature store for `cfg.source` (or `source_override`) into `out`.
pub fn prepare(cfg: &DataConfig, source: &Source, out: &Path, progress: bool) -> Result<Manifest> {
    let options = PrepareOptions {
        progress,
        ..PrepareOptions::default()
    };
    prepare_with(cfg, source, out, options)
}

/// The input rows that features are computed from, and what was done to reach them.
struct Cleaned {
    frame: DataFrame,
    repairs: Vec<Repair>,
    bars_outside_range: usize,
}

/// Selection, the missing-value policy and the bar checks; drops the line column.
fn clean(cfg: &DataConfig, table: &PriceTable, strict: bool) -> Result<Cleaned> {
    let frame = select_rows(cfg, table.frame.clone())?;
    let repaired = missing::apply(
        frame,
        cfg.missing,
        table.has_adj_close,
        &table.path,
        table.row_unit,
    )?;
    let outside = validate::bars(&table.path, &repaired.frame, table.row_unit, strict)?;
    if let Some(o) = &outside {
        tracing::warn!(
            "{}: {} bar(s) with open or close outside [low, high], kept (first: {}); --strict refuses them",
            table.source,
            o.count,
            o.first
        );
    }
    let actions = summarise(&repaired.repairs);
    if !actions.is_empty() {
        tracing::warn!(
            "{}: missing values ({}): {actions}; listed in {MANIFEST_FILE}",
            table.source,
            cfg.missing
        );
    }
    Ok(Cleaned {
        frame: repaired.frame.drop(LINE)?,
        repairs: repaired.repairs,
        bars_outside_range: outside.map_or(0, |o| o.count),
    })
}

/// "3 filled, 1 volume_zeroed": the count of each action taken, in a fixed order.
pub fn summarise(repairs: &[Repair]) -> String {
    missing::RepairAction::ALL
        .iter()
        .filter_map(|a| {
            let n = repairs.iter().filter(|r| r.action == *a).count();
            (n > 0).then(|| format!("{n} {}", a.name()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// [`prepare`] with every option.
pub fn prepare_with(
    cfg: &DataConfig,
    source: &Source,
    out: &Path,
    options: PrepareOptions,
) -> Result<Manifest> {
    let clock = std::time::Instant::now();
    let mut table = read_prices(source)?;
    tracing::info!(
        rows = table.frame.height(),
        secs = clock.elapsed().as_secs_f64(),
        "read and validated prices"
    );
    let Cleaned {
        frame,
        repairs,
        bars_outside_range,
    } = clean(cfg, &table, options.strict)?;
    // one copy of the input at a time: the table, then the cleaned rows, then one frame per ticker
    table.frame = DataFrame::empty();
    let input_rows = frame.height();
    let tickers_frames = frame.partition_by_stable([TICKER], true)?;
    drop(frame);
    check_history(
        &tickers_frames,
        FEATURE_HISTORY + cfg.scaler_window + cfg.window,
    )?;

    let bar = progress_bar(tickers_frames.len() as u64, options.progress);
    let warmup = FEATURE_HISTORY + cfg.scaler_window;
    let staging = Staging::new(out)?;
    let raw_path = staging.path(RAW_FEATURES_FILE);
    let mut writer = StoreWriter::new(
        &staging.path(FEATURES_FILE),
        options.unscaled.then_some(raw_path.as_path()),
    );
    // a few tickers per worker at a time: the store is written as it is computed, never held whole
    for chunk in tickers_frames.chunks(TICKERS_PER_WORKER * workers()) {
        let parts = map_parallel(chunk, |prices| {
            ticker_part(prices, warmup, cfg.scaler_window, options.unscaled)
        })?;
        bar.inc(parts.len() as u64);
        writer.write(parts)?;
    }
    let summary = writer.finish()?;
    bar.finish_and_clear();
    tracing::info!(
        secs = clock.elapsed().as_secs_f64(),
        "features computed, scaled and written"
    );
    let mut manifest = build_manifest(&table, &summary, input_rows, cfg);
    manifest.missing_values = repairs;
    manifest.bars_outside_range = bars_outside_range;
    manifest.unscaled = options.unscaled;
    commit_store(out, staging, &manifest)?;
    tracing::info!(
        secs = clock.elapsed().as_secs_f64(),
        "feature store committed"
    );
    Ok(manifest)
}

/// Tickers each worker thread computes before the main thread writes them.
const TICKERS_PER_WORKER: usize = 4;

fn ticker_part(
    prices: &DataFrame,
    warmup: usize,
    scaler_window: usize,
    unscaled: bool,
) -> Result<TickerPart> {
    let bars = Bars::from_frame(prices)?;
    let ticker = prices
        .column(TICKER)?
        .str()?
        .get(0)
        .unwrap_or_default()
        .to_string();
    let features = compute(&bars);
    let kept = warmup.min(bars.len());
    let scaled = features
        .columns
        .iter()
        .map(|x| causal_zscore(x, scaler_window).split_off(kept))
        .collect();
    let raw = unscaled.then(|| {
        features
            .columns
            .into_iter()
            .map(|mut x| x.split_off(kept))
            .collect()
    });
    let Bars { mut dates, .. } = bars;
    let (mut price, mut label) = (features.price, features.label);
    Ok(TickerPart {
        ticker,
        dates: dates.split_off(kept),
        scaled,
        raw,
        price: price.split_off(kept),
        label: label.split_off(kept),
    })
}

/// Moves the written store into `out`, manifest last. A raw-features file left by an earlier `--unscaled`
/// run is removed when this run writes none, so that it never describes another store.
fn commit_store(out: &Path, staging: Staging, manifest: &Manifest) -> Result<()> {
    let mut files = vec![FEATURES_FILE];
    if manifest.unscaled {
        files.push(RAW_FEATURES_FILE);
    } else {
        let stale = out.join(RAW_FEATURES_FILE);
        if stale.exists() {
            std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
        }
    }
    let json = serde_json::to_vec_pretty(manifest)?;
    let manifest_path = staging.path(MANIFEST_FILE);
    std::fs::write(&manifest_path, json).map_err(|e| Error::io(&manifest_path, e))?;
    files.push(MANIFEST_FILE);
    staging.commit(&files)
}

fn workers() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Applies `f` to every item on plain worker threads (one per core), preserving order. Plain threads rather
/// than a rayon pool: each call blocks on polars' own pool, and a blocked rayon worker would steal more
/// items onto its stack until it overflows on large universes.
fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let workers = workers().min(items.len().max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<Option<Result<R>>> = (0..items.len()).map(|_| None).collect();
    let chunks: Vec<Vec<(usize, Result<R>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                std::thread::Builder::new()
                    .stack_size(64 << 20)
                    .spawn_scoped(scope, || {
                        let mut done = Vec::new();
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= items.len() {
                                break done;
                            }
                            done.push((i, f(&items[i])));
                        }
                    })
                    .expect("spawning a worker thread")
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("feature worker panicked"))
            .collect()
    });
    for (i, r) in chunks.into_iter().flatten() {
        results[i] = Some(r);
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Data("a ticker was not processed".into()))))
        .collect()
}

fn progress_bar(len: u64, show: bool) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template("features {bar:30} {pos}/{len} tickers [{elapsed}]")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// Applies the config's ticker list and date range, and sorts by ticker then date.
fn select_rows(cfg: &DataConfig, frame: DataFrame) -> Result<DataFrame> {
    let mut keep: Vec<bool> = vec![true; frame.height()];
    if !cfg.tickers.is_empty() {
        let wanted: std::collections::HashSet<&str> =
            cfg.tickers.iter().map(String::as_str).collect();
        let tickers = frame.column(TICKER)?.str()?;
        for (k, t) in keep.iter_mut().zip(tickers.iter()) {
            *k &= t.is_some_and(|t| wanted.contains(t));
        }
    }
    if cfg.start.is_some() || cfg.end.is_some() {
        let (start, end) = (cfg.start.map(days_from_date), cfg.end.map(days_from_date));
        let days = frame.column(DATE)?.date()?.physical().clone();
        for (k, d) in keep.iter_mut().zip(days.iter()) {
            *k &= d.is_some_and(|d| start.is_none_or(|s| d >= s) && end.is_none_or(|e| d <= e));
        }
    }
    let selected = match keep.iter().all(|&k| k) {
        true => frame,
        false => frame.filter(&BooleanChunked::from_slice("keep".into(), &keep))?,
    };
    let out = selected.sort([TICKER, DATE], SortMultipleOptions::default())?;
    if !cfg.tickers.is_empty() {
        let present: std::collections::HashSet<&str> =
            out.column(TICKER)?.str()?.iter().flatten().collect();
        let missing: Vec<&str> = cfg
            .tickers
            .iter()
            .map(String::as_str)
            .filter(|t| !present.contains(t))
            .collect();
        if !missing.is_empty() {
            return Err(Error::config(
                "data",
                "data.tickers",
                format!(
                    "not in the input (or no rows in the date range): {}",
                    missing.join(", ")
                ),
            ));
        }
    }
    if out.height() == 0 {
        return Err(Error::Data(format!(
            "no input rows in the date range {} .. {}",
            cfg.start
                .map(|d| d.to_string())
                .unwrap_or_else(|| "start".into()),
            cfg.end
                .map(|d| d.to_string())
                .unwrap_or_else(|| "end".into())
        )));
    }
    Ok(out)
}

fn check_history(frames: &[DataFrame], min_rows: usize) -> Result<()> {
    let short: Vec<String> = frames
        .iter()
        .filter(|f| f.height() < min_rows)
        .map(|f| {
            let t = f
                .column(TICKER)
                .ok()
                .and_then(|c| c.str().ok().and_then(|s| s.get(0).map(str::to_string)))
                .unwrap_or_default();
            format!("{t} ({} rows)", f.height())
        })
        .collect();
    if short.is_empty() {
        return Ok(());
    }
    Err(Error::Data(format!(
        "too few rows for the window: each ticker needs at least {min_rows} rows \
         ({FEATURE_HISTORY} feature history + scaler window + model window); short: {}. \
         Drop them with data.tickers or extend the date range.",
        short.join(", ")
    )))
}

fn build_manifest(
    table: &PriceTable,
    store: &StoreSummary,
    input_rows: usize,
    cfg: &DataConfig,
) -> Manifest {
    let names = feature_names();
    let first: BTreeMap<String, String> = store
        .ticker_first_days
        .iter()
        .map(|(t, &d)| (t.clone(), day_string(d)))
        .collect();
    Manifest {
        storm_version: env!("CARGO_PKG_VERSION").to_string(),
        source: table.source.clone(),
        source_sha256: table.source_sha256.clone(),
        has_adj_close: table.has_adj_close,
        tickers: first.keys().cloned().collect(),
        n_tickers: first.len(),
        n_features: names.len(),
        feature_names: names,
        first_date: store.first_day.map(day_string).unwrap_or_default(),
        last_date: store.last_day.map(day_string).unwrap_or_default(),
        rows: store.rows,
        warmup_rows_dropped: input_rows - store.rows,
        feature_history: FEATURE_HISTORY,
        scaler_window: cfg.scaler_window,
        ticker_first_dates: first,
        label: "next-day total return from adj_close (close when absent): a[t+1]/a[t] - 1".into(),
        missing_policy: cfg.missing,
        missing_values: Vec::new(),
        bars_outside_range: 0,
        unscaled: false,
    }
}
