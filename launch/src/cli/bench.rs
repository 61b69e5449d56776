//! `storm bench …`: performance measurements printed as Markdown tables. Each case runs in a child `storm`
//! process so that its wall time and peak resident memory are its own.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use storm_shared::data::synth;

use super::home::shipped_config;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Time and peak memory of `storm data prepare` on the bundled DJ30 set and a large synthetic universe.
    Data(DataBenchArgs),
    /// Training step time and throughput of the paper and small STORM configs on random windows.
    Train(super::bench_train::TrainBenchArgs),
    /// Trading environment steps/s (single env and a 16-env VecEnv) and PPO updates/s on the CPU.
    Rollout(RolloutBenchArgs),
    /// Cost of metrics recording per training step, with telemetry off and on (paper config sizes).
    Telemetry(TelemetryBenchArgs),
    /// Data-parallel gradient all-reduce at the paper model's size (W local ranks; TCP on the CPU).
    Allreduce(super::bench_dp::AllReduceBenchArgs),
    /// Sweep runtime: scheduling overhead per job and throughput of N CPU workers vs 1.
    Sweep(super::bench_sweep::SweepBenchArgs),
    /// The GPU acceptance check: device facts, fp32/bf16 training against the CPU, eval on the device
    /// against the CPU, NCCL at world size 1, a 2-job sweep; writes gpu-report.md/json (docs/RUNTIME.md).
    Gpu(super::bench_gpu::GpuBenchArgs),
    /// Latency of one prediction (no gradient) of the paper config at B = 1, or any config and batch.
    Infer(super::bench_infer::InferBenchArgs),
}

#[derive(Args)]
pub struct TelemetryBenchArgs {
    /// Timed calls per case (codebook statistics: a tenth of them).
    #[arg(long, default_value_t = 200_000)]
    pub calls: usize,
}

#[derive(Args)]
pub struct DataBenchArgs {
    /// Runs per case; the table reports the median time and the largest peak memory.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Synthetic universe size (tickers × days).
    #[arg(long, default_value_t = 400)]
    pub tickers: usize,
    #[arg(long, default_value_t = 6000)]
    pub days: usize,
}

/// The public reference's pandas pipeline on the CI machine kind (issue #18): 119 s measured for the bundled
/// DJ30 set; its rate there, 173,251 rows / 119 s, extrapolates to any other universe.
const REFERENCE_DJ30_SECONDS: f64 = 119.0;
const DJ30_ROWS: usize = 173_251;

/// The reference pipeline's time for a case: measured, or extrapolated from its DJ30 rate.
enum Reference {
    Measured(f64),
    Extrapolated(f64),
}

struct DataCase<'a> {
    name: String,
    rows: usize,
    exe: &'a Path,
    args: Vec<&'a str>,
    reference: Option<Reference>,
}

fn reference_seconds(rows: usize) -> f64 {
    REFERENCE_DJ30_SECONDS * rows as f64 / DJ30_ROWS as f64
}

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Data(a) => bench_data(a),
        BenchCommand::Train(a) => super::bench_train::run(a),
        BenchCommand::Rollout(a) => bench_rollout(a),
        BenchCommand::Telemetry(a) => bench_telemetry(a),
        BenchCommand::Allreduce(a) => super::bench_dp::run(a),
        BenchCommand::Sweep(a) => super::bench_sweep::run(a),
        BenchCommand::Gpu(a) => super::bench_gpu::run(a),
        BenchCommand::Infer(a) => super::bench_infer::run(a),
    }
}

struct Measurement {
    seconds: f64,
    peak_rss_mib: f64,
}

