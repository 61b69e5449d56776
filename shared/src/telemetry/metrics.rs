//! Every metric storm exports, as handles in one [`Metrics`] value over its own `prometheus::Registry`.
//!
//! Families are registered per group on first use, so a process exports only what it measures: an
//! `storm eval` process has no learning rate (an unset unlabelled gauge would read 0, which is a lie), and
//! a training process has no backtest series. `run_id` and `rank` are constant labels of the registry, so
//! every series carries them.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, OnceLock};

use prometheus::{
    exponential_buckets, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntGauge, Opts,
    Registry,
};

use crate::error::{Error, Result};
use crate::stats::financial::FinancialMetrics;

/// Buckets of `storm_train_step_seconds`: 1 ms · 2^k up to ~131 s (CPU paper config steps take ~5 s,
/// GPU steps tens of ms).
const STEP_BUCKETS: (f64, f64, usize) = (0.001, 2.0, 18);

pub struct Metrics {
    registry: Registry,
    run_info: GaugeVec,
    train: OnceLock<Train>,
    codebook: OnceLock<Codebook>,
    eval: OnceLock<Eval>,
    backtest: OnceLock<Backtest>,
    ppo: OnceLock<Ppo>,
    jobs: OnceLock<Jobs>,
    gpu: OnceLock<GaugeVec>,
}

pub struct Train {
    pub loss: GaugeVec,
    pub learning_rate: Gauge,
    pub grad_norm: Gauge,
    pub term_grad_norm: GaugeVec,
    pub steps: IntCounter,
    pub samples: IntCounter,
    pub skipped: IntCounter,
    pub step_seconds: Histogram,
    pub epoch: IntGauge,
}

pub struct Codebook {
    pub perplexity: GaugeVec,
    pub dead_codes: GaugeVec,
    pub size: GaugeVec,
}

pub struct Eval {
    pub rank_ic: GaugeVec,
    pub rank_icir: GaugeVec,
    pub ic: GaugeVec,
    pub icir: GaugeVec,
}

pub struct Backtest {
    pub annual_return: GaugeVec,
    pub cumulative_wealth: GaugeVec,
    pub calmar_ratio: GaugeVec,
    pub sharpe_ratio: GaugeVec,
    pub max_drawdown: GaugeVec,
    pub annual_volatility: GaugeVec,
    pub turnover: GaugeVec,
}

pub struct Ppo {
    pub updates: IntCounter,
    pub env_steps: IntCounter,
    pub steps_per_second: Gauge,
    pub episode_return: Gauge,
    pub valid_cumulative_wealth: Gauge,
}

pub struct Jobs {
    pub state: GaugeVec,
    /// States ever reported, so that a state missing from a later report drops to 0 instead of lingering.
    seen: Mutex<BTreeSet<String>>,
}

/// Registers `m` and hands it back. Names are static and unique, so a failure is a bug in this file (the
/// unit tests register every group).
fn reg<M: prometheus::core::Collector + Clone + 'static>(r: &Registry, m: M) -> M {
    r.register(Box::new(m.clone()))
        .unwrap_or_else(|e| panic!("storm metric registration: {e}"));
    m
}

fn gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    reg(r, Gauge::new(name, help).expect("valid metric name"))
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    reg(
        r,
        GaugeVec::new(Opts::new(name, help), labels).expect("valid metric name"),
    )
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    reg(r, IntCounter::new(name, help).expect("valid metric name"))
}

