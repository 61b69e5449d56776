//! How a worker executes one attempt of a job. [`ProcessRunner`] (the real one) starts `storm job --spec
//! <job dir>/job.json` as a child process of the same binary: torch's RNG and thread pools are
//! process-global, so only one job per process keeps seeded runs bit-for-bit reproducible, and a crash of
//! the job (panic, abort, OOM kill) cannot take the worker down. The child:
//! - dies with its parent (`PR_SET_PDEATHSIG` = SIGKILL, set in `pre_exec`), so a killed coordinator leaves
//!   no orphan writing into run directories;
//! - runs in its own process group, so a terminal's Ctrl-C reaches only the coordinator, which then kills
//!   each child's group deliberately;
//! - writes stdout/stderr to `attempt-N.out/.err` in the job directory; the runner follows stdout and
//!   reports progress from its JSON lines alone (step announcements, [`TrainProgress`] once per optimizer
//!   step); it never reads the run's files.

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use storm_shared::train::progress::TrainProgress;

use crate::child::die_with_parent;
use crate::protocol::{JobOutcome, JobResult, JobSpec, Progress, StepAnnouncement};
use crate::tail::{last_lines, Tail};

/// Lines of the child's stderr quoted in a failure.
pub const ERROR_TAIL_LINES: usize = 12;

/// Lines read from the end of the child's stderr before backtrace frames are dropped (a backtrace is
/// dozens of lines, so more are read than quoted).
const STDERR_LINES_READ: usize = 200;

/// The most often a running job's progress is reported to the coordinator.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// How often [`ProcessRunner::current_exe`] polls its child for exit, cancellation and progress.
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// What a runner may use while it runs a job.
pub struct RunContext<'a> {
    /// Reports training progress (throttled by the runner).
    pub progress: &'a (dyn Fn(Progress) + Sync),
    /// Set when the attempt must stop; the runner checks it and returns [`JobOutcome::Cancelled`].
    pub cancel: &'a AtomicBool,
}

/// Executes one attempt of a job on the calling (worker) thread and says how it ended. Implementations
/// must not panic on a failing job; a panic is still caught by the worker and reported as a failure.
pub trait JobRunner: Send + Sync + 'static {
    fn run(&self, spec: &JobSpec, ctx: &RunContext) -> JobOutcome;
}

/// An in-process runner from a closure (tests, the scheduling-overhead benchmark).
pub struct FnRunner<F>(pub F);

impl<F> JobRunner for FnRunner<F>
where
    F: Fn(&JobSpec, &RunContext) -> JobOutcome + Send + Sync + 'static,
{
    fn run(&self, spec: &JobSpec, ctx: &RunContext) -> JobOutcome {
        (self.0)(spec, ctx)
    }
}

/// Runs each attempt as a `storm job` child process.
pub struct ProcessRunner {
    pub exe: PathBuf,
    /// How often the child is polled for exit, cancellation and progress.
    pub poll: Duration,
}

impl ProcessRunner {
    /// A runner that starts children of the running binary.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(ProcessRunner {
            exe: std::env::current_exe()?,
            poll: DEFAULT_POLL,
        })
    }

    fn spawn(&self, spec: &JobSpec) -> Result<std::process::Child, String> {
        std::fs::create_dir_all(&spec.job_dir)
            .map_err(|e| format!("{}: {e}", spec.job_dir.display()))?;
        let spec_path = spec.job_dir.join(crate::protocol::SPEC_FILE);
        let tmp = spec_path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(spec).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &spec_path))
            .map_err(|e| format!("{}: {e}", spec_path.display()))?;
        let out = File::create(spec.stdout_path())
            .map_err(|e| format!("{}: {e}", spec.stdout_path().display()))?;
        let err = File::create(spec.stderr_path())
            .map_err(|e| format!("{}: {e}", spec.stderr_path().display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("job")
            .arg("--spec")
            .arg(&spec_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        if let Some(n) = spec.threads {
            // polars and rayon size their pools from these at start-up; torch's is set by `storm job`.
            cmd.env("POLARS_MAX_THREADS", n.to_string())
                .env("RAYON_NUM_THREADS", n.to_string());
        }
        scrub_launcher_env(&mut cmd);
        die_with_parent(&mut cmd);
        cmd.spawn()
            .map_err(|e| format!("could not start {}: {e}", self.exe.display()))
    }
}

/// Variables a launcher (torchrun, `storm launch`, Slurm) sets for its own ranks. A worker started inside such
/// an allocation must not pass them on: each job would take itself for a rank and try a data-parallel
/// rendezvous. A job's own data parallelism is set up by the job, not inherited.
const LAUNCHER_VARS: [&str; 6] = [
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "TORCHELASTIC_RUN_ID",
];
const LAUNCHER_PREFIXES: [&str; 3] = ["MASTER_", "SLURM_", "PMI_"];

fn is_launcher_var(name: &str) -> bool {
    LAUNCHER_VARS.contains(&name) || LAUNCHER_PREFIXES.iter().any(|p| name.starts_with(p))
}

fn scrub_launcher_env(cmd: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_launcher_var) {
            cmd.env_remove(&name);
        }
    }
}

