//! End-to-end tests of `storm data …`: the bundled DJ30 set, the synthetic market, causality of the features
//! and one clear error (with no partial output) for every kind of bad input.

mod common;

use std::path::Path;

use common::{fails, ok, path, s};
use storm_shared::data::{Manifest, Panel};

/// Writes a synthetic market as CSV and returns its lines (header first).
fn synth_lines(dir: &Path, tickers: usize, days: usize, seed: u64) -> Vec<String> {
    let file = path(dir, &format!("synth-{seed}.csv"));
    ok(&[
        "data",
        "synth",
        "--out",
        &s(&file),
        "--tickers",
        &tickers.to_string(),
        "--days",
        &days.to_string(),
        "--seed",
        &seed.to_string(),
    ]);
    std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(dir: &Path, name: &str, lines: &[String]) -> String {
    let file = path(dir, name);
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    s(&file)
}

#[test]
fn bundled_dj30_prepares_with_29_complete_tickers() {
    let dir = tempfile::tempdir().unwrap();
    let out = path(dir.path(), "dj30");
    let text = ok(&["data", "prepare", "--out", &s(&out)]);
    assert!(text.contains("29 tickers"), "{text}");
    let m = Manifest::load(&out).unwrap();
    assert_eq!(m.n_tickers, 29);
    assert_eq!(m.n_features, 152);
    assert_eq!(m.feature_names.len(), 152);
    assert_eq!(m.last_date, "2024-03-08");
    assert_eq!(m.source, "builtin:dj30");
    assert_eq!(m.source_sha256.len(), 64);
    // 124 warm-up rows per ticker (60 feature history + 64 scaler rows) are dropped
    assert_eq!(m.rows + m.warmup_rows_dropped, 173_251);
    assert_eq!(m.warmup_rows_dropped, 29 * 124);
    // V listed 2008-03-19: its first scaled row is 124 trading days later
    assert!(m.ticker_first_dates["V"].as_str() > "2008-09-01");
    assert!(m.ticker_first_dates["AAPL"].as_str() < "2001-01-01");

    let described = ok(&[
        "data",
        "describe",
        "--data",
        &s(&out),
        "--config",
        "../configs/dj30.toml",
    ]);
    for split in ["| train |", "| valid |", "| test |"] {
        assert!(described.contains(split), "{described}");
    }
    assert!(described.contains("(32, 64, 29, 152)"), "{described}");
    assert!(
        described.contains("2024-03-08 |"),
        "test split reaches the last day: {described}"
    );
}

#[test]
fn synthetic_market_is_deterministic_and_reports_its_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let a = synth_lines(dir.path(), 20, 300, 3);
    let b = synth_lines(dir.path(), 20, 300, 3);
    let c = synth_lines(dir.path(), 20, 300, 4);
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.len(), 1 + 20 * 300);
    assert_eq!(a[0], "date,ticker,open,high,low,close,adj_close,volume");
    let oracle: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path(dir.path(), "synth-3.oracle.json")).unwrap(),
    )
    .unwrap();
    let realised = oracle["oracle_rank_ic"].as_f64().unwrap();
    let theory = oracle["theoretical_rank_ic"].as_f64().unwrap();
    assert!(theory > 0.5 && theory < 0.65, "{theory}");
    assert!(
        (realised - theory).abs() < 0.05,
        "realised {realised} vs theory {theory}"
    );
}

