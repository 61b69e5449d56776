//! Data-parallel training on the CPU: `storm launch --nproc-per-node 2 -- pretrain …` (TCP all-reduce)
//! matches a single process with the same global batch and seed, step by step — a GRU, and STORM with its
//! batch-coupled CLIP and diversity terms — and resumes with `--resume`;
//! a failing rank brings the whole job down with its error; the env contract works without the launcher.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, path, s};

/// A synthetic market (8 stocks × 700 days) in `dir`; returns its file.
fn market(dir: &Path) -> PathBuf {
    let market = path(dir, "market.csv.gz");
    ok(&[
        "data",
        "synth",
        "--out",
        &s(&market),
        "--tickers",
        "8",
        "--days",
        "700",
        "--seed",
        "3",
    ]);
    market
}

/// `pretrain` of configs/gru.toml on the market: 16-day windows, hidden 16, global batch 8.
fn pretrain_args(market: &Path, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["pretrain", "--config", "../configs/gru.toml", "--out"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.push(s(out));
    for set in [
        format!("data.source={}", s(market)),
        "data.window=16".into(),
        "data.scaler_window=32".into(),
        "splits.train.start=2000-01-01".into(),
        "splits.train.end=2001-06-30".into(),
        "splits.valid.start=2001-07-01".into(),
        "splits.valid.end=2001-12-31".into(),
        "splits.test.start=2002-01-01".into(),
        "splits.test.end=2002-12-31".into(),
        "model.sequence.hidden=16".into(),
        "train.batch_size=8".into(),
        "train.epochs=3".into(),
    ] {
        args.push("--set".into());
        args.push(set);
    }
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn run_ok(args: &[String]) -> String {
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// (step, loss) of every losses.csv row.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    let text = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    text.lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[0].parse().unwrap(), f[3].parse().unwrap())
        })
        .collect()
}

/// rank_ic of valid.csv's last row.
fn last_valid_rank_ic(run: &Path) -> f64 {
    let text = std::fs::read_to_string(run.join("valid.csv")).unwrap();
    let last = text.lines().last().unwrap();
    last.split(',').nth(2).unwrap().parse().unwrap()
}

fn params(run: &Path, step: u64) -> HashMap<String, tch::Tensor> {
    let file = run
        .join("checkpoints")
        .join(format!("step-{step:08}"))
        .join("model.safetensors");
    tch::Tensor::read_safetensors(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
        .into_iter()
        .collect()
}

#[test]
fn two_ranks_match_one_process_with_the_same_global_batch_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let market = market(dir.path());
    let single = path(dir.path(), "single");
    let started = Instant::now();
    run_ok(&pretrain_args(&market, &single, &["--max-steps", "40"]));
    let single_secs = started.elapsed().as_secs_f64();

    // two ranks: 24 steps, then a relaunch with --resume to 40
    let dp = path(dir.path(), "dp");
    let launch = |extra: &[&str]| {
        let mut args: Vec<String> = ["launch", "--nproc-per-node", "2", "--"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(pretrain_args(&market, &dp, extra));
        run_ok(&args)
    };
    let started = Instant::now();
    let out = launch(&["--max-steps", "24"]);
    assert!(out.contains("on 2 ranks"), "{out}");
    let out = launch(&["--max-steps", "40", "--resume"]);
    assert!(out.contains("trained 40 /"), "{out}");
    eprintln!(
        "single: {single_secs:.1}s, 2 ranks (two launches): {:.1}s",
        started.elapsed().as_secs_f64()
    );

    let (a, b) = (losses(&single), losses(&dp));
    assert_eq!(a.len(), 40);
    assert_eq!(
        a.iter().map(|r| r.0).collect::<Vec<_>>(),
        b.iter().map(|r| r.0).collect::<Vec<_>>(),
        "rank 0 logs every step once"
    );
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        // losses.csv has 6 decimals
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0) + 2e-6,
            "step {step}: loss {x} (1 process) vs {y} (2 ranks)"
        );
    }
    let (pa, pb) = (params(&single, 40), params(&dp, 40));
    assert_eq!(pa.len(), pb.len());
    for (name, t) in &pa {
        let diff = (t - &pb[name]).abs().max().double_value(&[]);
        assert!(diff < 1e-4, "{name}: parameters differ by {diff}");
    }
    let (ra, rb) = (last_valid_rank_ic(&single), last_valid_rank_ic(&dp));
    assert!((ra - rb).abs() < 1e-4, "valid RankIC {ra} vs {rb}");
    // only rank 0 wrote the run's files, and train.json counts the global samples
    let train: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dp.join("train.json")).unwrap()).unwrap();
    assert_eq!(train["steps"], 40);
}

