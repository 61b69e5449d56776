//! End-to-end tests of `storm trade`: a minimal run (run.json + a hand-made factors.parquet over a prepared
//! synthetic market, no STORM training) traded with factor and raw states, and the signal rule on hand-made
//! oracle predictions (its wealth checked against the compounded up-days); the report's fields, one
//! actions row per test day, and clear errors for an unknown ticker, a run without factors or predictions
//! and bad numbers.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, ok, path, s};
use polars::prelude::*;

/// 2002-01-01 and 2002-04-01 as days since 1970-01-01: the valid and test split starts.
const VALID_START: i32 = 11688;
const TEST_START: i32 = 11778;

/// A prepared synthetic market in `dir/data`.
fn prepared_data(dir: &Path) -> PathBuf {
    let cfg = common::synth_config(dir, 3, 700, "");
    let data = path(dir, "data");
    ok(&["data", "prepare", "--config", &s(&cfg), "--out", &s(&data)]);
    data
}

/// A run directory pointing at `data`, with (if `with_factors`) a factors.parquet of 4 made-up factors
/// per (day, stock) and the split of each day.
fn minimal_run(dir: &Path, data: &Path, with_factors: bool) -> (PathBuf, DataFrame) {
    let run = path(dir, if with_factors { "run" } else { "bare" });
    std::fs::create_dir_all(&run).unwrap();
    let info = serde_json::json!({
        "data_dir": std::path::absolute(data).unwrap(),
        "config_hash": "test",
        "seed": 0,
        "device": "cpu",
        "storm_version": "test",
    });
    std::fs::write(run.join("run.json"), info.to_string()).unwrap();
    let file = std::fs::File::open(data.join("features.parquet")).unwrap();
    let features = ParquetReader::new(file).finish().unwrap();
    let mut frame = features.select(["date", "ticker"]).unwrap();
    let days = day_numbers(&frame);
    let split: Vec<&str> = days
        .iter()
        .map(|&d| match d {
            d if d < VALID_START => "train",
            d if d < TEST_START => "valid",
            _ => "test",
        })
        .collect();
    frame
        .with_column(Series::new("split".into(), split).into())
        .unwrap();
    for k in 0..4 {
        let values: Vec<f32> = (0..days.len())
            .map(|i| ((i * (k + 1)) as f32 * 0.37).sin())
            .collect();
        frame
            .with_column(Series::new(format!("factor_{k}").into(), values).into())
            .unwrap();
    }
    if with_factors {
        let mut out = std::fs::File::create(run.join("factors.parquet")).unwrap();
        ParquetWriter::new(&mut out).finish(&mut frame).unwrap();
    }
    (run, frame)
}

/// The ticker of the frame's first row.
fn first_ticker(frame: &DataFrame) -> String {
    let tickers = frame.column("ticker").unwrap().str().unwrap().clone();
    tickers.get(0).unwrap().to_string()
}

/// The `date` column as days since 1970-01-01.
fn day_numbers(frame: &DataFrame) -> Vec<i32> {
    let dates = frame.column("date").unwrap().date().unwrap().clone();
    dates.physical().into_no_null_iter().collect()
}

fn test_days(frame: &DataFrame, ticker: &str) -> usize {
    let tickers = frame.column("ticker").unwrap().str().unwrap().clone();
    let splits = frame.column("split").unwrap().str().unwrap().clone();
    (0..frame.height())
        .filter(|&i| tickers.get(i) == Some(ticker) && splits.get(i) == Some("test"))
        .count()
}