/// The features of day t are computed from rows up to t only: removing or altering every later row leaves
/// them bit-for-bit unchanged.
#[test]
fn features_at_t_ignore_every_later_row() {
    let dir = tempfile::tempdir().unwrap();
    let lines = synth_lines(dir.path(), 4, 420, 11);
    let cut_date = lines[1 + 4 * 300].split(',').next().unwrap().to_string();
    let full = write_lines(dir.path(), "full.csv", &lines);
    let truncated: Vec<String> = lines
        .iter()
        .filter(|l| l.starts_with("date") || l.split(',').next().unwrap() <= cut_date.as_str())
        .cloned()
        .collect();
    let truncated = write_lines(dir.path(), "truncated.csv", &truncated);
    let altered: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let f: Vec<&str> = l.split(',').collect();
            if i == 0 || f[0] <= cut_date.as_str() {
                return l.clone();
            }
            let k = 1.0 + (i % 7) as f64 * 0.03;
            let num = |j: usize| f[j].parse::<f64>().unwrap() * k;
            format!(
                "{},{},{},{},{},{},{},{}",
                f[0],
                f[1],
                num(2),
                num(3),
                num(4),
                num(5),
                num(6),
                (num(7) * 3.0).round()
            )
        })
        .collect();
    let altered = write_lines(dir.path(), "altered.csv", &altered);
    let mut panels = Vec::new();
    for (name, input) in [
        ("full", full),
        ("truncated", truncated),
        ("altered", altered),
    ] {
        let out = path(dir.path(), name);
        ok(&[
            "data",
            "prepare",
            "--input",
            &input,
            "--out",
            &s(&out),
            "--set",
            "data.window=16",
        ]);
        panels.push(Panel::load(&out).unwrap());
    }
    let (full, truncated, altered) = (&panels[0], &panels[1], &panels[2]);
    let days = truncated.n_days();
    assert!(days > 100, "enough days survive warm-up: {days}");
    let cells = days * full.n_tickers() * full.n_features();
    assert_eq!(
        &full.features[..cells],
        &truncated.features[..],
        "truncation changed a past feature"
    );
    assert_eq!(
        &full.features[..cells],
        &altered.features[..cells],
        "later rows changed a past feature"
    );
    assert_ne!(
        &full.features[cells..],
        &altered.features[cells..],
        "the alteration is visible later"
    );
    // labels before the cut only look one day ahead, so they agree too
    let label_cells = (days - 1) * full.n_tickers();
    let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
    assert!(same(
        &full.labels[..label_cells],
        &altered.labels[..label_cells]
    ));
}

