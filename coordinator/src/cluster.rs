//! The coordinator's side of a cluster session: a ractor_cluster node listening for remote worker hosts
//! (`storm worker --connect`), and the heartbeat settings with which the coordinator notices a worker that
//! stopped answering.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage};
use storm_shared::error::{Error, Result};

use crate::handshake::{HandshakeGuard, MAX_UNAUTHENTICATED};

/// Remote workers for one session.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Where the coordinator's node listens (`0.0.0.0:7070` for other machines, `127.0.0.1:P` locally).
    pub listen: SocketAddr,
    /// Shared secret every worker host must present; None: a random one is made for the session and
    /// written to `<sweep dir>/cluster.cookie` (owner-only), where workers on a shared filesystem read it.
    pub cookie: Option<String>,
    /// A worker that has not answered for this long is declared lost and its job rescheduled.
    pub heartbeat_timeout: Duration,
    /// An incoming connection that has not authenticated within this is closed
    /// ([`crate::handshake::HANDSHAKE_DEADLINE`] by default).
    pub handshake_deadline: Duration,
    /// Serve TLS with this certificate and key (`--tls-cert`, `--tls-key`); None: plain TCP.
    pub tls: Option<storm_worker::tls::ServerFiles>,
}

/// Pings per heartbeat timeout: several fall within half the timeout, the worker side's own deadline, so
/// one lost or late ping is never mistaken for a lost coordinator.
pub const PINGS_PER_TIMEOUT: u32 = 8;

/// The shortest heartbeat interval, however short the timeout (pings are messages over the network).
pub const MIN_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(100);

/// The longest heartbeat interval, however long the timeout.
pub const MAX_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);

impl ClusterOptions {
    /// How often workers are pinged: [`PINGS_PER_TIMEOUT`] per timeout, within the bounds above.
    pub fn heartbeat_interval(&self) -> Duration {
        (self.heartbeat_timeout / PINGS_PER_TIMEOUT)
            .clamp(MIN_HEARTBEAT_INTERVAL, MAX_HEARTBEAT_INTERVAL)
    }
}

/// Where a generated cookie is written, inside the sweep directory.
pub const COOKIE_FILE: &str = "cluster.cookie";

impl ClusterOptions {
    /// Makes and publishes the session's cookie if none was given; returns how a worker host names it.
    pub fn settle_cookie(&mut self, sweep_dir: &Path) -> Result<String> {
        if self.cookie.is_some() {
            return Ok("--cookie <the same cookie> (or $STORM_CLUSTER_COOKIE)".into());
        }
        let path = sweep_dir.join(COOKIE_FILE);
        self.cookie = Some(write_new_cookie(&path)?);
        Ok(format!("--cookie-file {}", path.display()))
    }
}

/// A random 128-bit cookie, hex, written with owner-only permissions.
fn write_new_cookie(path: &Path) -> Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let cookie = storm_worker::wire::random_secret()
        .map_err(|e| Error::Cluster(format!("reading /dev/urandom for a cluster cookie: {e}")))?;
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::Cluster(format!("writing {}: {e}", path.display())))?;
    std::io::Write::write_all(&mut f, cookie.as_bytes())
        .map_err(|e| Error::Cluster(format!("writing {}: {e}", path.display())))?;
    Ok(cookie)
}

