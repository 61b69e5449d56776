//! The coordinator's `--listen` socket. storm accepts the connections itself and hands each to the
//! ractor_cluster node as an incoming session (the node's own listener only binds an ephemeral loopback
//! port). ractor_cluster's listener runs the TLS handshake inline in its accept loop, where one client
//! that connects and never speaks would stall every later connection, and it retries a failed `accept`
//! at once. Here each TLS handshake runs in its own task under the session's handshake deadline, with at
//! most [`MAX_PENDING_HANDSHAKES`] at once, and a failed accept backs off. The cookie is then checked by
//! the node, within the same deadline ([`crate::handshake`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// TLS handshakes run at once; further connections wait in the kernel's backlog for a slot.
pub const MAX_PENDING_HANDSHAKES: usize = 16;

/// The shortest and longest pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

/// Accepts connections on `listener` until `node` stops: plain ones are handed over at once; with `tls`
/// each is handed over once its handshake has finished within `deadline`.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    node: ActorRef<NodeServerMessage>,
    deadline: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    let mut pause = ACCEPT_BACKOFF.0;
    loop {
        if node.get_status() == ractor::ActorStatus::Stopped {
            return;
        }
        let (stream, peer_addr) = match listener.accept().await {
            Ok(s) => {
                pause = ACCEPT_BACKOFF.0;
                s
            }
            Err(e) => {
                tracing::warn!("accepting a cluster connection failed: {e}; retrying in {pause:?}");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(local_addr) = stream.local_addr() else {
            continue;
        };
        let Some(acceptor) = &tls else {
            let raw = NetworkStream::Raw {
                peer_addr,
                local_addr,
                stream,
            };
            hand_over(&node, raw, peer_addr);
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (acceptor, session_node) = (acceptor.clone(), node.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let tls = NetworkStream::TlsServer {
                        peer_addr,
                        local_addr,
                        stream,
                    };
                    hand_over(&session_node, tls, peer_addr);
                }
                Ok(Err(e)) => tracing::warn!("TLS handshake with {peer_addr} failed: {e}"),
                Err(_) => tracing::warn!(
                    "TLS handshake with {peer_addr} did not finish within {deadline:?}; closed"
                ),
            }
        });
    }
}

fn hand_over(node: &ActorRef<NodeServerMessage>, stream: NetworkStream, peer_addr: SocketAddr) {
    let opened = NodeServerMessage::ConnectionOpened {
        stream: Box::new(stream),
        is_server: true,
    };
    if node.cast(opened).is_err() {
        tracing::warn!("the cluster node stopped; dropping the connection from {peer_addr}");
    }
}
