//! `storm data prepare`: price file → validated table → missing-value policy → per-ticker causal features,
//! labels and scaling → `features.parquet` (+ `features_raw.parquet` on request) + `manifest.json`, written
//! atomically.

use std::collections::BTreeMap;
use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use polars::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::dates::day_string;
use super::features::{feature_names, ticker_features, FEATURE_HISTORY};
use super::ingest::{read_prices, PriceTable, Source, DATE, LINE, TICKER};
use super::manifest::{Manifest, FEATURES_FILE, MANIFEST_FILE, RAW_FEATURES_FILE};
use super::missing::{self, Repair};
use super::scaling::scale_ticker;
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
    let table = read_prices(source)?;
    tracing::info!(
        rows = table.frame.height(),
        secs = clock.elapsed().as_secs_f64(),
        "read and validated prices"
    );
    let cleaned = clean(cfg, &table, options.strict)?;
    let frame = cleaned.frame;
    let min_rows = FEATURE_HISTORY + cfg.scaler_window + cfg.window;
    let tickers_frames = frame.partition_by_stable([TICKER], true)?;
    check_history(&tickers_frames, min_rows)?;

    let names = feature_names();
    let bar = progress_bar(tickers_frames.len() as u64, options.progress);
    let warmup = FEATURE_HISTORY + cfg.scaler_window;
    let kept = |f: DataFrame| f.slice(warmup as i64, f.height().saturating_sub(warmup));
    let parts = map_parallel(&tickers_frames, |prices| {
        let raw = ticker_features(prices)?;
        let unscaled = options.unscaled.then(|| kept(raw.clone()));
        let scaled = scale_ticker(raw, &names, cfg.scaler_window)?;
        bar.inc(1);
        Ok((kept(scaled), unscaled))
    })?;
    bar.finish_and_clear();
    tracing::info!(
        secs = clock.elapsed().as_secs_f64(),
        "features and scaling done"
    );

    let (scaled_parts, raw_parts): (Vec<_>, Vec<_>) = parts.into_iter().unzip();
    let mut features = concat_frames(scaled_parts)?;
    let raw_features = match options.unscaled {
        true => Some(concat_frames(raw_parts.into_iter().flatten().collect())?),
        false => None,
    };
    tracing::info!(secs = clock.elapsed().as_secs_f64(), "tickers concatenated");
    let mut manifest = build_manifest(&table, &features, frame.height(), cfg)?;
    manifest.missing_values = cleaned.repairs;
    manifest.bars_outside_range = cleaned.bars_outside_range;
    manifest.unscaled = options.unscaled;
    write_store(out, &mut features, raw_features, &manifest)?;
    tracing::info!(
        secs = clock.elapsed().as_secs_f64(),
        "feature store written"
    );
    Ok(manifest)
}

/// Writes the store through a staging directory, manifest last. A raw-features file left by an earlier
/// `--unscaled` run is removed when this run writes none, so that it never describes another store.
fn write_store(
    out: &Path,
    features: &mut DataFrame,
    raw_features: Option<DataFrame>,
    manifest: &Manifest,
) -> Result<()> {
    let staging = Staging::new(out)?;
    write_parquet(&staging.path(FEATURES_FILE), features)?;
    let mut files = vec![FEATURES_FILE];
    match raw_features {
        Some(mut raw) => {
            write_parquet(&staging.path(RAW_FEATURES_FILE), &mut raw)?;
            files.push(RAW_FEATURES_FILE);
        }
        None => {
            let stale = out.join(RAW_FEATURES_FILE);
            if stale.exists() {
                std::fs::remove_file(&stale).map_err(|e| Error::io(&stale, e))?;
            }
        }
    }
    let json = serde_json::to_vec_pretty(manifest)?;
    let manifest_path = staging.path(MANIFEST_FILE);
    std::fs::write(&manifest_path, json).map_err(|e| Error::io(&manifest_path, e))?;
    files.push(MANIFEST_FILE);
    staging.commit(&files)
}

fn write_parquet(path: &Path, frame: &mut DataFrame) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    ParquetWriter::new(file)
        // scaled floats do not compress; compression would only cost time
        .with_compression(ParquetCompression::Uncompressed)
        .with_statistics(StatisticsOptions::empty())
        .finish(frame)?;
    Ok(())
}

/// Applies `f` to every item on plain worker threads (one per core), preserving order. Plain threads rather
/// than a rayon pool: each call blocks on polars' own pool, and a blocked rayon worker would steal more
/// items onto its stack until it overflows on large universes.
fn map_parallel<T: Sync, R: Send>(
    items: &[T],
    f: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(items.len().max(1));
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
    let mut lf = frame.lazy();
    if !cfg.tickers.is_empty() {
        lf = lf.filter(col(TICKER).is_in(
            lit(Series::new("t".into(), cfg.tickers.clone())).implode(false),
            false,
        ));
    }
    if let Some(start) = cfg.start {
        lf = lf.filter(col(DATE).gt_eq(lit(start)));
    }
    if let Some(end) = cfg.end {
        lf = lf.filter(col(DATE).lt_eq(lit(end)));
    }
    let out = lf
        .sort([TICKER, DATE], SortMultipleOptions::default())
        .collect()?;
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

fn concat_frames(parts: Vec<DataFrame>) -> Result<DataFrame> {
    let mut iter = parts.into_iter();
    let mut out = iter
        .next()
        .ok_or_else(|| Error::Data("no tickers in the input".into()))?;
    for part in iter {
        out.vstack_mut_owned(part)?;
    }
    out.rechunk_mut();
    Ok(out)
}

fn build_manifest(
    table: &PriceTable,
    features: &DataFrame,
    input_rows: usize,
    cfg: &DataConfig,
) -> Result<Manifest> {
    let dates = features.column(DATE)?.date()?.clone();
    let tickers = features.column(TICKER)?.str()?.clone();
    let mut first: BTreeMap<String, String> = BTreeMap::new();
    let mut previous: Option<&str> = None;
    for (t, d) in tickers.iter().zip(dates.physical().iter()) {
        if let (Some(t), Some(d)) = (t, d) {
            if previous != Some(t) {
                first.entry(t.to_string()).or_insert_with(|| day_string(d));
                previous = Some(t);
            }
        }
    }
    let (lo, hi) = (
        dates.physical().min().map(day_string),
        dates.physical().max().map(day_string),
    );
    let names = feature_names();
    Ok(Manifest {
        storm_version: env!("CARGO_PKG_VERSION").to_string(),
        source: table.source.clone(),
        source_sha256: table.source_sha256.clone(),
        has_adj_close: table.has_adj_close,
        tickers: first.keys().cloned().collect(),
        n_tickers: first.len(),
        n_features: names.len(),
        feature_names: names,
        first_date: lo.unwrap_or_default(),
        last_date: hi.unwrap_or_default(),
        rows: features.height(),
        warmup_rows_dropped: input_rows - features.height(),
        feature_history: FEATURE_HISTORY,
        scaler_window: cfg.scaler_window,
        ticker_first_dates: first,
        label: "next-day total return from adj_close (close when absent): a[t+1]/a[t] - 1".into(),
        missing_policy: cfg.missing,
        missing_values: Vec::new(),
        bars_outside_range: 0,
        unscaled: false,
    })
}