/// The tests' tiny STORM on the market with the paper's CLIP and diversity weights raised so that the
/// batch-coupled terms matter; no dead-code resets (they draw codes from each rank's own vectors).
fn storm_config(dir: &Path, market: &Path) -> PathBuf {
    let cfg = path(dir, "storm.toml");
    let head = format!(
        r#"
name = "storm-dp"
[data]
source = "{}"
window = 16
scaler_window = 32
[splits]
train = {{ start = "2000-01-01", end = "2001-06-30" }}
valid = {{ start = "2001-07-01", end = "2001-12-31" }}
test  = {{ start = "2002-01-01", end = "2002-12-31" }}
"#,
        s(market)
    );
    let tail = "loss_weight_clip = 0.5\nloss_weight_diversity = 0.5\n";
    let model = common::TINY_MODEL.replace("dead_code_steps = 5", "dead_code_steps = 0");
    std::fs::write(&cfg, format!("{head}{model}{tail}")).unwrap();
    cfg
}

/// (clip, diversity_ts, diversity_cs) columns of losses.csv by header name.
fn coupled_terms(run: &Path) -> Vec<[f64; 3]> {
    let text = std::fs::read_to_string(run.join("losses.csv")).unwrap();
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let cols = [col("clip"), col("diversity_ts"), col("diversity_cs")];
    lines
        .map(|l| {
            let f: Vec<f64> = l
                .split(',')
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect();
            cols.map(|c| f[c])
        })
        .collect()
}

#[test]
fn storm_on_two_ranks_matches_one_process_including_clip_and_diversity() {
    let dir = tempfile::tempdir().unwrap();
    let market = market(dir.path());
    let cfg = storm_config(dir.path(), &market);
    let run = |out: &Path, ranks: Option<&str>| {
        let mut args: Vec<String> = Vec::new();
        if let Some(n) = ranks {
            args.extend(["launch", "--nproc-per-node", n, "--"].map(String::from));
        }
        args.extend(
            [
                "pretrain",
                "--config",
                &s(&cfg),
                "--out",
                &s(out),
                "--max-steps",
                "16",
            ]
            .map(String::from),
        );
        run_ok(&args)
    };
    let (single, dp) = (path(dir.path(), "single"), path(dir.path(), "dp"));
    run(&single, None);
    run(&dp, Some("2"));
    let (a, b) = (losses(&single), losses(&dp));
    assert_eq!(a.len(), 16);
    for ((step, x), (_, y)) in a.iter().zip(&b) {
        assert!(
            (x - y).abs() <= 1e-5 * x.abs().max(1.0) + 2e-6,
            "step {step}: loss {x} (1 process) vs {y} (2 ranks)"
        );
    }
    // the coupled terms are the global batch's, not a mean of per-rank halves
    for (step, (x, y)) in coupled_terms(&single)
        .iter()
        .zip(coupled_terms(&dp))
        .enumerate()
    {
        for k in 0..3 {
            assert!(
                (x[k] - y[k]).abs() <= 1e-5 * x[k].abs().max(1.0) + 2e-6,
                "step {}: term {k}: {} vs {}",
                step + 1,
                x[k],
                y[k]
            );
        }
    }
    let (pa, pb) = (params(&single, 16), params(&dp, 16));
    assert_eq!(pa.len(), pb.len());
    for (name, t) in &pa {
        let diff = (t - &pb[name])
            .abs()
            .to_kind(tch::Kind::Double)
            .reshape([-1]);
        let loose = shift_invariant(name, diff.size()[0]);
        let mask = diff.ones_like();
        let _ = mask
            .narrow(0, loose.start, loose.end - loose.start)
            .fill_(0.0);
        let strict = (&diff * &mask).max().double_value(&[]);
        assert!(strict < 1e-4, "{name}: parameters differ by {strict}");
        let noise = (&diff * (mask.ones_like() - &mask)).max().double_value(&[]);
        assert!(
            noise < 1e-3,
            "{name}: shift-invariant entries differ by {noise}"
        );
    }
}

