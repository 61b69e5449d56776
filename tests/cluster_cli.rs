//! End-to-end tests of remote workers over ractor_cluster on loopback: a sweep served by two `storm worker`
//! processes, one of which is SIGKILLed mid-job (the coordinator finds it gone and the job finishes on the
//! other host, exactly once, resuming from the killed attempt's checkpoint); a frozen host (SIGSTOP: the
//! connection stays open) found out by its missing heartbeats, which on waking cancels its job and exits;
//! a wrong cookie and an unreachable coordinator refused with clear errors; a sweep over TLS, with hosts
//! that do not trust the coordinator's certificate refused.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{path, s};

const COOKIE: &str = "loopback-test-cookie";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A sweep of `seeds` tiny jobs, each long enough (`steps` optimizer steps) to be killed mid-way.
fn sweep_config(dir: &Path, seeds: usize, steps: usize) -> PathBuf {
    common::synth_config(
        dir,
        6,
        700,
        &format!("{}checkpoint_every = 4\n", common::TINY_MODEL),
    );
    let seeds: Vec<String> = (0..seeds).map(|i| i.to_string()).collect();
    let p = dir.join("sweep.toml");
    std::fs::write(
        &p,
        format!(
            "base = \"tiny.toml\"\nseeds = [{}]\nmax_steps = {steps}\ntasks = [\"eval\"]\n",
            seeds.join(", ")
        ),
    )
    .unwrap();
    p
}

