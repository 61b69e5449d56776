//! Prometheus telemetry: a process-wide set of metrics ([`Metrics`]) and the HTTP endpoint that serves it
//! ([`MetricsServer`]); docs/TELEMETRY.md lists every metric.
//!
//! Off unless [`start`] was called (`--metrics-addr`): every `record_*` function first reads a `OnceLock`
//! and returns at once when it is empty, so instrumented code pays one atomic load per call.
//!
//! Labels on every series: `run_id` (the name of the run directory, or of the command when it has none)
//! and `rank` (`RANK`, else `LOCAL_RANK`, else `0`). With several processes per machine each serves its own
//! port: the `--metrics-addr` port plus `LOCAL_RANK` (0 when unset), so ranks never collide and Prometheus
//! scrapes each; nothing is aggregated in-process.

mod gpu;
pub use gpu::process_gpu_memory;
mod metrics;
mod server;

use std::sync::OnceLock;
use std::time::Duration;

use tch::Device;

pub use metrics::Metrics;
pub use server::{parse_metrics_addr, MetricsServer};

use crate::error::{Error, Result};
use crate::stats::financial::FinancialMetrics;

static GLOBAL: OnceLock<Metrics> = OnceLock::new();

/// How often the GPU memory gauge is refreshed (each reading runs nvidia-smi).
const GPU_SAMPLE_PERIOD: Duration = Duration::from_secs(5);

/// `rank` label and port offset from the launcher's environment (torchrun-style `RANK`/`LOCAL_RANK`).
pub fn rank_from_env() -> Result<(String, u16)> {
    ranks(
        std::env::var("RANK").ok().as_deref(),
        std::env::var("LOCAL_RANK").ok().as_deref(),
    )
}

fn ranks(rank: Option<&str>, local_rank: Option<&str>) -> Result<(String, u16)> {
    let read = |name: &str, v: Option<&str>| -> Result<Option<u16>> {
        v.map(|v| {
            v.trim().parse::<u16>().map_err(|_| {
                Error::Telemetry(format!(
                    "environment variable {name}=`{v}` is not a rank (0..65535)"
                ))
            })
        })
        .transpose()
    };
    let local = read("LOCAL_RANK", local_rank)?;
    let rank = read("RANK", rank)?.or(local).unwrap_or(0);
    Ok((rank.to_string(), local.unwrap_or(0)))
}

/// Turns telemetry on for this process and serves it on `addr` (see [`parse_metrics_addr`]; the port is
/// offset by `LOCAL_RANK`). Returns the running server; metrics stop being served when it is dropped.
pub fn start(addr: &str, run_id: &str) -> Result<MetricsServer> {
    let (rank, local_rank) = rank_from_env()?;
    let sock = parse_metrics_addr(addr, local_rank)?;
    if GLOBAL.get().is_some() {
        return Err(Error::Telemetry("telemetry was already started".into()));
    }
    let server = MetricsServer::start(sock, || {
        GLOBAL.get().map(Metrics::render).unwrap_or_default()
    })?;
    GLOBAL
        .set(Metrics::new(run_id, &rank)?)
        .map_err(|_| Error::Telemetry("telemetry was already started".into()))?;
    Ok(server)
}

#[inline]
fn metrics() -> Option<&'static Metrics> {
    GLOBAL.get()
}

/// Whether [`start`] was called: lets callers skip work that only feeds metrics.
pub fn enabled() -> bool {
    metrics().is_some()
}

/// One training step, in plain numbers (the trainer reads them anyway for `losses.csv`).
#[derive(Debug, Clone, Copy)]
pub struct StepMetrics<'a> {
    /// Weighted total loss (NaN on a skipped step).
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    /// The step was skipped by the finite-loss check.
    pub skipped: bool,
    pub samples: u64,
    pub seconds: f64,
    pub epoch: u64,
    /// Unweighted loss terms by name.
    pub terms: &'a [(&'a str, f64)],
}

/// Loss gauges keep the last finite value (a skipped step shows in `storm_train_skipped_steps_total`).
pub fn record_train_step(s: &StepMetrics) {
    let Some(m) = metrics() else { return };
    let t = m.train();
    let set_loss = |component: &str, v: f64| {
        if v.is_finite() {
            t.loss.with_label_values(&[component]).set(v);
        }
    };
    set_loss("total", s.loss);
    for (name, v) in s.terms {
        set_loss(name, *v);
    }
    t.learning_rate.set(s.lr);
    if s.grad_norm.is_finite() {
        t.grad_norm.set(s.grad_norm);
    }
    t.steps.inc();
    t.samples.inc_by(s.samples);
    if s.skipped {
        t.skipped.inc();
    }
    t.step_seconds.observe(s.seconds);
    t.epoch.set(s.epoch as i64);
}

/// Each weighted loss term's gradient norm on the shared encoder (a logging step's probe).
pub fn record_term_grad_norms(norms: &[(&str, f64)]) {
    let Some(m) = metrics() else { return };
    for (term, v) in norms {
        if v.is_finite() {
            m.train().term_grad_norm.with_label_values(&[term]).set(*v);
        }
    }
}

/// Perplexity (exp of the usage entropy) and the number of unused codes of per-code counts.
pub fn usage_health(counts: &[i64]) -> (f64, usize) {
    let total: i64 = counts.iter().filter(|&&c| c > 0).sum();
    let dead = counts.iter().filter(|&&c| c <= 0).count();
    if total == 0 {
        return (0.0, dead);
    }
    let entropy = crate::stats::codes::count_entropy(counts);
    (entropy.exp(), dead)
}