/// Each bad input gets a clear error naming the problem, a non-zero exit and no output directory.
#[test]
fn bad_inputs_fail_cleanly_without_partial_output() {
    let dir = tempfile::tempdir().unwrap();
    let good = synth_lines(dir.path(), 3, 260, 5);
    let edit = |name: &str, f: &dyn Fn(&mut Vec<String>)| {
        let mut lines = good.clone();
        f(&mut lines);
        write_lines(dir.path(), name, &lines)
    };
    let set_field = |line: &mut String, col: usize, value: &str| {
        let mut f: Vec<String> = line.split(',').map(str::to_string).collect();
        f[col] = value.to_string();
        *line = f.join(",");
    };
    let cases: Vec<(String, Vec<String>, Vec<&str>)> = vec![
        (
            path(dir.path(), "missing.csv").to_string_lossy().into(),
            vec![],
            vec!["No such file"],
        ),
        (
            write_lines(dir.path(), "prices.txt", &good),
            vec![],
            vec!["unknown format"],
        ),
        (
            edit("nocol.csv", &|l| {
                for line in l.iter_mut() {
                    let mut f: Vec<&str> = line.split(',').collect();
                    f.remove(4);
                    *line = f.join(",");
                }
            }),
            vec![],
            vec![
                "missing column `low`",
                "columns found: date, ticker, open, high, close",
            ],
        ),
        (
            edit("baddate.csv", &|l| set_field(&mut l[7], 0, "2020-13-45")),
            vec![],
            vec!["line 8", "`date`", "cannot parse date"],
        ),
        (
            edit("badnum.csv", &|l| set_field(&mut l[9], 5, "abc")),
            vec![],
            vec!["line 10", "`close`", "cannot parse number"],
        ),
        (
            edit("nan.csv", &|l| set_field(&mut l[4], 3, "NaN")),
            vec![],
            vec!["line 5", "`high`", "not finite"],
        ),
        (
            edit("inf.csv", &|l| set_field(&mut l[4], 7, "inf")),
            vec![],
            vec!["line 5", "`volume`", "not finite"],
        ),
        (
            edit("neg.csv", &|l| set_field(&mut l[6], 2, "-1.5")),
            vec![],
            vec!["line 7", "`open`", "positive"],
        ),
        (
            edit("hilo.csv", &|l| set_field(&mut l[3], 3, "0.001")),
            vec![],
            vec!["line 4", "below low"],
        ),
        (
            edit("dup.csv", &|l| {
                let d = l[5].clone();
                l.push(d);
            }),
            vec![],
            vec!["duplicate row", "lines 6 and"],
        ),
        (
            edit("short.csv", &|l| {
                l.push("2001-01-01,ZZZ,1,2,0.5,1.5,1.5,100".into())
            }),
            vec![],
            vec!["too few rows", "ZZZ (1 rows)"],
        ),
        (
            write_lines(dir.path(), "ok1.csv", &good),
            vec!["--set".into(), "data.start=2030-01-01".into()],
            vec!["no input rows in the date range"],
        ),
        (
            write_lines(dir.path(), "ok2.csv", &good),
            vec!["--set".into(), "data.windw=3".into()],
            vec!["unknown field `windw`"],
        ),
        (
            write_lines(dir.path(), "ok3.csv", &good),
            vec!["--set".into(), "data.scaler_window=1".into()],
            vec!["data.scaler_window", "out of range"],
        ),
        (
            write_lines(dir.path(), "empty.csv", &[]),
            vec![],
            vec!["empty"],
        ),
    ];
    for (i, (input, extra, expected)) in cases.iter().enumerate() {
        let out = path(dir.path(), &format!("out-{i}"));
        let mut args = vec!["data", "prepare", "--input", input.as_str(), "--out"];
        let out_s = s(&out);
        args.push(&out_s);
        args.extend(extra.iter().map(String::as_str));
        let err = fails(&args);
        for want in expected {
            assert!(
                err.contains(want),
                "case {i} ({input}): expected `{want}` in:\n{err}"
            );
        }
        assert_eq!(
            err.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "one error line: {err}"
        );
        assert!(
            !out.exists(),
            "case {i}: partial output left at {}",
            out.display()
        );
    }
}

#[test]
fn unknown_config_key_in_a_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = path(dir.path(), "bad.toml");
    std::fs::write(&cfg, "[model]\ncodebook = 3\n").unwrap();
    let err = fails(&[
        "data",
        "prepare",
        "--config",
        &s(&cfg),
        "--out",
        &s(&path(dir.path(), "o")),
    ]);
    assert!(err.contains("unknown field `codebook`"), "{err}");
    assert!(err.contains("bad.toml"), "{err}");
}

/// Synthetic lines of 3 tickers × 1000 days (seed 8), with a config for `data describe` (16-day windows,
/// 32-row scaler, splits 2000–2003). Row `(day, ticker)` is `lines[1 + 3 * day + ticker]`, file line + 1.
struct Holes {
    dir: tempfile::TempDir,
    lines: Vec<String>,
    config: String,
}

const TICKERS: usize = 3;
const WARMUP: usize = 60 + 32;

fn idx(day: usize, ticker: usize) -> usize {
    1 + TICKERS * day + ticker
}

fn field(line: &str, col: usize) -> String {
    line.split(',').nth(col).unwrap().to_string()
}

fn blank(line: &mut String, col: usize) {
    let mut f: Vec<&str> = line.split(',').collect();
    f[col] = "";
    *line = f.join(",");
}

