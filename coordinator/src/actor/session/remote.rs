//! Remote workers: a host's join (its workers admitted or refused) and the heartbeat that pings them and
//! gives up on silent or unreachable ones.

use ractor::{ActorCell, ActorRef};
use storm_worker::protocol::PROTOCOL_VERSION;
use storm_worker::{JoinRequest, RemoteWorker, WorkerMsg};

use super::CoordinatorState;
use crate::actor::slots::WorkerSlot;
use crate::actor::{CoordinatorMsg, JOIN_RETRY_DELAY};

impl CoordinatorState {
    /// Registers the workers of a remote host once their process groups are visible here.
    pub fn join(
        &mut self,
        myself: &ActorRef<CoordinatorMsg>,
        request: JoinRequest,
        tries_left: u32,
    ) {
        if !self.running() {
            return;
        }
        let Some(found) = self.find_workers(myself, &request, tries_left) else {
            return;
        };
        for (w, cell) in found {
            self.admit(&request, w, cell);
        }
        self.ping(myself);
    }

    /// The actors of the host's workers; None when one is not visible yet and the join was scheduled
    /// again. A worker still missing after the last try is ignored.
    fn find_workers(
        &self,
        myself: &ActorRef<CoordinatorMsg>,
        request: &JoinRequest,
        tries_left: u32,
    ) -> Option<Vec<(RemoteWorker, ActorCell)>> {
        let mut found = Vec::new();
        for w in &request.workers {
            let cell = ractor::pg::get_members(&w.group)
                .into_iter()
                .find(|c| !c.get_id().is_local());
            match cell {
                Some(c) => found.push((w.clone(), c)),
                None if tries_left > 0 => {
                    let request = request.clone();
                    // the timer task runs detached; its handle is not needed
                    drop(
                        myself.send_after(JOIN_RETRY_DELAY, move || CoordinatorMsg::JoinRetry {
                            request,
                            tries_left: tries_left - 1,
                        }),
                    );
                    return None;
                }
                None => self.ui.line(&format!(
                    "worker {} of host {} never became reachable; ignored",
                    w.id, request.node
                )),
            }
        }
        Some(found)
    }

    /// Takes one remote worker into the session, or refuses it (other protocol, id taken).
    fn admit(&mut self, request: &JoinRequest, w: RemoteWorker, cell: ActorCell) {
        let actor: ActorRef<WorkerMsg> = cell.into();
        let refusal = if request.version != PROTOCOL_VERSION {
            Some(format!(
                "it speaks protocol {} and this coordinator {PROTOCOL_VERSION}: run the same storm \
                 build on every host",
                request.version
            ))
        } else if self.slots.contains(&w.id) {
            Some(format!("worker id {} is already taken", w.id))
        } else {
            None
        };
        if let Some(why) = refusal {
            self.ui
                .line(&format!("refused worker host {}: {why}", request.node));
            let _ = actor.send_message(WorkerMsg::Keyed {
                key: request.key.clone(),
                msg: Box::new(WorkerMsg::Shutdown { reason: Some(why) }),
            });
            return;
        }
        self.register(
            &w.id,
            WorkerSlot::remote(actor, &w.device, &request.node, &request.key),
        );
        self.said_waiting = false;
        self.ui.line(&format!(
            "worker {} ({}) joined from {}",
            w.id, w.device, request.node
        ));
    }

    /// Pings every remote worker; one silent for longer than the timeout is lost.
    pub fn ping(&mut self, myself: &ActorRef<CoordinatorMsg>) {
        let Some(timeout) = self.cluster.as_ref().map(|c| c.heartbeat_timeout) else {
            return;
        };
        for (worker, silence) in self.slots.silent(timeout) {
            let why = format!(
                "stopped answering (no heartbeat for {:.1}s, timeout {:.1}s)",
                silence.as_secs_f64(),
                timeout.as_secs_f64()
            );
            self.lose_worker(myself, &worker, &why);
        }
        let timeout_ms = timeout.as_millis() as u64;
        let mut unreachable = Vec::new();
        for (worker, slot) in self.slots.remote() {
            if slot.send(WorkerMsg::Ping { timeout_ms }).is_err() {
                unreachable.push(worker.clone());
            }
        }
        for worker in unreachable {
            self.lose_worker(myself, &worker, "is unreachable (its node disconnected)");
        }
    }
}