/// Runs `exe <args>` once and returns its wall time and peak RSS. The peak is the child's own VmHWM, sampled
/// every few milliseconds while it runs: wait4's ru_maxrss is useless here, since a child spawned from this
/// (large) process inherits the parent's high-water mark until its exec.
fn measure(exe: &Path, args: &[&str]) -> Result<Measurement> {
    let start = Instant::now();
    let mut child = Command::new(exe)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("starting a benchmark child")?;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Some(status) = child
            .try_wait()
            .context("waiting for the benchmark child")?
        {
            break status;
        }
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .as_deref()
            .and_then(vm_hwm_kib)
        {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let seconds = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("benchmark child `storm {}` failed", args.join(" "));
    }
    Ok(Measurement {
        seconds,
        peak_rss_mib: peak_kib as f64 / 1024.0,
    })
}

/// The `VmHWM:` line of /proc/<pid>/status, in KiB.
fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
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
    // `storm data …` runs in the front binary, which does not load libtorch; everything else in storm-core
    let core = this_binary()?;
    let front = core.with_file_name("storm");
    let cases = [
        DataCase {
            name: "process start, storm-core (`--version`, loads libtorch)".to_string(),
            rows: 0,
            exe: &core,
            args: vec!["--version"],
            reference: None,
        },
        DataCase {
            name: "process start, storm (`data --help`, no libtorch)".to_string(),
            rows: 0,
            exe: &front,
            args: vec!["data", "--help"],
            reference: None,
        },
        DataCase {
            name: "DJ30 (bundled, 29 × 6,084)".to_string(),
            rows: DJ30_ROWS,
            exe: &front,
            args: vec!["data", "prepare", "--out", &out_s],
            reference: Some(Reference::Measured(REFERENCE_DJ30_SECONDS)),
        },
        DataCase {
            name: format!("synthetic {} × {}", a.tickers, a.days),
            rows: a.tickers * a.days,
            exe: &front,
            args: vec!["data", "prepare", "--input", &synth_s, "--out", &out_s],
            reference: Some(Reference::Extrapolated(reference_seconds(
                a.tickers * a.days,
            ))),
        },
    ];
    println!(
        "| case | input rows | wall time (median of {}) | rows/s | peak RSS | reference | speed-up |",
        a.repeat
    );
    println!("|---|---|---|---|---|---|---|");
    for case in cases {
        let runs = (0..a.repeat.max(1))
            .map(|_| measure(case.exe, &case.args))
            .collect::<Result<Vec<_>>>()?;
        let (secs, peak) = summarise(&runs);
        let (reference, speedup) = match case.reference {
            Some(Reference::Measured(r)) => (format!("{r:.0} s"), format!("{:.0}×", r / secs)),
            Some(Reference::Extrapolated(r)) => (
                format!("{r:.0} s (extrapolated)"),
                format!("{:.0}×", r / secs),
            ),
            None => ("–".to_string(), "–".to_string()),
        };
        println!(
            "| {} | {} | {secs:.2} s | {} | {peak:.0} MiB | {reference} | {speedup} |",
            case.name,
            case.rows,
            match case.rows {
                0 => "–".to_string(),
                rows => format!("{:.0}", rows as f64 / secs),
            }
        );
        clean(&out);
    }
    Ok(())
}

/// This binary (storm-core: `storm bench` runs there).
fn this_binary() -> Result<std::path::PathBuf> {
    std::env::current_exe().context("locating the storm binary")
}

fn clean(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[derive(Args)]
pub struct RolloutBenchArgs {
    /// Environment steps per environment case (random actions).
    #[arg(long, default_value_t = 1_000_000)]
    pub steps: usize,
    /// Timed PPO updates (after one warm-up update).
    #[arg(long, default_value_t = 5)]
    pub updates: usize,
}

/// A tiny xorshift64 generator for benchmark inputs (the launcher has no `rand` dependency).
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    /// A random action index (0 sell, 1 hold, 2 buy).
    fn action(&mut self) -> usize {
        (self.next() % 3) as usize
    }
}

