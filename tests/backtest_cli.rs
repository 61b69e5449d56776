//! End-to-end tests of `storm backtest` on a run directory built by hand (only a predictions Parquet file,
//! no model): a perfect-foresight strategy beats equal weight, every output is written and consistent, a
//! user index file works, and bad input fails with one clear error line and writes nothing.

mod common;

use std::path::Path;

use common::{fails, ok, path, s};
use polars::prelude::*;

const TICKERS: [&str; 6] = ["AAA", "BBB", "CCC", "DDD", "EEE", "FFF"];

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
fn epoch_days(y: i32, m: u32, d: u32) -> i32 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i32 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i32 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn ymd(days: i32) -> String {
    // Inverse of epoch_days (civil_from_days), for messages and CSV dates.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i32::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The NYSE trading days 2021-04-05 ..= 2021-04-30 (weekdays; no holiday falls in them): 20 dates.
fn trading_days() -> Vec<i32> {
    (epoch_days(2021, 4, 5)..=epoch_days(2021, 4, 30))
        .filter(|d| (d + 3).rem_euclid(7) < 5) // 0 = Monday
        .collect()
}

/// Deterministic returns in (−3%, +3%), distinct across stocks.
fn returns(n_days: usize) -> Vec<Vec<f64>> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n_days)
        .map(|_| {
            TICKERS
                .iter()
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.06
                })
                .collect()
        })
        .collect()
}