impl Holes {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let lines = synth_lines(dir.path(), TICKERS, 1000, 8);
        let config = path(dir.path(), "holes.toml");
        std::fs::write(
            &config,
            "[data]\nwindow = 16\nscaler_window = 32\n[splits]\n\
             train = { start = \"2000-01-01\", end = \"2001-12-31\" }\n\
             valid = { start = \"2002-01-01\", end = \"2002-03-31\" }\n\
             test  = { start = \"2002-04-01\", end = \"2003-12-31\" }\n",
        )
        .unwrap();
        Holes {
            dir,
            lines,
            config: s(&config),
        }
    }

    /// S0001 misses its close on its first two days (leading rows), S0000 its close on day 200 and its
    /// open on day 210, S0002 its volume on the last day.
    fn with_holes(&self) -> String {
        let mut l = self.lines.clone();
        blank(&mut l[idx(0, 1)], 5);
        blank(&mut l[idx(1, 1)], 5);
        blank(&mut l[idx(200, 0)], 5);
        blank(&mut l[idx(210, 0)], 2);
        blank(&mut l[idx(999, 2)], 7);
        write_lines(self.dir.path(), "holes.csv", &l)
    }

    fn prepare(&self, input: &str, out: &str, extra: &[&str]) -> Manifest {
        let out = path(self.dir.path(), out);
        let mut args = vec!["data", "prepare", "--input", input, "--out"];
        let out_s = s(&out);
        args.push(&out_s);
        args.extend(["--config", self.config.as_str()]);
        args.extend(extra);
        ok(&args);
        Manifest::load(&out).unwrap()
    }
}

fn recorded(m: &Manifest) -> Vec<(String, String, String, String)> {
    m.missing_values
        .iter()
        .map(|r| {
            (
                r.ticker.clone(),
                r.date.clone(),
                r.field.clone(),
                r.action.name().to_string(),
            )
        })
        .collect()
}

#[test]
fn missing_values_are_refused_by_default_with_the_lines_and_the_count() {
    let h = Holes::new();
    let input = h.with_holes();
    let out = path(h.dir.path(), "refused");
    let err = fails(&["data", "prepare", "--input", &input, "--out", &s(&out)]);
    assert!(err.contains("5 missing value(s) in 5 line(s)"), "{err}");
    assert!(
        err.contains(
            "line 3 (`close`), line 6 (`close`), line 602 (`close`), line 632 (`open`), \
             line 3001 (`volume`);"
        ),
        "{err}"
    );
    assert!(
        err.contains("--missing drop") && err.contains("--missing ffill"),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1);
    assert!(!out.exists());
}

#[test]
fn drop_removes_incomplete_rows_and_records_them() {
    let h = Holes::new();
    let m = h.prepare(&h.with_holes(), "dropped", &["--missing", "drop"]);
    assert_eq!(m.missing_policy.name(), "drop");
    let rec = recorded(&m);
    assert_eq!(rec.len(), 5);
    assert!(rec.iter().all(|r| r.3 == "dropped"), "{rec:?}");
    assert_eq!(m.rows + m.warmup_rows_dropped, 3000 - 5);
}

