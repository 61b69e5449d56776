//! `storm bench gpu --out DIR`: the GPU acceptance check. Every check runs `storm` itself in a child process
//! (its own wall time, memory and log under DIR/logs) and the results go to DIR/gpu-report.md and
//! DIR/gpu-report.json; the command fails unless every check passed. Without a CUDA device it says so and
//! skips (`--require-gpu` makes that a failure). `--device cpu` runs the same checks on the CPU, which is how
//! the harness itself is tested where there is no GPU.

mod checks;
mod report;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;

use report::{Check, Report};

#[derive(Args)]
pub struct GpuBenchArgs {
    /// Directory for the report, the logs and the runs (created; an earlier report there is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// cuda or cuda:N (default cuda); cpu runs the same checks on the CPU to test the harness.
    #[arg(long, default_value = "cuda")]
    pub device: String,
    /// Optimizer steps of each timed training run.
    #[arg(long, default_value_t = 50)]
    pub steps: u64,
    /// Model config (default: the shipped paper config, configs/dj30.toml).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Fail instead of skipping when no CUDA device is visible.
    #[arg(long)]
    pub require_gpu: bool,
}

/// What every check needs: where the binary, the config and the outputs are, and which device to use.
struct Harness {
    exe: PathBuf,
    config: PathBuf,
    work: PathBuf,
    logs: PathBuf,
    device: String,
    cuda: bool,
    steps: u64,
}

/// One finished child `storm`: its wall time, its peak GPU memory (CUDA only, from nvidia-smi) and its log.
struct ChildRun {
    seconds: f64,
    peak_mib: Option<f64>,
    log: PathBuf,
}

pub fn run(a: GpuBenchArgs) -> Result<()> {
    if a.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let cuda = a.device != "cpu";
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let facts = checks::device_facts();
    let mut report = Report::new(&a.device, facts.clone());
    if cuda && !tch::Cuda::is_available() {
        let why = "no CUDA device is visible to libtorch (tch::Cuda::is_available() is false)";
        if a.require_gpu {
            report.push(Check::failed("device", why));
        } else {
            report.push(Check::skipped("device", why));
        }
        return finish(&a.out, report);
    }
    super::train::parse_device(&a.device)?;
    let config = match &a.config {
        Some(path) => path.clone(),
        None => super::home::shipped_config("dj30.toml")?,
    };
    let work = a.out.join("work");
    let logs = a.out.join("logs");
    for dir in [&work, &logs] {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let h = Harness {
        exe: std::env::current_exe().context("locating the storm binary")?,
        config: std::path::absolute(&config)
            .with_context(|| format!("resolving {}", config.display()))?,
        work,
        logs,
        device: a.device.clone(),
        cuda,
        steps: a.steps,
    };
    report.push(checks::device_check(&facts, cuda));
    checks::run_all(&h, &mut report);
    finish(&a.out, report)
}

fn finish(out: &Path, report: Report) -> Result<()> {
    let (md, json) = report.write(out)?;
    println!("{}", report.summary_table());
    println!("wrote {} and {}", md.display(), json.display());
    match report.failures() {
        0 => Ok(()),
        n => bail!(
            "{n} GPU check(s) failed: {} (logs in {})",
            report.failed_names().join(", "),
            out.join("logs").display()
        ),
    }
}

impl Harness {
    /// Runs `storm ARGS` (with `envs` added), its stdout and stderr into logs/<name>.log; an error names the
    /// command and ends with the log's last lines.
    fn storm(&self, name: &str, args: &[String], envs: &[(&str, &str)]) -> Result<ChildRun> {
        let log = self.logs.join(format!("{name}.log"));
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let start = Instant::now();
        let mut child = Command::new(&self.exe)
            .args(args)
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting storm {}", args.join(" ")))?;
        let mut peak: Option<f64> = None;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if self.cuda {
                if let Some(mib) = super::bench_train::gpu_memory_of(child.id()) {
                    peak = Some(peak.map_or(mib, |p| p.max(mib)));
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        if !status.success() {
            bail!(
                "`storm {}` failed ({status}); the end of {}:\n{}",
                args.join(" "),
                log.display(),
                log_tail(&log, 12)
            );
        }
        Ok(ChildRun {
            seconds: start.elapsed().as_secs_f64(),
            peak_mib: peak,
            log,
        })
    }
}

/// The last `n` lines of a log file (empty if unreadable).
fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