/// A run directory with only `predictions_test.parquet`: scores equal to the labels (perfect foresight),
/// null labels on the last date. Returns the per-day labels.
fn write_run(dir: &Path) -> Vec<Vec<f64>> {
    let days = trading_days();
    let labels = returns(days.len() - 1);
    let (mut date, mut ticker, mut score, mut label) = (vec![], vec![], vec![], vec![]);
    for (t, day) in days.iter().enumerate() {
        for (j, name) in TICKERS.iter().enumerate() {
            let l = labels.get(t).map(|row| row[j]);
            date.push(*day);
            ticker.push(*name);
            score.push(l.unwrap_or(0.0));
            label.push(l);
        }
    }
    let mut frame = DataFrame::new_infer_height(vec![
        Int32Chunked::from_vec("date".into(), date)
            .into_date()
            .into_column(),
        Column::new("ticker".into(), ticker),
        Column::new("score".into(), score),
        Column::new("label".into(), label),
    ])
    .unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let file = std::fs::File::create(dir.join("predictions_test.parquet")).unwrap();
    ParquetWriter::new(file).finish(&mut frame).unwrap();
    labels
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn perfect_foresight_beats_equal_weight_and_writes_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let run = path(dir.path(), "run");
    let labels = write_run(&run);
    let out = ok(&[
        "backtest",
        "--run",
        &s(&run),
        "--k",
        "2",
        "--drop",
        "2",
        "--cost",
        "1e-4",
    ]);
    assert!(out.contains("| strategy | APY | CW | CR | ASR | MDD | AVO | turnover |"));
    for row in [
        "| TopK-Drop (k=2, drop=2) |",
        "| Equal weight |",
        "| Index (DJI) |",
    ] {
        assert!(out.contains(row), "{row} missing from:\n{out}");
    }

    let report = json(&run.join("portfolio_test.json"));
    for part in ["strategy", "equal_weight", "index"] {
        for field in [
            "apy",
            "cw",
            "cr",
            "asr",
            "mdd",
            "avo",
            "turnover",
            "total_cost",
            "n_days",
        ] {
            assert!(report[part].get(field).is_some(), "{part}.{field} missing");
        }
        assert_eq!(report[part]["n_days"], 19);
    }
    let cw = |part: &str| report[part]["cw"].as_f64().unwrap();
    assert!(
        cw("strategy") > cw("equal_weight") + 0.05,
        "perfect foresight {} vs equal weight {}",
        cw("strategy"),
        cw("equal_weight")
    );
    assert_eq!(report["params"]["k"], 2);
    assert_eq!(report["params"]["drop"], 2);
    assert_eq!(report["params"]["index"], "builtin:dji");
    assert_eq!(report["params"]["split"], "test");
    // The cost sweep's 1 bp point is the backtest itself; costs only lower the final wealth.
    let sweep = report["cost_sweep"].as_array().unwrap();
    let sweep_cw: Vec<f64> = sweep.iter().map(|c| c["cw"].as_f64().unwrap()).collect();
    assert_eq!(sweep.len(), 4);
    assert_eq!(sweep[1]["cost_bps"], 1.0);
    assert!((sweep_cw[1] - cw("strategy")).abs() < 1e-12, "{sweep:?}");
    assert!(sweep_cw.windows(2).all(|w| w[1] < w[0]), "{sweep:?}");
    assert!(report["break_even"]["kind"].is_string(), "{report}");
    assert!(out.contains("break-even cost: "), "{out}");
    // Analytics: scores equal the labels, so the next-day RankIC is 1, the top 2 beat the bottom 2 every
    // day and the quintiles rise with the score; everything is printed.
    let a = &report["analytics"];
    assert_eq!(a["ic_decay"][0]["horizon"], 1);
    assert!(
        (a["ic_decay"][0]["rank_ic"].as_f64().unwrap() - 1.0).abs() < 1e-12,
        "{a}"
    );
    assert_eq!(a["ic_decay"][0]["n_days"], 19);
    assert!(
        a["long_short"]["annual_return"].as_f64().unwrap() > 0.0,
        "{a}"
    );
    let q: Vec<f64> = a["quantiles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["annual_return"].as_f64().unwrap())
        .collect();
    assert!(q.windows(2).all(|w| w[1] > w[0]), "{q:?}");
    assert_eq!(a["years"][0]["year"], 2021);
    assert_eq!(a["years"][0]["days"], 19);
    assert!(a["vs_equal_weight"]["information_ratio"].as_f64().unwrap() > 0.0);
    assert!(a["vs_index"].is_object());
    for text in [
        "| against | excess return (annual) |",
        "| long–short, top 2 − bottom 2 |",
        "| score quintile 5 of 5 |",
        "| horizon (days) | RankIC | t | days |",
        "The built-in DJI is a price index",
        "Sortino",
    ] {
        assert!(out.contains(text), "{text} missing from:\n{out}");
    }

    let csv = std::fs::read_to_string(run.join("portfolio_test_daily.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1 + trading_days().len(), "one row per date");
    assert_eq!(
        lines[0],
        "date,wealth,equal_weight_wealth,index_wealth,daily_return,traded_value,cost,n_holdings,\
         holdings,buys,sells"
    );
    // With drop = k every day's book is exactly that day's top 2 by label.
    for (t, line) in lines[1..lines.len() - 1].iter().enumerate() {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[0], ymd(trading_days()[t]));
        let mut order: Vec<usize> = (0..TICKERS.len()).collect();
        order.sort_by(|&a, &b| labels[t][b].total_cmp(&labels[t][a]));
        let mut top: Vec<&str> = order[..2].iter().map(|&j| TICKERS[j]).collect();
        top.sort();
        assert_eq!(cells[8], top.join(";"), "day {t}");
    }
    // The last row's wealth is the final wealth: cash · CW.
    let last: Vec<&str> = lines[lines.len() - 1].split(',').collect();
    let final_wealth: f64 = last[1].parse().unwrap();
    assert!((final_wealth / 1e6 - cw("strategy")).abs() < 1e-12);

    let png = std::fs::read(run.join("wealth_test.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(!listing(&run).iter().any(|n| n.starts_with(".staging")));
}

#[test]
fn a_one_day_delay_trades_yesterdays_scores_beside_the_undelayed_backtest() {
    let dir = tempfile::tempdir().unwrap();
    let run = path(dir.path(), "run");
    let labels = write_run(&run);
    let args = |delay: &'static str| {
        vec![
            "backtest".to_string(),
            "--run".into(),
            s(&run),
            "--k".into(),
            "2".into(),
            "--drop".into(),
            "2".into(),
            "--delay".into(),
            delay.into(),
        ]
    };
    let run_with = |delay| {
        let a = args(delay);
        ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run_with("0");
    let out = run_with("1");
    assert!(
        out.contains("| TopK-Drop (k=2, drop=2), delay 1 |"),
        "{out}"
    );
    let now = json(&run.join("portfolio_test.json"));
    let late = json(&run.join("portfolio_test_delay1.json"));
    assert_eq!(late["params"]["delay"], 1);
    assert_eq!(now["params"]["delay"], 0);
    let cw = |r: &serde_json::Value, part: &str| r[part]["cw"].as_f64().unwrap();
    assert_eq!(cw(&now, "equal_weight"), cw(&late, "equal_weight"));
    assert!(
        cw(&late, "strategy") < cw(&now, "strategy"),
        "foresight a day late is worth less: {} vs {}",
        cw(&late, "strategy"),
        cw(&now, "strategy")
    );
    let csv = std::fs::read_to_string(run.join("portfolio_test_delay1_daily.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[1].split(',').nth(7), Some("0"), "day 0 holds cash");
    // Day t+1's book is day t's top 2 by label.
    for t in 0..lines.len() - 3 {
        let cells: Vec<&str> = lines[t + 2].split(',').collect();
        let mut order: Vec<usize> = (0..TICKERS.len()).collect();
        order.sort_by(|&a, &b| labels[t][b].total_cmp(&labels[t][a]));
        let mut top: Vec<&str> = order[..2].iter().map(|&j| TICKERS[j]).collect();
        top.sort();
        assert_eq!(cells[8], top.join(";"), "day {}", t + 1);
    }
    assert!(run.join("wealth_test_delay1.png").is_file());
}

#[test]
fn index_from_a_user_file_and_missing_index_dates() {
    let dir = tempfile::tempdir().unwrap();
    let run = path(dir.path(), "run");
    write_run(&run);
    let days = trading_days();
    let index = path(dir.path(), "index.csv");
    let mut text = String::from("Date,Close\n");
    for (i, d) in days.iter().enumerate() {
        text.push_str(&format!("{},{}\n", ymd(*d), 100.0 + i as f64));
    }
    std::fs::write(&index, &text).unwrap();
    let out = ok(&["backtest", "--run", &s(&run), "--index", &s(&index)]);
    assert!(out.contains("| Index (index.csv) |"), "{out}");
    let report = json(&run.join("portfolio_test.json"));
    let cw = report["index"]["cw"].as_f64().unwrap();
    assert!((cw - (100.0 + 19.0) / 100.0).abs() < 1e-12, "{cw}");

    // Without an index: no index key and no index column.
    ok(&["backtest", "--run", &s(&run), "--index", "none"]);
    let report = json(&run.join("portfolio_test.json"));
    assert!(report.get("index").is_none());
    let csv = std::fs::read_to_string(run.join("portfolio_test_daily.csv")).unwrap();
    assert!(!csv.lines().next().unwrap().contains("index_wealth"));

    // An index file without two of the dates: an error naming them, nothing rewritten.
    let other = path(dir.path(), "other");
    write_run(&other);
    let holes: String = text
        .lines()
        .filter(|l| !l.starts_with("2021-04-07") && !l.starts_with("2021-04-20"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&index, holes).unwrap();
    let err = fails(&["backtest", "--run", &s(&other), "--index", &s(&index)]);
    assert!(err.contains("2021-04-07, 2021-04-20"), "{err}");
    assert_eq!(listing(&other), vec!["predictions_test.parquet"]);
}

#[test]
fn bad_input_fails_with_one_error_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let empty = path(dir.path(), "empty");
    std::fs::create_dir_all(&empty).unwrap();
    let run = path(dir.path(), "run");
    write_run(&run);
    let cases: [(&Path, &[&str], &str); 7] = [
        (&run, &["--delay", "-1"], "--delay must be between 0 and 21"),
        (&run, &["--delay", "22"], "--delay must be between 0 and 21"),
        (&empty, &[], "run `storm eval --run"),
        (&run, &["--k", "0"], "--k must be at least 1"),
        (
            &run,
            &["--k", "2", "--drop", "3"],
            "--drop must be between 0 and --k = 2",
        ),
        (
            &run,
            &["--cost", "-0.001"],
            "--cost must be a finite rate ≥ 0",
        ),
        (&run, &["--cash", "0"], "--cash must be finite and > 0"),
    ];
    for (dir, extra, expected) in cases {
        let before = listing(dir);
        let mut args = vec!["backtest", "--run"];
        let run_arg = s(dir);
        args.push(&run_arg);
        args.extend_from_slice(extra);
        let err = fails(&args);
        let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
        assert_eq!(error_lines.len(), 1, "{err}");
        assert!(error_lines[0].contains(expected), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(listing(dir), before, "{extra:?} wrote something");
    }
}