/// Entries of a parameter that shift every logit of a softmax equally — attention key biases, the prior's
/// key bias, the portfolio layer's bias — have an exactly-zero gradient; Adam turns the float noise in it
/// into steps of up to the learning rate, so they are compared loosely (every other entry strictly).
fn shift_invariant(name: &str, len: i64) -> std::ops::Range<i64> {
    if name.ends_with("attn.qkv.bias") {
        len / 3..2 * len / 3
    } else if name.ends_with("attn.kv.bias") {
        0..len / 2
    } else if name == "factor.prior.key.bias" || name == "factor.portfolio.bias" {
        0..len
    } else {
        0..0
    }
}

#[test]
fn a_failing_rank_stops_the_job_with_its_error() {
    let dir = tempfile::tempdir().unwrap();
    let market = market(dir.path());
    let out = path(dir.path(), "run");
    let mut args: Vec<String> = ["launch", "--nproc-per-node", "2", "--"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(pretrain_args(
        &market,
        &out,
        &["--data", "/nonexistent/prepared", "--max-steps", "4"],
    ));
    let started = Instant::now();
    let res = Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{err}");
    assert!(started.elapsed() < Duration::from_secs(60), "{err}");
    assert!(err.contains("[rank 0] error:"), "{err}");
    let last = err.lines().last().unwrap();
    assert!(
        last.starts_with("error: rank 0 failed") && last.contains("/nonexistent/prepared"),
        "{err}"
    );

    // an odd global batch cannot be split over 2 ranks: every rank refuses before training
    let mut args: Vec<String> = ["launch", "--nproc-per-node", "2", "--"]
        .iter()
        .map(|a| a.to_string())
        .collect();
    args.extend(pretrain_args(
        &market,
        &out,
        &["--set", "train.batch_size=7", "--max-steps", "2"],
    ));
    let res = Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(&args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(err.contains("does not divide by the world size 2"), "{err}");
}

/// Two processes started by hand with torchrun's variables (as torchrun --no-python or srun would) form a
/// group; a rank that resolves a different config fails and takes the other down.
#[test]
fn the_env_contract_works_without_the_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let market = market(dir.path());
    let out = path(dir.path(), "run");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let spawn = |rank: &str, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_storm"))
            .args(pretrain_args(&market, &out, extra))
            .env("RANK", rank)
            .env("LOCAL_RANK", rank)
            .env("WORLD_SIZE", "2")
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", &port)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let r0 = spawn("0", &["--max-steps", "2"]);
    let r1 = spawn("1", &["--max-steps", "2", "--seed", "9"]);
    let (o0, o1) = (
        r0.wait_with_output().unwrap(),
        r1.wait_with_output().unwrap(),
    );
    let e1 = String::from_utf8_lossy(&o1.stderr);
    assert!(!o1.status.success());
    assert!(e1.contains("different config than rank 0"), "{e1}");
    assert!(!o0.status.success(), "rank 0 must not train alone");

    let r0 = spawn("0", &["--max-steps", "2"]);
    let r1 = spawn("1", &["--max-steps", "2"]);
    let (o0, o1) = (
        r0.wait_with_output().unwrap(),
        r1.wait_with_output().unwrap(),
    );
    assert!(
        o0.status.success() && o1.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o0.stderr),
        String::from_utf8_lossy(&o1.stderr)
    );
    assert!(String::from_utf8_lossy(&o0.stdout).contains("trained 2 / "));
    assert!(o1.stdout.is_empty(), "only rank 0 reports");
}
