//! End-to-end telemetry: a real Prometheus scrapes `storm pretrain`, `eval`, `backtest` and `trade` on the
//! synthetic market and answers every PromQL expression of the Grafana dashboard; JSON logs; `report.md`
//! and `storm report`.
//!
//! Needs the `prometheus` binary (Debian: `apt-get install -y prometheus`; `launch/run.sh test` installs it).
//! Without it the Prometheus test fails and says so.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{ok, path, s};
use serde_json::Value;

/// The tiny model of train_cli over a synthetic market in `dir`.
fn tiny_setup(dir: &Path) -> PathBuf {
    common::synth_config(
        dir,
        6,
        700,
        &format!("{}log_every = 2\n", common::TINY_MODEL),
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// A child process killed (SIGKILL) and reaped when the guard drops, also when the test panics.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_binary() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/bin")])
        .map(|d| d.join("prometheus"))
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "the `prometheus` binary is needed for this test and was not found on PATH: install it \
             (Debian/Ubuntu: `apt-get install -y prometheus`; `bash launch/run.sh test` does this)"
        )
    })
}

/// Percent-encodes a query-string value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A GET over HTTP/1.0 (so the body is neither chunked nor kept alive): (status code, body).
fn http_get(port: u16, target: &str) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw)?;
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// The result vector of an instant query (panics on an API error, which is a bad expression).
fn query(port: u16, expr: &str) -> Vec<Value> {
    let (status, body) = http_get(port, &format!("/api/v1/query?query={}", encode(expr)))
        .unwrap_or_else(|e| panic!("querying Prometheus: {e}"));
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("Prometheus answered {status} with non-JSON ({e}): {body}"));
    assert_eq!(v["status"], "success", "query `{expr}` failed: {body}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Starts `storm args… --metrics-addr 127.0.0.1:port --metrics-linger 600` and waits until `marker`
/// exists (the command's main output); the process then keeps serving its final metrics until dropped.
fn lingering(args: &[&str], port: u16, marker: &Path, log: &Path) -> Killed {
    let stderr = std::fs::File::create(log).expect("creating a log file");
    let child = Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(args)
        .args([
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
            "--metrics-linger",
            "600",
        ])
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("the storm binary runs");
    let mut guard = Killed(child);
    wait_for(
        &format!("{}", marker.display()),
        Duration::from_secs(600),
        || {
            if let Ok(Some(status)) = guard.0.try_wait() {
                panic!(
                    "storm {} exited ({status}) before writing {}:\n{}",
                    args.join(" "),
                    marker.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            marker.exists()
        },
    );
    guard
}

/// Every `targets[].expr` of the dashboard (rows may nest panels), with the template variables replaced:
/// `$run_id`/`$rank` by a regex matching any value, `$__rate_interval`/`$__interval` by 1m.
fn dashboard_exprs() -> Vec<String> {
    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/grafana/dashboards/storm.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    fn collect(panels: &Value, out: &mut Vec<String>) {
        for p in panels.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push(e.to_string());
                }
            }
            collect(&p["panels"], out);
        }
    }
    let mut exprs = Vec::new();
    collect(&dash["panels"], &mut exprs);
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["run_id", "rank"], "template variables");
    exprs
        .iter()
        .map(|e| {
            e.replace("${run_id}", ".+")
                .replace("$run_id", ".+")
                .replace("${rank}", ".+")
                .replace("$rank", ".+")
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "1m")
        })
        .collect()
}

