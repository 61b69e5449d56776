//! Results over seeds: for every configuration and metric the number of seeds with a
//! value, mean, sample std, min, max and range. The paper reports "mean ± range, computed across 10 runs"
//! without defining range; we read it as the half-width (max − min)/2, so that mean ± range spans the
//! observed values when they are symmetric about the mean, and also report std.

use std::collections::BTreeMap;
use std::path::Path;

use polars::prelude::*;
use storm_shared::error::{Error, Result};
use storm_shared::run::metrics::MetricKey;

/// One job of a sweep as the tables see it.
#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    /// The configuration's label (e.g. `codebook_size=256`).
    pub config: String,
    /// One value per plan key.
    pub labels: Vec<String>,
    pub seed: u64,
    /// `done`, `failed` or `pending` (a session that was interrupted).
    pub state: String,
    pub attempts: u32,
    pub seconds: Option<f64>,
    pub error: Option<String>,
    pub metrics: BTreeMap<String, Option<f64>>,
}

/// Statistics of one metric of one configuration over its seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub config: String,
    pub metric: String,
    pub n: u32,
    pub mean: f64,
    /// Sample std (ddof 1); NaN with one seed.
    pub std: f64,
    pub min: f64,
    pub max: f64,
    /// (max − min) / 2.
    pub range: f64,
}

/// All statistics, looked up by (configuration, metric).
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub rows: Vec<Stat>,
    index: BTreeMap<(String, String), usize>,
}

impl Stats {
    pub fn get(&self, config: &str, metric: &str) -> Option<&Stat> {
        self.index
            .get(&(config.to_string(), metric.to_string()))
            .map(|&i| &self.rows[i])
    }

    /// The statistics of a metric by its key.
    pub fn metric(&self, config: &str, key: &MetricKey) -> Option<&Stat> {
        self.get(config, &key.name())
    }

    /// Metric names in first-seen order.
    pub fn metrics(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in &self.rows {
            if !out.contains(&s.metric) {
                out.push(s.metric.clone());
            }
        }
        out
    }
}

fn polars_err(e: PolarsError) -> Error {
    Error::Polars(e)
}

