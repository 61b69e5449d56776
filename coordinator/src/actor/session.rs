//! What the coordinator does with each message. Handlers only change state: they record events in the
//! ledger and the scheduler, register and lose workers, and at most decide that the session must end.
//! [`CoordinatorState::settle`], run after every message, then does what the new state calls for: it
//! dispatches what can be dispatched, notices that the session is complete (or cannot go on), and ends it.
//! The session ends once: only the [`Phase::Ending`] that `settle` consumes holds the sender of the end.

mod remote;

use std::collections::BTreeMap;
use std::sync::Arc;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef};
use storm_worker::actor::Events;
use storm_worker::{JobOutcome, JobRunner, JobSpec, Worker, WorkerArgs, WorkerEvent, WorkerMsg};
use tokio::sync::oneshot;

use super::slots::{Slots, WorkerSlot};
use super::{CoordinatorArgs, CoordinatorMsg, SessionEnd, RESPAWNS_PER_DEVICE};
use crate::cluster::ClusterOptions;
use crate::ledger::{Change, Ledger};
use crate::progress::ProgressUi;
use crate::scheduler::{Scheduler, Verdict};

/// Why the session ends.
#[derive(Debug)]
pub struct Ending {
    interrupted: bool,
    error: Option<String>,
}

impl Ending {
    /// Every job is done or failed.
    fn complete() -> Self {
        Ending {
            interrupted: false,
            error: None,
        }
    }

    /// Ctrl-C: running jobs are cancelled and stay unfinished in the ledger.
    pub fn interrupted() -> Self {
        Ending {
            interrupted: true,
            error: None,
        }
    }

    /// The session cannot go on.
    fn failed(error: String) -> Self {
        Ending {
            interrupted: false,
            error: Some(error),
        }
    }
}

/// Where the session is; `done` hears its end, exactly once.
enum Phase {
    /// Dispatching and supervising.
    Running(oneshot::Sender<SessionEnd>),
    /// A handler decided to end the session; the next settle ends it.
    Ending(oneshot::Sender<SessionEnd>, Ending),
    /// Workers were let go and the end reported; later messages change nothing that matters.
    Over,
}

/// Replacement workers for local devices whose worker died.
struct Respawns {
    /// Still allowed (a worker that keeps dying must not loop forever).
    left: usize,
    /// Asked for ([`CoordinatorMsg::Respawn`] sent) and not yet handled.
    pending: usize,
}

pub struct CoordinatorState {
    /// Job templates by id (attempt, device and threads are filled in per attempt).
    specs: BTreeMap<String, JobSpec>,
    sched: Scheduler,
    ledger: Ledger,
    threads: Option<usize>,
    runner: Arc<dyn JobRunner>,
    ui: ProgressUi,
    slots: Slots,
    /// Number of the next local worker (`w0`, `w1`, ...; replacements get new numbers).
    next_worker: usize,
    respawns: Respawns,
    cluster: Option<ClusterOptions>,
    /// "Waiting for workers" was said since the pool last became empty.
    said_waiting: bool,
    attempt_deadline: Option<std::time::Duration>,
    /// Attempts cancelled because they passed the deadline: their `Cancelled` outcome is a failure.
    overdue: std::collections::BTreeSet<(String, u32)>,
    phase: Phase,
}

impl CoordinatorState {
    pub fn new(args: CoordinatorArgs) -> Self {
        CoordinatorState {
            specs: args.specs,
            sched: args.scheduler,
            ledger: args.ledger,
            threads: args.threads,
            runner: args.runner,
            ui: args.ui,
            slots: Slots::default(),
            next_worker: 0,
            respawns: Respawns {
                left: RESPAWNS_PER_DEVICE * args.devices.len().max(1),
                pending: 0,
            },
            cluster: args.cluster,
            said_waiting: false,
            attempt_deadline: args.attempt_deadline,
            overdue: Default::default(),
            phase: Phase::Running(args.done),
        }
    }

    pub fn running(&self) -> bool {
        matches!(self.phase, Phase::Running(_))
    }

    /// Decides that the session ends (the first reason given wins); [`Self::settle`] ends it.
    pub fn end(&mut self, ending: Ending) {
        self.phase = match std::mem::replace(&mut self.phase, Phase::Over) {
            Phase::Running(done) => Phase::Ending(done, ending),
            other => other,
        };
    }

    /// Run after every message: starts what can start, notices a complete (or hopeless) session, and ends
    /// the session if that, or a handler, decided so.
    pub fn settle(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        if self.running() {
            self.dispatch(myself);
        }
        if self.running() {
            self.check_complete();
        }
        match std::mem::replace(&mut self.phase, Phase::Over) {
            Phase::Ending(done, ending) => self.finish(myself, done, ending),
            other => self.phase = other,
        }
    }

