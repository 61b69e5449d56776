//! A remote worker host (`storm worker --connect`): a process on this or another machine that joins a
//! coordinator's ractor_cluster, offers one worker actor per device, runs the jobs it is given, and exits
//! when the coordinator ends the session. If the coordinator stops pinging (crash, network partition) the
//! host cancels its jobs and exits with an error after half the coordinator's heartbeat timeout — before
//! the coordinator itself gives up on the worker and runs the job elsewhere.
//!
//! Job directories and prepared data are named by absolute paths, so every host must see the sweep
//! directory at the same path (a shared filesystem on a cluster; trivially so on one machine).

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorCell, ActorRef};
use ractor_cluster::{NodeServer, NodeServerMessage, NodeSessionMessage};
use tokio_rustls::rustls::pki_types::ServerName;

use crate::actor::{Events, Worker, WorkerArgs};
use crate::protocol::{
    worker_group, JoinRequest, LinkKey, RemoteWorker, ToCoordinator, COORDINATOR_GROUP,
    PROTOCOL_VERSION,
};
use crate::runner::JobRunner;

pub struct HostOptions {
    /// The coordinator's `--listen` address, `host:port`.
    pub connect: String,
    pub cookie: String,
    /// One worker per entry (`cpu`, `cuda:0`, ...).
    pub devices: Vec<String>,
    pub threads: Option<usize>,
    pub runner: Arc<dyn JobRunner>,
    /// How long to wait for the coordinator to accept the connection and answer.
    pub connect_timeout: Duration,
    /// The sweep directory as this host sees it: jobs elsewhere are refused.
    pub root: PathBuf,
    /// Connect over TLS, trusting these (None: plain TCP).
    pub tls: Option<crate::tls::ClientFiles>,
}

/// How a host session ended.
#[derive(Debug, PartialEq)]
pub enum HostEnd {
    /// The coordinator ended the session.
    Finished,
    /// Ctrl-C: the running jobs were cancelled (the coordinator reschedules them).
    Interrupted,
}

/// What the worker actors of a host share with the host: its key, and what they tell its watchdog.
#[derive(Debug, Default)]
pub struct HostLink {
    /// This host's [`LinkKey`]: messages without it are not from the coordinator.
    key: LinkKey,
    /// Last heartbeat from the coordinator and the coordinator's timeout.
    last_ping: Mutex<Option<(Instant, Duration)>>,
    /// Workers the coordinator refused, with its reason.
    refusals: Mutex<BTreeMap<String, String>>,
}

impl HostLink {
    pub fn new(key: LinkKey) -> Self {
        HostLink {
            key,
            ..HostLink::default()
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn heard_from_coordinator(&self, timeout_ms: u64) {
        if let Ok(mut g) = self.last_ping.lock() {
            *g = Some((Instant::now(), Duration::from_millis(timeout_ms)));
        }
    }

    pub fn refused(&self, worker: &str, reason: &str) {
        if let Ok(mut g) = self.refusals.lock() {
            g.insert(worker.to_string(), reason.to_string());
        }
    }

    /// The coordinator went quiet for half its heartbeat timeout: (silence, timeout).
    fn silent_for(&self) -> Option<(Duration, Duration)> {
        let g = self.last_ping.lock().ok()?;
        let (at, timeout) = (*g)?;
        (at.elapsed() > timeout / 2).then(|| (at.elapsed(), timeout))
    }

    fn has_heard(&self) -> bool {
        self.last_ping.lock().map(|g| g.is_some()).unwrap_or(false)
    }

    fn refusal(&self) -> Option<String> {
        let g = self.refusals.lock().ok()?;
        g.iter().next().map(|(w, r)| format!("worker {w}: {r}"))
    }
}

/// `hostname:pid`, the identity of this host in worker ids and the coordinator's log.
pub fn node_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it on success.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).to_string()
    } else {
        "host".to_string()
    };
    format!("{host}:{}", std::process::id())
}

/// Runs a worker host until the coordinator ends the session, Ctrl-C, or the coordinator is lost.
pub fn run_host(opts: HostOptions) -> Result<HostEnd, String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the actor runtime: {e}"))?;
    rt.block_on(host_session(opts))
}