/// Codebook health of one branch from its per-code counts.
pub fn record_code_counts(branch: &str, counts: &[i64]) {
    let Some(m) = metrics() else { return };
    let (perplexity, dead) = usage_health(counts);
    let c = m.codebook();
    c.perplexity.with_label_values(&[branch]).set(perplexity);
    c.dead_codes.with_label_values(&[branch]).set(dead as f64);
    c.size.with_label_values(&[branch]).set(counts.len() as f64);
}

/// RankIC/IC summary of predictions on `split` (validation during training, or `storm eval`).
pub fn record_eval(split: &str, rank_ic: f64, rank_icir: f64, ic: f64, icir: f64) {
    let Some(m) = metrics() else { return };
    let e = m.eval();
    e.rank_ic.with_label_values(&[split]).set(rank_ic);
    e.rank_icir.with_label_values(&[split]).set(rank_icir);
    e.ic.with_label_values(&[split]).set(ic);
    e.icir.with_label_values(&[split]).set(icir);
}

/// Financial metrics of each backtested series (`strategy`, `equal_weight`, `index`) on `split`.
pub fn record_backtest(split: &str, series: &[(&str, &FinancialMetrics)]) {
    let Some(m) = metrics() else { return };
    for (name, fm) in series {
        m.backtest().set(split, name, fm);
    }
}

/// One PPO update (rollout collection + optimisation).
#[derive(Debug, Clone, Copy)]
pub struct PpoUpdateMetrics {
    pub env_steps: u64,
    pub seconds: f64,
    /// Mean return of the training environments' last finished episodes (None before any finished).
    pub episode_return: Option<f64>,
}

pub fn record_ppo_update(u: &PpoUpdateMetrics) {
    let Some(m) = metrics() else { return };
    let p = m.ppo();
    p.updates.inc();
    p.env_steps.inc_by(u.env_steps);
    if u.seconds > 0.0 {
        p.steps_per_second.set(u.env_steps as f64 / u.seconds);
    }
    if let Some(r) = u.episode_return {
        p.episode_return.set(r);
    }
}

/// Cumulative wealth of the greedy policy on the valid days (model selection).
pub fn record_ppo_valid(cumulative_wealth: f64) {
    let Some(m) = metrics() else { return };
    m.ppo().valid_cumulative_wealth.set(cumulative_wealth);
}

/// Job counts per state for `storm_job_state{state}`. Pass every state with its count each time (states
/// reported earlier but absent now are set to 0). State names used so far: `queued`, `running`,
/// `succeeded`, `failed`. `storm pretrain` reports itself as one job; a sweep's coordinator reports the
/// whole sweep, and workers running its jobs in-process should not report them again.
pub fn set_job_states(states: &[(&str, u64)]) {
    let Some(m) = metrics() else { return };
    m.jobs().set(states);
}

/// `storm_run_info{seed,config_hash} 1`.
pub fn set_run_info(seed: u64, config_hash: &str) {
    let Some(m) = metrics() else { return };
    m.set_run_info(seed, config_hash);
}

/// On a CUDA device, samples this process's GPU memory in the background (see `gpu.rs`); no-op otherwise.
pub fn watch_gpu_memory(device: Device) {
    let (Some(m), Device::Cuda(i)) = (metrics(), device) else {
        return;
    };
    let gauge = m
        .gpu_memory()
        .with_label_values(&[format!("cuda:{i}").as_str()]);
    gpu::spawn_sampler(GPU_SAMPLE_PERIOD, move |bytes| gauge.set(bytes));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_health_counts_dead_codes_and_perplexity() {
        let (p, dead) = usage_health(&[5, 5, 0, 5, 5]);
        assert!((p - 4.0).abs() < 1e-12, "{p}");
        assert_eq!(dead, 1);
        let (p, dead) = usage_health(&[9, 0, 0]);
        assert!((p - 1.0).abs() < 1e-12);
        assert_eq!(dead, 2);
        assert_eq!(usage_health(&[0, 0]), (0.0, 2));
    }

    #[test]
    fn rank_label_and_port_offset() {
        assert_eq!(ranks(None, None).unwrap(), ("0".to_string(), 0));
        assert_eq!(ranks(None, Some("3")).unwrap(), ("3".to_string(), 3));
        assert_eq!(ranks(Some("11"), Some("3")).unwrap(), ("11".to_string(), 3));
        assert_eq!(ranks(Some("5"), None).unwrap(), ("5".to_string(), 0));
        let err = ranks(None, Some("x")).unwrap_err().to_string();
        assert!(err.contains("LOCAL_RANK=`x`"), "{err}");
    }

    #[test]
    fn recording_without_start_is_a_no_op() {
        // this test binary never calls start()
        assert!(!enabled());
        record_train_step(&StepMetrics {
            loss: 1.0,
            lr: 1e-4,
            grad_norm: 0.5,
            skipped: false,
            samples: 8,
            seconds: 0.1,
            epoch: 0,
            terms: &[("nll", 1.0)],
        });
        record_code_counts("ts", &[1, 2, 0, 0]);
        set_job_states(&[("running", 1)]);
        assert!(GLOBAL.get().is_none());
    }
}