/// Starts the coordinator's node for `listen` (the cookie must be settled): storm's own listener
/// ([`crate::listener`]) owns `listen` and hands each connection — after its TLS handshake with
/// `--tls-cert` — to the node, whose own listener binds only an ephemeral loopback port.
pub async fn start_node(opts: &ClusterOptions) -> Result<ActorRef<NodeServerMessage>> {
    let name = format!("storm-coordinator@{}", opts.listen);
    let tls = opts
        .tls
        .as_ref()
        .map(storm_worker::tls::acceptor)
        .transpose()
        .map_err(Error::Cluster)?;
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| {
            Error::Cluster(format!(
                "cannot listen for workers on {}: {e} (is the port in use?)",
                opts.listen
            ))
        })?;
    let server = NodeServer::new(
        0,
        opts.cookie.clone().unwrap_or_default(),
        name,
        opts.listen.ip().to_string(),
        None,
        None,
    )
    .with_listen_addr(std::net::Ipv4Addr::LOCALHOST.into());
    let (server, _) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| Error::Cluster(format!("cannot start the cluster node: {e}")))?;
    tokio::spawn(crate::listener::serve(
        listener,
        tls,
        server.clone(),
        opts.handshake_deadline,
    ));
    let guard = HandshakeGuard::new(opts.handshake_deadline, MAX_UNAUTHENTICATED);
    server
        .send_message(NodeServerMessage::SubscribeToEvents {
            id: "storm.handshake-guard".into(),
            subscription: Box::new(guard),
        })
        .map_err(|e| Error::Cluster(format!("cannot watch the node's connections: {e}")))?;
    Ok(server)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeats_are_several_per_half_timeout_within_bounds() {
        let opts = |s: f64| ClusterOptions {
            listen: "127.0.0.1:1".parse().unwrap(),
            cookie: None,
            heartbeat_timeout: Duration::from_secs_f64(s),
            handshake_deadline: Duration::from_secs(10),
            tls: None,
        };
        assert_eq!(opts(8.0).heartbeat_interval(), Duration::from_secs(1));
        assert_eq!(opts(0.2).heartbeat_interval(), Duration::from_millis(100));
        assert_eq!(opts(600.0).heartbeat_interval(), Duration::from_secs(5));
    }

    #[test]
    fn a_generated_cookie_is_private_and_fresh_each_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ClusterOptions {
            listen: "127.0.0.1:1".parse().unwrap(),
            cookie: None,
            heartbeat_timeout: Duration::from_secs(3),
            handshake_deadline: Duration::from_secs(10),
            tls: None,
        };
        let how = opts.settle_cookie(dir.path()).unwrap();
        let path = dir.path().join(COOKIE_FILE);
        assert!(how.contains(&path.display().to_string()), "{how}");
        let first = opts.cookie.clone().unwrap();
        assert_eq!(first.len(), 32);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), first);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        opts.cookie = None;
        opts.settle_cookie(dir.path()).unwrap();
        assert_ne!(opts.cookie.unwrap(), first);
        let mut given = ClusterOptions {
            cookie: Some("c".into()),
            ..opts_for_test()
        };
        assert!(given
            .settle_cookie(dir.path())
            .unwrap()
            .contains("--cookie"));
        assert_eq!(given.cookie.as_deref(), Some("c"));
    }

    fn opts_for_test() -> ClusterOptions {
        ClusterOptions {
            listen: "127.0.0.1:1".parse().unwrap(),
            cookie: None,
            heartbeat_timeout: Duration::from_secs(3),
            handshake_deadline: Duration::from_secs(10),
            tls: None,
        }
    }

    /// Before, a connection that never authenticated stayed open for as long as its peer liked, and any
    /// number of them could pile up. Now each has the handshake deadline, and one beyond the cap is closed
    /// at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silent_connections_are_closed_at_the_deadline_and_beyond_the_cap_at_once() {
        use std::io::Read;
        use std::net::TcpStream;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let opts = ClusterOptions {
            listen: format!("127.0.0.1:{port}").parse().unwrap(),
            cookie: Some("0123456789abcdef0123".into()),
            handshake_deadline: Duration::from_secs(2),
            tls: None,
            ..opts_for_test()
        };
        let server = start_node(&opts).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let began = std::time::Instant::now();
        let silent: Vec<TcpStream> = (0..MAX_UNAUTHENTICATED + 1)
            .map(|_| TcpStream::connect(opts.listen).unwrap())
            .collect();
        // whether each is closed (EOF or reset) when read within `within`
        let closed = |s: &TcpStream, within: Duration| {
            let mut s = s.try_clone().unwrap();
            s.set_read_timeout(Some(within)).unwrap();
            let mut buf = [0u8; 64];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return true,
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                    Err(_) => return true,
                }
            }
        };
        let early = tokio::task::spawn_blocking(move || {
            let early = silent
                .iter()
                .filter(|s| closed(s, Duration::from_millis(50)))
                .count();
            let late = silent
                .iter()
                .filter(|s| closed(s, Duration::from_secs(4)))
                .count();
            (early, late)
        })
        .await
        .unwrap();
        assert!(began.elapsed() < Duration::from_secs(8));
        assert_eq!(
            early.0, 1,
            "one connection beyond the cap is closed at once"
        );
        assert_eq!(
            early.1,
            MAX_UNAUTHENTICATED + 1,
            "the rest are closed at the deadline"
        );
        server.stop(None);
    }
}