/// Kills a child's whole process group.
fn kill_group(pid: u32) {
    // SAFETY: signalling a process group we created; a stale id only yields ESRCH.
    unsafe {
        libc::kill(-(pid as libc::pid_t), libc::SIGKILL);
    }
}

/// "exited with status 101", "killed by signal 9 (SIGKILL)".
pub fn describe_status(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(9) => "killed by signal 9 (SIGKILL)".into(),
        Some(6) => "killed by signal 6 (SIGABRT)".into(),
        Some(s) => format!("killed by signal {s}"),
        None => "ended for an unknown reason".into(),
    }
}

/// The last `n` lines of a child's stderr without Rust backtrace frames (set RUST_BACKTRACE in the
/// environment and a panic prints dozens of them; the attempt's `.err` file keeps everything).
pub fn without_backtrace(text: &str, n: usize) -> String {
    let mut kept = Vec::new();
    let mut in_backtrace = false;
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("stack backtrace:") {
            in_backtrace = true;
            continue;
        }
        let frame = t
            .split_once(':')
            .is_some_and(|(num, _)| num.chars().all(|c| c.is_ascii_digit()) && !num.is_empty())
            || t.starts_with("at ");
        if in_backtrace && frame {
            continue;
        }
        in_backtrace = false;
        if t.starts_with("note: Some details are omitted")
            || t.starts_with("note: run with `RUST_BACKTRACE")
        {
            continue;
        }
        kept.push(line);
    }
    kept[kept.len().saturating_sub(n)..].join("\n")
}

/// The one line of an error that says what went wrong: a panic's message, else the last `error:` line,
/// else the last line.
pub fn headline(error: &str) -> &str {
    let lines: Vec<&str> = error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        if let Some(msg) = lines.get(i + 1) {
            return msg;
        }
    }
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error:"))
        .or(lines.last())
        .copied()
        .unwrap_or("")
}

/// Turns the child's stdout lines (step announcements and the trainer's [`TrainProgress`] lines) into
/// throttled [`Progress`] reports.
struct ProgressTracker {
    batch_size: usize,
    phase: String,
    total: Option<u64>,
    last: Option<(u64, f64)>,
    rate_from: Option<(Instant, u64)>,
    rate: f64,
    sent: Option<Instant>,
    dirty: bool,
}

impl ProgressTracker {
    fn new(batch_size: usize) -> Self {
        ProgressTracker {
            batch_size,
            phase: "starting".into(),
            total: None,
            last: None,
            rate_from: None,
            rate: 0.0,
            sent: None,
            dirty: false,
        }
    }

    /// Takes one poll's new stdout lines; other output is ignored.
    fn stdout_lines(&mut self, lines: &[String]) {
        let mut newest = None;
        for line in lines {
            if let Some(a) = StepAnnouncement::parse(line) {
                self.announce(a);
            } else if let Some(p) = TrainProgress::parse(line) {
                newest = Some(p);
            }
        }
        if let Some(p) = newest {
            self.trained(p);
        }
    }

    fn announce(&mut self, a: StepAnnouncement) {
        if a.total_steps.is_some() {
            self.total = a.total_steps;
        }
        self.phase = a.storm_job_step;
        self.dirty = true;
    }

    /// The newest training step of a poll (the rate is measured over at least a second of steps).
    fn trained(&mut self, p: TrainProgress) {
        let step = p.storm_train_step;
        let now = Instant::now();
        match self.rate_from {
            Some((t0, s0)) if step >= s0 => {
                let secs = now.duration_since(t0).as_secs_f64();
                if secs >= 1.0 {
                    self.rate = (step - s0) as f64 * self.batch_size as f64 / secs;
                    self.rate_from = Some((now, step));
                }
            }
            _ => self.rate_from = Some((now, step)),
        }
        self.total = Some(p.total);
        self.last = Some((step, p.loss.unwrap_or(f64::NAN)));
        self.dirty = true;
    }

    fn report(&mut self, every: Duration) -> Option<Progress> {
        let due = self.sent.is_none_or(|t| t.elapsed() >= every);
        if !self.dirty || !due {
            return None;
        }
        self.dirty = false;
        self.sent = Some(Instant::now());
        let (step, loss) = self.last.unwrap_or((0, f64::NAN));
        Some(Progress {
            step,
            total: self.total,
            loss,
            samples_per_s: self.rate,
            phase: self.phase.clone(),
        })
    }
}