fn trade(run: &Path, ticker: &str, features: &str) -> serde_json::Value {
    let stdout = ok(&[
        "trade",
        "--run",
        &s(run),
        "--ticker",
        ticker,
        "--features",
        features,
        "--envs",
        "2",
        "--updates",
        "2",
        "--eval-every",
        "1",
        "--window",
        "32",
    ]);
    assert!(stdout.contains("| Buy&Hold |"), "{stdout}");
    let text =
        std::fs::read_to_string(run.join(format!("{}.json", stem(ticker, features)))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Output stem: factor-state runs and the raw-feature baseline write separate files.
fn stem(ticker: &str, features: &str) -> String {
    match features {
        "raw" => format!("trading_{ticker}_raw"),
        _ => format!("trading_{ticker}"),
    }
}

#[test]
fn trade_with_factors_and_raw_features_and_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared_data(dir.path());
    let (run, frame) = minimal_run(dir.path(), &data, true);
    let ticker = first_ticker(&frame);
    let n_test = test_days(&frame, &ticker);
    assert!(n_test > 100, "{n_test} test days");

    for features in ["factors", "raw"] {
        let report = trade(&run, &ticker, features);
        assert_eq!(report["features"], features);
        assert_eq!(report["ticker"], ticker.as_str());
        for key in ["apy", "cw", "asr", "mdd", "trades", "n_days"] {
            assert!(
                report["policy"].get(key).is_some(),
                "policy.{key} in {report}"
            );
        }
        assert_eq!(report["algorithm"], "ppo");
        let state = if features == "raw" {
            "raw_features"
        } else {
            "factor_embedding"
        };
        assert_eq!(
            report["state"], state,
            "factor_* only: the factor embedding is the state"
        );
        assert!(report["policy"]["cw"].as_f64().unwrap() > 0.0);
        assert!(report["buy_and_hold"]["cw"].as_f64().unwrap() > 0.0);
        assert_eq!(report["buy_and_hold"]["n_days"], n_test - 1);
        assert_eq!(report["params"]["envs"], 2);
        assert_eq!(report["params"]["updates"], 2);
        assert_eq!(report["days"]["test_days"], n_test);
        // Selection among updates 1 and 2 only, each candidate listed; episodes start at fresh days.
        let candidates = report["valid_candidates"].as_array().unwrap();
        let updates: Vec<u64> = candidates
            .iter()
            .map(|c| c["update"].as_u64().unwrap())
            .collect();
        assert_eq!(updates, vec![1, 2], "{report}");
        assert!(report["best_update"].as_u64().unwrap() >= 1);
        assert!(report["valid_buy_and_hold_cw"].as_f64().unwrap() > 0.0);
        let coverage = &report["train_coverage"];
        assert_eq!(coverage["days"], report["days"]["train_days"]);
        assert!(
            coverage["distinct_starts"].as_u64().unwrap() >= 2,
            "{coverage}"
        );
        let actions = run.join(format!("{}_actions.csv", stem(&ticker, features)));
        let csv = std::fs::read_to_string(actions).unwrap();
        let mut lines = csv.lines();
        assert_eq!(lines.next(), Some("date,price,action,position,wealth"));
        assert_eq!(lines.count(), n_test, "one row per test day");
    }

    // the two feature sources did not overwrite each other
    assert!(run.join(format!("trading_{ticker}.json")).exists());
    assert!(run.join(format!("trading_{ticker}_raw.json")).exists());

    // A STORM export's state_* columns (its TS and CS factor embeddings) are the state when present
    let mut with_state = frame.clone();
    for k in 0..6 {
        let values: Vec<f32> = (0..frame.height())
            .map(|i| ((i + k) as f32 * 0.11).cos())
            .collect();
        with_state
            .with_column(Series::new(format!("state_{k}").into(), values).into())
            .unwrap();
    }
    let mut out = std::fs::File::create(run.join("factors.parquet")).unwrap();
    ParquetWriter::new(&mut out)
        .finish(&mut with_state)
        .unwrap();
    let report = trade(&run, &ticker, "factors");
    assert_eq!(report["state"], "cs_ts_embeddings");
    assert_eq!(report["state_dim"], 6);

    // a short raw-feature run of `algorithm`, with `extra` flags
    let run_s = s(&run);
    let raw = |algorithm: &str, extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "trade",
            "--run",
            &run_s,
            "--ticker",
            &ticker,
            "--features",
            "raw",
            "--algorithm",
            algorithm,
            "--envs",
            "2",
            "--updates",
            "3",
            "--eval-every",
            "1",
            "--window",
            "32",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect()
    };

    // DQN and SAC write beside PPO, and say which algorithm ran
    for algorithm in ["dqn", "sac"] {
        let stdout = ok(&strs(&raw(algorithm, &[])));
        assert!(
            stdout.contains(&format!("| {} (raw) |", algorithm.to_uppercase())),
            "{stdout}"
        );
        let path = run.join(format!("trading_{ticker}_raw_{algorithm}.json"));
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(report["algorithm"], algorithm);
        assert_eq!(report["params"][algorithm]["n_steps"], 16, "{report}");
        assert!(report["policy"]["cw"].as_f64().unwrap() > 0.0);
        assert_eq!(report["valid_candidates"].as_array().unwrap().len(), 3);
    }
    // one day late: every split shifted by a day, files beside the same-day ones
    let stdout = ok(&strs(&raw("dqn", &["--delay", "1"])));
    assert!(stdout.contains("traded 1 day(s) late"), "{stdout}");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(name)).unwrap()).unwrap()
    };
    let same_day = read(&format!("trading_{ticker}_raw_dqn.json"));
    let late = read(&format!("trading_{ticker}_raw_dqn_delay1.json"));
    assert_eq!(late["delay"], 1);
    assert_eq!(same_day["delay"], 0);
    for days in ["train_days", "valid_days", "test_days"] {
        assert_eq!(
            late["days"][days].as_u64().unwrap() + 1,
            same_day["days"][days].as_u64().unwrap(),
            "{days}"
        );
    }
    assert!(
        late["days"]["test_first_date"].as_str() > same_day["days"]["test_first_date"].as_str()
    );
    assert_eq!(
        late["days"]["test_last_date"],
        same_day["days"]["test_last_date"]
    );
    let err = fails(&strs(&raw("dqn", &["--delay", "22"])));
    assert!(err.contains("delay"), "{err}");

    let err = fails(&[
        "trade",
        "--run",
        &s(&run),
        "--ticker",
        &ticker,
        "--algorithm",
        "dqn",
        "--gamma",
        "2",
    ]);
    assert!(err.contains("--gamma"), "{err}");

    let err = fails(&["trade", "--run", &s(&run), "--ticker", "NOPE"]);
    assert!(err.contains("unknown ticker NOPE"), "{err}");
    assert!(err.contains(&ticker), "lists the available tickers: {err}");

    let (bare, _) = minimal_run(dir.path(), &data, false);
    let err = fails(&["trade", "--run", &s(&bare), "--ticker", &ticker]);
    assert!(err.contains("storm export"), "{err}");

    let err = fails(&[
        "trade",
        "--run",
        &s(&run),
        "--ticker",
        &ticker,
        "--envs",
        "-1",
    ]);
    assert!(err.contains("--envs"), "{err}");
    let err = fails(&[
        "trade",
        "--run",
        &s(&run),
        "--ticker",
        &ticker,
        "--cost",
        "2",
    ]);
    assert!(err.contains("cost"), "{err}");
}

