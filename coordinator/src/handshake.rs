//! Connections to the coordinator's node that have not authenticated yet. ractor_cluster itself waits for
//! a peer's handshake as long as the peer likes, and accepts any number of such connections; this guard,
//! subscribed to the node's session events, closes a connection that has not proved the cookie within
//! [`HANDSHAKE_DEADLINE`], and closes at once any beyond [`MAX_UNAUTHENTICATED`] open at the same time, so
//! a port scanner or a client that connects and says nothing cannot pile up sessions.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorId;
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::NodeEventSubscription;

/// How long an incoming connection has to authenticate.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);

/// Incoming connections allowed to be authenticating at once.
pub const MAX_UNAUTHENTICATED: usize = 16;

#[derive(Clone)]
pub struct HandshakeGuard {
    deadline: Duration,
    cap: usize,
    /// Sessions still authenticating, with the peer's address.
    pending: Arc<Mutex<HashMap<ActorId, String>>>,
}

impl HandshakeGuard {
    pub fn new(deadline: Duration, cap: usize) -> Self {
        HandshakeGuard {
            deadline,
            cap,
            pending: Arc::default(),
        }
    }

    fn forget(&self, id: &ActorId) -> Option<String> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
    }
}

impl NodeEventSubscription for HandshakeGuard {
    fn node_session_opened(&self, ses: NodeServerSessionInformation) {
        if !ses.is_server {
            return;
        }
        let id = ses.actor.get_id();
        let open = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.insert(id, ses.peer_addr.clone());
            pending.len()
        };
        if open > self.cap {
            self.forget(&id);
            tracing::warn!(
                "closed a connection from {}: {} others are still authenticating",
                ses.peer_addr,
                self.cap
            );
            ses.actor
                .stop(Some("too many unauthenticated connections".into()));
            return;
        }
        let guard = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(guard.deadline).await;
            if let Some(peer) = guard.forget(&id) {
                tracing::warn!(
                    "closed a connection from {peer}: it did not authenticate within {:?}",
                    guard.deadline
                );
                ses.actor.stop(Some("no authentication in time".into()));
            }
        });
    }

    fn node_session_authenticated(&self, ses: NodeServerSessionInformation) {
        self.forget(&ses.actor.get_id());
    }

    fn node_session_disconnected(&self, ses: NodeServerSessionInformation) {
        self.forget(&ses.actor.get_id());
    }
}
