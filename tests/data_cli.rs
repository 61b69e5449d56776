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