/// Borrowed arguments for `ok` / `fails`.
fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// `predictions_<split>.parquet` for the valid and test days of `data`, scoring each (day, stock) with its
/// own next-day return (an oracle); returns the scored test rows of `ticker` as (price, label) in date order.
fn oracle_predictions(run: &Path, data: &Path, ticker: &str) -> Vec<(f64, f64)> {
    let file = std::fs::File::open(data.join("features.parquet")).unwrap();
    let features = ParquetReader::new(file).finish().unwrap();
    let days = day_numbers(&features);
    let mut test_rows = Vec::new();
    for (split, range) in [
        ("valid", VALID_START..TEST_START),
        ("test", TEST_START..i32::MAX),
    ] {
        let mask: Vec<bool> = days.iter().map(|d| range.contains(d)).collect();
        let mut frame = features
            .select(["date", "ticker", "label", "price"])
            .unwrap()
            .filter(&BooleanChunked::new("m".into(), mask))
            .unwrap();
        let label = frame.column("label").unwrap().clone();
        frame.with_column(label.with_name("score".into())).unwrap();
        if split == "test" {
            let tickers = frame.column("ticker").unwrap().str().unwrap().clone();
            let prices = frame.column("price").unwrap().f64().unwrap().clone();
            let labels = frame.column("label").unwrap().f64().unwrap().clone();
            // the data's last day has no next-day return, so no (oracle) score: the rule cannot trade it
            test_rows = (0..frame.height())
                .filter(|&i| tickers.get(i) == Some(ticker))
                .filter_map(|i| Some((prices.get(i)?, labels.get(i)?)))
                .collect();
        }
        let mut frame = frame.select(["date", "ticker", "score", "label"]).unwrap();
        let mut out =
            std::fs::File::create(run.join(format!("predictions_{split}.parquet"))).unwrap();
        ParquetWriter::new(&mut out).finish(&mut frame).unwrap();
    }
    test_rows
}