#[test]
fn ffill_carries_within_the_ticker_and_is_recorded_and_described() {
    let h = Holes::new();
    let input = h.with_holes();
    // the flag overrides the config's data.missing
    let m = h.prepare(
        &input,
        "filled",
        &[
            "--set",
            "data.missing=drop",
            "--missing",
            "ffill",
            "--unscaled",
        ],
    );
    assert_eq!(m.missing_policy.name(), "ffill");
    let date = |d: usize| field(&h.lines[idx(d, 0)], 0);
    let f = |a: &str, b: &str, c: &str, d: &str| (a.into(), b.into(), c.into(), d.into());
    assert_eq!(
        recorded(&m),
        vec![
            f("S0000", &date(200), "close", "filled"),
            f("S0000", &date(210), "open", "filled"),
            f("S0001", &date(0), "close", "leading_dropped"),
            f("S0001", &date(1), "close", "leading_dropped"),
            f("S0002", &date(999), "volume", "volume_zeroed"),
        ]
    );
    // only S0001's two leading rows are gone; S0001 starts two days later than the others
    assert_eq!(m.rows + m.warmup_rows_dropped, 3000 - 2);
    assert_eq!(m.ticker_first_dates["S0001"], date(WARMUP + 2));
    assert_eq!(m.ticker_first_dates["S0000"], date(WARMUP));

    // the carried values reach the features exactly as carried
    let dir = path(h.dir.path(), "filled");
    let raw = read_parquet(&dir.join("features_raw.parquet"));
    let price = |d: usize, col: usize| field(&h.lines[idx(d, 0)], col).parse::<f64>().unwrap();
    let row = |d: usize| d - WARMUP; // S0000 is the first ticker and lost no row
    let value = |name: &str, d: usize| {
        raw.column(name)
            .unwrap()
            .f64()
            .unwrap()
            .get(row(d))
            .unwrap()
    };
    assert_eq!(value("close", 200), price(199, 5));
    assert_eq!(value("roc_5", 205), price(199, 5) / price(205, 5));
    let (close, open) = (price(210, 5), price(209, 2));
    assert_eq!(value("kmid", 210), (close - open) / close);

    let described = ok(&[
        "data",
        "describe",
        "--data",
        &s(&dir),
        "--config",
        &h.config,
    ]);
    assert!(
        described.contains(
            "missing values (policy ffill): 5 cell(s) in 3 ticker(s): 2 filled, 2 leading_dropped, \
             1 volume_zeroed"
        ),
        "{described}"
    );

    // the config alone selects the policy too
    let by_config = h.prepare(&input, "by-config", &["--set", "data.missing=ffill"]);
    assert_eq!(by_config.missing_values, m.missing_values);
    let err = fails(&[
        "data",
        "prepare",
        "--input",
        &input,
        "--out",
        &s(&path(h.dir.path(), "bad")),
        "--set",
        "data.missing=sometimes",
    ]);
    assert!(
        err.contains("data.missing") && err.contains("unknown variant `sometimes`"),
        "{err}"
    );
}

fn read_parquet(p: &Path) -> polars::prelude::DataFrame {
    use polars::prelude::{ParquetReader, SerReader};
    ParquetReader::new(std::fs::File::open(p).unwrap())
        .finish()
        .unwrap()
}

/// `--unscaled` adds the features before scaling with the scaled store's columns and rows, and leaves the
/// scaled store byte for byte as it is without the flag; a later run without it removes the raw file.
#[test]
fn unscaled_writes_raw_features_beside_an_unchanged_scaled_store() {
    let h = Holes::new();
    let input = write_lines(h.dir.path(), "clean.csv", &h.lines);
    let plain = h.prepare(&input, "plain", &[]);
    let with_raw = h.prepare(&input, "raw", &["--unscaled"]);
    assert!(with_raw.unscaled && !plain.unscaled);
    assert!(plain.missing_values.is_empty());
    let dir = |name: &str| path(h.dir.path(), name);
    let bytes = |d: &str, f: &str| std::fs::read(dir(d).join(f)).unwrap();
    assert_eq!(
        bytes("plain", "features.parquet"),
        bytes("raw", "features.parquet")
    );
    let scaled = read_parquet(&dir("raw").join("features.parquet"));
    let raw = read_parquet(&dir("raw").join("features_raw.parquet"));
    assert_eq!(scaled.get_column_names(), raw.get_column_names());
    assert_eq!(
        scaled.column("ticker").unwrap(),
        raw.column("ticker").unwrap()
    );
    assert_eq!(scaled.column("date").unwrap(), raw.column("date").unwrap());
    // the first S0000 row is day WARMUP: its raw close is the file's close, 5-day roc by hand
    let close = |d: usize| field(&h.lines[idx(d, 0)], 5).parse::<f64>().unwrap();
    let first = |name: &str| raw.column(name).unwrap().f64().unwrap().get(0).unwrap();
    assert_eq!(first("close"), close(WARMUP));
    assert_eq!(first("roc_5"), close(WARMUP - 5) / close(WARMUP));
    h.prepare(&input, "raw", &[]);
    assert!(!dir("raw").join("features_raw.parquet").exists());
}