/// Mean, std, min, max and range per (configuration, metric), in first-seen order.
pub fn aggregate(rows: &[JobRow]) -> Result<Stats> {
    let mut groups: Vec<(String, String, Vec<f64>)> = Vec::new();
    let mut index: BTreeMap<(String, String), usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.state == "done") {
        for (m, v) in &r.metrics {
            let Some(v) = v.filter(|v| v.is_finite()) else {
                continue;
            };
            let key = (r.config.clone(), m.clone());
            let at = *index.entry(key).or_insert_with(|| {
                groups.push((r.config.clone(), m.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[at].2.push(v);
        }
    }
    let mut stats = Stats::default();
    for (config, metric, values) in groups {
        stats
            .index
            .insert((config.clone(), metric.clone()), stats.rows.len());
        stats.rows.push(summary(config, metric, &values));
    }
    Ok(stats)
}

/// One group's statistics; `std` is the sample std (NaN for one value).
fn summary(config: String, metric: String, values: &[f64]) -> Stat {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let std = match values.len() {
        0 | 1 => f64::NAN,
        _ => (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt(),
    };
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Stat {
        config,
        metric,
        n: values.len() as u32,
        mean,
        std,
        min,
        max,
        range: (max - min) / 2.0,
    }
}

/// `results.csv`: one row per (configuration, metric) with the plan keys as leading columns.
pub fn results_frame(
    keys: &[String],
    configs: &[(String, Vec<String>)],
    stats: &Stats,
) -> Result<DataFrame> {
    let labels: BTreeMap<&str, &Vec<String>> =
        configs.iter().map(|(c, l)| (c.as_str(), l)).collect();
    let mut columns: Vec<Column> = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        let values: Vec<String> = stats
            .rows
            .iter()
            .map(|s| {
                labels
                    .get(s.config.as_str())
                    .and_then(|l| l.get(k))
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        columns.push(Column::new(key.as_str().into(), values));
    }
    let pick = |f: fn(&Stat) -> f64| -> Vec<Option<f64>> {
        stats
            .rows
            .iter()
            .map(|s| Some(f(s)).filter(|v| v.is_finite()))
            .collect()
    };
    columns.push(Column::new(
        "config".into(),
        stats
            .rows
            .iter()
            .map(|s| s.config.clone())
            .collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "metric".into(),
        stats
            .rows
            .iter()
            .map(|s| s.metric.clone())
            .collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "n".into(),
        stats.rows.iter().map(|s| s.n).collect::<Vec<_>>(),
    ));
    columns.push(Column::new("mean".into(), pick(|s| s.mean)));
    columns.push(Column::new("std".into(), pick(|s| s.std)));
    columns.push(Column::new("min".into(), pick(|s| s.min)));
    columns.push(Column::new("max".into(), pick(|s| s.max)));
    columns.push(Column::new("range".into(), pick(|s| s.range)));
    DataFrame::new_infer_height(columns).map_err(polars_err)
}

/// `jobs.csv`: every job with its state, attempts, time and error.
pub fn jobs_frame(keys: &[String], rows: &[JobRow]) -> Result<DataFrame> {
    let mut columns = vec![Column::new(
        "job".into(),
        rows.iter().map(|r| r.id.clone()).collect::<Vec<_>>(),
    )];
    for (k, key) in keys.iter().enumerate() {
        columns.push(Column::new(
            key.as_str().into(),
            rows.iter()
                .map(|r| r.labels.get(k).cloned().unwrap_or_default())
                .collect::<Vec<_>>(),
        ));
    }
    columns.push(Column::new(
        "seed".into(),
        rows.iter().map(|r| r.seed).collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "state".into(),
        rows.iter().map(|r| r.state.clone()).collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "attempts".into(),
        rows.iter().map(|r| r.attempts).collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "seconds".into(),
        rows.iter().map(|r| r.seconds).collect::<Vec<_>>(),
    ));
    columns.push(Column::new(
        "error".into(),
        rows.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
    ));
    DataFrame::new_infer_height(columns).map_err(polars_err)
}

/// Writes a frame as CSV through a temporary file and a rename.
pub fn write_csv(frame: &mut DataFrame, path: &Path) -> Result<()> {
    let mut bytes = Vec::new();
    CsvWriter::new(&mut bytes)
        .finish(frame)
        .map_err(polars_err)?;
    storm_shared::atomic::write_file(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(config: &str, seed: u64, state: &str, ic: Option<f64>) -> JobRow {
        JobRow {
            id: format!("{config}_seed={seed}"),
            config: config.into(),
            labels: vec![config.trim_start_matches("k=").into()],
            seed,
            state: state.into(),
            attempts: 1,
            seconds: Some(1.0),
            error: None,
            metrics: [
                ("test_rank_ic".to_string(), ic),
                ("pm_cr".to_string(), None),
            ]
            .into_iter()
            .collect(),
        }
    }

    #[test]
    fn stats_over_seeds_match_hand_computed_values() {
        let rows = vec![
            row("k=8", 0, "done", Some(0.01)),
            row("k=8", 1, "done", Some(0.03)),
            row("k=8", 2, "done", Some(0.08)),
            row("k=16", 0, "done", Some(0.05)),
            row("k=16", 1, "failed", Some(9.0)),
        ];
        let stats = aggregate(&rows).unwrap();
        let s = stats.get("k=8", "test_rank_ic").unwrap();
        assert_eq!(s.n, 3);
        assert!((s.mean - 0.04).abs() < 1e-12);
        // sample std of 0.01, 0.03, 0.08: deviations −0.03, −0.01, 0.04 → sqrt(0.0026 / 2)
        assert!(
            (s.std - (0.0026f64 / 2.0).sqrt()).abs() < 1e-12,
            "{}",
            s.std
        );
        assert_eq!((s.min, s.max), (0.01, 0.08));
        assert!((s.range - 0.035).abs() < 1e-12);
        let one = stats.get("k=16", "test_rank_ic").unwrap();
        assert_eq!(one.n, 1, "failed jobs do not count");
        assert_eq!(one.mean, 0.05);
        assert!(one.std.is_nan());
        assert!(
            stats.get("k=8", "pm_cr").is_none(),
            "undefined values are skipped"
        );
        assert_eq!(stats.rows[0].config, "k=8", "first-seen order");

        let configs = vec![
            ("k=8".to_string(), vec!["8".to_string()]),
            ("k=16".to_string(), vec!["16".to_string()]),
        ];
        let mut frame = results_frame(&["model.codebook_size".into()], &configs, &stats).unwrap();
        assert_eq!(frame.height(), 2);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("results.csv");
        write_csv(&mut frame, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            "model.codebook_size,config,metric,n,mean,std,min,max,range"
        );
        assert!(lines
            .next()
            .unwrap()
            .starts_with("8,k=8,test_rank_ic,3,0.04"));
        let mut jobs = jobs_frame(&["model.codebook_size".into()], &rows).unwrap();
        write_csv(&mut jobs, &dir.path().join("jobs.csv")).unwrap();
    }

    #[test]
    fn no_finished_job_gives_empty_stats() {
        let stats = aggregate(&[row("k=8", 0, "failed", None)]).unwrap();
        assert!(stats.rows.is_empty());
    }
}