impl Metrics {
    /// A registry whose every series carries `run_id` and `rank`.
    pub fn new(run_id: &str, rank: &str) -> Result<Self> {
        let labels = HashMap::from([
            ("run_id".to_string(), run_id.to_string()),
            ("rank".to_string(), rank.to_string()),
        ]);
        let registry = Registry::new_custom(None, Some(labels))
            .map_err(|e| Error::Telemetry(format!("metrics registry: {e}")))?;
        let run_info = gauge_vec(
            &registry,
            "storm_run_info",
            "Always 1; the labels identify the run (seed, hash of the resolved config).",
            &["seed", "config_hash"],
        );
        Ok(Metrics {
            registry,
            run_info,
            train: OnceLock::new(),
            codebook: OnceLock::new(),
            eval: OnceLock::new(),
            backtest: OnceLock::new(),
            ppo: OnceLock::new(),
            jobs: OnceLock::new(),
            gpu: OnceLock::new(),
        })
    }

    /// The Prometheus text exposition of everything registered so far.
    pub fn render(&self) -> String {
        prometheus::TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding metrics failed: {e}\n"))
    }

    pub fn set_run_info(&self, seed: u64, config_hash: &str) {
        self.run_info.reset();
        self.run_info
            .with_label_values(&[seed.to_string().as_str(), config_hash])
            .set(1.0);
    }

    pub fn train(&self) -> &Train {
        self.train.get_or_init(|| {
            let r = &self.registry;
            let (start, factor, count) = STEP_BUCKETS;
            Train {
                loss: gauge_vec(
                    r,
                    "storm_train_loss",
                    "Training loss of the last step: component=\"total\" is the weighted objective, the \
                     others the unweighted terms.",
                    &["component"],
                ),
                learning_rate: gauge(r, "storm_learning_rate", "Learning rate of the last step."),
                grad_norm: gauge(
                    r,
                    "storm_train_grad_norm",
                    "Global gradient norm before clipping, last finite step.",
                ),
                term_grad_norm: gauge_vec(
                    r,
                    "storm_train_term_grad_norm",
                    "Gradient norm of one weighted loss term on the shared encoder, last logging step.",
                    &["term"],
                ),
                steps: counter(r, "storm_train_steps_total", "Training steps (taken or skipped)."),
                samples: counter(r, "storm_train_samples_total", "Training windows processed."),
                skipped: counter(
                    r,
                    "storm_train_skipped_steps_total",
                    "Steps skipped because the loss or gradient was not finite.",
                ),
                step_seconds: reg(
                    r,
                    Histogram::with_opts(
                        HistogramOpts::new(
                            "storm_train_step_seconds",
                            "Wall time of one training step (batch, forward, backward, optimizer, log).",
                        )
                        .buckets(
                            exponential_buckets(start, factor, count).expect("valid buckets"),
                        ),
                    )
                    .expect("valid metric name"),
                ),
                epoch: reg(
                    r,
                    IntGauge::new("storm_train_epoch", "Epoch of the last training step.")
                        .expect("valid metric name"),
                ),
            }
        })
    }

    pub fn codebook(&self) -> &Codebook {
        self.codebook.get_or_init(|| {
            let r = &self.registry;
            Codebook {
                perplexity: gauge_vec(
                    r,
                    "storm_codebook_perplexity",
                    "exp(entropy) of code usage (training: the last logged batch; eval: the split).",
                    &["branch"],
                ),
                dead_codes: gauge_vec(
                    r,
                    "storm_codebook_dead_codes",
                    "Codes not assigned once (training: in the last logged batch; eval: over the split).",
                    &["branch"],
                ),
                size: gauge_vec(r, "storm_codebook_size", "Codes in the codebook.", &["branch"]),
            }
        })
    }

    pub fn eval(&self) -> &Eval {
        self.eval.get_or_init(|| {
            let r = &self.registry;
            let g = |name: &str, help: &str| gauge_vec(r, name, help, &["split"]);
            Eval {
                rank_ic: g(
                    "storm_eval_rank_ic",
                    "Mean daily RankIC (Spearman) of the predictions.",
                ),
                rank_icir: g("storm_eval_rank_icir", "RankIC mean / std over days."),
                ic: g(
                    "storm_eval_ic",
                    "Mean daily IC (Pearson) of the predictions.",
                ),
                icir: g("storm_eval_icir", "IC mean / std over days."),
            }
        })
    }

