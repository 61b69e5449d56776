//! One sweep session from start to end, as a blocking call: set up the sweep directory, prepare data, fold
//! the ledger, run the coordinator actor (on a small tokio runtime) until every job is done or failed — or
//! Ctrl-C — and write the result tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ractor::Actor;
use storm_shared::error::{Error, Result};
use storm_worker::{JobResult, JobRunner, JobSpec};
use tokio::sync::oneshot;

use crate::actor::{Coordinator, CoordinatorArgs, CoordinatorMsg, SessionEnd};
use crate::aggregate::{aggregate, JobRow, Stats};
use crate::cluster::ClusterOptions;
use crate::ledger::{fold, Ledger};
use crate::plan::Plan;
use crate::progress::{Display, ProgressUi};
use crate::results::write_sweep_results;
use crate::scheduler::{SchedState, Scheduler};
use crate::sweep_dir;

pub struct SweepOptions {
    pub out: PathBuf,
    pub resume: bool,
    /// One worker per entry (`cpu`, `cuda:0`, ...).
    pub devices: Vec<String>,
    /// torch threads per job.
    pub threads: Option<usize>,
    pub runner: Arc<dyn JobRunner>,
    pub display: Display,
    /// (file name, text) of the config the plan came from, kept in the sweep directory.
    pub source: Option<(String, String)>,
    /// Accept remote worker hosts (`storm worker --connect`).
    pub cluster: Option<ClusterOptions>,
}

pub struct SweepOutcome {
    pub dir: PathBuf,
    pub rows: Vec<JobRow>,
    pub stats: Stats,
    pub interrupted: bool,
    /// Tables and charts written (results.csv, results.md, jobs.csv, PNGs).
    pub files: Vec<PathBuf>,
}

impl SweepOutcome {
    pub fn failed(&self) -> Vec<&JobRow> {
        self.rows.iter().filter(|r| r.state == "failed").collect()
    }
    pub fn unfinished(&self) -> Vec<&JobRow> {
        self.rows.iter().filter(|r| r.state == "pending").collect()
    }
}

/// Runs (or resumes) a sweep and writes its tables.
pub fn run_sweep(plan: &Plan, opts: SweepOptions) -> Result<SweepOutcome> {
    if opts.devices.is_empty() && opts.cluster.is_none() {
        return Err(Error::Sweep("a sweep needs at least one worker".into()));
    }
    let source = opts.source.as_ref().map(|(n, t)| (n.as_str(), t.as_str()));
    // held until this session ends: a second coordinator on the same directory fails at once
    let (dir, _lock) = sweep_dir::open(&opts.out, plan, opts.resume, source)?;
    let mut cluster = opts.cluster.clone();
    if let Some(c) = &mut cluster {
        let how = c.settle_cookie(&dir)?;
        eprintln!(
            "workers join with: storm worker --connect {} {how} [--workers cpu:N | --devices cuda:0,…]",
            c.listen
        );
    }
    let data = sweep_dir::prepare_data(&dir, plan, opts.display == Display::Bars)?;
    let specs = sweep_dir::job_specs(&dir, plan, &data)?;
    let (ledger, events) = Ledger::open(&dir)?;
    let prior = fold(&events);
    let ids: Vec<String> = plan.jobs.iter().map(|j| j.id.clone()).collect();
    let has_result = |id: &str| {
        specs
            .get(id)
            .is_some_and(|s| JobResult::load(&s.result_path()).is_ok())
    };
    let scheduler = Scheduler::new(&ids, &prior, has_result, plan.max_retries);
    let (_, _, done_before, _) = scheduler.counts();
    if done_before > 0 && opts.display != Display::Quiet {
        eprintln!(
            "resuming {}: {done_before} of {} jobs already done",
            dir.display(),
            ids.len()
        );
    }
    let ui = ProgressUi::new(opts.display, ids.len(), done_before);
    let end = run_session(CoordinatorArgsParts {
        specs: specs.clone(),
        scheduler,
        ledger,
        devices: opts.devices.clone(),
        threads: opts.threads,
        runner: opts.runner.clone(),
        ui,
        cluster,
        attempt_deadline: plan.max_attempt_seconds.map(std::time::Duration::from_secs),
    })?;
    if let Some(e) = &end.error {
        return Err(Error::Sweep(format!("the sweep stopped: {e}")));
    }
    let rows = job_rows(plan, &end, &specs);
    let stats = aggregate(&rows)?;
    let files = write_sweep_results(plan, &rows, &stats, &dir)?;
    Ok(SweepOutcome {
        dir,
        rows,
        stats,
        interrupted: end.interrupted,
        files,
    })
}

