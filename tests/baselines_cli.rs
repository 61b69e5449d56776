//! The baselines are trained, evaluated, exported and backtested exactly like STORM, and each learns the
//! synthetic market's planted signal: FactorVAE, HireVAE, CAFactor and LightGBM reach half the oracle
//! RankIC, the plain predictors beat a random ranking clearly.

mod common;

use std::path::{Path, PathBuf};

use common::{fails, ok, path, s};

/// A synthetic market (29 stocks × 1500 days, seed 1) and its oracle RankIC.
fn market(dir: &Path) -> (PathBuf, f64) {
    let market = path(dir, "market.csv.gz");
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
        serde_json::from_slice(&std::fs::read(path(dir, "market.oracle.json")).unwrap()).unwrap();
    (market, oracle["oracle_rank_ic"].as_f64().unwrap())
}

/// Trains `configs/<config>.toml` on the market with 16-day windows and narrow layers for 2 epochs, then
/// evaluates the test split; returns the run and its test RankIC.
fn train_and_eval(dir: &Path, config: &str, extra: &[&str]) -> (PathBuf, f64) {
    let (market, _) = market(dir);
    let run = path(dir, "run");
    let source = format!("data.source={}", s(&market));
    let cfg = format!("../configs/{config}.toml");
    let mut args: Vec<String> = [
        "pretrain",
        "--config",
        &cfg,
        "--out",
        &s(&run),
        "--set",
        &source,
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    for set in [
        "data.window=16",
        "splits.train.start=2000-01-01",
        "splits.train.end=2004-06-30",
        "splits.valid.start=2004-07-01",
        "splits.valid.end=2005-01-31",
        "splits.test.start=2005-02-01",
        "splits.test.end=2006-12-31",
        "train.epochs=2",
        "model.factorvae.hidden=32",
        "model.sequence.hidden=32",
    ]
    .iter()
    .chain(extra)
    {
        args.push("--set".into());
        args.push(set.to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&args);
    ok(&["eval", "--run", &s(&run), "--split", "test"]);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("eval_test.json")).unwrap()).unwrap();
    (run, report["rank_ic"].as_f64().unwrap())
}

fn json(p: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
}

#[test]
fn factorvae_reaches_half_the_oracle_and_ranks_by_risk() {
    let dir = tempfile::tempdir().unwrap();
    let (_, oracle) = market(dir.path());
    let (run, rank_ic) = train_and_eval(dir.path(), "factorvae", &[]);
    assert!(
        rank_ic >= 0.5 * oracle,
        "FactorVAE test RankIC {rank_ic:.4} is below half the oracle's {oracle:.4}"
    );
    let header = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    assert!(header.starts_with("step,epoch,lr,loss,grad_norm,skipped,nll,kl\n"));

    // TDrisk: the predictions carry a positive risk column; a risk-averse backtest is written beside the
    // plain TopK-Drop one and differs from it.
    // (the synthetic calendar has days the DJI does not, so no index benchmark)
    ok(&["backtest", "--run", &s(&run), "--index", "none"]);
    ok(&[
        "backtest",
        "--run",
        &s(&run),
        "--index",
        "none",
        "--risk-aversion",
        "2",
    ]);
    let plain = json(&run.join("portfolio_test.json"));
    let risky = json(&run.join("portfolio_test_tdrisk.json"));
    assert_eq!(risky["params"]["risk_aversion"], 2.0);
    assert!(run.join("portfolio_test_tdrisk_daily.csv").is_file());
    let holdings = |name: &str| std::fs::read_to_string(run.join(name)).unwrap();
    assert_ne!(
        holdings("portfolio_test_daily.csv"),
        holdings("portfolio_test_tdrisk_daily.csv"),
        "risk aversion 2 should change some holdings"
    );
    assert_eq!(plain["params"]["risk_aversion"], 0.0);
}

#[test]
fn gru_learns_the_signal_and_exports_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let (run, rank_ic) = train_and_eval(dir.path(), "gru", &[]);
    assert!(rank_ic > 0.15, "GRU test RankIC {rank_ic:.4}");
    // Embeddings are the last hidden state (32 wide); no codebook columns.
    let out = ok(&["export", "--run", &s(&run)]);
    assert!(out.contains("32-dim"), "{out}");
    // No risk estimate: the risk-aware backtest says so.
    let err = fails(&["backtest", "--run", &s(&run), "--risk-aversion", "1"]);
    assert!(err.contains("risk"), "{err}");
}

#[test]
fn lstm_learns_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rank_ic) = train_and_eval(dir.path(), "lstm", &[]);
    assert!(rank_ic > 0.15, "LSTM test RankIC {rank_ic:.4}");
}