impl JobRunner for ProcessRunner {
    fn run(&self, spec: &JobSpec, ctx: &RunContext) -> JobOutcome {
        let _ = std::fs::remove_file(spec.result_path());
        let mut child = match self.spawn(spec) {
            Ok(c) => c,
            Err(error) => return JobOutcome::Failed { error },
        };
        let pid = child.id();
        let mut stdout = Tail::new(&spec.stdout_path());
        let mut tracker = ProgressTracker::new(spec.batch_size);
        let status = loop {
            if ctx.cancel.load(Ordering::SeqCst) {
                kill_group(pid);
                let _ = child.wait();
                return JobOutcome::Cancelled;
            }
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) => {}
                Err(e) => {
                    kill_group(pid);
                    let _ = child.wait();
                    return JobOutcome::Failed {
                        error: format!("waiting for the job process failed: {e}"),
                    };
                }
            }
            tracker.stdout_lines(&stdout.new_lines());
            if let Some(p) = tracker.report(PROGRESS_EVERY) {
                (ctx.progress)(p);
            }
            std::thread::sleep(self.poll);
        };
        // a job that spawned helpers of its own must not leave them behind
        kill_group(pid);
        if status.success() {
            return match JobResult::load(&spec.result_path()) {
                Ok(result) => JobOutcome::Done(result),
                Err(e) => JobOutcome::Failed {
                    error: format!("the job exited cleanly but its result is unreadable: {e}"),
                },
            };
        }
        let stderr = last_lines(&spec.stderr_path(), STDERR_LINES_READ);
        let tail = without_backtrace(&stderr, ERROR_TAIL_LINES);
        JobOutcome::Failed {
            error: if tail.is_empty() {
                format!("job process {}", describe_status(status))
            } else {
                format!("job process {}:\n{tail}", describe_status(status))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn launcher_variables_are_recognised() {
        for name in [
            "RANK",
            "WORLD_SIZE",
            "LOCAL_RANK",
            "MASTER_ADDR",
            "MASTER_PORT",
            "SLURM_PROCID",
        ] {
            assert!(is_launcher_var(name), "{name}");
        }
        for name in [
            "CUDA_VISIBLE_DEVICES",
            "PATH",
            "STORM_CLUSTER_COOKIE",
            "RANKING",
            "HOME",
        ] {
            assert!(!is_launcher_var(name), "{name}");
        }
    }

    /// A stand-in for `storm job`: a shell script that reads nothing but the environment.
    fn script(dir: &std::path::Path, body: &str) -> ProcessRunner {
        let path = dir.join("fake-storm.sh");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&path, perms).unwrap();
        ProcessRunner {
            exe: path,
            poll: Duration::from_millis(20),
        }
    }

    fn spec(dir: &std::path::Path) -> JobSpec {
        JobSpec {
            id: "j".into(),
            attempt: 1,
            device: "cpu".into(),
            threads: Some(1),
            job_dir: dir.join("job"),
            data: dir.join("data"),
            max_steps: None,
            batch_size: 4,
            steps: vec![],
        }
    }

    fn run(runner: &ProcessRunner, spec: &JobSpec) -> (JobOutcome, Vec<Progress>) {
        let seen = Mutex::new(Vec::new());
        let cancel = AtomicBool::new(false);
        let progress = |p: Progress| seen.lock().unwrap().push(p);
        let outcome = runner.run(
            spec,
            &RunContext {
                progress: &progress,
                cancel: &cancel,
            },
        );
        (outcome, seen.into_inner().unwrap())
    }

    #[test]
    fn a_clean_exit_with_a_result_is_done_and_progress_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let runner = script(
            dir.path(),
            r#"JOB=$(dirname "$3")
echo '{"storm_job_step":"pretrain","total_steps":3}'
echo 'epoch 0'
echo '{"storm_train_step":1,"total":3,"loss":2.5}'
echo '{"storm_train_step":2,"total":3,"loss":2.0}'
echo '{"storm_train_step":3,"total":3,"loss":1.5}'
sleep 0.3
echo '{"job":"j","attempt":1,"seconds":0.5,"metrics":{"test_rank_ic":0.25,"pm_cr":null}}' > "$JOB/result.json""#,
        );
        let spec = spec(dir.path());
        let (outcome, progress) = run(&runner, &spec);
        let JobOutcome::Done(result) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(result.metrics["test_rank_ic"], Some(0.25));
        assert_eq!(result.metrics["pm_cr"], None);
        let last = progress.last().expect("progress was reported");
        assert_eq!((last.step, last.total, last.loss), (3, Some(3), 1.5));
        assert_eq!(last.phase, "pretrain");
        assert!(spec.job_dir.join("job.json").exists(), "spec written");
    }

    fn lines(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn progress_comes_from_the_newest_train_line_with_a_null_loss_as_nan() {
        let mut t = ProgressTracker::new(4);
        t.stdout_lines(&lines(&[
            r#"{"storm_train_step":7,"total":40,"loss":0.5}"#,
            "some other output",
            r#"{"storm_train_step":8,"total":40,"loss":null}"#,
        ]));
        let p = t.report(Duration::ZERO).expect("a report");
        assert_eq!(
            (p.step, p.total, p.phase.as_str()),
            (8, Some(40), "starting")
        );
        assert!(p.loss.is_nan());
        assert!(t.report(Duration::ZERO).is_none(), "nothing new");
        t.stdout_lines(&lines(&[r#"{"storm_job_step":"eval_test"}"#]));
        let p = t.report(Duration::ZERO).expect("a report");
        assert_eq!(
            (p.step, p.total, p.phase.as_str()),
            (8, Some(40), "eval_test")
        );
        t.stdout_lines(&lines(&[
            r#"{"storm_train_step":9,"total":40,"loss":0.25}"#,
        ]));
        assert!(t.report(Duration::from_secs(60)).is_none(), "throttled");
    }

    #[test]
    fn a_failing_child_reports_its_status_and_stderr_tail() {
        let dir = tempfile::tempdir().unwrap();
        let runner = script(
            dir.path(),
            "echo 'first line' >&2\necho 'boom: bad things' >&2\nexit 3",
        );
        let (outcome, _) = run(&runner, &spec(dir.path()));
        let JobOutcome::Failed { error } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(error.contains("exited with status 3"), "{error}");
        assert!(error.contains("boom: bad things"), "{error}");
    }

    #[test]
    fn backtraces_are_dropped_and_the_headline_found() {
        let stderr = "thread 'main' (7) panicked at launch/src/cli/job.rs:124:29:\n\
                      STORM_FAULT: injected panic\n\
                      stack backtrace:\n   0: __rustc::rust_begin_unwind\n   1: core::panicking::panic_fmt\n\
                      \u{20}            at /rustc/x/library/core/src/panicking.rs:75:14\n\
                      note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.";
        let clean = without_backtrace(stderr, 12);
        assert_eq!(
            clean,
            "thread 'main' (7) panicked at launch/src/cli/job.rs:124:29:\nSTORM_FAULT: injected panic"
        );
        assert_eq!(headline(&clean), "STORM_FAULT: injected panic");
        assert_eq!(
            headline("job process exited with status 1:\nerror: bad config\n"),
            "error: bad config"
        );
        assert_eq!(
            headline("job process killed by signal 9 (SIGKILL)"),
            "job process killed by signal 9 (SIGKILL)"
        );
    }

    #[test]
    fn a_clean_exit_without_a_result_is_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let runner = script(dir.path(), "exit 0");
        let (outcome, _) = run(&runner, &spec(dir.path()));
        assert!(
            matches!(&outcome, JobOutcome::Failed { error } if error.contains("result")),
            "{outcome:?}"
        );
    }

    #[test]
    fn a_missing_binary_is_a_failure_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let runner = ProcessRunner {
            exe: dir.path().join("no-such-binary"),
            poll: Duration::from_millis(20),
        };
        let (outcome, _) = run(&runner, &spec(dir.path()));
        assert!(
            matches!(&outcome, JobOutcome::Failed { error } if error.contains("could not start")),
            "{outcome:?}"
        );
    }

    #[test]
    fn cancel_kills_the_child_and_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild-survived");
        let runner = script(
            dir.path(),
            &format!("(sleep 1; touch {}) &\nsleep 30", marker.display()),
        );
        let spec = spec(dir.path());
        let cancel = AtomicBool::new(false);
        let start = Instant::now();
        let outcome = std::thread::scope(|s| {
            let h = s.spawn(|| {
                runner.run(
                    &spec,
                    &RunContext {
                        progress: &|_| {},
                        cancel: &cancel,
                    },
                )
            });
            std::thread::sleep(Duration::from_millis(200));
            cancel.store(true, Ordering::SeqCst);
            h.join().unwrap()
        });
        assert_eq!(outcome, JobOutcome::Cancelled);
        assert!(start.elapsed() < Duration::from_secs(5));
        std::thread::sleep(Duration::from_millis(1200));
        assert!(!marker.exists(), "the child's process group was killed");
    }
}