#[test]
fn bars_with_open_or_close_outside_the_range_warn_unless_strict() {
    let h = Holes::new();
    let mut lines = h.lines.clone();
    let k = idx(300, 1);
    let high: f64 = field(&lines[k], 3).parse().unwrap();
    let mut f: Vec<String> = lines[k].split(',').map(str::to_string).collect();
    f[2] = format!("{}", high * 1.01);
    lines[k] = f.join(",");
    let input = write_lines(h.dir.path(), "outside.csv", &lines);
    let out = path(h.dir.path(), "kept");
    let run = common::storm(&[
        "data",
        "prepare",
        "--input",
        &input,
        "--out",
        &s(&out),
        "--config",
        &h.config,
    ]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    let line = format!("line {}, S0001", k + 1);
    assert!(
        stderr.contains("1 bar(s) with open or close outside [low, high]")
            && stderr.contains(&line),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("outside [low, high]").count(),
        1,
        "printed once: {stderr}"
    );
    assert_eq!(Manifest::load(&out).unwrap().bars_outside_range, 1);

    let strict_out = path(h.dir.path(), "strict");
    let err = fails(&[
        "data",
        "prepare",
        "--input",
        &input,
        "--out",
        &s(&strict_out),
        "--config",
        &h.config,
        "--strict",
    ]);
    assert!(
        err.contains("1 bar(s) with open or close outside [low, high]") && err.contains(&line),
        "{err}"
    );
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1);
    assert!(!strict_out.exists());
}

#[test]
fn ragged_lines_invisible_bytes_and_missing_files_read_clearly() {
    let h = Holes::new();
    let prepare_err = |name: &str, lines: &[String]| {
        let input = write_lines(h.dir.path(), name, lines);
        fails(&[
            "data",
            "prepare",
            "--input",
            &input,
            "--out",
            &s(&path(h.dir.path(), "o")),
        ])
    };
    let mut ragged = h.lines.clone();
    ragged[6].push_str(",7");
    let err = prepare_err("ragged.csv", &ragged);
    assert!(
        err.contains("line 7: 9 fields, but the header has 8"),
        "{err}"
    );

    let mut header = h.lines.clone();
    header[0] = header[0].replace("open", "op\u{1}en");
    let err = prepare_err("header.csv", &header);
    assert!(
        err.contains("columns found: date, ticker, op\\x01en, high"),
        "{err}"
    );
    assert!(!err.contains('\u{1}'));

    let mut value = h.lines.clone();
    let mut f: Vec<String> = value[4].split(',').map(str::to_string).collect();
    f[5] = format!("1\u{7}{}", f[5]);
    value[4] = f.join(",");
    let err = prepare_err("value.csv", &value);
    assert!(
        err.contains("line 5, column `close`: cannot parse number \"1\\x07"),
        "{err}"
    );
    assert!(!err.contains('\u{7}'));

    let missing = s(&path(h.dir.path(), "absent.csv"));
    let err = fails(&[
        "data",
        "prepare",
        "--input",
        &missing,
        "--out",
        &s(&path(h.dir.path(), "o")),
    ]);
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn a_manifest_that_disagrees_with_itself_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let lines = synth_lines(dir.path(), 5, 200, 1);
    let input = write_lines(dir.path(), "m.csv", &lines);
    let data = path(dir.path(), "data");
    ok(&["data", "prepare", "--input", &input, "--out", &s(&data)]);
    let manifest_path = data.join("manifest.json");
    let good = std::fs::read_to_string(&manifest_path).unwrap();
    let mut m: serde_json::Value = serde_json::from_str(&good).unwrap();
    // one feature name fewer than the count (before: an index out of bounds while loading the panel)
    m["feature_names"].as_array_mut().unwrap().pop();
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let err = fails(&["data", "describe", "--data", &s(&data)]);
    assert!(
        err.contains("n_features is 152 but 151 feature names are listed")
            && err.contains("damaged"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    let mut m: serde_json::Value = serde_json::from_str(&good).unwrap();
    let first = m["tickers"][0].clone();
    m["tickers"].as_array_mut().unwrap().push(first);
    std::fs::write(&manifest_path, m.to_string()).unwrap();
    let err = fails(&["data", "describe", "--data", &s(&data)]);
    assert!(err.contains("is listed twice"), "{err}");
}
