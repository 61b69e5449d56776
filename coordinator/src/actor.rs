//! The coordinator actor: spawns and supervises one worker actor per device slot, hands pending jobs to idle
//! workers (decisions from [`Scheduler`]), records every state change in the [`Ledger`] before acting on
//! it, retries failures, replaces workers that die, and reports the end of the session.
//!
//! It talks to workers only through [`WorkerMsg`] (out) and [`WorkerEvent`] (in). Remote workers (worker
//! actors of `storm worker --connect` hosts, reached through ractor_cluster) join with a
//! [`JoinRequest`], are pinged every heartbeat interval, and are declared lost — their job rescheduled —
//! when they stop answering for the heartbeat timeout. Local workers are linked instead: their death is a
//! supervision event.
//!
//! This file holds the messages and the actor; `slots` the one record of every worker, `session` what each
//! message does and the settle step run after each.

mod session;
mod slots;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use storm_worker::protocol::LinkKey;
use storm_worker::protocol::COORDINATOR_GROUP;
use storm_worker::wire::{from_wire, to_wire};
use storm_worker::{JobRunner, JobSpec, JoinRequest, ToCoordinator, WorkerEvent};
use tokio::sync::oneshot;

use crate::cluster::ClusterOptions;
use crate::ledger::Ledger;
use crate::progress::ProgressUi;
use crate::scheduler::{SchedJob, Scheduler};
pub use session::CoordinatorState;
use session::Ending;

/// How many times a join is tried again while the process groups of its workers have not reached this node
/// yet (ractor_cluster synchronises them shortly after the host connects).
pub const JOIN_TRIES: u32 = 20;

/// The wait between two tries of a join: a host's workers have `JOIN_TRIES × JOIN_RETRY_DELAY` (2 s) to
/// become visible before they are ignored.
pub const JOIN_RETRY_DELAY: Duration = Duration::from_millis(100);

/// Replacement workers a session may start per local device; after that, dead workers are not replaced
/// (a worker that keeps dying must not loop forever).
pub const RESPAWNS_PER_DEVICE: usize = 2;

pub enum CoordinatorMsg {
    /// An event of a worker of this process.
    Worker(WorkerEvent),
    /// An event from another node, with the key of the host it claims to come from; it counts only if the
    /// worker it names belongs to the host with that key.
    Remote { key: LinkKey, event: WorkerEvent },
    /// A remote worker host offers its workers.
    Join(JoinRequest),
    /// A join whose workers' process groups had not reached this node yet, tried again.
    JoinRetry {
        request: JoinRequest,
        tries_left: u32,
    },
    /// Time to ping remote workers and give up on silent ones.
    Heartbeat,
    /// Ctrl-C: stop every worker (killing their jobs) and end the session; unfinished jobs stay as they
    /// are in the ledger and run again on `--resume`.
    Interrupt,
    /// Start a replacement worker on this device (sent to itself after a worker died).
    Respawn(String),
    /// `max_attempt_seconds` after `attempt` of `job` was sent (sent to itself).
    AttemptDeadline { job: String, attempt: u32 },
}

impl From<WorkerEvent> for CoordinatorMsg {
    fn from(e: WorkerEvent) -> Self {
        CoordinatorMsg::Worker(e)
    }
}

impl TryFrom<CoordinatorMsg> for WorkerEvent {
    type Error = ();
    fn try_from(m: CoordinatorMsg) -> Result<Self, ()> {
        match m {
            CoordinatorMsg::Worker(e) => Ok(e),
            _ => Err(()),
        }
    }
}

/// Remote hosts send [`ToCoordinator`]; the same JSON decodes here. The other variants are local only.
impl ractor::Message for CoordinatorMsg {
    fn serializable() -> bool {
        true
    }
    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        match self {
            CoordinatorMsg::Remote { key, event } => to_wire(&ToCoordinator::Worker { key, event }),
            CoordinatorMsg::Join(j) => to_wire(&ToCoordinator::Join(j)),
            _ => Err(BoxedDowncastErr),
        }
    }
    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match from_wire::<ToCoordinator>(msg)? {
            ToCoordinator::Worker { key, event } => CoordinatorMsg::Remote { key, event },
            ToCoordinator::Join(j) => CoordinatorMsg::Join(j),
        })
    }
}