    pub fn backtest(&self) -> &Backtest {
        self.backtest.get_or_init(|| {
            let r = &self.registry;
            let g = |name: &str, help: &str| gauge_vec(r, name, help, &["split", "series"]);
            Backtest {
                annual_return: g(
                    "storm_backtest_annual_return",
                    "APY as a fraction (0.1 = 10 %).",
                ),
                cumulative_wealth: g(
                    "storm_backtest_cumulative_wealth",
                    "CW = final / initial wealth.",
                ),
                calmar_ratio: g(
                    "storm_backtest_calmar_ratio",
                    "CR = APY / MDD (NaN when MDD = 0).",
                ),
                sharpe_ratio: g(
                    "storm_backtest_sharpe_ratio",
                    "Annualised Sharpe ratio (NaN when the volatility is 0).",
                ),
                max_drawdown: g(
                    "storm_backtest_max_drawdown",
                    "Maximum drawdown as a fraction.",
                ),
                annual_volatility: g(
                    "storm_backtest_annual_volatility",
                    "Annualised volatility of daily returns.",
                ),
                turnover: g(
                    "storm_backtest_turnover",
                    "Mean traded value / wealth per trading day.",
                ),
            }
        })
    }

    pub fn ppo(&self) -> &Ppo {
        self.ppo.get_or_init(|| {
            let r = &self.registry;
            Ppo {
                updates: counter(r, "storm_ppo_updates_total", "PPO updates (rollout + optimisation)."),
                env_steps: counter(r, "storm_ppo_env_steps_total", "Environment steps collected."),
                steps_per_second: gauge(
                    r,
                    "storm_ppo_env_steps_per_second",
                    "Environment steps / wall second of the last update (collection and optimisation).",
                ),
                episode_return: gauge(
                    r,
                    "storm_ppo_episode_return",
                    "Mean over training environments of the return (final / initial wealth − 1) of \
                     their last finished episode.",
                ),
                valid_cumulative_wealth: gauge(
                    r,
                    "storm_ppo_valid_cumulative_wealth",
                    "Cumulative wealth of the greedy policy on the valid days, last evaluation.",
                ),
            }
        })
    }

    pub fn jobs(&self) -> &Jobs {
        self.jobs.get_or_init(|| Jobs {
            state: gauge_vec(
                &self.registry,
                "storm_job_state",
                "Training jobs this process is responsible for, per state (queued, running, succeeded, \
                 failed, …).",
                &["state"],
            ),
            seen: Mutex::new(BTreeSet::new()),
        })
    }

    pub fn gpu_memory(&self) -> &GaugeVec {
        self.gpu.get_or_init(|| {
            gauge_vec(
                &self.registry,
                "storm_gpu_memory_used_bytes",
                "GPU memory held by this process (nvidia-smi, includes the CUDA context); absent when \
                 it cannot be read.",
                &["device"],
            )
        })
    }
}

impl Backtest {
    pub fn set(&self, split: &str, series: &str, m: &FinancialMetrics) {
        let l = [split, series];
        self.annual_return.with_label_values(&l).set(m.apy);
        self.cumulative_wealth.with_label_values(&l).set(m.cw);
        self.calmar_ratio.with_label_values(&l).set(m.cr);
        self.sharpe_ratio.with_label_values(&l).set(m.asr);
        self.max_drawdown.with_label_values(&l).set(m.mdd);
        self.annual_volatility.with_label_values(&l).set(m.avo);
        self.turnover.with_label_values(&l).set(m.turnover);
    }
}