#[test]
fn transformer_learns_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rank_ic) = train_and_eval(dir.path(), "transformer", &[]);
    assert!(rank_ic > 0.15, "Transformer test RankIC {rank_ic:.4}");
}

/// HireVAE learns the market, logs both KL levels, and has a risk estimate and embeddings like FactorVAE.
#[test]
fn hirevae_reaches_half_the_oracle() {
    let dir = tempfile::tempdir().unwrap();
    let (_, oracle) = market(dir.path());
    let (run, rank_ic) = train_and_eval(dir.path(), "hirevae", &[]);
    assert!(
        rank_ic >= 0.5 * oracle,
        "HireVAE test RankIC {rank_ic:.4} is below half the oracle's {oracle:.4}"
    );
    let header = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    assert!(header.starts_with("step,epoch,lr,loss,grad_norm,skipped,nll,kl,kl_market\n"));
    ok(&[
        "backtest",
        "--run",
        &s(&run),
        "--index",
        "none",
        "--risk-aversion",
        "2",
    ]);
    assert!(run.join("portfolio_test_tdrisk.json").is_file());
    // Embeddings are the H = 32 market-conditioned stock features.
    let out = ok(&["export", "--run", &s(&run)]);
    assert!(out.contains("32-dim"), "{out}");
}

#[test]
fn cafactor_learns_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let (_, oracle) = market(dir.path());
    let (run, rank_ic) = train_and_eval(dir.path(), "cafactor", &[]);
    assert!(
        rank_ic >= 0.5 * oracle,
        "CAFactor test RankIC {rank_ic:.4} is below half the oracle's {oracle:.4}"
    );
    let header = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    assert!(header.starts_with("step,epoch,lr,loss,grad_norm,skipped,mse\n"));
    // Embeddings are the K = 6 loadings β.
    let out = ok(&["export", "--run", &s(&run)]);
    assert!(out.contains("6-dim"), "{out}");
}

/// LightGBM (Qlib's recipe, a short boosting schedule) learns the market, writes its booster instead of
/// checkpoints, and is evaluated, backtested and diagnosed like a model; it has nothing to export.
#[test]
fn lightgbm_learns_the_signal_and_is_scored_like_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let (_, oracle) = market(dir.path());
    let rounds = [
        "model.lightgbm.num_boost_round=60",
        "model.lightgbm.early_stopping_rounds=10",
    ];
    let (run, rank_ic) = train_and_eval(dir.path(), "lightgbm", &rounds);
    assert!(
        rank_ic >= 0.5 * oracle,
        "LightGBM test RankIC {rank_ic:.4} is below half the oracle's {oracle:.4}"
    );
    assert!(run.join("model.lgb.txt").is_file());
    assert!(!run.join("checkpoints").exists());
    let train = json(&run.join("train.json"));
    let kept = train["steps"].as_u64().unwrap();
    assert!((1..=60).contains(&kept), "{train}");
    assert!(
        train["best_valid_rank_ic"].as_f64().unwrap() > 0.0,
        "{train}"
    );
    let eval = json(&run.join("eval_test.json"));
    assert!(eval["checkpoint"]
        .as_str()
        .unwrap()
        .ends_with("model.lgb.txt"));
    assert_eq!(eval["checkpoint_step"].as_u64(), Some(kept));
    ok(&["backtest", "--run", &s(&run), "--index", "none"]);
    assert!(run.join("portfolio_test.json").is_file());
    let text = ok(&["diagnose", "--run", &s(&run)]);
    assert!(text.contains("| test |"), "{text}");
    let err = fails(&["export", "--run", &s(&run)]);
    assert!(
        err.contains("LightGBM booster") && err.contains("no factor embeddings"),
        "{err}"
    );
    // an out-of-range parameter is refused at load, naming the field
    let err = fails(&[
        "pretrain",
        "--config",
        "../configs/lightgbm.toml",
        "--out",
        &s(&path(dir.path(), "bad")),
        "--set",
        "model.lightgbm.colsample_bytree=1.5",
    ]);
    assert!(err.contains("model.lightgbm.colsample_bytree"), "{err}");
}

