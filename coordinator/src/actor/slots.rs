//! The coordinator's one record of the workers it knows: a [`WorkerSlot`] per worker id, holding how to
//! reach the worker, its device, and where it runs (in this process and linked, or on a remote host with
//! the time it last answered). Which job a worker runs is the scheduler's to say; a slot does not copy it,
//! so the two can never disagree.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};
use storm_worker::protocol::LinkKey;
use storm_worker::{WorkerId, WorkerMsg};

/// Where a worker runs, which decides how its loss is noticed and how it is let go.
pub enum Place {
    /// A worker actor of this process, linked to the coordinator: its death is a supervision event.
    Local,
    /// A worker actor of a `storm worker --connect` host, watched by heartbeats.
    Remote {
        /// `hostname:pid` of its host.
        node: String,
        /// The host's key: on every message to the worker, and required on every event from it.
        key: LinkKey,
        /// When it last sent anything.
        last_seen: Instant,
    },
}

pub struct WorkerSlot {
    pub actor: ActorRef<WorkerMsg>,
    /// `cpu`, `cuda:N`.
    pub device: String,
    pub place: Place,
}

impl WorkerSlot {
    pub fn local(actor: ActorRef<WorkerMsg>, device: &str) -> Self {
        WorkerSlot {
            actor,
            device: device.to_string(),
            place: Place::Local,
        }
    }

    pub fn remote(actor: ActorRef<WorkerMsg>, device: &str, node: &str, key: &str) -> Self {
        WorkerSlot {
            actor,
            device: device.to_string(),
            place: Place::Remote {
                node: node.to_string(),
                key: key.to_string(),
                last_seen: Instant::now(),
            },
        }
    }

    /// Sends `msg` to the worker: as it is to a local one, with its host's key to a remote one.
    pub fn send(&self, msg: WorkerMsg) -> Result<(), String> {
        let msg = match &self.place {
            Place::Local => msg,
            Place::Remote { key, .. } => WorkerMsg::Keyed {
                key: key.clone(),
                msg: Box::new(msg),
            },
        };
        self.actor.send_message(msg).map_err(|e| e.to_string())
    }

    /// Whether an event from another node with `key` may speak for this worker.
    pub fn owned_by(&self, key: &str) -> bool {
        matches!(&self.place, Place::Remote { key: k, .. } if !k.is_empty() && k == key)
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.place, Place::Remote { .. })
    }

    /// Lets the worker go: a local one is stopped; a remote one is told to shut down (`reason` says why
    /// when the coordinator gave up on it), since it may only be cut off and must not keep its job.
    pub fn release(&self, reason: Option<String>) {
        match &self.place {
            Place::Local => self.actor.stop(None),
            Place::Remote { node, .. } => {
                tracing::debug!(node, ?reason, "shutting a remote worker down");
                let _ = self.send(WorkerMsg::Shutdown { reason });
            }
        }
    }
}

/// Every worker of the session, by id.
#[derive(Default)]
pub struct Slots(BTreeMap<WorkerId, WorkerSlot>);

impl Slots {
    pub fn insert(&mut self, id: &str, slot: WorkerSlot) {
        self.0.insert(id.to_string(), slot);
    }

    pub fn remove(&mut self, id: &str) -> Option<WorkerSlot> {
        self.0.remove(id)
    }

    pub fn get(&self, id: &str) -> Option<&WorkerSlot> {
        self.0.get(id)
    }

    pub fn contains(&self, id: &str) -> bool {
        self.0.contains_key(id)
    }

    /// Empties the record (the session is over), handing back every slot.
    pub fn drain(&mut self) -> impl Iterator<Item = (WorkerId, WorkerSlot)> {
        std::mem::take(&mut self.0).into_iter()
    }

    /// The worker whose actor this is (supervision events name actors, not workers).
    pub fn by_actor(&self, actor: ActorId) -> Option<WorkerId> {
        self.0
            .iter()
            .find(|(_, s)| s.actor.get_id() == actor)
            .map(|(id, _)| id.clone())
    }

    /// A message came from this worker: a remote one is alive.
    pub fn heard_from(&mut self, id: &str) {
        if let Some(WorkerSlot {
            place: Place::Remote { last_seen, .. },
            ..
        }) = self.0.get_mut(id)
        {
            *last_seen = Instant::now();
        }
    }

    /// Remote workers silent for longer than `timeout`, with how long they have been silent.
    pub fn silent(&self, timeout: Duration) -> Vec<(WorkerId, Duration)> {
        self.0
            .iter()
            .filter_map(|(id, s)| match s.place {
                Place::Remote { last_seen, .. } if last_seen.elapsed() > timeout => {
                    Some((id.clone(), last_seen.elapsed()))
                }
                _ => None,
            })
            .collect()
    }

    /// Remote workers.
    pub fn remote(&self) -> impl Iterator<Item = (&WorkerId, &WorkerSlot)> {
        self.0.iter().filter(|(_, s)| s.is_remote())
    }
}