    /// Appends to the ledger before anything acts on the change; if it cannot, the session ends.
    fn record(&mut self, job: &str, change: Change) -> bool {
        match self.ledger.append(job, change) {
            Ok(()) => true,
            Err(e) => {
                self.end(Ending::failed(format!("cannot write the ledger: {e}")));
                false
            }
        }
    }

    fn register(&mut self, id: &str, slot: WorkerSlot) {
        self.ui.add_worker(id, &slot.device);
        self.sched.add_worker(id);
        self.slots.insert(id, slot);
    }

    pub async fn spawn_worker(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        device: &str,
    ) -> Result<(), ActorProcessingErr> {
        let id = format!("w{}", self.next_worker);
        self.next_worker += 1;
        let args = WorkerArgs {
            id: id.clone(),
            device: device.to_string(),
            threads: self.threads,
            runner: self.runner.clone(),
            events: Events::Local(myself.get_derived()),
            host: None,
            root: self.ledger.dir().to_path_buf(),
        };
        let (actor, _) = Actor::spawn_linked(None, Worker, args, myself.get_cell())
            .await
            .map_err(|e| format!("starting worker {id} on {device}: {e}"))?;
        self.register(&id, WorkerSlot::local(actor, device));
        Ok(())
    }

    /// A replacement asked for by [`Self::lose_worker`].
    pub async fn respawn(&mut self, myself: &ActorRef<CoordinatorMsg>, device: &str) {
        self.respawns.pending = self.respawns.pending.saturating_sub(1);
        if !self.running() {
            return;
        }
        if let Err(e) = self.spawn_worker(myself, device).await {
            self.ui
                .line(&format!("could not replace a worker on {device}: {e}"));
        }
    }

    /// Starts every assignment the scheduler makes; the ledger hears of it first.
    fn dispatch(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        for a in self.sched.assign() {
            if !self.running() {
                return;
            }
            let Some(device) = self.slots.get(&a.worker).map(|s| s.device.clone()) else {
                continue;
            };
            let Some(mut spec) = self.specs.get(&a.job).cloned() else {
                continue;
            };
            let running = Change::Running {
                attempt: a.attempt,
                worker: a.worker.clone(),
                device: device.clone(),
            };
            if !self.record(&a.job, running) {
                return;
            }
            self.ui.line(&format!(
                "{} attempt {} → {} ({device})",
                a.job, a.attempt, a.worker
            ));
            spec.attempt = a.attempt;
            let sent = match self.slots.get(&a.worker) {
                Some(slot) => slot.send(WorkerMsg::Run(spec)),
                None => Err("it is gone".into()),
            };
            if let Err(e) = sent {
                self.lose_worker(myself, &a.worker, &format!("unreachable: {e}"));
            } else if let Some(limit) = self.attempt_deadline {
                let (job, attempt) = (a.job.clone(), a.attempt);
                // the timer task runs detached; its handle is not needed
                drop(
                    myself.send_after(limit, move || CoordinatorMsg::AttemptDeadline {
                        job,
                        attempt,
                    }),
                );
            }
        }
    }

    /// An event from another node counts only when the host that owns the worker it names sent it (its
    /// key matches); a forged `Alive`, `Started` or `Finished` from any other node is dropped.
    pub fn on_remote_event(&mut self, key: &str, ev: WorkerEvent) {
        match self.slots.get(ev.worker()) {
            Some(slot) if slot.owned_by(key) => self.on_event(ev),
            Some(_) => self.ui.line(&format!(
                "ignored an event for worker {} that did not come from its host (wrong key)",
                ev.worker()
            )),
            None => tracing::debug!(worker = ev.worker(), "event of an unknown worker ignored"),
        }
    }