/// The ablation configs train and evaluate; each has only its own branch's codebook.
#[test]
fn storm_ablations_train_with_one_branch() {
    let dir = tempfile::tempdir().unwrap();
    let (market, _) = market(dir.path());
    for (config, has_ts, has_cs) in [("storm-wo-ts", false, true), ("storm-wo-cs", true, false)] {
        let run = path(dir.path(), config);
        ok(&[
            "pretrain",
            "--config",
            &format!("../configs/{config}.toml"),
            "--out",
            &s(&run),
            "--set",
            &format!("data.source={}", s(&market)),
            "--set",
            "data.window=16",
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
            "--max-steps",
            "3",
        ]);
        ok(&["eval", "--run", &s(&run), "--split", "test"]);
        let report = json(&run.join("eval_test.json"));
        assert_eq!(
            report["codebook_perplexity_ts"].is_number(),
            has_ts,
            "{config}"
        );
        assert_eq!(
            report["codebook_perplexity_cs"].is_number(),
            has_cs,
            "{config}"
        );
    }
}

/// A market whose daily returns alternate in sign, r_{t,i} = (−1)^t · a_i with a_i distinct: tomorrow's
/// ranking is exactly today's reversed.
fn alternating_market(dir: &Path) -> PathBuf {
    let csv = path(dir, "alternating.csv");
    let start = chrono::NaiveDate::from_ymd_opt(2000, 1, 3).unwrap();
    let mut text = String::from("date,ticker,open,high,low,close,adj_close,volume\n");
    let mut close = [100.0f64; 5];
    for t in 0..420 {
        let date = start + chrono::Days::new(t);
        for (i, c) in close.iter_mut().enumerate() {
            let open = *c;
            let sign = if t % 2 == 0 { 1.0 } else { -1.0 };
            *c *= 1.0 + sign * 0.002 * (i + 1) as f64;
            let (hi, lo) = (open.max(*c) * 1.001, open.min(*c) * 0.999);
            let volume = 1e6 + 1e3 * ((t as usize * 7 + i * 3) % 11) as f64;
            text += &format!("{date},T{i},{open},{hi},{lo},{c},{c},{volume}\n");
        }
    }
    std::fs::write(&csv, text).unwrap();
    csv
}

#[test]
fn reference_factors_score_from_prices_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let market = alternating_market(dir.path());
    let eval = |factor: &str| {
        let run = path(dir.path(), factor);
        let out = ok(&[
            "pretrain",
            "--config",
            "../configs/dj30-small.toml",
            "--out",
            &s(&run),
            "--set",
            &format!("data.source={}", s(&market)),
            "--set",
            "data.window=32",
            "--set",
            "data.scaler_window=32",
            "--set",
            "splits.train.start=2000-01-01",
            "--set",
            "splits.train.end=2000-08-31",
            "--set",
            "splits.valid.start=2000-09-01",
            "--set",
            "splits.valid.end=2000-11-30",
            "--set",
            "splits.test.start=2000-12-01",
            "--set",
            "splits.test.end=2001-03-31",
            "--set",
            "model.kind=reference",
            "--set",
            &format!("model.reference={factor}"),
        ]);
        assert!(out.contains("nothing to train"), "{out}");
        assert!(!run.join("checkpoints").exists());
        ok(&["eval", "--run", &s(&run), "--split", "test"]);
        (run.clone(), json(&run.join("eval_test.json")))
    };
    // −r_t ranks the stocks exactly as r_{t+1} does; the 20-day return ranks them the same way every day
    // while the next day's ranking flips, so its daily RankIC alternates ±1 and averages to ~0.
    let (run, reversal) = eval("reversal_1d");
    assert!(reversal["rank_ic"].as_f64().unwrap() > 0.999, "{reversal}");
    assert!(reversal["checkpoint"]
        .as_str()
        .unwrap()
        .contains("reference factor"));
    let (_, momentum) = eval("momentum_20d");
    let n_days = momentum["n_days"].as_f64().unwrap();
    assert!(
        momentum["rank_ic"].as_f64().unwrap().abs() <= 1.0 / n_days + 1e-9,
        "{momentum}"
    );
    // backtested and diagnosed like a model; nothing to export
    ok(&[
        "backtest",
        "--run",
        &s(&run),
        "--index",
        "none",
        "--k",
        "2",
        "--drop",
        "1",
    ]);
    assert!(run.join("portfolio_test.json").is_file());
    let text = ok(&["diagnose", "--run", &s(&run)]);
    assert!(text.contains("| test |"), "{text}");
    assert!(
        !text.contains("Prior vs posterior"),
        "no factor head: {text}"
    );
    let err = fails(&["export", "--run", &s(&run)]);
    assert!(err.contains("no factor embeddings"), "{err}");
    // a window too short for the factor's history is refused at load
    let err = fails(&[
        "pretrain",
        "--config",
        "../configs/dj30-small.toml",
        "--out",
        &s(&path(dir.path(), "short")),
        "--set",
        "data.window=16",
        "--set",
        "model.kind=reference",
        "--set",
        "model.reference=momentum_60d",
    ]);
    assert!(err.contains("data.window"), "{err}");
}