#[test]
fn the_signal_rule_trades_a_runs_predictions_without_factors() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared_data(dir.path());
    // no factors.parquet: the signal rule needs eval's predictions, not an export
    let (run, frame) = minimal_run(dir.path(), &data, false);
    let ticker = first_ticker(&frame);
    let run_s = s(&run);
    let signal = |extra: &[&str]| -> Vec<String> {
        let mut args = vec![
            "trade",
            "--run",
            &run_s,
            "--ticker",
            &ticker,
            "--algorithm",
            "signal",
        ];
        args.extend_from_slice(extra);
        args.into_iter().map(str::to_string).collect()
    };
    let err = fails(&strs(&signal(&[])));
    assert!(err.contains("storm eval"), "{err}");

    let rows = oracle_predictions(&run, &data, &ticker);
    assert!(rows.len() > 100, "{} test days", rows.len());
    let stdout = ok(&strs(&signal(&["--cost", "0"])));
    assert!(stdout.contains("| Signal (predictions) |"), "{stdout}");
    assert!(stdout.contains("not trained"), "{stdout}");
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run.join(name)).unwrap()).unwrap()
    };
    let report = read(&format!("trading_{ticker}_signal.json"));
    assert_eq!(report["algorithm"], "signal");
    assert_eq!(report["features"], "predictions");
    assert_eq!(report["state"], "predicted_return");
    assert_eq!(report["state_dim"], 1);
    assert_eq!(report["best_update"], 0);
    assert_eq!(report["valid_candidates"].as_array().unwrap().len(), 0);
    assert_eq!(report["days"]["test_days"], rows.len());
    // long exactly on the days whose return is positive, without costs: the product of those days' moves
    let expected: f64 = rows
        .windows(2)
        .filter(|w| w[0].1 > 0.0)
        .map(|w| w[1].0 / w[0].0)
        .product();
    let cw = report["policy"]["cw"].as_f64().unwrap();
    assert!((cw / expected - 1.0).abs() < 1e-9, "CW {cw} vs {expected}");
    let bh = report["buy_and_hold"]["cw"].as_f64().unwrap();
    assert!((bh / (rows[rows.len() - 1].0 / rows[0].0) - 1.0).abs() < 1e-9);
    assert!(cw > bh && cw > 1.0, "CW {cw}, Buy&Hold {bh}");
    assert!(
        report["best_valid_cw"].as_f64().unwrap()
            > report["valid_buy_and_hold_cw"].as_f64().unwrap()
    );
    let csv =
        std::fs::read_to_string(run.join(format!("trading_{ticker}_signal_actions.csv"))).unwrap();
    assert_eq!(csv.lines().count(), rows.len() + 1);

    // a day late: one test day fewer, the files beside the same-day ones
    ok(&strs(&signal(&["--delay", "1"])));
    let late = read(&format!("trading_{ticker}_signal_delay1.json"));
    assert_eq!(late["days"]["test_days"], rows.len() - 1);
    assert_eq!(late["delay"], 1);

    let err = fails(&strs(&signal(&["--features", "raw"])));
    assert!(err.contains("signal rule"), "{err}");
    let err = fails(&[
        "trade",
        "--run",
        &run_s,
        "--ticker",
        &ticker,
        "--features",
        "predictions",
    ]);
    assert!(err.contains("signal rule"), "{err}");
}
