//! End-to-end tests of the actor runtime through `storm sweep` and `storm paper` on a tiny synthetic market:
//! a 12-job grid on 3 CPU workers with every result exactly once; injected panics, errors and crashes
//! retried (resuming from the checkpoint the failed attempt wrote); a job that always fails reported with
//! its error while the rest finish; a coordinator killed with SIGKILL and resumed without rerunning
//! finished jobs or leaving orphans; the paper protocol's report.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{ok, path, s};

/// A synthetic market + tiny base config in `dir`, and a sweep config `dir/<name>.toml` with `body`.
/// The tests' tiny model, checkpointing every 2 steps.
fn tiny() -> String {
    format!(
        "{}checkpoint_every = 2\nkeep_checkpoints = 2\n",
        common::TINY_MODEL
    )
}

fn sweep_setup(dir: &Path, name: &str, body: &str) -> PathBuf {
    if !dir.join("tiny.toml").exists() {
        common::synth_config(dir, 6, 700, &tiny());
    }
    let p = dir.join(format!("{name}.toml"));
    std::fs::write(&p, format!("base = \"tiny.toml\"\n{body}")).unwrap();
    p
}

fn storm_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the storm binary runs")
}

/// Every ledger event as JSON.
fn ledger(sweep: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(sweep.join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// (job, state) → count.
fn event_counts(events: &[serde_json::Value]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for e in events {
        let key = (
            e["job"].as_str().unwrap().to_string(),
            e["state"].as_str().unwrap().to_string(),
        );
        *m.entry(key).or_insert(0) += 1;
    }
    m
}

fn job_ids(sweep: &Path) -> Vec<String> {
    let mut ids: Vec<String> = std::fs::read_dir(sweep.join("jobs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    ids.sort();
    ids
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn a_twelve_job_grid_on_three_workers_yields_every_result_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sweep_setup(
        dir.path(),
        "grid",
        r#"
seeds = [0, 1, 2, 3, 4, 5]
max_steps = 6
tasks = ["eval", "backtest"]
[backtest]
index = "none"
[grid]
"model.codebook_size" = [4, 8]
"#,
    );
    let out = path(dir.path(), "sweep");
    let text = ok(&[
        "sweep",
        "--config",
        &s(&cfg),
        "--out",
        &s(&out),
        "--workers",
        "cpu:3",
    ]);
    assert!(text.contains("12 jobs: 12 done, 0 failed"), "{text}");

    let ids = job_ids(&out);
    assert_eq!(ids.len(), 12);
    let counts = event_counts(&ledger(&out));
    for id in &ids {
        assert_eq!(counts.get(&(id.clone(), "done".into())), Some(&1), "{id}");
        assert_eq!(
            counts.get(&(id.clone(), "running".into())),
            Some(&1),
            "{id}"
        );
        let result: serde_json::Value =
            serde_json::from_str(&read(&out.join("jobs").join(id).join("result.json"))).unwrap();
        assert_eq!(result["job"], id.as_str());
        for m in ["test_rank_ic", "valid_rank_icir", "pm_cw", "train_steps"] {
            assert!(
                result["metrics"][m].as_f64().is_some(),
                "{id} {m}: {result}"
            );
        }
        assert_eq!(result["metrics"]["train_steps"], 6.0);
    }
    // three workers were used
    let workers: std::collections::BTreeSet<String> = ledger(&out)
        .iter()
        .filter_map(|e| e["worker"].as_str().map(String::from))
        .collect();
    assert_eq!(workers.len(), 3, "{workers:?}");

    // results.csv: one row per (configuration, metric), each over the 6 seeds
    let csv = read(&out.join("results.csv"));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    assert_eq!(
        header,
        [
            "model.codebook_size",
            "config",
            "metric",
            "n",
            "mean",
            "std",
            "min",
            "max",
            "range"
        ]
    );
    let ic_rows: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(",test_rank_ic,"))
        .collect();
    assert_eq!(ic_rows.len(), 2, "{csv}");
    for row in ic_rows {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[3], "6", "{row}");
        let (mean, min, max, range): (f64, f64, f64, f64) = (
            f[4].parse().unwrap(),
            f[6].parse().unwrap(),
            f[7].parse().unwrap(),
            f[8].parse().unwrap(),
        );
        assert!(min <= mean && mean <= max);
        assert!((range - (max - min) / 2.0).abs() < 1e-12);
    }
    let md = read(&out.join("results.md"));
    assert!(md.contains("| codebook_size | n | test RankIC |"), "{md}");
    assert!(md.contains("| 4 | 6 |") && md.contains("| 8 | 6 |"), "{md}");
    assert_eq!(read(&out.join("jobs.csv")).lines().count(), 13);
    if out.join("codebook_size.png").exists() {
        assert!(std::fs::read(out.join("codebook_size.png"))
            .unwrap()
            .starts_with(b"\x89PNG"));
    }
    // the sweep directory keeps the config and refuses to be reused without --resume
    assert!(out.join("grid.toml").exists() && out.join("plan.json").exists());
    let err = common::fails(&["sweep", "--config", &s(&cfg), "--out", &s(&out)]);
    assert!(
        err.contains("--resume") && err.contains("new --out"),
        "{err}"
    );
    // a resumed finished sweep runs nothing again
    let again = ok(&["sweep", "--config", &s(&cfg), "--out", &s(&out), "--resume"]);
    assert!(again.contains("12 done"), "{again}");
    assert_eq!(ledger(&out).len(), 24, "no new events");
}

#[test]
fn failed_attempts_are_retried_from_their_checkpoint_and_a_hopeless_job_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sweep_setup(
        dir.path(),
        "faults",
        "seeds = [0, 1, 2, 3, 4]\nmax_steps = 8\nmax_retries = 1\ntasks = [\"eval\"]\n",
    );
    let out = path(dir.path(), "sweep");
    let faults = "seed=0:panic:1,seed=1:error:1,seed=2:exit:1,seed=3:error:always";
    let res = storm_env(
        &[
            "sweep",
            "--config",
            &s(&cfg),
            "--out",
            &s(&out),
            "--workers",
            "cpu:2",
        ],
        &[("STORM_FAULT", faults)],
    );
    let stderr = String::from_utf8_lossy(&res.stderr);
    let stdout = String::from_utf8_lossy(&res.stdout);
    assert_eq!(
        res.status.code(),
        Some(2),
        "exit 2 with failed jobs\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("5 jobs: 4 done, 1 failed"), "{stdout}");
    assert!(stderr.contains("seed=3 (2 attempts)"), "{stderr}");

    let counts = event_counts(&ledger(&out));
    for (id, why) in [
        ("seed=0", "panic"),
        ("seed=1", "error"),
        ("seed=2", "status 86"),
    ] {
        assert_eq!(counts.get(&(id.into(), "retry".into())), Some(&1), "{id}");
        assert_eq!(counts.get(&(id.into(), "done".into())), Some(&1), "{id}");
        let retry = ledger(&out)
            .into_iter()
            .find(|e| e["job"] == id && e["state"] == "retry")
            .unwrap();
        assert!(
            retry["error"].as_str().unwrap().contains(why),
            "{id}: {retry}"
        );
        // the failed attempt stopped after 4 of 8 steps with a checkpoint; the retry resumed from it
        let job = out.join("jobs").join(id);
        let announced = read(&job.join("attempt-2.out"));
        assert!(
            announced.contains(r#""storm_job_step":"pretrain","total_steps":"#)
                && announced.contains(r#""resume_from":4"#),
            "{id}: {announced}"
        );
        let losses = read(&job.join("run/losses.csv"));
        let steps: Vec<u64> = losses
            .lines()
            .skip(1)
            .map(|l| l.split(',').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(steps, (1..=8).collect::<Vec<u64>>(), "{id}: each step once");
        assert!(job.join("result.json").exists());
    }
    assert_eq!(counts.get(&("seed=4".into(), "done".into())), Some(&1));
    assert_eq!(counts.get(&("seed=4".into(), "retry".into())), None);
    assert_eq!(counts.get(&("seed=3".into(), "failed".into())), Some(&1));
    assert!(!out.join("jobs/seed=3/result.json").exists());

    let md = read(&out.join("results.md"));
    assert!(md.contains("## Failed jobs (1)"), "{md}");
    let failed_row = md.lines().find(|l| l.starts_with("| seed=3 |")).unwrap();
    assert!(
        failed_row.contains("| 2 |") && failed_row.contains("injected error"),
        "{failed_row}"
    );
    let jobs = read(&out.join("jobs.csv"));
    assert!(
        jobs.lines().any(|l| l.starts_with("seed=3,3,failed,2,")),
        "{jobs}"
    );
    assert!(
        md.contains("| base | 4 |"),
        "the four finished seeds are aggregated: {md}"
    );
}

#[test]
fn a_coordinator_killed_mid_sweep_resumes_without_rerunning_finished_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sweep_setup(
        dir.path(),
        "kill",
        "seeds = [0, 1, 2, 3, 4, 5]\nmax_steps = 6\ntasks = [\"eval\"]\n",
    );
    let out = path(dir.path(), "sweep");
    let mut child = Command::new(env!("CARGO_BIN_EXE_storm"))
        .args([
            "sweep",
            "--config",
            &s(&cfg),
            "--out",
            &s(&out),
            "--workers",
            "cpu:1",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        let events = ledger(&out);
        let done = events.iter().filter(|e| e["state"] == "done").count();
        let running_after = events.last().is_some_and(|e| e["state"] == "running");
        if done >= 2 && running_after {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "sweep too slow");
        assert!(
            child.try_wait().unwrap().is_none(),
            "sweep ended before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = ledger(&out);
    let finished: Vec<String> = before
        .iter()
        .filter(|e| e["state"] == "done")
        .map(|e| e["job"].as_str().unwrap().to_string())
        .collect();
    let last = before.last().unwrap();
    let interrupted =
        (last["state"] == "running").then(|| last["job"].as_str().unwrap().to_string());

    // the running job's child died with the coordinator: nothing writes into the sweep any more
    let needle = s(&out);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !common::processes_mentioning(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "orphans: {:?}",
            common::processes_mentioning(&needle)
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // a different config is refused
    let changed = sweep_setup(
        dir.path(),
        "kill2",
        "seeds = [0, 1, 2, 3, 4, 5]\nmax_steps = 7\ntasks = [\"eval\"]\n",
    );
    let err = common::fails(&[
        "sweep",
        "--config",
        &s(&changed),
        "--out",
        &s(&out),
        "--resume",
    ]);
    assert!(
        err.contains("different config") && err.contains("max_steps"),
        "{err}"
    );

    let text = ok(&[
        "sweep",
        "--config",
        &s(&cfg),
        "--out",
        &s(&out),
        "--resume",
        "--workers",
        "cpu:2",
    ]);
    assert!(text.contains("6 jobs: 6 done"), "{text}");
    let counts = event_counts(&ledger(&out));
    for id in job_ids(&out) {
        assert_eq!(counts.get(&(id.clone(), "done".into())), Some(&1), "{id}");
        assert!(out.join("jobs").join(&id).join("result.json").exists());
    }
    for id in &finished {
        assert_eq!(
            counts[&(id.clone(), "running".into())],
            1,
            "{id} was not rerun"
        );
        assert!(!out.join("jobs").join(id).join("attempt-2.out").exists());
    }
    if let Some(id) = interrupted {
        assert_eq!(counts[&(id.clone(), "running".into())], 2, "{id} reran");
        assert!(out.join("jobs").join(&id).join("attempt-2.out").exists());
    }
}

#[test]
fn the_paper_protocol_writes_its_tables() {
    let dir = tempfile::tempdir().unwrap();
    common::synth_config(dir.path(), 6, 700, &tiny());
    let paper = dir.path().join("paper.toml");
    std::fs::write(
        &paper,
        r#"
base = "tiny.toml"
seeds = 3
max_steps = 4
[[models]]
name = "STORM"
[[models]]
name = "STORM-w/o-TS"
set = ["model.use_ts=false"]
[[models]]
name = "1-day reversal"
set = ["model.kind=reference", "model.reference=reversal_1d"]
[backtest]
index = "none"
delays = [0, 1]
[trade]
tickers = ["S0001"]
seeds = 1
updates = 1
envs = 2
window = 16
eval_every = 1
delays = [0, 1]
"#,
    )
    .unwrap();
    let out = path(dir.path(), "paper");
    let text = ok(&[
        "paper",
        "--config",
        &s(&paper),
        "--data",
        &s(&dir.path().join("m.csv.gz")),
        "--seeds",
        "2",
        "--out",
        &s(&out),
        "--workers",
        "cpu:2",
    ]);
    // the reference factor runs once (no seeds to average) and never trades
    assert!(text.contains("5 jobs: 5 done"), "{text}");
    let report = out.join("report.md");
    assert!(text.contains(&s(&report)), "{text}");
    let md = read(&report);
    for needle in [
        "## Table 1: factor quality",
        "| STORM | ",
        "| STORM-w/o-TS | ",
        "## Table 2: portfolio management",
        "| Equal weight (buy and hold) |",
        "## Table 3: algorithmic trading",
        "### S0001",
        "| Buy&Hold |",
        "| PPO (raw features) |",
        "| PPO (STORM factors) |",
        "| PPO (STORM-w/o-TS factors) |",
        "| Buy&Hold (delay 1) |",
        "| PPO (raw features, delay 1) |",
        "| PPO (STORM factors, delay 1) |",
        "| Signal (STORM predictions) |",
        "| Signal (STORM-w/o-TS predictions, delay 1) |",
        "| 1-day reversal | ",
        "| Model | RankIC ↑ | 95 % interval over seeds | t (HAC) |",
        "## Significance (test split)",
        "| − 1-day reversal |",
        "The same portfolios traded one day late (delay 1",
    ] {
        assert!(md.contains(needle), "{needle} missing:\n{md}");
    }
    assert!(!md.contains("PPO (1-day reversal factors)"), "{md}");
    assert!(!md.contains("Signal (1-day reversal predictions"), "{md}");
    assert!(out.join("jobs/model=1-day_reversal_seed=0").is_dir());
    assert!(!out.join("jobs/model=1-day_reversal_seed=1").exists());
    // one trading seed of two: the second seed's jobs did not trade
    let r1: serde_json::Value =
        serde_json::from_str(&read(&out.join("jobs/model=STORM_seed=1/result.json"))).unwrap();
    assert!(r1["metrics"].get("trade_S0001_apy").is_none(), "{r1}");
    let r0: serde_json::Value =
        serde_json::from_str(&read(&out.join("jobs/model=STORM_seed=0/result.json"))).unwrap();
    assert!(
        r0["metrics"]["trade_S0001_raw_delay1_cw"]
            .as_f64()
            .is_some()
            && r0["metrics"]["bh_S0001_delay1_cw"].as_f64().is_some(),
        "{r0}"
    );
    assert!(
        r0["metrics"]["trade_S0001_raw_cw"].as_f64().is_some(),
        "{r0}"
    );
    assert!(
        r0["metrics"]["trade_S0001_signal_cw"].as_f64().is_some(),
        "{r0}"
    );
    assert!(r1["metrics"].get("trade_S0001_signal_cw").is_none(), "{r1}");
    assert!(r0["metrics"]["pm_delay1_cw"].as_f64().is_some(), "{r0}");
    assert!(out
        .join("jobs/model=STORM_seed=0/run/portfolio_test_delay1.json")
        .is_file());
    let table1 = md
        .lines()
        .find(|l| l.starts_with("| STORM | "))
        .unwrap()
        .to_string();
    assert!(table1.ends_with("| 2 |"), "two seeds: {table1}");
    // the paired table has a row for STORM and none for the reference itself
    let paired = md.split("Paired differences").nth(1).unwrap();
    assert!(paired.contains("\n| STORM | "), "{paired}");
    assert!(!paired.contains("\n| 1-day reversal | "), "{paired}");
    assert!(r0["metrics"]["test_rank_ic_t"].as_f64().is_some(), "{r0}");
    assert!(table1.contains(" ± "), "{table1}");
}

#[test]
fn a_second_coordinator_on_a_running_sweep_fails_at_once_and_sigkill_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = sweep_setup(
        dir.path(),
        "lock",
        "seeds = [0, 1]\nmax_steps = 6\ntasks = [\"eval\"]\n",
    );
    let out = path(dir.path(), "sweep");
    let sweep = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = ["sweep", "--config", &s(&cfg), "--out", &s(&out)]
            .iter()
            .map(|a| a.to_string())
            .collect();
        args.extend(extra.iter().map(|a| a.to_string()));
        args
    };
    let mut first = Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(sweep(&["--workers", "cpu:1"]))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !ledger(&out).iter().any(|e| e["state"] == "running") {
        assert!(start.elapsed() < Duration::from_secs(120), "sweep too slow");
        assert!(first.try_wait().unwrap().is_none(), "sweep ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    for extra in [&["--resume"][..], &[][..]] {
        let args = sweep(extra);
        let started = Instant::now();
        let err = common::fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "it did not fail at once"
        );
        assert!(
            err.contains("in use by another storm sweep")
                && err.contains(&format!("pid {}", first.id()))
                && err.contains("sweep.lock"),
            "{err}"
        );
    }
    first.kill().unwrap(); // SIGKILL: the kernel drops the lock with the process
    first.wait().unwrap();
    let args = sweep(&["--resume", "--workers", "cpu:1"]);
    let text = ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(text.contains("2 jobs: 2 done"), "{text}");
}

#[test]
fn a_sweep_started_inside_a_launcher_allocation_runs_its_jobs_single_process() {
    // Variables torchrun or Slurm set for their own ranks; a job that inherited them would wait for a
    // data-parallel peer that never comes.
    let dir = tempfile::tempdir().unwrap();
    let cfg = sweep_setup(
        dir.path(),
        "env",
        "seeds = [0]\nmax_steps = 2\nmax_retries = 0\ntasks = [\"eval\"]\n",
    );
    let out = path(dir.path(), "sweep");
    let started = Instant::now();
    let run = storm_env(
        &[
            "sweep",
            "--config",
            &s(&cfg),
            "--out",
            &s(&out),
            "--workers",
            "cpu:1",
        ],
        &[
            ("RANK", "1"),
            ("WORLD_SIZE", "2"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "9"),
            ("SLURM_PROCID", "1"),
            ("SLURM_NTASKS", "2"),
        ],
    );
    let text =
        String::from_utf8_lossy(&run.stdout).to_string() + &String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{text}");
    assert!(text.contains("1 jobs: 1 done"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(300));
}
