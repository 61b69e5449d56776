//! End-to-end tests of `storm pretrain` and `storm eval`: exact resume after SIGKILL, seeded determinism,
//! predictions for every test day, the real DJ30 data with the small config, and learning a planted signal.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{ok, path, s};

/// A synthetic market and a tiny model config over it, in `dir`.
fn tiny_setup(dir: &Path, tickers: usize, days: usize) -> PathBuf {
    common::synth_config(
        dir,
        tickers,
        days,
        &format!(
            "{}checkpoint_every = 4\nkeep_checkpoints = 2\nlog_every = 4\n",
            common::TINY_MODEL
        ),
    )
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn final_checkpoint(run: &Path, step: u64) -> PathBuf {
    run.join("checkpoints").join(format!("step-{step:08}"))
}

#[test]
fn resume_after_sigkill_equals_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_setup(dir.path(), 6, 700);
    let data = path(dir.path(), "data");
    ok(&["data", "prepare", "--config", &s(&cfg), "--out", &s(&data)]);
    let steps = "36";
    let (cfg_s, data_s) = (s(&cfg), s(&data));
    let pretrain = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "pretrain",
            "--config",
            &cfg_s,
            "--data",
            &data_s,
            "--out",
            &s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let run = |args: Vec<String>| ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let full = path(dir.path(), "full");
    run(pretrain(&full, &["--max-steps", steps]));

    let killed = path(dir.path(), "killed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(pretrain(&killed, &["--max-steps", steps]))
        .spawn()
        .unwrap();
    let target = final_checkpoint(&killed, 8);
    let start = Instant::now();
    while !target.join("state.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no checkpoint appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "run ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(!final_checkpoint(&killed, 36).exists());
    run(pretrain(&killed, &["--max-steps", steps, "--resume"]));

    for file in ["model.safetensors", "optim.safetensors"] {
        assert_eq!(
            read(&final_checkpoint(&full, 36).join(file)),
            read(&final_checkpoint(&killed, 36).join(file)),
            "{file} differs after resume"
        );
    }
    assert_eq!(
        read(&full.join("losses.csv")),
        read(&killed.join("losses.csv"))
    );
    let log = String::from_utf8(read(&full.join("losses.csv"))).unwrap();
    assert_eq!(log.lines().count(), 37, "header + one row per step");
    assert!(log
        .lines()
        .next()
        .unwrap()
        .starts_with("step,epoch,lr,loss,grad_norm,skipped,recon_ts"));

    // without --resume an existing run is never overwritten
    let args = pretrain(&full, &["--max-steps", "4"]);
    let err = common::fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(err.contains("--resume"), "{err}");

    // a different seed gives a different model
    let other = path(dir.path(), "other");
    run(pretrain(&other, &["--max-steps", "4", "--seed", "9"]));
    let full4 = path(dir.path(), "full4");
    run(pretrain(&full4, &["--max-steps", "4"]));
    assert_ne!(
        read(&final_checkpoint(&other, 4).join("model.safetensors")),
        read(&final_checkpoint(&full4, 4).join("model.safetensors"))
    );

    // evaluation covers every test day that ends a complete window, none dropped
    let text = ok(&["eval", "--run", &s(&full), "--split", "test"]);
    assert!(text.contains("RankIC"), "{text}");
    let report: serde_json::Value =
        serde_json::from_slice(&read(&full.join("eval_test.json"))).unwrap();
    let panel = storm_shared::data::Panel::load(&data).unwrap();
    let test_days = panel
        .dates
        .iter()
        .filter(|d| {
            d.to_string().as_str() >= "2002-04-01" && d.to_string().as_str() <= "2003-12-31"
        })
        .count();
    assert_eq!(
        report["n_predictions"].as_u64().unwrap() as usize,
        test_days
    );
    assert_eq!(report["first_date"], "2002-04-01");
    // the last day has no next-day label, so it has a prediction but no RankIC
    assert_eq!(report["n_days"].as_u64().unwrap() as usize, test_days - 1);
    for key in [
        "rank_ic",
        "rank_icir",
        "ic",
        "icir",
        "codebook_perplexity_ts",
        "codebook_perplexity_cs",
    ] {
        assert!(report[key].as_f64().unwrap().is_finite(), "{key}");
    }
    let usage = report["codebook_usage_ts"].as_f64().unwrap();
    assert!(usage > 0.0 && usage <= 1.0);

    // --checkpoint picks a kept step (recorded in the report), names the kept ones when asked for another
    let full_s = s(&full);
    let eval_at = |checkpoint: &'static str| {
        [
            "eval",
            "--run",
            full_s.as_str(),
            "--split",
            "test",
            "--checkpoint",
            checkpoint,
        ]
    };
    ok(&eval_at("step-32"));
    let report: serde_json::Value =
        serde_json::from_slice(&read(&full.join("eval_test.json"))).unwrap();
    assert_eq!(report["checkpoint_step"], 32);
    assert_eq!(report["checkpoint_choice"], "step-32");
    let err = common::fails(&eval_at("step-5"));
    assert!(
        err.contains("no checkpoint at step 5; kept steps: 32, 36"),
        "{err}"
    );
    let err = common::fails(&["eval", "--run", &s(&full), "--checkpoint", "first"]);
    assert!(err.contains("best, last or step-N"), "{err}");

    // diagnose: every split with a HAC t-statistic, the validation curve, the gradient balance
    let text = ok(&["diagnose", "--run", &s(&full), "--checkpoint", "last"]);
    assert!(
        text.contains("| train |") && text.contains("| test |"),
        "{text}"
    );
    let d: serde_json::Value = serde_json::from_slice(&read(&full.join("diagnose.json"))).unwrap();
    assert_eq!(d["checkpoint_step"], 36);
    assert_eq!(d["splits"].as_array().unwrap().len(), 3);
    let train = &d["splits"][0];
    assert_eq!(train["split"], "train");
    assert!(train["rank_ic"]["n"].as_u64().unwrap() > 10);
    assert!(train["rank_ic"]["t_stat"].as_f64().unwrap().is_finite());
    assert!(train["rank_autocorrelation"].as_f64().unwrap().abs() <= 1.0);
    assert!(!d["grad_norms"].as_array().unwrap().is_empty());
    assert!(full.join("diagnose.md").exists());
    // prior vs posterior of the factor head: one correlation and one KL per factor, variance shares ≥ 0
    assert!(text.contains("Prior vs posterior"), "{text}");
    let agreement = &train["prior_agreement"];
    let corr = agreement["factor_mean_correlation"].as_array().unwrap();
    assert!(!corr.is_empty(), "{agreement}");
    assert_eq!(
        corr.len(),
        agreement["kl_per_factor"].as_array().unwrap().len()
    );
    assert!(corr
        .iter()
        .all(|c| c.as_f64().is_none_or(|c| c.abs() <= 1.0 + 1e-9)));
    for share in ["alpha_variance_share", "beta_variance_share"] {
        assert!(agreement[share].as_f64().unwrap() >= 0.0, "{agreement}");
    }

    let png = read(&full.join("codebook_usage_test.png"));
    assert_eq!(
        &png[..8],
        b"\x89PNG\r\n\x1a\n",
        "codebook usage histogram is a PNG"
    );

    // factor export: one row per (window-end day, stock) over all splits, embeddings and codes
    let factors = path(dir.path(), "factors.parquet");
    ok(&["export", "--run", &s(&full), "--out", &s(&factors)]);
    use polars::prelude::{ParquetReader, SerReader};
    let df = ParquetReader::new(std::fs::File::open(&factors).unwrap())
        .finish()
        .unwrap();
    assert_eq!(df.height() % 6, 0);
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|n| n.to_string())
        .collect();
    for col in [
        "date",
        "ticker",
        "split",
        "factor_0",
        "factor_7",
        "ts_code_0",
        "ts_code_3",
        "cs_code",
    ] {
        assert!(names.iter().any(|n| n == col), "missing {col}: {names:?}");
    }
    // STORM's trading state: the stock's TS and the day's CS factor embeddings, 2E each
    let state = names.iter().filter(|n| n.starts_with("state_")).count();
    assert!(
        state > 0 && state % 4 == 0,
        "{state} state columns: {names:?}"
    );
    let codes = df.column("ts_code_3").unwrap().i64().unwrap().clone();
    assert!(codes.iter().flatten().all(|c| (0..8).contains(&c)));
    let test_rows = df
        .column("split")
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .filter(|s| *s == Some("test"))
        .count();
    assert_eq!(test_rows, test_days * 6);
}