/// How a session ended.
#[derive(Debug)]
pub struct SessionEnd {
    pub jobs: Vec<SchedJob>,
    pub interrupted: bool,
    /// The session could not go on (ledger unwritable, no worker left).
    pub error: Option<String>,
}

pub struct CoordinatorArgs {
    /// Job templates by id (attempt, device and threads are filled in per attempt).
    pub specs: BTreeMap<String, JobSpec>,
    pub scheduler: Scheduler,
    pub ledger: Ledger,
    /// One worker per entry.
    pub devices: Vec<String>,
    pub threads: Option<usize>,
    pub runner: Arc<dyn JobRunner>,
    pub ui: ProgressUi,
    pub done: oneshot::Sender<SessionEnd>,
    /// Set when remote worker hosts may join (`--listen`).
    pub cluster: Option<ClusterOptions>,
    /// `max_attempt_seconds`: an attempt still running this long after it was sent is cancelled and
    /// counted as failed.
    pub attempt_deadline: Option<Duration>,
}

pub struct Coordinator;

impl Actor for Coordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let devices = args.devices.clone();
        if let Some(c) = &args.cluster {
            ractor::pg::join(COORDINATOR_GROUP.to_string(), vec![myself.get_cell()]);
            myself.send_interval(c.heartbeat_interval(), || CoordinatorMsg::Heartbeat);
        }
        let mut st = CoordinatorState::new(args);
        for device in &devices {
            st.spawn_worker(&myself, device).await?;
        }
        Ok(st)
    }

    async fn post_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        st: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        st.settle(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        msg: CoordinatorMsg,
        st: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordinatorMsg::Respawn(device) => st.respawn(&myself, &device).await,
            CoordinatorMsg::Worker(ev) => st.on_event(ev),
            CoordinatorMsg::Remote { key, event } => st.on_remote_event(&key, event),
            CoordinatorMsg::Join(request) => st.join(&myself, request, JOIN_TRIES),
            CoordinatorMsg::JoinRetry {
                request,
                tries_left,
            } => st.join(&myself, request, tries_left),
            CoordinatorMsg::Heartbeat => {
                if st.running() {
                    st.ping(&myself);
                }
            }
            CoordinatorMsg::Interrupt => st.end(Ending::interrupted()),
            CoordinatorMsg::AttemptDeadline { job, attempt } => st.on_deadline(&job, attempt),
        }
        st.settle(&myself);
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        evt: SupervisionEvent,
        st: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match evt {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                format!(
                    "stopped{}",
                    reason.map_or(String::new(), |r| format!(": {r}"))
                ),
            ),
            _ => return Ok(()),
        };
        st.on_worker_down(&myself, &cell, &why);
        st.settle(&myself);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::fold;
    use crate::ledger::Change;
    use crate::progress::Display;
    use crate::scheduler::SchedState;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
    use storm_worker::JobOutcome;
    use storm_worker::{FnRunner, JobResult, RunContext};

    fn specs(dir: &std::path::Path, ids: &[&str]) -> BTreeMap<String, JobSpec> {
        ids.iter()
            .map(|id| {
                (
                    id.to_string(),
                    JobSpec {
                        id: id.to_string(),
                        attempt: 0,
                        device: String::new(),
                        threads: None,
                        job_dir: dir.join(id),
                        data: dir.join("data"),
                        max_steps: None,
                        batch_size: 1,
                        steps: vec![],
                    },
                )
            })
            .collect()
    }

    /// First attempts block until cancelled; later attempts succeed at once.
    fn blocking_first_attempts(started: Arc<AtomicUsize>) -> Arc<dyn JobRunner> {
        Arc::new(FnRunner(move |spec: &JobSpec, ctx: &RunContext| {
            if spec.attempt == 1 {
                started.fetch_add(1, Ordering::SeqCst);
                while !ctx.cancel.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return JobOutcome::Cancelled;
            }
            JobOutcome::Done(JobResult {
                job: spec.id.clone(),
                attempt: spec.attempt,
                seconds: 0.0,
                metrics: BTreeMap::new(),
            })
        }))
    }

    /// Every attempt blocks until cancelled.
    fn blocking_attempts() -> Arc<dyn JobRunner> {
        Arc::new(FnRunner(|_: &JobSpec, ctx: &RunContext| {
            while !ctx.cancel.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            JobOutcome::Cancelled
        }))
    }

    async fn start(
        dir: &std::path::Path,
        ids: &[&str],
        runner: Arc<dyn JobRunner>,
    ) -> (ActorRef<CoordinatorMsg>, oneshot::Receiver<SessionEnd>) {
        start_with_retries(dir, ids, runner, 2, None).await
    }

    /// Two cpu workers.
    async fn start_with_retries(
        dir: &std::path::Path,
        ids: &[&str],
        runner: Arc<dyn JobRunner>,
        max_retries: u32,
        attempt_deadline: Option<Duration>,
    ) -> (ActorRef<CoordinatorMsg>, oneshot::Receiver<SessionEnd>) {
        let (ledger, _) = Ledger::open(dir).unwrap();
        let names: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let (tx, rx) = oneshot::channel();
        let args = CoordinatorArgs {
            specs: specs(dir, ids),
            scheduler: Scheduler::new(&names, &BTreeMap::new(), |_| true, max_retries),
            ledger,
            devices: vec!["cpu".into(), "cpu".into()],
            threads: None,
            runner,
            ui: ProgressUi::new(Display::Quiet, ids.len(), 0),
            done: tx,
            cluster: None,
            attempt_deadline,
        };
        let (actor, _) = Actor::spawn(None, Coordinator, args).await.unwrap();
        (actor, rx)
    }

    async fn until(cond: impl Fn() -> bool) {
        for _ in 0..1000 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not reached");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_workers_are_replaced_and_their_jobs_retried() {
        let dir = tempfile::tempdir().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let (coordinator, rx) = start(
            dir.path(),
            &["a", "b"],
            blocking_first_attempts(started.clone()),
        )
        .await;
        until(|| started.load(Ordering::SeqCst) == 2).await;
        for worker in coordinator.get_children() {
            worker.kill();
        }
        let end = rx.await.unwrap();
        assert!(!end.interrupted && end.error.is_none(), "{end:?}");
        for job in &end.jobs {
            assert_eq!(job.state, SchedState::Done, "{job:?}");
            assert_eq!(job.attempts, 2);
        }
        let (_, events) = Ledger::open(dir.path()).unwrap();
        let retries: Vec<&crate::ledger::Event> = events
            .iter()
            .filter(|e| matches!(&e.change, Change::Retry { error, .. } if error.contains("stopped: killed")))
            .collect();
        assert_eq!(retries.len(), 2, "{events:?}");
        let workers: Vec<String> = events
            .iter()
            .filter_map(|e| match &e.change {
                Change::Running {
                    worker, attempt: 2, ..
                } => Some(worker.clone()),
                _ => None,
            })
            .collect();
        assert!(
            workers.iter().all(|w| w == "w2" || w == "w3"),
            "retries ran on the replacement workers: {workers:?}"
        );
        assert!(fold(&events)
            .values()
            .all(|r| r.state == crate::ledger::JobState::Done));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_interrupt_cancels_running_jobs_and_leaves_them_for_resume() {
        let dir = tempfile::tempdir().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let (coordinator, rx) = start(
            dir.path(),
            &["a", "b", "c"],
            blocking_first_attempts(started.clone()),
        )
        .await;
        until(|| started.load(Ordering::SeqCst) == 2).await;
        coordinator.send_message(CoordinatorMsg::Interrupt).unwrap();
        let end = rx.await.unwrap();
        assert!(end.interrupted);
        assert!(end.jobs.iter().all(|j| j.state != SchedState::Done));
        let (_, events) = Ledger::open(dir.path()).unwrap();
        let jobs = fold(&events);
        assert_eq!(jobs.len(), 2, "c never started");
        assert!(jobs
            .values()
            .all(|r| r.state == crate::ledger::JobState::Running));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn workers_that_keep_dying_end_the_session_once_no_replacement_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let (coordinator, mut rx) =
            start_with_retries(dir.path(), &["a"], blocking_attempts(), 100, None).await;
        let mut end = None;
        for _ in 0..1000 {
            for worker in coordinator.get_children() {
                worker.kill();
            }
            if let Ok(e) = tokio::time::timeout(Duration::from_millis(10), &mut rx).await {
                end = Some(e.unwrap());
                break;
            }
        }
        let end = end.expect("the session ended");
        assert!(!end.interrupted);
        assert_eq!(
            end.error.as_deref(),
            Some("every worker died and no replacement is left")
        );
        let (_, events) = Ledger::open(dir.path()).unwrap();
        let max_worker = events
            .iter()
            .filter_map(|e| match &e.change {
                Change::Running { worker, .. } => worker[1..].parse::<usize>().ok(),
                _ => None,
            })
            .max();
        assert!(
            max_worker.is_some_and(|w| w < 2 + 2 * RESPAWNS_PER_DEVICE),
            "two workers and two replacements per device at most: {events:?}"
        );
    }

    /// An event that arrives from another node counts only if it carries the key of the host that owns
    /// the worker it names; local workers have no key, so a forged `Finished` for one (a peer holding the
    /// cookie claiming w0's job is done) changes nothing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forged_events_from_other_nodes_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let (coordinator, rx) = start(
            dir.path(),
            &["a", "b"],
            blocking_first_attempts(started.clone()),
        )
        .await;
        until(|| started.load(Ordering::SeqCst) == 2).await;
        for key in ["", "a-guessed-key"] {
            for (worker, job) in [("w0", "a"), ("w1", "b"), ("w0", "b"), ("w1", "a")] {
                let forged = WorkerEvent::Finished {
                    worker: worker.into(),
                    job: job.into(),
                    attempt: 1,
                    outcome: JobOutcome::Done(JobResult {
                        job: job.into(),
                        attempt: 1,
                        seconds: 0.0,
                        metrics: BTreeMap::new(),
                    }),
                };
                coordinator
                    .send_message(CoordinatorMsg::Remote {
                        key: key.into(),
                        event: forged,
                    })
                    .unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        coordinator.send_message(CoordinatorMsg::Interrupt).unwrap();
        let end = rx.await.unwrap();
        assert!(
            end.jobs.iter().all(|j| j.state != SchedState::Done),
            "{end:?}"
        );
        let (_, events) = Ledger::open(dir.path()).unwrap();
        assert!(
            fold(&events)
                .values()
                .all(|r| r.state == crate::ledger::JobState::Running),
            "{events:?}"
        );
    }

    /// An attempt that runs past `max_attempt_seconds` (a hung host that still answers pings) is cancelled,
    /// counted as a failed attempt, and retried; the retry finishes the job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_attempt_past_its_deadline_is_cancelled_and_retried() {
        let dir = tempfile::tempdir().unwrap();
        let started = Arc::new(AtomicUsize::new(0));
        let (_coordinator, rx) = start_with_retries(
            dir.path(),
            &["a"],
            blocking_first_attempts(started.clone()),
            2,
            Some(Duration::from_millis(300)),
        )
        .await;
        let end = rx.await.unwrap();
        assert!(!end.interrupted && end.error.is_none(), "{end:?}");
        assert_eq!(end.jobs[0].state, SchedState::Done, "{end:?}");
        assert_eq!(end.jobs[0].attempts, 2);
        let (_, events) = Ledger::open(dir.path()).unwrap();
        assert!(
            events.iter().any(|e| matches!(&e.change,
                Change::Retry { attempt: 1, error } if error.contains("max_attempt_seconds"))),
            "{events:?}"
        );
    }
}
