//! The metrics endpoint: one background thread on a `std::net::TcpListener` answering `GET /metrics`
//! (Prometheus text format), `GET /health` (200 "ok") and 404 for anything else. Requests are served one at
//! a time with short socket timeouts, so a stalled client delays a scrape by at most a few seconds and never
//! touches the training thread.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::error::{Error, Result};

const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest request head read; Prometheus sends a few hundred bytes.
const MAX_REQUEST: usize = 16 * 1024;

/// Parses `--metrics-addr`: `HOST:PORT`, `:PORT` or `PORT` (the last two bind 127.0.0.1), and adds
/// `port_offset` (the local rank) to the port. Port 0 asks the OS for a free port and stays 0.
pub fn parse_metrics_addr(s: &str, port_offset: u16) -> Result<SocketAddr> {
    let bad = |why: &str| {
        Error::Telemetry(format!(
            "--metrics-addr `{s}`: {why}; expected HOST:PORT, :PORT or PORT (e.g. 127.0.0.1:9400 or 9400)"
        ))
    };
    let s = s.trim();
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() => (h.trim_start_matches('[').trim_end_matches(']'), p),
        Some((_, p)) => ("127.0.0.1", p),
        None => ("127.0.0.1", s),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| bad("the port is not a number between 0 and 65535"))?;
    let port = if port == 0 {
        0
    } else {
        port.checked_add(port_offset)
            .ok_or_else(|| bad(&format!("port + local rank {port_offset} exceeds 65535")))?
    };
    (host, port)
        .to_socket_addrs()
        .map_err(|e| bad(&format!("cannot resolve `{host}`: {e}")))?
        .next()
        .ok_or_else(|| bad(&format!("`{host}` resolves to no address")))
}

/// A running endpoint; dropping it stops the thread.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `render()` on `/metrics`.
    pub fn start<F>(addr: SocketAddr, render: F) -> Result<Self>
    where
        F: Fn() -> String + Send + 'static,
    {
        let listener = TcpListener::bind(addr).map_err(|e| {
            Error::Telemetry(format!(
                "cannot serve metrics on {addr}: {e} (is the port in use? choose another --metrics-addr)"
            ))
        })?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Telemetry(format!("metrics listener address: {e}")))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("storm-metrics".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if flag.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(stream) = conn {
                        if let Err(e) = handle(stream, &render) {
                            tracing::debug!("metrics request: {e}");
                        }
                    }
                }
            })
            .map_err(|e| Error::Telemetry(format!("starting the metrics thread: {e}")))?;
        Ok(MetricsServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // wake the blocking accept; an unspecified bind address is reachable on loopback
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                [127, 0, 0, 1].into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        if TcpStream::connect_timeout(&wake, IO_TIMEOUT).is_ok() {
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

fn handle(mut stream: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => ("200 OK", prometheus::TEXT_FORMAT, render()),
        ("GET", "/health") => ("200 OK", "text/plain; charset=utf-8", "ok\n".to_string()),
        ("GET", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: try /metrics or /health\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET is supported\n".to_string(),
        ),
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn addresses_default_to_loopback_and_add_the_local_rank() {
        let a = |s: &str, off| parse_metrics_addr(s, off).unwrap().to_string();
        assert_eq!(a("9400", 0), "127.0.0.1:9400");
        assert_eq!(a(":9400", 2), "127.0.0.1:9402");
        assert_eq!(a("0.0.0.0:9400", 1), "0.0.0.0:9401");
        assert_eq!(a("[::1]:9400", 0), "[::1]:9400");
        assert_eq!(a("127.0.0.1:0", 3), "127.0.0.1:0");
        for bad in ["", "abc", ":70000", "127.0.0.1:x"] {
            let err = parse_metrics_addr(bad, 0).unwrap_err().to_string();
            assert!(err.contains("--metrics-addr"), "{err}");
        }
        let err = parse_metrics_addr("65535", 1).unwrap_err().to_string();
        assert!(err.contains("exceeds 65535"), "{err}");
    }

    #[test]
    fn serves_metrics_health_and_404() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), || "storm_x 1\n".to_string())
                .unwrap();
        let addr = server.addr();
        assert_ne!(addr.port(), 0);
        let m = get(addr, "/metrics");
        assert!(m.starts_with("HTTP/1.1 200 OK"), "{m}");
        assert!(m.contains("text/plain; version=0.0.4"), "{m}");
        assert!(m.ends_with("\r\n\r\nstorm_x 1\n"), "{m}");
        assert!(get(addr, "/health").ends_with("\r\n\r\nok\n"));
        assert!(get(addr, "/nope").starts_with("HTTP/1.1 404"));
        let err = MetricsServer::start(addr, String::new).err().unwrap();
        assert!(err.to_string().contains("in use"), "{err}");
        drop(server);
        assert!(TcpStream::connect(addr).is_err(), "the port is released");
    }
}