#[test]
fn dj30_small_trains_and_evaluates_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let run = path(dir.path(), "run");
    let text = ok(&[
        "pretrain",
        "--config",
        "../configs/dj30-small.toml",
        "--out",
        &s(&run),
        "--max-steps",
        "3",
        "--set",
        "train.batch_size=4",
    ]);
    assert!(text.contains("trained 3 /"), "{text}");
    for split in ["valid", "test"] {
        ok(&["eval", "--run", &s(&run), "--split", split]);
        let report: serde_json::Value =
            serde_json::from_slice(&read(&run.join(format!("eval_{split}.json")))).unwrap();
        assert!(report["rank_ic"].as_f64().unwrap().is_finite());
        assert!(
            report["n_days"].as_u64().unwrap() > 200,
            "{split}: {report}"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&read(&run.join("eval_test.json"))).unwrap();
    assert_eq!(report["first_date"], "2021-04-01");
    assert_eq!(report["last_date"], "2024-03-08");
}

/// The small config learns a planted signal: on the synthetic market its test RankIC reaches at least half
/// of the oracle's (the oracle ranks by the hidden signal itself).
#[test]
fn small_config_learns_half_the_planted_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let market = path(dir.path(), "market.csv.gz");
    ok(&[
        "data",
        "synth",
        "--out",
        &s(&market),
        "--tickers",
        "29",
        "--days",
        "1500",
        "--seed",
        "1",
    ]);
    let oracle: serde_json::Value =
        serde_json::from_slice(&read(&path(dir.path(), "market.oracle.json"))).unwrap();
    let oracle_ic = oracle["oracle_rank_ic"].as_f64().unwrap();
    let run = path(dir.path(), "run");
    let source = format!("data.source={}", s(&market));
    ok(&[
        "pretrain",
        "--config",
        "../configs/dj30-small.toml",
        "--out",
        &s(&run),
        "--set",
        &source,
        "--set",
        "splits.train.start=2000-01-01",
        "--set",
        "splits.train.end=2004-06-30",
        "--set",
        "splits.valid.start=2004-07-01",
        "--set",
        "splits.valid.end=2005-01-31",
        "--set",
        "splits.test.start=2005-02-01",
        "--set",
        "splits.test.end=2006-12-31",
        "--set",
        "train.epochs=4",
    ]);
    ok(&["eval", "--run", &s(&run), "--split", "test"]);
    let report: serde_json::Value =
        serde_json::from_slice(&read(&run.join("eval_test.json"))).unwrap();
    let rank_ic = report["rank_ic"].as_f64().unwrap();
    assert!(
        rank_ic >= 0.5 * oracle_ic,
        "test RankIC {rank_ic:.4} is below half the oracle's {oracle_ic:.4}"
    );
}

