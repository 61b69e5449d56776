//! `storm bench …`: performance measurements printed as Markdown tables. Each case runs in a child `storm`
//! process so that its wall time and peak resident memory are its own.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use storm_shared::data::synth;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time and peak memory of `storm data prepare` on the bundled DJ30 set and a large synthetic universe.
    Data(DataBenchArgs),
}

#[derive(Args)]
pub struct DataBenchArgs {
    /// Runs per case; the table reports the median time and the largest peak memory.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Synthetic universe size (tickers × days).
    #[arg(long, default_value_t = 500)]
    pub tickers: usize,
    #[arg(long, default_value_t = 4000)]
    pub days: usize,
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Data(a) => bench_data(a),
    }
}

struct Measurement {
    seconds: f64,
    peak_rss_mib: f64,
}

/// Runs `storm <args>` once and returns its wall time and peak RSS (from wait4's rusage).
fn measure(args: &[&str]) -> Result<Measurement> {
    let exe = std::env::current_exe().context("locating the storm binary")?;
    let start = Instant::now();
    let child = Command::new(exe)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting a benchmark child")?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, filled by the kernel for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let seconds = start.elapsed().as_secs_f64();
    if rc < 0 {
        bail!("waiting for the benchmark child failed");
    }
    if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("benchmark child `storm {}` failed", args.join(" "));
    }
    Ok(Measurement {
        seconds,
        peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
    })
}

fn summarise(runs: &[Measurement]) -> (f64, f64) {
    let mut times: Vec<f64> = runs.iter().map(|m| m.seconds).collect();
    times.sort_by(f64::total_cmp);
    let peak = runs.iter().map(|m| m.peak_rss_mib).fold(0.0, f64::max);
    (times[times.len() / 2], peak)
}

fn bench_data(a: DataBenchArgs) -> Result<()> {
    let dir = tempfile::tempdir().context("creating a scratch directory")?;
    let synth_file = dir.path().join("synth.parquet");
    let mut market = synth::generate(a.tickers, a.days, 0)?;
    synth::write_market(&mut market, &synth_file)?;
    let out = dir.path().join("out");
    let out_s = out.to_string_lossy().to_string();
    let synth_s = synth_file.to_string_lossy().to_string();
    let cases: Vec<(String, usize, Vec<&str>)> = vec![
        (
            "process start only (`storm --version`, loads libtorch)".to_string(),
            0,
            vec!["--version"],
        ),
        (
            "DJ30 (bundled, 29 × 6,084)".to_string(),
            173_251,
            vec!["data", "prepare", "--out", &out_s],
        ),
        (
            format!("synthetic {} × {}", a.tickers, a.days),
            a.tickers * a.days,
            vec!["data", "prepare", "--input", &synth_s, "--out", &out_s],
        ),
    ];
    println!(
        "| case | input rows | wall time (median of {}) | rows/s | peak RSS |",
        a.repeat
    );
    println!("|---|---|---|---|---|");
    for (name, rows, args) in cases {
        let runs = (0..a.repeat.max(1))
            .map(|_| measure(&args))
            .collect::<Result<Vec<_>>>()?;
        let (secs, peak) = summarise(&runs);
        println!(
            "| {name} | {rows} | {secs:.2} s | {:.0} | {peak:.0} MiB |",
            rows as f64 / secs
        );
        clean(&out);
    }
    Ok(())
}

fn clean(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