/// A synthetic random-walk series with `days` days and 32 random features.
fn rollout_series(days: usize) -> Result<std::sync::Arc<storm_shared::trading::PriceSeries>> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut prices = vec![100.0f64];
    for _ in 1..days {
        let last = prices[prices.len() - 1];
        prices.push(last * (1.0 + 0.04 * (rng.unit() - 0.5)));
    }
    let features = (0..days * 32)
        .map(|_| (2.0 * rng.unit() - 1.0) as f32)
        .collect();
    Ok(std::sync::Arc::new(
        storm_shared::trading::PriceSeries::new(prices, features, 32)?,
    ))
}

fn bench_rollout(a: RolloutBenchArgs) -> Result<()> {
    use storm_shared::trading::learner::single_threaded;
    use storm_shared::trading::ppo::{Ppo, PpoConfig};
    use storm_shared::trading::{EnvConfig, TradingEnv, VecEnv};

    if a.steps == 0 || a.updates == 0 {
        bail!("--steps and --updates must be at least 1");
    }
    let series = rollout_series(1000)?;
    let cfg = EnvConfig::default();
    let mut rng = XorShift(0x2545_F491_4F6C_DD1D);
    println!("| case | steps or updates | seconds | per second |");
    println!("|---|---|---|---|");

    let mut env = TradingEnv::new(series.clone(), cfg)?;
    let start = Instant::now();
    for _ in 0..a.steps {
        if env.step(rng.action())?.done {
            env.reset();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "| single env, env steps | {} | {secs:.3} | {:.0} |",
        a.steps,
        a.steps as f64 / secs
    );

    let n_envs = 16;
    let envs = (0..n_envs)
        .map(|e| TradingEnv::window(series.clone(), cfg, e * 10, e * 10 + 500))
        .collect::<storm_shared::error::Result<Vec<_>>>()?;
    let mut vec_env = VecEnv::new(envs)?;
    vec_env.reset()?;
    let rounds = a.steps.div_ceil(n_envs);
    let mut actions = vec![0usize; n_envs];
    let start = Instant::now();
    for _ in 0..rounds {
        actions.iter_mut().for_each(|x| *x = rng.action());
        vec_env.step(&actions)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let total = rounds * n_envs;
    println!(
        "| VecEnv of {n_envs}, env steps | {total} | {secs:.3} | {:.0} |",
        total as f64 / secs
    );

    let ppo_cfg = PpoConfig::default();
    let threads = tch::get_num_threads();
    // as `storm trade` runs it (one intra-op thread), then on libtorch's default thread count
    for (label, one) in [
        ("1 thread, as storm trade", true),
        ("default threads", false),
    ] {
        tch::manual_seed(0);
        let mut ppo = Ppo::new(series.n_features() + 1, ppo_cfg, tch::Device::Cpu)?;
        let mut timed = || -> Result<f64> {
            ppo.train(&mut vec_env, 1)?;
            let start = Instant::now();
            ppo.train(&mut vec_env, a.updates)?;
            Ok(start.elapsed().as_secs_f64())
        };
        let secs = if one {
            single_threaded(&mut timed)?
        } else {
            timed()?
        };
        let label = match one {
            true => label.to_string(),
            false => format!("{label} ({threads})"),
        };
        println!(
            "| PPO update (n_steps {} × {n_envs} envs, {} epochs, minibatch {}; {label}) | {} | {secs:.3} | {:.2} |",
            ppo_cfg.n_steps,
            ppo_cfg.epochs,
            ppo_cfg.minibatch_size,
            a.updates,
            a.updates as f64 / secs
        );
    }
    Ok(())
}

/// Mean nanoseconds per call of `f` over `calls` calls (after `calls / 10` warm-up calls).
fn ns_per_call(calls: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..calls / 10 {
        f(i);
    }
    let start = Instant::now();
    for i in 0..calls {
        f(i);
    }
    start.elapsed().as_secs_f64() * 1e9 / calls as f64
}

/// Microbenchmark of the trainer's telemetry calls: `record_train_step` every step (13 loss terms) and
/// `record_codebook_usage` every `log_every` steps on index tensors of the paper config's shape, first with
/// telemetry off, then on (serving on a loopback port), plus one scrape of `/metrics`.
fn bench_telemetry(a: TelemetryBenchArgs) -> Result<()> {
    use std::io::{Read, Write};
    use storm_shared::telemetry::{self, StepMetrics};
    use tch::{Kind, Tensor};

    if a.calls < 10 {
        bail!("--calls must be at least 10");
    }
    if telemetry::enabled() {
        bail!("storm bench telemetry turns telemetry on itself: run it without --metrics-addr");
    }
    let cfg = super::data::load_config(Some(&shipped_config("dj30.toml")?), &[])?;
    let (b, w, n, k) = (
        cfg.train.batch_size as i64,
        cfg.data.window as i64,
        29i64,
        cfg.model.codebook_size as i64,
    );
    let ts = Tensor::randint(
        k,
        [b, (w / cfg.model.patch_days as i64) * n],
        (Kind::Int64, tch::Device::Cpu),
    );
    let cs = Tensor::randint(k, [b, w], (Kind::Int64, tch::Device::Cpu));
    let names = [
        "recon_ts",
        "recon_cs",
        "codebook_ts",
        "codebook_cs",
        "commit_ts",
        "commit_cs",
        "diversity_ts",
        "diversity_cs",
        "orthogonal_ts",
        "orthogonal_cs",
        "clip",
        "nll",
        "kl",
    ];
    // the trainer builds the terms for losses.csv anyway, so they are not part of the timed cost
    let terms: Vec<(&str, f64)> = names.iter().map(|n| (*n, 1.5)).collect();
    let record_step = |i: usize| {
        let x = 1.0 + (i % 7) as f64;
        telemetry::record_train_step(&StepMetrics {
            loss: x,
            lr: 1e-4,
            grad_norm: 0.5,
            skipped: false,
            samples: b as u64,
            seconds: 0.3,
            epoch: 0,
            terms: &terms,
        });
    };
    let record_codebooks = |_: usize| {
        storm_shared::model::record_codebook_usage(&[("ts", Some(&ts)), ("cs", Some(&cs))], k)
    };
    let cb_calls = (a.calls / 10).max(10);
    let off = (
        ns_per_call(a.calls, record_step),
        ns_per_call(cb_calls, record_codebooks),
    );
    let server = telemetry::start("127.0.0.1:0", "bench")?;
    let on = (
        ns_per_call(a.calls, record_step),
        ns_per_call(cb_calls, record_codebooks),
    );
    let scrape_start = Instant::now();
    let mut body = String::new();
    let mut conn = std::net::TcpStream::connect(server.addr()).context("scraping /metrics")?;
    write!(conn, "GET /metrics HTTP/1.0\r\n\r\n")?;
    conn.read_to_string(&mut body)?;
    let scrape_ms = scrape_start.elapsed().as_secs_f64() * 1e3;
    let log_every = cfg.train.log_every as f64;
    println!(
        "| telemetry | record_train_step | record_codebooks (TS {}×{}, CS {b}×{w}, K={k}) | per step (log_every {log_every}) |",
        b,
        (w / cfg.model.patch_days as i64) * n
    );
    println!("|---|---|---|---|");
    let time = |ns: f64| {
        if ns < 1e3 {
            format!("{ns:.0} ns")
        } else {
            format!("{:.1} µs", ns / 1e3)
        }
    };
    for (name, (step, cb)) in [("off", off), ("on", on)] {
        println!(
            "| {name} | {} | {} | {} |",
            time(step),
            time(cb),
            time(step + cb / log_every)
        );
    }
    println!();
    println!(
        "one scrape of /metrics: {scrape_ms:.2} ms, {} bytes",
        body.split_once("\r\n\r\n").map_or(0, |(_, b)| b.len())
    );
    Ok(())
}