async fn host_session(opts: HostOptions) -> Result<HostEnd, String> {
    if opts.devices.is_empty() {
        return Err("a worker host needs at least one device".into());
    }
    let addr = opts
        .connect
        .to_socket_addrs()
        .map_err(|e| format!("--connect {}: {e}", opts.connect))?
        .next()
        .ok_or_else(|| {
            format!(
                "--connect {}: the name resolves to no address",
                opts.connect
            )
        })?;
    let node = node_name();
    // the host never accepts connections; its listener only exists because every node has one
    let server = NodeServer::new(
        0,
        opts.cookie.clone(),
        node.clone(),
        node.clone(),
        None,
        None,
    )
    .with_listen_addr(Ipv4Addr::LOCALHOST.into());
    let (server, server_handle) = Actor::spawn(None, server, ())
        .await
        .map_err(|e| format!("cannot start this host's cluster node: {e}"))?;
    let result = serve(&opts, &node, &server, addr).await;
    server.stop(None);
    let _ = server_handle.await;
    result
}

/// Connects to the coordinator, retrying until `deadline`: a host may start before its coordinator listens.
async fn connect_until(
    server: &ActorRef<NodeServerMessage>,
    addr: std::net::SocketAddr,
    tls: Option<&(tokio_rustls::TlsConnector, ServerName<'static>)>,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let mut pause = Duration::from_millis(100);
    let mut said = false;
    loop {
        let attempt = match tls {
            None => ractor_cluster::client_connect(server, addr).await,
            Some((connector, name)) => {
                let dial = ractor_cluster::client_connect_enc(
                    server,
                    addr,
                    connector.clone(),
                    name.clone(),
                );
                match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), dial).await {
                    Ok(r) => r,
                    Err(_) => return Err(format!(
                        "the TLS handshake with the coordinator at {addr} did not finish within {timeout:?} \
                         (--connect-timeout)"
                    )),
                }
            }
        };
        let error = match attempt {
            Ok(()) => return Ok(()),
            // a certificate the CA does not vouch for will not change on a retry
            Err(ractor_cluster::ClientConnectErr::Encryption(e)) => {
                return Err(format!(
                    "TLS with the coordinator at {addr} failed: {e} (is --tls-ca the CA of its --tls-cert, \
                     and does the certificate name the host you connect to? see --tls-server-name)"
                ))
            }
            Err(e) => e.to_string(),
        };
        if Instant::now() + pause >= deadline {
            return Err(format!(
                "cannot connect to the coordinator at {addr} within {timeout:?} (--connect-timeout): {error}"
            ));
        }
        if !said {
            tracing::info!("the coordinator at {addr} is not reachable yet ({error}); retrying until --connect-timeout");
            said = true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

async fn serve(
    opts: &HostOptions,
    node: &str,
    server: &ActorRef<NodeServerMessage>,
    addr: std::net::SocketAddr,
) -> Result<HostEnd, String> {
    let tls = opts
        .tls
        .as_ref()
        .map(|files| {
            crate::tls::connector(files, &opts.connect).map_err(|e| format!("--tls-ca: {e}"))
        })
        .transpose()?;
    let deadline = Instant::now() + opts.connect_timeout;
    connect_until(server, addr, tls.as_ref(), deadline, opts.connect_timeout).await?;
    wait_until_ready(server, deadline)
        .await
        .map_err(|e| format!("coordinator at {addr}: {e}"))?;
    let coordinator = find_coordinator(deadline).await.ok_or_else(|| {
        format!(
            "connected to {addr} but found no storm coordinator there within {:?} (is it a `storm sweep \
             --listen` or `storm paper --listen` that is still running?)",
            opts.connect_timeout
        )
    })?;
    let coordinator: ActorRef<ToCoordinator> = coordinator.into();
    let key = crate::wire::random_secret()
        .map_err(|e| format!("reading /dev/urandom for this host's key: {e}"))?;
    let link = Arc::new(HostLink::new(key.clone()));
    let mut workers = Vec::new();
    let mut offered = Vec::new();
    for (i, device) in opts.devices.iter().enumerate() {
        let id = format!("{node}/w{i}");
        let (actor, handle) = Actor::spawn(
            None,
            Worker,
            WorkerArgs {
                id: id.clone(),
                device: device.clone(),
                threads: opts.threads,
                runner: opts.runner.clone(),
                events: Events::Remote {
                    coordinator: coordinator.clone(),
                    key: key.clone(),
                },
                host: Some(link.clone()),
                root: opts.root.clone(),
            },
        )
        .await
        .map_err(|e| format!("starting worker {id} on {device}: {e}"))?;
        offered.push(RemoteWorker {
            id: id.clone(),
            device: device.clone(),
            group: worker_group(&id),
        });
        workers.push((actor, handle));
    }
    coordinator
        .send_message(ToCoordinator::Join(JoinRequest {
            version: PROTOCOL_VERSION,
            node: node.to_string(),
            workers: offered,
            key,
        }))
        .map_err(|e| format!("cannot reach the coordinator at {addr}: {e}"))?;
    eprintln!(
        "worker host {node}: {} worker(s) ({}) joined the coordinator at {addr}",
        opts.devices.len(),
        opts.devices.join(", ")
    );
    let end = watch(&link, &workers, server, addr, opts.connect_timeout).await;
    for (actor, _) in &workers {
        actor.stop(None);
    }
    for (_, handle) in workers {
        let _ = handle.await;
    }
    end
}

/// Waits for the host's workers to be shut down by the coordinator, or for a reason to give up.
async fn watch(
    link: &HostLink,
    workers: &[(
        ActorRef<crate::protocol::WorkerMsg>,
        tokio::task::JoinHandle<()>,
    )],
    server: &ActorRef<NodeServerMessage>,
    addr: std::net::SocketAddr,
    first_ping_timeout: Duration,
) -> Result<HostEnd, String> {
    let joined = Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => return Ok(HostEnd::Interrupted),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        if workers.iter().all(|(_, h)| h.is_finished()) {
            return match link.refusal() {
                Some(why) => Err(format!("the coordinator at {addr} stopped {why}")),
                None => Ok(HostEnd::Finished),
            };
        }
        if let Some((silence, timeout)) = link.silent_for() {
            return Err(format!(
                "no heartbeat from the coordinator at {addr} for {:.1}s (its timeout is {:.1}s): its \
                 running jobs were cancelled here and will be rescheduled by the coordinator",
                silence.as_secs_f64(),
                timeout.as_secs_f64()
            ));
        }
        if !link.has_heard() && joined.elapsed() > first_ping_timeout {
            return Err(format!(
                "the coordinator at {addr} accepted the connection but never sent a heartbeat"
            ));
        }
        if !session_open(server).await {
            return Err(format!(
                "the coordinator at {addr} closed the connection; running jobs were cancelled"
            ));
        }
    }
}

/// Whether this node still has an authenticated session (the one to the coordinator).
async fn session_open(server: &ActorRef<NodeServerMessage>) -> bool {
    let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 1000) else {
        return false;
    };
    for s in sessions.into_values() {
        if let Ok(true) = ractor::call_t!(s.actor, NodeSessionMessage::GetReadyState, 1000) {
            return true;
        }
    }
    false
}

async fn wait_until_ready(
    server: &ActorRef<NodeServerMessage>,
    deadline: Instant,
) -> Result<(), String> {
    loop {
        if session_open(server).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(
                "the connection was not accepted in time (a wrong --cookie is refused \
                 silently by the coordinator's node, and so is a plain connection to a coordinator \
                 serving TLS: then pass --tls-ca)"
                    .into(),
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn find_coordinator(deadline: Instant) -> Option<ActorCell> {
    loop {
        let remote = ractor::pg::get_members(&COORDINATOR_GROUP.to_string())
            .into_iter()
            .find(|c| !c.get_id().is_local());
        if remote.is_some() || Instant::now() > deadline {
            return remote;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
