//! The coordinator actor: spawns and supervises one worker actor per device slot, hands pending jobs to idle
//! workers (decisions from [`Scheduler`]), records every state change in the [`Ledger`] before acting on
//! it, retries failures, replaces workers that die, and reports the end of the session.
//!
//! It talks to workers only through [`WorkerMsg`] (out) and [`WorkerEvent`] (in). Remote workers (worker
//! actors of `storm worker --connect` hosts, reached through ractor_cluster) join with a
//! [`JoinRequest`], are pinged every heartbeat interval, and are declared lost — their job rescheduled —
//! when they stop answering for the heartbeat timeout. Local workers are linked instead: their death is a
//! supervision event.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::message::{BoxedDowncastErr, SerializedMessage};
use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use storm_worker::protocol::{COORDINATOR_GROUP, PROTOCOL_VERSION};
use storm_worker::wire::{from_wire, to_wire};
use storm_worker::{
    JobOutcome, JobRunner, JobSpec, JoinRequest, ToCoordinator, Worker, WorkerArgs, WorkerEvent,
    WorkerMsg,
};
use tokio::sync::oneshot;

use crate::cluster::ClusterOptions;
use crate::ledger::{Change, Ledger};
use crate::progress::ProgressUi;
use crate::scheduler::{SchedJob, Scheduler, Verdict};