#[test]
fn prometheus_scrapes_every_dashboard_query() {
    let prometheus = prometheus_binary();
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_setup(dir.path());
    let data = path(dir.path(), "data");
    ok(&["data", "prepare", "--config", &s(&cfg), "--out", &s(&data)]);
    let run = path(dir.path(), "run");

    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let prom_port = free_port();
    let targets: Vec<String> = ports.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let prom_cfg = path(dir.path(), "prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: storm\n    \
             static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let prom_log = path(dir.path(), "prometheus.log");
    let _prometheus = Killed(
        Command::new(&prometheus)
            .arg(format!("--config.file={}", s(&prom_cfg)))
            .arg(format!(
                "--storage.tsdb.path={}",
                s(&path(dir.path(), "tsdb"))
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&prom_log).unwrap())
            .spawn()
            .expect("starting prometheus"),
    );
    wait_for("Prometheus to be ready", Duration::from_secs(60), || {
        matches!(http_get(prom_port, "/-/ready"), Ok((200, _)))
    });

    let log = |name: &str| path(dir.path(), name);
    let (cfg_s, data_s, run_s) = (s(&cfg), s(&data), s(&run));
    let _pretrain = lingering(
        &[
            "pretrain",
            "--config",
            &cfg_s,
            "--data",
            &data_s,
            "--out",
            &run_s,
            "--max-steps",
            "12",
        ],
        ports[0],
        &run.join("report.md"),
        &log("pretrain.log"),
    );
    let (status, body) = http_get(ports[0], "/health").unwrap();
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let _eval = lingering(
        &["eval", "--run", &run_s, "--split", "test"],
        ports[1],
        &run.join("eval_test.json"),
        &log("eval.log"),
    );
    ok(&["export", "--run", &run_s]);
    let _backtest = lingering(
        &[
            "backtest", "--run", &run_s, "--split", "test", "--index", "none",
        ],
        ports[2],
        &run.join("portfolio_test.json"),
        &log("backtest.log"),
    );
    let _trade = lingering(
        &[
            "trade",
            "--run",
            &run_s,
            "--ticker",
            "S0000",
            "--envs",
            "2",
            "--updates",
            "2",
            "--eval-every",
            "1",
            "--window",
            "32",
        ],
        ports[3],
        &run.join("trading_S0000.json"),
        &log("trade.log"),
    );

    // CUDA-only series cannot exist on a CPU machine; every other expression must return data
    let cuda = Command::new("nvidia-smi")
        .output()
        .is_ok_and(|o| o.status.success());
    let exprs: Vec<String> = dashboard_exprs()
        .into_iter()
        .filter(|e| cuda || !e.contains("storm_gpu_"))
        .collect();
    assert!(exprs.len() >= 25, "{} expressions", exprs.len());
    let start = Instant::now();
    let empty = loop {
        let empty: Vec<String> = exprs
            .iter()
            .filter(|e| query(prom_port, e).is_empty())
            .cloned()
            .collect();
        if empty.is_empty() || start.elapsed() > Duration::from_secs(90) {
            break empty;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    assert!(
        empty.is_empty(),
        "dashboard expressions without data:\n{}\nPrometheus log:\n{}",
        empty.join("\n"),
        std::fs::read_to_string(&prom_log).unwrap_or_default()
    );

    // exact values of the finished run, and the labels the dashboard's variables are built from
    let value = |expr: &str| -> f64 {
        let r = query(prom_port, expr);
        assert_eq!(r.len(), 1, "{expr}: {r:?}");
        r[0]["value"][1].as_str().unwrap().parse().unwrap()
    };
    assert_eq!(
        value(r#"storm_train_steps_total{run_id="run",rank="0"}"#),
        12.0
    );
    assert_eq!(value(r#"storm_train_samples_total{run_id="run"}"#), 96.0);
    assert_eq!(
        value(r#"storm_job_state{run_id="run",state="succeeded"}"#),
        1.0
    );
    assert_eq!(
        value(r#"max(storm_codebook_size{run_id="run",branch="ts"})"#),
        8.0
    );
    let info = query(prom_port, r#"storm_run_info{run_id="run"}"#);
    let run_json: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("run.json")).unwrap()).unwrap();
    assert!(!info.is_empty());
    for series in &info {
        assert_eq!(series["metric"]["config_hash"], run_json["config_hash"]);
        assert_eq!(
            series["metric"]["seed"],
            run_json["seed"].to_string().as_str()
        );
    }
    let (_, body) = http_get(prom_port, "/api/v1/label/run_id/values").unwrap();
    assert!(body.contains("\"run\""), "{body}");
}

#[test]
fn json_logs_reports_and_metrics_flag_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = tiny_setup(dir.path());
    let run = path(dir.path(), "run");
    let out = common::storm(&[
        "-v",
        "--log-format",
        "json",
        "pretrain",
        "--config",
        &s(&cfg),
        "--out",
        &s(&run),
        "--max-steps",
        "6",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty(), "-v logs something");
    for line in &lines {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
    }
    assert!(
        lines.iter().any(|l| l.contains("\"message\":\"train\"")),
        "{stderr}"
    );

    // pretrain wrote the report and the loss curves; eval adds its section and chart
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    for part in [
        "# Run `run`",
        "## Training",
        "| nll |",
        "![loss curves](loss_curves.png)",
        "```toml",
    ] {
        assert!(report.contains(part), "missing {part}:\n{report}");
    }
    assert!(run.join("loss_curves.png").is_file());
    assert!(!report.contains("## Evaluation"));
    ok(&["eval", "--run", &s(&run), "--split", "valid"]);
    let report = std::fs::read_to_string(run.join("report.md")).unwrap();
    assert!(
        report.contains("## Evaluation") && report.contains("| valid |"),
        "{report}"
    );
    assert!(report.contains("codebook_usage_valid.png"), "{report}");

    // storm report rebuilds the same file
    std::fs::remove_file(run.join("report.md")).unwrap();
    std::fs::remove_file(run.join("loss_curves.png")).unwrap();
    let stdout = ok(&["report", "--run", &s(&run)]);
    assert!(stdout.contains("report.md"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(run.join("report.md")).unwrap(),
        report
    );
    assert!(run.join("loss_curves.png").is_file());
    let err = common::fails(&["report", "--run", &s(dir.path())]);
    assert!(err.contains("not a run directory"), "{err}");

    // bad metrics flags are clear errors
    let err = common::fails(&["report", "--run", &s(&run), "--metrics-addr", "nope"]);
    assert!(err.contains("--metrics-addr `nope`"), "{err}");
    let err = common::fails(&["report", "--run", &s(&run), "--metrics-linger", "5"]);
    assert!(err.contains("--metrics-addr"), "{err}");
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let err = common::fails(&["report", "--run", &s(&run), "--metrics-addr", &port]);
    assert!(err.contains("in use"), "{err}");
}