#[test]
fn resume_skips_a_truncated_newest_checkpoint_and_still_matches_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_setup(dir.path(), 6, 700);
    let data = path(dir.path(), "data");
    ok(&["data", "prepare", "--config", &s(&cfg), "--out", &s(&data)]);
    let pretrain = |out: &Path, steps: &str, resume: bool| {
        let (cfg, data, out) = (s(&cfg), s(&data), s(out));
        let mut args = vec![
            "pretrain",
            "--config",
            &cfg,
            "--data",
            &data,
            "--out",
            &out,
            "--max-steps",
            steps,
        ];
        if resume {
            args.push("--resume");
        }
        common::storm(&args)
    };
    let full = path(dir.path(), "full");
    assert!(pretrain(&full, "12", false).status.success());
    let damaged = path(dir.path(), "damaged");
    assert!(pretrain(&damaged, "8", false).status.success());
    // a crash (or a full disk) cut the newest checkpoint's model file in half
    let model = final_checkpoint(&damaged, 8).join("model.safetensors");
    let bytes = read(&model);
    std::fs::write(&model, &bytes[..bytes.len() / 2]).unwrap();

    let out = pretrain(&damaged, "12", true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let skipped: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("skipping the unreadable checkpoint"))
        .collect();
    assert_eq!(skipped.len(), 1, "{stderr}");
    assert!(
        skipped[0].contains("step-00000008") && skipped[0].contains("model.safetensors"),
        "{stderr}"
    );
    // it resumed from step 4, and steps 5..12 are the same as in the run that never failed
    for file in ["model.safetensors", "optim.safetensors"] {
        assert_eq!(
            read(&final_checkpoint(&full, 12).join(file)),
            read(&final_checkpoint(&damaged, 12).join(file)),
            "{file} differs"
        );
    }
    assert_eq!(
        read(&full.join("losses.csv")),
        read(&damaged.join("losses.csv"))
    );
}