impl Jobs {
    /// Sets the given counts; states reported before but missing now drop to 0.
    pub fn set(&self, states: &[(&str, u64)]) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for old in seen.iter() {
            if !states.iter().any(|(s, _)| s == old) {
                self.state.with_label_values(&[old.as_str()]).set(0.0);
            }
        }
        for (state, count) in states {
            self.state.with_label_values(&[state]).set(*count as f64);
            seen.insert(state.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sample lines with their labels sorted by name (the encoder's order of constant labels varies).
    fn samples(text: &str) -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| match (l.find('{'), l.rfind('}')) {
                (Some(a), Some(b)) => {
                    let mut labels: Vec<&str> = l[a + 1..b].split(',').collect();
                    labels.sort();
                    format!("{}{{{}}}{}", &l[..a], labels.join(","), &l[b + 1..])
                }
                _ => l.to_string(),
            })
            .collect()
    }

    #[test]
    fn every_group_registers_and_carries_run_id_and_rank() {
        let m = Metrics::new("r1", "2").unwrap();
        m.set_run_info(7, "abc");
        let t = m.train();
        t.loss.with_label_values(&["total"]).set(1.5);
        t.learning_rate.set(1e-4);
        t.samples.inc_by(8);
        t.step_seconds.observe(0.2);
        m.codebook().perplexity.with_label_values(&["ts"]).set(3.0);
        m.eval().rank_ic.with_label_values(&["valid"]).set(0.1);
        let fm = FinancialMetrics {
            apy: 0.1,
            cw: 1.1,
            cr: f64::NAN,
            asr: 1.0,
            mdd: 0.0,
            avo: 0.2,
            turnover: 0.3,
            total_cost: 1.0,
            n_days: 10,
        };
        m.backtest().set("test", "strategy", &fm);
        m.ppo().updates.inc();
        m.jobs().set(&[("running", 1)]);
        m.gpu_memory().with_label_values(&["cuda:0"]).set(1e9);
        let text = samples(&m.render());
        for line in [
            r#"storm_run_info{config_hash="abc",rank="2",run_id="r1",seed="7"} 1"#,
            r#"storm_train_loss{component="total",rank="2",run_id="r1"} 1.5"#,
            r#"storm_learning_rate{rank="2",run_id="r1"} 0.0001"#,
            r#"storm_train_samples_total{rank="2",run_id="r1"} 8"#,
            r#"storm_train_step_seconds_count{rank="2",run_id="r1"} 1"#,
            r#"storm_codebook_perplexity{branch="ts",rank="2",run_id="r1"} 3"#,
            r#"storm_eval_rank_ic{rank="2",run_id="r1",split="valid"} 0.1"#,
            r#"storm_backtest_calmar_ratio{rank="2",run_id="r1",series="strategy",split="test"} NaN"#,
            r#"storm_ppo_updates_total{rank="2",run_id="r1"} 1"#,
            r#"storm_job_state{rank="2",run_id="r1",state="running"} 1"#,
            r#"storm_gpu_memory_used_bytes{device="cuda:0",rank="2",run_id="r1"} 1000000000"#,
        ] {
            assert!(
                text.iter().any(|l| l == line),
                "missing {line} in\n{text:#?}"
            );
        }
    }

    #[test]
    fn groups_appear_only_once_used() {
        let m = Metrics::new("r", "0").unwrap();
        assert!(!m.render().contains("storm_learning_rate"));
        m.train();
        assert!(m.render().contains("storm_learning_rate"));
        assert!(!m.render().contains("storm_backtest"));
    }

    #[test]
    fn job_states_missing_from_a_report_drop_to_zero() {
        let m = Metrics::new("r", "0").unwrap();
        m.jobs().set(&[("queued", 3), ("running", 1)]);
        m.jobs().set(&[("running", 2), ("succeeded", 2)]);
        let text = samples(&m.render());
        for line in [
            r#"storm_job_state{rank="0",run_id="r",state="queued"} 0"#,
            r#"storm_job_state{rank="0",run_id="r",state="running"} 2"#,
            r#"storm_job_state{rank="0",run_id="r",state="succeeded"} 2"#,
        ] {
            assert!(
                text.iter().any(|l| l == line),
                "missing {line} in\n{text:#?}"
            );
        }
    }
}
