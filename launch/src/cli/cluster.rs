//! Remote workers: the `--listen` flags of `storm sweep` / `storm paper` (the coordinator's side) and
//! `storm worker --connect` (a worker host on this or another machine).

use std::net::ToSocketAddrs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use storm_coordinator::cluster::COOKIE_FILE;
use storm_coordinator::ClusterOptions;
use storm_worker::{run_host, HostEnd, HostOptions, ProcessRunner};

use super::sweep::{PoolArgs, EXIT_INTERRUPTED};

/// Environment variable holding the cluster cookie (instead of `--cookie`).
pub const COOKIE_ENV: &str = "STORM_CLUSTER_COOKIE";

/// The shortest cookie accepted: 16 bytes, as long as the random one a coordinator makes (in hex, 32).
pub const MIN_COOKIE_BYTES: usize = 16;

/// Refuses an empty or short cookie; `origin` names where it came from.
fn checked_cookie(origin: &str, cookie: String) -> Result<String> {
    if cookie.len() < MIN_COOKIE_BYTES {
        bail!(
            "{origin}: a cluster cookie must be at least {MIN_COOKIE_BYTES} bytes (got {}); leave it out and \
             the coordinator writes a random one to <out>/{COOKIE_FILE}",
            cookie.len()
        );
    }
    Ok(cookie)
}

/// The longest timeout a flag accepts: a week (longer ones overflow a timer and mean "never" anyway).
pub const MAX_TIMEOUT_SECONDS: f64 = 7.0 * 24.0 * 3600.0;