pub enum CoordinatorMsg {
    Worker(WorkerEvent),
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
            CoordinatorMsg::Worker(e) => to_wire(&ToCoordinator::Worker(e)),
            CoordinatorMsg::Join(j) => to_wire(&ToCoordinator::Join(j)),
            _ => Err(BoxedDowncastErr),
        }
    }
    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        Ok(match from_wire::<ToCoordinator>(msg)? {
            ToCoordinator::Worker(e) => CoordinatorMsg::Worker(e),
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
}

pub struct CoordinatorState {
    specs: BTreeMap<String, JobSpec>,
    sched: Scheduler,
    ledger: Ledger,
    threads: Option<usize>,
    runner: Arc<dyn JobRunner>,
    ui: ProgressUi,
    done: Option<oneshot::Sender<SessionEnd>>,
    workers: BTreeMap<String, (ActorRef<WorkerMsg>, String)>,
    by_actor: HashMap<ActorId, String>,
    next_worker: usize,
    /// Replacement workers still allowed (a worker that keeps dying must not loop forever).
    respawns_left: usize,
    respawns_pending: usize,
    finishing: bool,
    cluster: Option<ClusterOptions>,
    /// Remote workers: when each last answered.
    remote: BTreeMap<String, Instant>,
    /// "Waiting for workers" was said since the pool last became empty.
    said_waiting: bool,
}

pub struct Coordinator;

impl CoordinatorState {
    async fn spawn_worker(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        device: &str,
    ) -> Result<(), ActorProcessingErr> {
        let id = format!("w{}", self.next_worker);
        self.next_worker += 1;
        let (actor, _) = Actor::spawn_linked(
            None,
            Worker,
            WorkerArgs {
                id: id.clone(),
                device: device.to_string(),
                threads: self.threads,
                runner: self.runner.clone(),
                events: myself.get_derived(),
                host: None,
            },
            myself.get_cell(),
        )
        .await
        .map_err(|e| format!("starting worker {id} on {device}: {e}"))?;
        self.by_actor.insert(actor.get_id(), id.clone());
        self.workers.insert(id.clone(), (actor, device.to_string()));
        self.ui.add_worker(&id, device);
        self.sched.add_worker(&id);
        Ok(())
    }

    /// Starts every assignment the scheduler makes; the ledger hears of it first.
    fn dispatch(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        if self.finishing {
            return;
        }
        for a in self.sched.assign() {
            let Some((actor, device)) = self.workers.get(&a.worker).cloned() else {
                continue;
            };
            let Some(mut spec) = self.specs.get(&a.job).cloned() else {
                continue;
            };
            if let Err(e) = self.ledger.append(
                &a.job,
                Change::Running {
                    attempt: a.attempt,
                    worker: a.worker.clone(),
                    device: device.clone(),
                },
            ) {
                return self.finish(myself, false, Some(format!("cannot write the ledger: {e}")));
            }
            self.ui.line(&format!(
                "{} attempt {} → {} ({device})",
                a.job, a.attempt, a.worker
            ));
            spec.attempt = a.attempt;
            if let Err(e) = actor.send_message(WorkerMsg::Run(spec)) {
                self.lose_worker(myself, &a.worker, &format!("unreachable: {e}"));
            }
        }
    }

    fn on_event(&mut self, myself: &ActorRef<CoordinatorMsg>, ev: WorkerEvent) {
        if let Some(seen) = self.remote.get_mut(ev.worker()) {
            *seen = Instant::now();
        }
        match ev {
            WorkerEvent::Alive { .. } => {}
            WorkerEvent::Started {
                worker,
                job,
                attempt,
            } => {
                if self.sched.is_current(&job, &worker, attempt) {
                    self.ui.started(&worker, &job, attempt);
                }
            }
            WorkerEvent::Progress {
                worker,
                job,
                attempt,
                progress,
            } => {
                if self.sched.is_current(&job, &worker, attempt) {
                    self.ui.progress(&worker, &job, &progress);
                }
            }
            WorkerEvent::Finished {
                worker,
                job,
                attempt,
                outcome,
            } => {
                if !self.sched.is_current(&job, &worker, attempt) {
                    tracing::debug!(job, worker, attempt, "stale outcome ignored");
                    return;
                }
                self.ui.idle(&worker);
                match outcome {
                    JobOutcome::Done(result) => {
                        let change = Change::Done {
                            attempt,
                            seconds: result.seconds,
                        };
                        if let Err(e) = self.ledger.append(&job, change) {
                            return self.finish(
                                myself,
                                false,
                                Some(format!("cannot write the ledger: {e}")),
                            );
                        }
                        self.sched.succeeded(&worker);
                        self.ui.line(&format!(
                            "{job} attempt {attempt} done in {:.1}s ({worker})",
                            result.seconds
                        ));
                        self.ui.job_finished(self.sched.counts());
                    }
                    JobOutcome::Failed { error } => {
                        let verdict = self.sched.failed(&worker, &error);
                        self.record_failure(myself, &job, attempt, &worker, &error, verdict);
                    }
                    JobOutcome::Cancelled => self.sched.cancelled(&worker),
                }
                self.dispatch(myself);
                self.check_complete(myself);
            }
        }
    }

    fn record_failure(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        job: &str,
        attempt: u32,
        worker: &str,
        error: &str,
        verdict: Option<Verdict>,
    ) {
        let error = error.to_string();
        let change = match verdict {
            Some(Verdict::Retry) => Change::Retry { attempt, error },
            Some(Verdict::Failed) => Change::Failed { attempt, error },
            None => return,
        };
        if let Err(e) = self.ledger.append(job, change.clone()) {
            return self.finish(myself, false, Some(format!("cannot write the ledger: {e}")));
        }
        match change {
            Change::Retry { error, .. } => self.ui.line(&format!(
                "{job} attempt {attempt} failed on {worker}, will retry: {}",
                storm_worker::headline(&error)
            )),
            Change::Failed { error, .. } => {
                self.ui.line(&format!(
                    "{job} FAILED after attempt {attempt} on {worker}: {}",
                    storm_worker::headline(&error)
                ));
                self.ui.job_finished(self.sched.counts());
            }
            _ => {}
        }
    }

    /// A worker stopped or became unreachable: its attempt fails; a local worker's device gets a
    /// replacement, a remote one is told to stop (in case it is only cut off) and is not replaced.
    fn lose_worker(&mut self, myself: &ActorRef<CoordinatorMsg>, worker: &str, why: &str) {
        let Some((actor, device)) = self.workers.remove(worker) else {
            return;
        };
        self.by_actor.remove(&actor.get_id());
        self.ui.remove_worker(worker);
        let remote = self.remote.remove(worker).is_some();
        if remote {
            let _ = actor.send_message(WorkerMsg::Shutdown {
                reason: Some(format!("the coordinator gave up on it: {why}")),
            });
        } else {
            actor.stop(None);
        }
        let error = format!("worker {worker} ({device}) {why}");
        self.ui.line(&error);
        if let Some((job, attempt, verdict)) = self.sched.remove_worker(worker, &error) {
            self.record_failure(myself, &job, attempt, worker, &error, Some(verdict));
        }
        if !remote && self.respawns_left > 0 {
            self.respawns_left -= 1;
            self.respawns_pending += 1;
            let _ = myself.send_message(CoordinatorMsg::Respawn(device));
        }
    }

    fn check_complete(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        if self.finishing {
            return;
        }
        if self.sched.is_complete() {
            return self.finish(myself, false, None);
        }
        if self.sched.workers() == 0 && self.respawns_pending == 0 {
            match &self.cluster {
                Some(c) if !self.said_waiting => {
                    self.said_waiting = true;
                    self.ui.line(&format!(
                        "waiting for workers: start them with `storm worker --connect {}` (and the \
                         session's cookie)",
                        c.listen
                    ));
                }
                Some(_) => {}
                None => self.finish(
                    myself,
                    false,
                    Some("every worker died and no replacement is left".into()),
                ),
            }
        }
    }

    /// Registers the workers of a remote host once their process groups are visible here.
    fn join(&mut self, myself: &ActorRef<CoordinatorMsg>, request: JoinRequest, tries_left: u32) {
        if self.finishing {
            return;
        }
        let refuse = |st: &Self, cell: ractor::ActorCell, why: &str| {
            let actor: ActorRef<WorkerMsg> = cell.into();
            let _ = actor.send_message(WorkerMsg::Shutdown {
                reason: Some(why.to_string()),
            });
            st.ui
                .line(&format!("refused worker host {}: {why}", request.node));
        };
        let mut found = Vec::new();
        for w in &request.workers {
            let cell = ractor::pg::get_members(&w.group)
                .into_iter()
                .find(|c| !c.get_id().is_local());
            match cell {
                Some(c) => found.push((w.clone(), c)),
                None if tries_left > 0 => {
                    // the timer task runs detached; its handle is not needed
                    drop(myself.send_after(Duration::from_millis(100), move || {
                        CoordinatorMsg::JoinRetry {
                            request,
                            tries_left: tries_left - 1,
                        }
                    }));
                    return;
                }
                None => {
                    self.ui.line(&format!(
                        "worker {} of host {} never became reachable; ignored",
                        w.id, request.node
                    ));
                }
            }
        }
        for (w, cell) in found {
            if request.version != PROTOCOL_VERSION {
                refuse(
                    self,
                    cell,
                    &format!(
                        "it speaks protocol {} and this coordinator {PROTOCOL_VERSION}: run the \
                         same storm build on every host",
                        request.version
                    ),
                );
                continue;
            }
            if self.workers.contains_key(&w.id) {
                refuse(self, cell, &format!("worker id {} is already taken", w.id));
                continue;
            }
            let actor: ActorRef<WorkerMsg> = cell.into();
            self.by_actor.insert(actor.get_id(), w.id.clone());
            self.workers.insert(w.id.clone(), (actor, w.device.clone()));
            self.remote.insert(w.id.clone(), Instant::now());
            self.ui.add_worker(&w.id, &w.device);
            self.sched.add_worker(&w.id);
            self.said_waiting = false;
            self.ui.line(&format!(
                "worker {} ({}) joined from {}",
                w.id, w.device, request.node
            ));
        }
        self.ping(myself);
        self.dispatch(myself);
    }

    /// Pings every remote worker; one silent for longer than the timeout is lost.
    fn ping(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        let Some(timeout) = self.cluster.as_ref().map(|c| c.heartbeat_timeout) else {
            return;
        };
        let silent: Vec<(String, Duration)> = self
            .remote
            .iter()
            .filter(|(_, seen)| seen.elapsed() > timeout)
            .map(|(w, seen)| (w.clone(), seen.elapsed()))
            .collect();
        for (worker, silence) in silent {
            let why = format!(
                "stopped answering (no heartbeat for {:.1}s, timeout {:.1}s)",
                silence.as_secs_f64(),
                timeout.as_secs_f64()
            );
            self.lose_worker(myself, &worker, &why);
        }
        let timeout_ms = timeout.as_millis() as u64;
        let mut unreachable = Vec::new();
        for worker in self.remote.keys() {
            if let Some((actor, _)) = self.workers.get(worker) {
                if actor.send_message(WorkerMsg::Ping { timeout_ms }).is_err() {
                    unreachable.push(worker.clone());
                }
            }
        }
        for worker in unreachable {
            self.lose_worker(myself, &worker, "is unreachable (its node disconnected)");
        }
    }

    fn finish(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        interrupted: bool,
        error: Option<String>,
    ) {
        if self.finishing {
            return;
        }
        self.finishing = true;
        for (id, (actor, _)) in &self.workers {
            if interrupted {
                let _ = actor.send_message(WorkerMsg::Cancel);
            }
            if self.remote.contains_key(id) {
                let _ = actor.send_message(WorkerMsg::Shutdown { reason: None });
            } else {
                actor.stop(None);
            }
        }
        self.ui.finish();
        if let Some(tx) = self.done.take() {
            let _ = tx.send(SessionEnd {
                jobs: self.sched.jobs().to_vec(),
                interrupted,
                error,
            });
        }
        myself.stop(None);
    }
}

impl Actor for Coordinator {
    type Msg = CoordinatorMsg;
    type State = CoordinatorState;
    type Arguments = CoordinatorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        args: CoordinatorArgs,
    ) -> Result<CoordinatorState, ActorProcessingErr> {
        let n = args.devices.len();
        let mut st = CoordinatorState {
            specs: args.specs,
            sched: args.scheduler,
            ledger: args.ledger,
            threads: args.threads,
            runner: args.runner,
            ui: args.ui,
            done: Some(args.done),
            workers: BTreeMap::new(),
            by_actor: HashMap::new(),
            next_worker: 0,
            respawns_left: 2 * n.max(1),
            respawns_pending: 0,
            finishing: false,
            cluster: args.cluster,
            remote: BTreeMap::new(),
            said_waiting: false,
        };
        if let Some(c) = &st.cluster {
            ractor::pg::join(COORDINATOR_GROUP.to_string(), vec![myself.get_cell()]);
            myself.send_interval(c.heartbeat_interval(), || CoordinatorMsg::Heartbeat);
        }
        for device in &args.devices {
            st.spawn_worker(&myself, device).await?;
        }
        Ok(st)
    }

    async fn post_start(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        st: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        st.dispatch(&myself);
        st.check_complete(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        msg: CoordinatorMsg,
        st: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            CoordinatorMsg::Respawn(device) => {
                st.respawns_pending -= 1;
                if !st.finishing {
                    if let Err(e) = st.spawn_worker(&myself, &device).await {
                        st.ui
                            .line(&format!("could not replace a worker on {device}: {e}"));
                    }
                    st.dispatch(&myself);
                    st.check_complete(&myself);
                }
            }
            CoordinatorMsg::Worker(ev) => st.on_event(&myself, ev),
            CoordinatorMsg::Join(request) => {
                st.join(&myself, request, 20);
                st.check_complete(&myself);
            }
            CoordinatorMsg::JoinRetry {
                request,
                tries_left,
            } => {
                st.join(&myself, request, tries_left);
                st.check_complete(&myself);
            }
            CoordinatorMsg::Heartbeat => {
                if !st.finishing {
                    st.ping(&myself);
                    st.dispatch(&myself);
                    st.check_complete(&myself);
                }
            }
            CoordinatorMsg::Interrupt => st.finish(&myself, true, None),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<CoordinatorMsg>,
        evt: SupervisionEvent,
        st: &mut CoordinatorState,
    ) -> Result<(), ActorProcessingErr> {
        if st.finishing {
            return Ok(());
        }
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
        if let Some(worker) = st.by_actor.get(&cell.get_id()).cloned() {
            st.lose_worker(&myself, &worker, &why);
            st.dispatch(&myself);
            st.check_complete(&myself);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::fold;
    use crate::progress::Display;
    use crate::scheduler::SchedState;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;
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

    async fn start(
        dir: &std::path::Path,
        ids: &[&str],
        runner: Arc<dyn JobRunner>,
    ) -> (ActorRef<CoordinatorMsg>, oneshot::Receiver<SessionEnd>) {
        let (ledger, _) = Ledger::open(dir).unwrap();
        let names: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        let (tx, rx) = oneshot::channel();
        let args = CoordinatorArgs {
            specs: specs(dir, ids),
            scheduler: Scheduler::new(&names, &BTreeMap::new(), |_| true, 2),
            ledger,
            devices: vec!["cpu".into(), "cpu".into()],
            threads: None,
            runner,
            ui: ProgressUi::new(Display::Quiet, ids.len(), 0),
            done: tx,
            cluster: None,
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
}