/// Everything for the coordinator but the completion channel.
struct CoordinatorArgsParts {
    specs: BTreeMap<String, JobSpec>,
    scheduler: Scheduler,
    ledger: Ledger,
    devices: Vec<String>,
    threads: Option<usize>,
    runner: Arc<dyn JobRunner>,
    ui: ProgressUi,
    cluster: Option<ClusterOptions>,
    attempt_deadline: Option<std::time::Duration>,
}

/// Runs the coordinator on its own runtime until it reports the end of the session; Ctrl-C interrupts.
fn run_session(p: CoordinatorArgsParts) -> Result<SessionEnd> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Sweep(format!("cannot start the actor runtime: {e}")))?;
    rt.block_on(async move {
        let node = match &p.cluster {
            Some(c) => {
                let node = crate::cluster::start_node(c).await?;
                eprintln!(
                    "listening for workers on {} (heartbeat timeout {:.1}s)",
                    c.listen,
                    c.heartbeat_timeout.as_secs_f64()
                );
                Some(node)
            }
            None => None,
        };
        let (tx, mut rx) = oneshot::channel();
        let args = CoordinatorArgs {
            specs: p.specs,
            scheduler: p.scheduler,
            ledger: p.ledger,
            devices: p.devices,
            threads: p.threads,
            runner: p.runner,
            ui: p.ui,
            done: tx,
            cluster: p.cluster,
            attempt_deadline: p.attempt_deadline,
        };
        let (coordinator, handle) = Actor::spawn(None, Coordinator, args)
            .await
            .map_err(|e| Error::Sweep(format!("cannot start the coordinator: {e}")))?;
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut interrupted = false;
        let end = loop {
            tokio::select! {
                end = &mut rx => break end,
                _ = &mut ctrl_c, if !interrupted => {
                    interrupted = true;
                    eprintln!("interrupted: stopping the workers (unfinished jobs rerun on --resume)");
                    let _ = coordinator.send_message(CoordinatorMsg::Interrupt);
                }
            }
        };
        let _ = handle.await;
        if let Some(node) = node {
            // let the Shutdown messages to remote workers leave before the connections close
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
            node.stop(None);
        }
        end.map_err(|_| Error::Sweep("the coordinator stopped without a report".into()))
    })
}

/// One row per planned job, with its result where it has one.
fn job_rows(plan: &Plan, end: &SessionEnd, specs: &BTreeMap<String, JobSpec>) -> Vec<JobRow> {
    let by_id: BTreeMap<&str, _> = end.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    plan.jobs
        .iter()
        .map(|job| {
            let sched = by_id.get(job.id.as_str());
            let result = specs
                .get(&job.id)
                .and_then(|s| JobResult::load(&s.result_path()).ok());
            let (state, error) = match sched.map(|s| &s.state) {
                Some(SchedState::Done) => ("done", None),
                Some(SchedState::Failed(e)) => ("failed", Some(e.clone())),
                _ => ("pending", None),
            };
            let done = state == "done";
            JobRow {
                id: job.id.clone(),
                config: job.config_label(&plan.keys),
                labels: job.labels.clone(),
                seed: job.seed,
                state: state.into(),
                attempts: sched.map_or(0, |s| s.attempts),
                seconds: result.as_ref().filter(|_| done).map(|r| r.seconds),
                error,
                metrics: result
                    .filter(|_| done)
                    .map(|r| r.metrics)
                    .unwrap_or_default(),
            }
        })
        .collect()
}

/// A sweep's job directory (for reports that read a job's run files).
pub fn job_dir(sweep: &Path, id: &str) -> PathBuf {
    sweep.join(sweep_dir::JOBS_DIR).join(id)
}