/// A timeout flag's value as a duration, between `min` seconds and [`MAX_TIMEOUT_SECONDS`].
fn timeout(flag: &str, seconds: f64, min: f64) -> Result<Duration> {
    if !(seconds.is_finite() && (min..=MAX_TIMEOUT_SECONDS).contains(&seconds)) {
        bail!("{flag} {seconds}: must be between {min} and {MAX_TIMEOUT_SECONDS} seconds (a week)");
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// `--cookie` shows the secret to every user of the machine (`ps`); say so once.
fn warn_command_line_cookie() {
    eprintln!(
        "warning: --cookie is visible to other users of this machine in the process list; prefer \
         --cookie-file or ${COOKIE_ENV}"
    );
}

#[derive(Args, Clone, Default)]
pub struct ClusterArgs {
    /// Accept remote workers (`storm worker --connect`) on HOST:PORT, e.g. 0.0.0.0:7070. Without
    /// --workers/--devices no local worker is started.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<String>,
    /// Shared secret remote workers must present (default: $STORM_CLUSTER_COOKIE, else a new random
    /// cookie written to <out>/cluster.cookie).
    #[arg(long, requires = "listen")]
    pub cookie: Option<String>,
    /// Seconds without an answer after which a remote worker is declared lost and its job rescheduled.
    #[arg(long, default_value_t = 30.0, requires = "listen")]
    pub heartbeat_timeout: f64,
    /// Encrypt the workers' connections with TLS: this PEM certificate (chain) identifies the coordinator
    /// (workers need `--tls-ca` with its CA, or with the certificate itself when self-signed).
    #[arg(long, value_name = "PEM", requires_all = ["listen", "tls_key"])]
    pub tls_cert: Option<PathBuf>,
    /// The certificate's PEM private key (keep it owner-only).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ClusterArgs {
    /// The coordinator's cluster settings, or None without --listen.
    pub fn options(&self) -> Result<Option<ClusterOptions>> {
        let Some(listen) = &self.listen else {
            return Ok(None);
        };
        let mut addrs = listen
            .to_socket_addrs()
            .with_context(|| format!("--listen {listen}: expected HOST:PORT, e.g. 0.0.0.0:7070"))?;
        let addr = addrs
            .next()
            .with_context(|| format!("--listen {listen}: the name resolves to no address"))?;
        // refuse a taken port before the sweep directory is created (no partial output); the coordinator
        // binds it again moments later
        std::net::TcpListener::bind(addr)
            .with_context(|| format!("--listen {listen}: cannot listen there"))?;
        let heartbeat_timeout = timeout("--heartbeat-timeout", self.heartbeat_timeout, 0.5)?;
        let cookie = match (&self.cookie, std::env::var(COOKIE_ENV)) {
            (Some(c), _) => {
                warn_command_line_cookie();
                Some(checked_cookie("--cookie", c.clone())?)
            }
            (None, Ok(c)) if !c.is_empty() => Some(checked_cookie(&format!("${COOKIE_ENV}"), c)?),
            (None, _) => None,
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => {
                let files = storm_worker::tls::ServerFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                };
                // a bad certificate or key fails here, before the sweep directory is made
                storm_worker::tls::acceptor(&files).map_err(anyhow::Error::msg)?;
                Some(files)
            }
            _ => None,
        };
        Ok(Some(ClusterOptions {
            listen: addr,
            cookie,
            heartbeat_timeout,
            handshake_deadline: storm_coordinator::handshake::HANDSHAKE_DEADLINE,
            tls,
        }))
    }
}

#[derive(Args)]
pub struct WorkerArgs {
    /// The coordinator's --listen address, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    pub connect: String,
    /// The session's cookie (default: $STORM_CLUSTER_COOKIE).
    #[arg(long, conflicts_with = "cookie_file")]
    pub cookie: Option<String>,
    /// A file holding the cookie, e.g. the sweep directory's cluster.cookie.
    #[arg(long)]
    pub cookie_file: Option<PathBuf>,
    /// Seconds to wait for the coordinator to accept the connection.
    #[arg(long, default_value_t = 30.0)]
    pub connect_timeout: f64,
    /// The sweep directory as this host sees it (default: the directory of --cookie-file); jobs whose
    /// directories lie elsewhere are refused.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Connect over TLS, trusting the coordinator's certificate if this PEM file's CA (or the self-signed
    /// certificate itself) vouches for it; for a coordinator started with --tls-cert.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// The name the coordinator's certificate must carry (default: the host of --connect).
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    #[command(flatten)]
    pub pool: PoolArgs,
}

impl WorkerArgs {
    /// Where this host's workers accept jobs: --root, else the directory holding --cookie-file.
    fn root(&self) -> Result<PathBuf> {
        let root = match (&self.root, &self.cookie_file) {
            (Some(root), _) => root.clone(),
            (None, Some(file)) => std::path::absolute(file)
                .with_context(|| format!("--cookie-file {}", file.display()))?
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("/")),
            (None, None) => bail!(
                "--root DIR is needed with --cookie or ${COOKIE_ENV}: the sweep directory as this host sees \
                 it (workers refuse jobs outside it)"
            ),
        };
        Ok(root)
    }

    fn cookie(&self) -> Result<String> {
        if let Some(c) = &self.cookie {
            warn_command_line_cookie();
            return checked_cookie("--cookie", c.clone());
        }
        if let Some(p) = &self.cookie_file {
            let c = std::fs::read_to_string(p)
                .with_context(|| format!("--cookie-file {}", p.display()))?;
            let c = c.trim();
            if c.is_empty() {
                bail!("--cookie-file {}: the file is empty", p.display());
            }
            return checked_cookie(&format!("--cookie-file {}", p.display()), c.to_string());
        }
        match std::env::var(COOKIE_ENV) {
            Ok(c) if !c.is_empty() => checked_cookie(&format!("${COOKIE_ENV}"), c),
            _ => bail!(
                "the coordinator's cookie is needed: --cookie-file <sweep dir>/{COOKIE_FILE}, --cookie, \
                 or ${COOKIE_ENV}"
            ),
        }
    }
}

/// `storm worker`: serve jobs for a coordinator until it ends the session.
pub fn run_worker(a: WorkerArgs) -> Result<()> {
    let connect_timeout = timeout("--connect-timeout", a.connect_timeout, 0.1)?;
    let devices = a.pool.devices()?;
    let opts = HostOptions {
        connect: a.connect.clone(),
        cookie: a.cookie()?,
        threads: a.pool.threads(devices.len()),
        devices,
        runner: Arc::new(ProcessRunner::current_exe().context("locating the storm binary")?),
        connect_timeout,
        root: a.root()?,
        tls: a.tls_ca.clone().map(|ca| storm_worker::tls::ClientFiles {
            ca,
            server_name: a.tls_server_name.clone(),
        }),
    };
    match run_host(opts).map_err(anyhow::Error::msg)? {
        HostEnd::Finished => {
            eprintln!("the coordinator ended the session");
            Ok(())
        }
        HostEnd::Interrupted => {
            eprintln!(
                "interrupted: running jobs were cancelled (the coordinator reschedules them)"
            );
            std::process::exit(EXIT_INTERRUPTED);
        }
    }
}