fn spawn(args: &[&str], log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(args)
        .stdout(std::fs::File::create(log.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("the storm binary runs")
}

fn coordinator(cfg: &Path, out: &Path, port: u16, log: &Path) -> Child {
    coordinator_with(cfg, out, port, log, &[])
}

fn coordinator_with(cfg: &Path, out: &Path, port: u16, log: &Path, extra: &[&str]) -> Child {
    let (cfg, out, listen) = (s(cfg), s(out), format!("127.0.0.1:{port}"));
    let mut args = vec![
        "sweep",
        "--config",
        &cfg,
        "--out",
        &out,
        "--listen",
        &listen,
        "--cookie",
        COOKIE,
        "--heartbeat-timeout",
        "3",
    ];
    args.extend_from_slice(extra);
    spawn(&args, log)
}

fn worker(port: u16, sweep: &Path, log: &Path) -> Child {
    spawn(&refs(&worker_args(port, sweep, &[])), log)
}

/// `storm worker` for the sweep directory `sweep` on loopback `port`, with `extra` flags.
fn worker_args(port: u16, sweep: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "worker".to_string(),
        "--connect".into(),
        format!("127.0.0.1:{port}"),
        "--cookie".into(),
        COOKIE.into(),
        "--root".into(),
        s(sweep),
        "--workers".into(),
        "cpu:1".into(),
        "--threads-per-worker".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn refs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

fn ledger(sweep: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(sweep.join("ledger.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// Waits for `cond`, failing with the logs after `secs`.
fn wait_for(what: &str, secs: u64, logs: &[&Path], mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() > Duration::from_secs(secs) {
            let logs: Vec<String> = logs
                .iter()
                .map(|p| format!("--- {}\n{}", p.display(), read(p)))
                .collect();
            panic!("timed out waiting for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn wait_exit(child: &mut Child, secs: u64, what: &str, log: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            panic!("{what} did not exit in {secs}s\n{}", read(log));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The job a worker of the host with this pid is running now, once it has trained a few steps.
fn job_running_on(sweep: &Path, pid: u32) -> Option<String> {
    let tag = format!(":{pid}/");
    let events = ledger(sweep);
    let running = events.iter().rev().find(|e| {
        e["state"] == "running" && e["worker"].as_str().is_some_and(|w| w.contains(&tag))
    })?;
    let job = running["job"].as_str()?.to_string();
    let finished = events
        .iter()
        .any(|e| e["job"] == job.as_str() && e["state"] != "running");
    let losses = sweep.join("jobs").join(&job).join("run").join("losses.csv");
    let trained = read(&losses).lines().count() > 6;
    (!finished && trained).then_some(job)
}

/// A temporary directory with a sweep config, a coordinator listening on `port`, and the log paths of the
/// coordinator and two hosts.
struct Session {
    /// Kept for its lifetime: the directory is removed when the session is dropped.
    _dir: tempfile::TempDir,
    out: PathBuf,
    port: u16,
    clog: PathBuf,
    alog: PathBuf,
    blog: PathBuf,
    coord: Child,
}

impl Session {
    fn start(seeds: usize, steps: usize, port: u16) -> Session {
        let dir = tempfile::tempdir().unwrap();
        let cfg = sweep_config(dir.path(), seeds, steps);
        let out = path(dir.path(), "sweep");
        let clog = dir.path().join("coordinator.log");
        let coord = coordinator(&cfg, &out, port, &clog);
        wait_for("the coordinator to listen", 60, &[&clog], || {
            read(&clog).contains("listening for workers")
        });
        Session {
            alog: dir.path().join("host-a.log"),
            blog: dir.path().join("host-b.log"),
            _dir: dir,
            out,
            port,
            clog,
            coord,
        }
    }

    fn logs(&self) -> [&Path; 3] {
        [&self.clog, &self.alog, &self.blog]
    }

    /// Waits until the host with this pid is mid-job; returns the job.
    fn mid_job_on(&self, pid: u32) -> String {
        let mut victim = None;
        wait_for("a host to be mid-job", 180, &self.logs(), || {
            victim = job_running_on(&self.out, pid);
            victim.is_some()
        });
        victim.unwrap()
    }
}

#[test]
fn a_worker_host_killed_mid_job_is_detected_and_its_job_finishes_on_the_other_host() {
    let mut session = Session::start(4, 80, free_port());
    let (out, port) = (session.out.clone(), session.port);
    let (clog, alog, blog) = (
        session.clog.clone(),
        session.alog.clone(),
        session.blog.clone(),
    );
    let mut a = worker(port, &out, &alog);
    let mut b = worker(port, &out, &blog);
    let a_pid = a.id();
    let logs = [clog.as_path(), alog.as_path(), blog.as_path()];
    let victim = session.mid_job_on(a_pid);
    a.kill().unwrap(); // SIGKILL: no goodbye, the coordinator only sees the heartbeats stop
    a.wait().unwrap();

    // the killed host's `storm job` child died with it (parent-death signal): nothing writes the job dir
    let victim_dir = s(&out.join("jobs").join(&victim));
    wait_for("the killed host's job process to die", 10, &logs, || {
        common::processes_mentioning(&victim_dir).is_empty()
    });

    let status = wait_exit(&mut session.coord, 300, "the sweep", &clog);
    assert!(status.success(), "sweep failed:\n{}", read(&clog));
    let summary = read(&clog.with_extension("out"));
    assert!(summary.contains("4 jobs: 4 done, 0 failed"), "{summary}");
    let b_status = wait_exit(&mut b, 30, "host B", &blog);
    assert!(b_status.success(), "host B:\n{}", read(&blog));
    assert!(read(&blog).contains("the coordinator ended the session"));

    let events = ledger(&out);
    let retry = events
        .iter()
        .find(|e| e["job"] == victim.as_str() && e["state"] == "retry")
        .unwrap_or_else(|| panic!("no retry of {victim}: {events:?}"));
    // a killed host's connection closes, so it is found out at the next heartbeat, before its timeout
    let error = retry["error"].as_str().unwrap();
    assert!(
        (error.contains("unreachable") || error.contains("stopped answering"))
            && error.contains(&format!(":{a_pid}/w0")),
        "{error}"
    );
    let log = read(&clog);
    assert!(log.contains("joined from"), "{log}");
    let reruns: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["job"] == victim.as_str() && e["state"] == "running")
        .collect();
    assert_eq!(reruns.len(), 2, "{events:?}");
    assert!(
        !reruns[1]["worker"]
            .as_str()
            .unwrap()
            .contains(&format!(":{a_pid}/")),
        "the retry ran on the surviving host: {events:?}"
    );
    // every job done exactly once, with a result
    for seed in 0..4 {
        let id = format!("seed={seed}");
        let done = events
            .iter()
            .filter(|e| e["job"] == id.as_str() && e["state"] == "done")
            .count();
        assert_eq!(done, 1, "{id}: {events:?}");
        let result = read(&out.join("jobs").join(&id).join("result.json"));
        assert!(result.contains("test_rank_ic"), "{id}: {result}");
    }
    // the retried job resumed from the checkpoint the killed attempt wrote
    let retried_err = read(&out.join("jobs").join(&victim).join("attempt-2.out"));
    assert!(
        retried_err.contains("\"resume_from\""),
        "attempt 2 of {victim} did not resume: {retried_err}"
    );
}

/// Sends `signal` to the process and to every process working in `dir` (its `storm job` child).
fn signal_host(pid: u32, dir: &str, signal: &str) {
    let mut pids = vec![pid.to_string()];
    for p in common::processes_mentioning(dir) {
        pids.push(p.split(':').next().unwrap().to_string());
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(&pids)
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pids:?}");
}

#[test]
fn a_frozen_host_misses_its_heartbeats_its_job_waits_for_it_and_on_waking_it_steps_aside() {
    let mut session = Session::start(2, 80, free_port());
    let (out, port) = (session.out.clone(), session.port);
    let (clog, alog, blog) = (
        session.clog.clone(),
        session.alog.clone(),
        session.blog.clone(),
    );
    let mut a = worker(port, &out, &alog);
    let victim = session.mid_job_on(a.id());
    let logs = [clog.as_path(), alog.as_path(), blog.as_path()];
    let victim_dir = out.join("jobs").join(&victim);
    // a frozen machine: the host and its job stop, the connection stays open
    signal_host(a.id(), &s(&victim_dir), "STOP");
    let mut b = worker(port, &out, &blog);

    // only the missing heartbeats can tell the coordinator; it retries the job on host B ...
    wait_for("the frozen host's job to be retried", 60, &logs, || {
        ledger(&out)
            .iter()
            .any(|e| e["job"] == victim.as_str() && e["state"] == "running" && e["attempt"] == 2)
    });
    let events = ledger(&out);
    let retry = events
        .iter()
        .find(|e| e["state"] == "retry")
        .unwrap_or_else(|| panic!("no retry: {events:?}"));
    let error = retry["error"].as_str().unwrap();
    assert!(
        error.contains("stopped answering (no heartbeat for") && error.contains("timeout 3.0s"),
        "{error}"
    );
    // ... where the new attempt waits for the frozen one's lock on the job directory
    let attempt2 = victim_dir.join("attempt-2.err");
    wait_for("attempt 2 to wait for the lock", 60, &logs, || {
        read(&attempt2).contains("waiting for an earlier attempt")
    });
    assert!(session.coord.try_wait().unwrap().is_none());

    // woken up, host A learns it was given up on (or that it heard nothing for too long), kills its job
    // and exits with an error
    signal_host(a.id(), &s(&victim_dir), "CONT");
    let status = wait_exit(&mut a, 30, "the woken host", &alog);
    assert!(!status.success());
    let log = read(&alog);
    // whichever it notices first on waking: the buffered Shutdown or its own silent watchdog
    assert!(
        log.contains("gave up on it") || log.contains("no heartbeat from the coordinator"),
        "{log}"
    );

    let status = wait_exit(&mut session.coord, 300, "the sweep", &clog);
    assert!(status.success(), "sweep failed:\n{}", read(&clog));
    assert!(read(&clog.with_extension("out")).contains("2 jobs: 2 done, 0 failed"));
    assert!(wait_exit(&mut b, 30, "host B", &blog).success());
    let needle = s(&out);
    wait_for("every job process to end", 10, &logs, || {
        common::processes_mentioning(&needle).is_empty()
    });
}

#[test]
fn a_wrong_cookie_or_no_coordinator_is_a_clear_error() {
    let port = free_port();
    let err = common::fails(&[
        "worker",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--cookie",
        COOKIE,
        "--connect-timeout",
        "2",
    ]);
    assert!(err.contains("--root DIR is needed with --cookie"), "{err}");
    let err = common::fails(&[
        "worker",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--cookie",
        COOKIE,
        "--root",
        "/",
        "--connect-timeout",
        "2",
    ]);
    assert!(err.contains("cannot connect to the coordinator"), "{err}");

    let mut session = Session::start(1, 4, port);
    let err = common::fails(&[
        "worker",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--cookie",
        "a-wrong-cookie-of-24-byte",
        "--root",
        "/",
        "--connect-timeout",
        "2",
    ]);
    assert!(err.contains("not accepted"), "{err}");
    let err = common::fails(&[
        "worker",
        "--connect",
        &format!("127.0.0.1:{port}"),
        "--cookie",
        "short",
    ]);
    assert!(
        err.contains("--cookie: a cluster cookie must be at least 16 bytes (got 5)"),
        "{err}"
    );
    assert!(err.contains("visible to other users"), "{err}");
    for flag in ["--connect-timeout", "--heartbeat-timeout"] {
        let args: Vec<String> = if flag == "--connect-timeout" {
            [
                "worker",
                "--connect",
                "127.0.0.1:1",
                "--cookie",
                COOKIE,
                flag,
                "1e30",
            ]
            .map(String::from)
            .to_vec()
        } else {
            let addr = format!("127.0.0.1:{}", free_port());
            [
                "sweep",
                "--config",
                concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/sweeps/tiny.toml"),
                "--out",
                "/nonexistent/x",
                "--listen",
                &addr,
                flag,
                "1e30",
            ]
            .map(String::from)
            .to_vec()
        };
        let err = common::fails(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(
            err.contains(&format!(
                "{flag} 1000000000000000000000000000000: must be between"
            )),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let err = common::fails(&["worker", "--connect", &format!("127.0.0.1:{port}")]);
    assert!(err.contains("cookie is needed"), "{err}");
    // a second coordinator on the taken port is refused before it writes anything
    let taken = session.out.with_file_name("taken");
    let err = common::fails(&[
        "sweep",
        "--config",
        &s(&session.out.with_file_name("sweep.toml")),
        "--out",
        &s(&taken),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    assert!(err.contains("cannot listen there"), "{err}");
    assert!(!taken.exists());
    // the coordinator is still waiting for a worker; nothing ran
    assert!(session.coord.try_wait().unwrap().is_none());
    let log = read(&session.clog);
    assert!(log.contains("waiting for workers"), "{log}");
    session.coord.kill().unwrap();
    session.coord.wait().unwrap();
}

#[test]
fn a_host_started_before_its_coordinator_waits_for_it() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = sweep_config(dir.path(), 1, 4);
    let out = path(dir.path(), "sweep");
    let (clog, wlog) = (
        dir.path().join("coordinator.log"),
        dir.path().join("host.log"),
    );
    let mut host = worker(port, &out, &wlog);
    // nothing listens yet: the host retries instead of failing
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        host.try_wait().unwrap().is_none(),
        "the host gave up:\n{}",
        read(&wlog)
    );
    let mut coord = coordinator(&cfg, &out, port, &clog);
    let status = wait_exit(&mut coord, 300, "the sweep", &clog);
    assert!(
        status.success(),
        "sweep failed:\n{}\n{}",
        read(&clog),
        read(&wlog)
    );
    let summary = read(&clog.with_extension("out"));
    assert!(summary.contains("1 jobs: 1 done, 0 failed"), "{summary}");
    assert!(wait_exit(&mut host, 30, "the host", &wlog).success());
}

/// The test-only certificates of `tests/fixtures/tls` (README there).
fn tls_fixture(name: &str) -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/tls/").to_string() + name
}

#[test]
fn tls_links_carry_a_sweep_and_refuse_hosts_that_do_not_trust_the_coordinator() {
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = sweep_config(dir.path(), 1, 4);
    let out = path(dir.path(), "sweep");
    let (clog, wlog) = (
        dir.path().join("coordinator.log"),
        dir.path().join("host.log"),
    );
    let (cert, key) = (tls_fixture("server.pem"), tls_fixture("server.key"));
    let mut coord = coordinator_with(
        &cfg,
        &out,
        port,
        &clog,
        &["--tls-cert", &cert, "--tls-key", &key],
    );
    wait_for("the coordinator to listen", 60, &[&clog], || {
        read(&clog).contains("waiting for workers")
    });
    // a connection that never speaks TLS holds no one up: it is cut at the handshake deadline while
    // the others are served
    let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    // a host that trusts another CA is refused at the handshake, and says why
    let other = tls_fixture("other-ca.pem");
    let err = common::fails(&refs(&worker_args(
        port,
        &out,
        &["--tls-ca", &other, "--connect-timeout", "5"],
    )));
    assert!(
        err.contains("TLS with the coordinator") && err.contains("--tls-ca"),
        "{err}"
    );
    // a plain-TCP host gets no session
    let err = common::fails(&refs(&worker_args(port, &out, &["--connect-timeout", "3"])));
    assert!(err.contains("pass --tls-ca"), "{err}");
    // a wrong server name is refused too
    let ca = tls_fixture("ca.pem");
    let err = common::fails(&refs(&worker_args(
        port,
        &out,
        &[
            "--tls-ca",
            &ca,
            "--tls-server-name",
            "elsewhere.example",
            "--connect-timeout",
            "5",
        ],
    )));
    assert!(err.contains("TLS with the coordinator"), "{err}");
    assert!(coord.try_wait().unwrap().is_none(), "{}", read(&clog));

    let mut host = spawn(&refs(&worker_args(port, &out, &["--tls-ca", &ca])), &wlog);
    let status = wait_exit(&mut coord, 300, "the sweep", &clog);
    assert!(
        status.success(),
        "sweep failed:\n{}\n{}",
        read(&clog),
        read(&wlog)
    );
    let summary = read(&clog.with_extension("out"));
    assert!(summary.contains("1 jobs: 1 done, 0 failed"), "{summary}");
    assert!(wait_exit(&mut host, 30, "the host", &wlog).success());
    // a certificate without its key is refused before anything is written
    let bad = path(dir.path(), "bad");
    let err = common::fails(&[
        "sweep",
        "--config",
        &s(&cfg),
        "--out",
        &s(&bad),
        "--listen",
        &format!("127.0.0.1:{}", free_port()),
        "--tls-cert",
        &cert,
        "--tls-key",
        &ca,
    ]);
    assert!(err.contains("private key"), "{err}");
    assert!(!bad.exists());
}
