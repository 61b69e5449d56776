//! The worker actor: binds one device and runs one job at a time. The actor only forwards messages; the
//! job itself runs on a dedicated OS thread owned by the worker (long synchronous work stays off the
//! mailbox), which hands each attempt to a [`JobRunner`] and sends `Started`, `Progress` and `Finished`
//! events to the coordinator. A failing or panicking job becomes a `Finished` event with a failed outcome;
//! the worker itself stays up.

use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef, DerivedActorRef};

use crate::host::HostLink;
use crate::protocol::{worker_group, JobOutcome, JobSpec, WorkerEvent, WorkerId, WorkerMsg};
use crate::runner::{JobRunner, RunContext};

pub struct Worker;

pub struct WorkerArgs {
    pub id: WorkerId,
    /// `cpu` or `cuda:N`, passed to every job as `--device`.
    pub device: String,
    /// torch threads per job (None: torch's default).
    pub threads: Option<usize>,
    pub runner: Arc<dyn JobRunner>,
    /// Where events go (the coordinator).
    pub events: DerivedActorRef<WorkerEvent>,
    /// Set for a worker on a remote host: its process group and the host's view of the coordinator.
    pub host: Option<Arc<HostLink>>,
    /// Jobs must live inside this directory (the sweep directory); any other spec is refused.
    pub root: PathBuf,
}

pub struct WorkerState {
    id: WorkerId,
    device: String,
    threads: Option<usize>,
    jobs: Option<mpsc::Sender<JobSpec>>,
    busy: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    events: DerivedActorRef<WorkerEvent>,
    host: Option<Arc<HostLink>>,
    /// Canonical form of [`WorkerArgs::root`].
    root: PathBuf,
}

impl Drop for WorkerState {
    /// However the actor ends (stopped, killed, failed), its running job is cancelled: its child is killed
    /// within one poll, so a retry elsewhere never races an attempt that is still running.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::SeqCst);
    }
}

/// The worker's thread: runs the attempts it receives, one after another, until the actor stops.
fn job_thread(
    id: WorkerId,
    runner: Arc<dyn JobRunner>,
    jobs: mpsc::Receiver<JobSpec>,
    busy: Arc<AtomicBool>,
    cancel: Arc<AtomicBool>,
    events: DerivedActorRef<WorkerEvent>,
) {
    for spec in jobs {
        let _ = events.send_message(WorkerEvent::Started {
            worker: id.clone(),
            job: spec.id.clone(),
            attempt: spec.attempt,
        });
        let progress = |p: crate::protocol::Progress| {
            let _ = events.send_message(WorkerEvent::Progress {
                worker: id.clone(),
                job: spec.id.clone(),
                attempt: spec.attempt,
                progress: p,
            });
        };
        let ctx = RunContext {
            progress: &progress,
            cancel: &cancel,
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runner.run(&spec, &ctx)))
            .unwrap_or_else(|panic| JobOutcome::Failed {
                error: format!(
                    "worker {id} panicked while running the job: {}",
                    panic_message(&panic)
                ),
            });
        busy.store(false, Ordering::SeqCst);
        let _ = events.send_message(WorkerEvent::Finished {
            worker: id.clone(),
            job: spec.id.clone(),
            attempt: spec.attempt,
            outcome,
        });
    }
}

/// A spec's job and data directories, both inside the worker's root.
fn confined(spec: &JobSpec, root: &Path) -> Result<(), String> {
    crate::confine::check_inside(root, "job directory", &spec.job_dir)?;
    crate::confine::check_inside(root, "data directory", &spec.data)
}

pub fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".into()
    }
}

