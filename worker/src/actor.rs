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
use crate::protocol::{
    worker_group, JobOutcome, JobSpec, LinkKey, ToCoordinator, WorkerEvent, WorkerId, WorkerMsg,
};
use crate::runner::{JobRunner, RunContext};

pub struct Worker;

/// Where a worker's events go.
#[derive(Clone)]
pub enum Events {
    /// The coordinator of this process.
    Local(DerivedActorRef<WorkerEvent>),
    /// A coordinator on another node: every event carries this host's key.
    Remote {
        coordinator: ActorRef<ToCoordinator>,
        key: LinkKey,
    },
}

impl Events {
    /// Sends `event`; a coordinator that is gone is the session's end, noticed elsewhere.
    pub fn send(&self, event: WorkerEvent) {
        let sent = match self {
            Events::Local(to) => to.send_message(event).map_err(|e| e.to_string()),
            Events::Remote { coordinator, key } => coordinator
                .send_message(ToCoordinator::Worker {
                    key: key.clone(),
                    event,
                })
                .map_err(|e| e.to_string()),
        };
        if let Err(e) = sent {
            tracing::debug!("a worker event was not delivered: {e}");
        }
    }
}

pub struct WorkerArgs {
    pub id: WorkerId,
    /// `cpu` or `cuda:N`, passed to every job as `--device`.
    pub device: String,
    /// torch threads per job (None: torch's default).
    pub threads: Option<usize>,
    pub runner: Arc<dyn JobRunner>,
    /// Where events go (the coordinator).
    pub events: Events,
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
    events: Events,
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
    events: Events,
) {
    for spec in jobs {
        events.send(WorkerEvent::Started {
            worker: id.clone(),
            job: spec.id.clone(),
            attempt: spec.attempt,
        });
        let progress = |p: crate::protocol::Progress| {
            events.send(WorkerEvent::Progress {
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
        events.send(WorkerEvent::Finished {
            worker: id.clone(),
            job: spec.id.clone(),
            attempt: spec.attempt,
            outcome,
        });
    }
}

impl WorkerState {
    /// Drops a message that is not from this worker's coordinator, and says so to it.
    fn refuse(&self, why: &str) {
        tracing::warn!(worker = %self.id, "refused a message: {why}");
        self.events.send(WorkerEvent::ProtocolError {
            worker: self.id.clone(),
            why: why.to_string(),
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
        let msg = match msg {
            WorkerMsg::Keyed { key, msg } => match &state.host {
                Some(host) if host.key() == key && !msg.is_envelope() => *msg,
                Some(_) => {
                    state.refuse(
                        "a message whose key is not this host's (not from its coordinator)",
                    );
                    return Ok(());
                }
                None => {
                    state.refuse(
                        "a message from another node (this worker takes orders only from the \
                         coordinator of its own process)",
                    );
                    return Ok(());
                }
            },
            WorkerMsg::Undecodable { why } => {
                state.refuse(&why);
                return Ok(());
            }
            msg => msg,
        };
        match msg {
            WorkerMsg::Run(mut spec) => {
                if let Err(error) = confined(&spec, &state.root) {
                    tracing::warn!(worker = %state.id, job = %spec.id, "{error}");
                    state.events.send(WorkerEvent::Finished {
                        worker: state.id.clone(),
                        job: spec.id.clone(),
                        attempt: spec.attempt,
                        outcome: JobOutcome::Failed { error },
                    });
                    return Ok(());
                }
                if state.busy.swap(true, Ordering::SeqCst) {
                    state.events.send(WorkerEvent::Finished {
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
                state.events.send(WorkerEvent::Alive {
                    worker: state.id.clone(),
                });
            }
            WorkerMsg::Shutdown { reason } => {
                if let (Some(host), Some(reason)) = (&state.host, reason) {
                    host.refused(&state.id, &reason);
                }
                myself.stop(None);
            }
            WorkerMsg::Keyed { .. } | WorkerMsg::Undecodable { .. } => {
                unreachable!("envelopes are opened above")
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
                events: Events::Local(sink.get_derived()),
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
                    WorkerEvent::ProtocolError { why, .. } => panic!("{why}"),
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
                events: Events::Local(sink.get_derived()),
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

    /// Before, any node holding the cluster cookie could send `Run` to any worker it could address; now a
    /// worker runs only what its coordinator sends: in-process messages for a local worker, messages with
    /// its host's key for a remote one. Everything else is refused and reported.
    #[tokio::test]
    async fn messages_not_from_the_coordinator_are_refused_and_reported() {
        let ran = Arc::new(std::sync::Mutex::new(Vec::new()));
        let root = tempfile::tempdir().unwrap();
        let inside = |id: &str| {
            let mut s = spec(id);
            s.job_dir = root.path().join(id);
            s.data = root.path().join("data");
            s
        };
        let keyed = |key: &str, msg| WorkerMsg::Keyed {
            key: key.into(),
            msg: Box::new(msg),
        };
        for host_key in [None, Some("right")] {
            let (tx, mut rx) = unbounded_channel();
            let (sink, _) = Actor::spawn(None, Sink, tx).await.unwrap();
            let log = ran.clone();
            let runner = FnRunner(move |spec: &JobSpec, _: &RunContext| {
                log.lock().unwrap().push(spec.id.clone());
                JobOutcome::Cancelled
            });
            let (worker, _) = Actor::spawn(
                None,
                Worker,
                WorkerArgs {
                    id: format!("w-{host_key:?}"),
                    device: "cpu".into(),
                    threads: None,
                    runner: Arc::new(runner),
                    events: Events::Local(sink.get_derived()),
                    host: host_key.map(|k| Arc::new(HostLink::new(k.into()))),
                    root: root.path().to_path_buf(),
                },
            )
            .await
            .unwrap();
            let forged = [
                keyed("wrong", WorkerMsg::Run(inside("forged-key"))),
                keyed(
                    "right",
                    keyed("right", WorkerMsg::Run(inside("nested-envelope"))),
                ),
                WorkerMsg::from_network(Err("a message from another node does not parse".into())),
                WorkerMsg::from_network(Ok(WorkerMsg::Run(inside("unkeyed")))),
            ];
            let local = host_key.is_none();
            // a local worker refuses even the right key: nothing from another node is its coordinator
            let forged = forged
                .into_iter()
                .chain(local.then(|| keyed("right", WorkerMsg::Run(inside("to-a-local-worker")))));
            for msg in forged {
                worker.send_message(msg).unwrap();
                match rx.recv().await.unwrap() {
                    WorkerEvent::ProtocolError { why, .. } => assert!(!why.is_empty()),
                    other => panic!("expected a protocol error, got {other:?}"),
                }
            }
            let genuine = if local {
                WorkerMsg::Run(inside("local"))
            } else {
                keyed("right", WorkerMsg::Run(inside("keyed")))
            };
            worker.send_message(genuine).unwrap();
            assert!(matches!(
                rx.recv().await.unwrap(),
                WorkerEvent::Started { .. }
            ));
            assert!(matches!(
                rx.recv().await.unwrap(),
                WorkerEvent::Finished { .. }
            ));
            worker.stop(None);
            sink.stop(None);
        }
        assert_eq!(*ran.lock().unwrap(), ["local", "keyed"]);
    }
}