    pub fn on_event(&mut self, ev: WorkerEvent) {
        self.slots.heard_from(ev.worker());
        match ev {
            WorkerEvent::Alive { .. } => {}
            WorkerEvent::ProtocolError { worker, why } => self
                .ui
                .line(&format!("worker {worker} refused a message: {why}")),
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
            } => self.on_finished(&worker, &job, attempt, outcome),
        }
    }

    fn on_finished(&mut self, worker: &str, job: &str, attempt: u32, outcome: JobOutcome) {
        if !self.sched.is_current(job, worker, attempt) {
            tracing::debug!(job, worker, attempt, "stale outcome ignored");
            return;
        }
        self.ui.idle(worker);
        let overdue = self.overdue.remove(&(job.to_string(), attempt));
        match outcome {
            JobOutcome::Done(result) => {
                let seconds = result.seconds;
                if !self.record(job, Change::Done { attempt, seconds }) {
                    return;
                }
                self.sched.succeeded(worker);
                self.ui.line(&format!(
                    "{job} attempt {attempt} done in {seconds:.1}s ({worker})"
                ));
                self.ui.job_finished(self.sched.counts());
            }
            JobOutcome::Failed { error } => {
                let verdict = self.sched.failed(worker, &error);
                self.record_failure(job, attempt, worker, &error, verdict);
            }
            JobOutcome::Cancelled if overdue => {
                let error = format!(
                    "attempt {attempt} ran past max_attempt_seconds ({}s) and was cancelled",
                    self.attempt_deadline.map_or(0, |d| d.as_secs())
                );
                let verdict = self.sched.failed(worker, &error);
                self.record_failure(job, attempt, worker, &error, verdict);
            }
            JobOutcome::Cancelled => {
                if let Some((verdict, error)) = self.sched.cancelled(worker) {
                    self.record_failure(job, attempt, worker, &error, Some(verdict));
                }
            }
        }
    }

    /// `max_attempt_seconds` passed since `attempt` of `job` was sent: if it is still running, cancel it;
    /// its `Cancelled` outcome then counts as a failure (see [`Self::on_finished`]).
    pub fn on_deadline(&mut self, job: &str, attempt: u32) {
        let Some((worker, running)) = self.sched.running(job) else {
            return;
        };
        if running != attempt {
            return;
        }
        let worker = worker.to_string();
        self.ui.line(&format!(
            "{job} attempt {attempt} on {worker} passed max_attempt_seconds; cancelling it"
        ));
        self.overdue.insert((job.to_string(), attempt));
        if let Some(slot) = self.slots.get(&worker) {
            let _ = slot.send(WorkerMsg::Cancel);
        }
    }

    fn record_failure(
        &mut self,
        job: &str,
        attempt: u32,
        worker: &str,
        error: &str,
        verdict: Option<Verdict>,
    ) {
        let headline = storm_worker::headline(error);
        let (change, line) = match verdict {
            Some(Verdict::Retry) => (
                Change::Retry {
                    attempt,
                    error: error.to_string(),
                },
                format!("{job} attempt {attempt} failed on {worker}, will retry: {headline}"),
            ),
            Some(Verdict::Failed) => (
                Change::Failed {
                    attempt,
                    error: error.to_string(),
                },
                format!("{job} FAILED after attempt {attempt} on {worker}: {headline}"),
            ),
            None => return,
        };
        if !self.record(job, change) {
            return;
        }
        self.ui.line(&line);
        if verdict == Some(Verdict::Failed) {
            self.ui.job_finished(self.sched.counts());
        }
    }

    /// A worker stopped or became unreachable: its attempt fails; a local worker's device gets a
    /// replacement, a remote one is told to stop (in case it is only cut off) and is not replaced.
    fn lose_worker(&mut self, myself: &ActorRef<CoordinatorMsg>, worker: &str, why: &str) {
        let Some(slot) = self.slots.remove(worker) else {
            return;
        };
        self.ui.remove_worker(worker);
        slot.release(Some(format!("the coordinator gave up on it: {why}")));
        let error = format!("worker {worker} ({}) {why}", slot.device);
        self.ui.line(&error);
        if let Some((job, attempt, verdict)) = self.sched.remove_worker(worker, &error) {
            self.record_failure(&job, attempt, worker, &error, Some(verdict));
        }
        if !slot.is_remote() && self.respawns.left > 0 {
            self.respawns.left -= 1;
            self.respawns.pending += 1;
            let _ = myself.send_message(CoordinatorMsg::Respawn(slot.device));
        }
    }

    /// A linked local worker ended.
    pub fn on_worker_down(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        cell: &ActorCell,
        why: &str,
    ) {
        if !self.running() {
            return;
        }
        if let Some(worker) = self.slots.by_actor(cell.get_id()) {
            self.lose_worker(myself, &worker, why);
        }
    }

    /// Ends a complete session, and one left without workers (or says that it waits for remote ones).
    fn check_complete(&mut self) {
        if self.sched.is_complete() {
            return self.end(Ending::complete());
        }
        if self.sched.workers() > 0 || self.respawns.pending > 0 {
            return;
        }
        match &self.cluster {
            Some(c) if !self.said_waiting => {
                self.said_waiting = true;
                let tls = match c.tls {
                    Some(_) => " --tls-ca <the CA of --tls-cert>",
                    None => "",
                };
                self.ui.line(&format!(
                    "waiting for workers: start them with `storm worker --connect {}{tls}` (and the \
                     session's cookie)",
                    c.listen
                ));
            }
            Some(_) => {}
            None => self.end(Ending::failed(
                "every worker died and no replacement is left".into(),
            )),
        }
    }

    /// Lets every worker go (cancelling their jobs first on an interrupt) and reports the end. Only
    /// [`Self::settle`] calls it, with the sender it took out of [`Phase::Ending`].
    fn finish(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        done: oneshot::Sender<SessionEnd>,
        ending: Ending,
    ) {
        for (_, slot) in self.slots.drain() {
            if ending.interrupted {
                let _ = slot.send(WorkerMsg::Cancel);
            }
            slot.release(None);
        }
        self.ui.finish();
        let _ = done.send(SessionEnd {
            jobs: self.sched.jobs().to_vec(),
            interrupted: ending.interrupted,
            error: ending.error,
        });
        myself.stop(None);
    }
}