impl Actor for Worker {
    type Msg = WorkerMsg;
    type State = WorkerState;
    type Arguments = WorkerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<WorkerMsg>,
        args: WorkerArgs,
    ) -> Result<WorkerState, ActorProcessingErr> {
        let root = crate::confine::canonical_root(&args.root)?;
        if args.host.is_some() {
            ractor::pg::join(worker_group(&args.id), vec![myself.get_cell()]);
        }
        let (tx, rx) = mpsc::channel();
        let busy = Arc::new(AtomicBool::new(false));
        let cancel = Arc::new(AtomicBool::new(false));
        let (id, runner, b, c, ev) = (
            args.id.clone(),
            args.runner,
            busy.clone(),
            cancel.clone(),
            args.events.clone(),
        );
        std::thread::Builder::new()
            .name(format!("storm-worker-{}", args.id))
            .spawn(move || job_thread(id, runner, rx, b, c, ev))
            .map_err(|e| format!("worker {}: cannot start its thread: {e}", args.id))?;
        Ok(WorkerState {
            id: args.id,
            device: args.device,
            threads: args.threads,
            jobs: Some(tx),
            busy,
            cancel,
            events: args.events,
            host: args.host,
            root,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<WorkerMsg>,
        msg: WorkerMsg,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            WorkerMsg::Run(mut spec) => {
                if let Err(error) = confined(&spec, &state.root) {
                    tracing::warn!(worker = %state.id, job = %spec.id, "{error}");
                    let _ = state.events.send_message(WorkerEvent::Finished {
                        worker: state.id.clone(),
                        job: spec.id.clone(),
                        attempt: spec.attempt,
                        outcome: JobOutcome::Failed { error },
                    });
                    return Ok(());
                }
                if state.busy.swap(true, Ordering::SeqCst) {
                    let _ = state.events.send_message(WorkerEvent::Finished {
                        worker: state.id.clone(),
                        job: spec.id.clone(),
                        attempt: spec.attempt,
                        outcome: JobOutcome::Failed {
                            error: format!("worker {} is busy", state.id),
                        },
                    });
                    return Ok(());
                }
                spec.device = state.device.clone();
                spec.threads = state.threads;
                state.cancel.store(false, Ordering::SeqCst);
                let sent = state.jobs.as_ref().is_some_and(|tx| tx.send(spec).is_ok());
                if !sent {
                    return Err(format!("worker {}: its job thread is gone", state.id).into());
                }
            }
            WorkerMsg::Cancel => state.cancel.store(true, Ordering::SeqCst),
            WorkerMsg::Ping { timeout_ms } => {
                if let Some(host) = &state.host {
                    host.heard_from_coordinator(timeout_ms);
                }
                let _ = state.events.send_message(WorkerEvent::Alive {
                    worker: state.id.clone(),
                });
            }
            WorkerMsg::Shutdown { reason } => {
                if let (Some(host), Some(reason)) = (&state.host, reason) {
                    host.refused(&state.id, &reason);
                }
                myself.stop(None);
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<WorkerMsg>,
        state: &mut WorkerState,
    ) -> Result<(), ActorProcessingErr> {
        // the running child (if any) is killed within one poll; the thread ends when the channel closes
        state.cancel.store(true, Ordering::SeqCst);
        state.jobs = None;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while state.busy.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::JobResult;
    use crate::runner::FnRunner;
    use std::collections::BTreeMap;
    use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

    /// Collects worker events for the test.
    struct Sink;
    enum SinkMsg {
        Event(WorkerEvent),
    }
    impl ractor::Message for SinkMsg {}
    impl From<WorkerEvent> for SinkMsg {
        fn from(e: WorkerEvent) -> Self {
            SinkMsg::Event(e)
        }
    }
    impl TryFrom<SinkMsg> for WorkerEvent {
        type Error = ();
        fn try_from(m: SinkMsg) -> Result<Self, ()> {
            let SinkMsg::Event(e) = m;
            Ok(e)
        }
    }
    impl Actor for Sink {
        type Msg = SinkMsg;
        type State = UnboundedSender<WorkerEvent>;
        type Arguments = UnboundedSender<WorkerEvent>;
        async fn pre_start(
            &self,
            _: ActorRef<SinkMsg>,
            tx: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(tx)
        }
        async fn handle(
            &self,
            _: ActorRef<SinkMsg>,
            SinkMsg::Event(e): SinkMsg,
            tx: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            let _ = tx.send(e);
            Ok(())
        }
    }

    fn spec(id: &str) -> JobSpec {
        JobSpec {
            id: id.into(),
            attempt: 1,
            device: String::new(),
            threads: None,
            job_dir: "/nonexistent".into(),
            data: "/nonexistent".into(),
            max_steps: None,
            batch_size: 1,
            steps: vec![],
        }
    }

    #[tokio::test]
    async fn a_panicking_job_is_reported_and_the_worker_keeps_working() {
        let (tx, mut rx) = unbounded_channel();
        let (sink, _) = Actor::spawn(None, Sink, tx).await.unwrap();
        let runner = FnRunner(|spec: &JobSpec, _: &RunContext| {
            if spec.id == "bad" {
                panic!("injected");
            }
            assert_eq!(spec.device, "cuda:3", "the worker fills in its device");
            JobOutcome::Done(JobResult {
                job: spec.id.clone(),
                attempt: spec.attempt,
                seconds: 0.0,
                metrics: BTreeMap::new(),
            })
        });
        let (worker, _) = Actor::spawn(
            None,
            Worker,
            WorkerArgs {
                id: "w0".into(),
                device: "cuda:3".into(),
                threads: None,
                runner: Arc::new(runner),
                events: sink.get_derived(),
                host: None,
                root: "/".into(),
            },
        )
        .await
        .unwrap();
        let mut finished = Vec::new();
        for id in ["bad", "good"] {
            worker.send_message(WorkerMsg::Run(spec(id))).unwrap();
            loop {
                match rx.recv().await.unwrap() {
                    WorkerEvent::Finished { job, outcome, .. } => {
                        finished.push((job, outcome));
                        break;
                    }
                    WorkerEvent::Started { job, .. } => assert_eq!(job, id),
                    WorkerEvent::Progress { .. } | WorkerEvent::Alive { .. } => {}
                }
            }
        }
        assert!(
            matches!(&finished[0].1, JobOutcome::Failed { error } if error.contains("panicked") && error.contains("injected")),
            "{:?}",
            finished[0]
        );
        assert!(
            matches!(finished[1].1, JobOutcome::Done(_)),
            "{:?}",
            finished[1]
        );
        worker.stop(None);
        sink.stop(None);
    }

    #[tokio::test]
    async fn a_spec_outside_the_root_is_refused_and_never_run() {
        let (tx, mut rx) = unbounded_channel();
        let (sink, _) = Actor::spawn(None, Sink, tx).await.unwrap();
        let root = tempfile::tempdir().unwrap();
        let runner = FnRunner(|spec: &JobSpec, _: &RunContext| {
            panic!("job {} ran although it lies outside the root", spec.id)
        });
        let (worker, _) = Actor::spawn(
            None,
            Worker,
            WorkerArgs {
                id: "w0".into(),
                device: "cpu".into(),
                threads: None,
                runner: Arc::new(runner),
                events: sink.get_derived(),
                host: None,
                root: root.path().to_path_buf(),
            },
        )
        .await
        .unwrap();
        let mut inside_data = spec("escape-data");
        inside_data.job_dir = root.path().join("jobs/escape-data");
        for forged in [spec("escape"), inside_data] {
            worker.send_message(WorkerMsg::Run(forged.clone())).unwrap();
            match rx.recv().await.unwrap() {
                WorkerEvent::Finished {
                    job,
                    outcome: JobOutcome::Failed { error },
                    ..
                } => {
                    assert_eq!(job, forged.id);
                    assert!(
                        error.starts_with("refused:") && error.contains("/nonexistent"),
                        "{error}"
                    );
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        worker.stop(None);
        sink.stop(None);
    }
}
