//! The metrics endpoint: hyper (HTTP/1.1) on a one-thread tokio runtime of its own, answering
//! `GET /metrics` (Prometheus text format), `GET /health` (200 "ok"), 404 for other paths and 405 for other
//! methods. Every connection serves one request under a header deadline and a whole-connection deadline, at
//! most [`MAX_CONNECTIONS`] at a time, so a client that trickles bytes or never reads holds one slot for
//! seconds, never the endpoint for hours; and stopping the server drops every open connection at once, so
//! process exit never waits on a stuck scrape. None of it touches the training thread.

use std::convert::Infallible;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{oneshot, Semaphore};

use crate::error::{Error, Result};

/// The request line and headers must arrive within this (Prometheus sends them in one packet).
const HEADER_DEADLINE: Duration = Duration::from_secs(3);
/// A connection is closed this long after it was accepted, whatever state it is in.
const CONNECTION_DEADLINE: Duration = Duration::from_secs(10);
/// Connections served at once; one beyond is closed at accept.
pub const MAX_CONNECTIONS: usize = 32;

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

type Render = Arc<Mutex<dyn Fn() -> String + Send>>;

/// A running endpoint; dropping it stops the server and closes every open connection.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// Binds `addr` and serves `render()` on `/metrics`.
    pub fn start<F>(addr: SocketAddr, render: F) -> Result<Self>
    where
        F: Fn() -> String + Send + 'static,
    {
        let listener = std::net::TcpListener::bind(addr).map_err(|e| {
            Error::Telemetry(format!(
                "cannot serve metrics on {addr}: {e} (is the port in use? choose another --metrics-addr)"
            ))
        })?;
        let setup =
            |e: std::io::Error| Error::Telemetry(format!("metrics listener on {addr}: {e}"));
        let addr = listener.local_addr().map_err(setup)?;
        listener.set_nonblocking(true).map_err(setup)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(setup)?;
        let render: Render = Arc::new(Mutex::new(render));
        let (stop, stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("storm-metrics".into())
            .spawn(move || {
                runtime.block_on(accept_loop(listener, render, stopped));
                // dropping the runtime here cancels every connection still open
            })
            .map_err(|e| Error::Telemetry(format!("starting the metrics thread: {e}")))?;
        Ok(MetricsServer {
            addr,
            stop: Some(stop),
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
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: std::net::TcpListener,
    render: Render,
    mut stopped: oneshot::Receiver<()>,
) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("metrics endpoint not served: {e}");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(5);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = Duration::from_millis(5);
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!("metrics: {MAX_CONNECTIONS} connections open, closing {peer}");
                        continue;
                    };
                    let render = render.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, render).await;
                        drop(slot);
                    });
                }
                // out of file descriptors and the like: back off instead of spinning
                Err(e) => {
                    tracing::debug!("metrics accept: {e}; retrying in {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}

async fn serve_connection(stream: tokio::net::TcpStream, render: Render) {
    let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
        let render = render.clone();
        async move { Ok::<_, Infallible>(respond(&req, &render)) }
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(HEADER_DEADLINE)
        .keep_alive(false);
    let conn = http.serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_DEADLINE, conn).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("metrics request: {e}"),
        Err(_) => tracing::debug!("metrics request: closed after {CONNECTION_DEADLINE:?}"),
    }
}

fn respond<B>(req: &Request<B>, render: &Render) -> Response<Full<Bytes>> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let render = render
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            (StatusCode::OK, prometheus::TEXT_FORMAT, render())
        }
        (&Method::GET, "/health") => (StatusCode::OK, TEXT, "ok\n".to_string()),
        (&Method::GET, _) => (
            StatusCode::NOT_FOUND,
            TEXT,
            "not found: try /metrics or /health\n".to_string(),
        ),
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            TEXT,
            "only GET is supported\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Instant;

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

    /// A client that sends its request head one byte every 200 ms (a slowloris) neither blocks other scrapes
    /// nor holds its connection past the header deadline, and stopping the server does not wait for it.
    #[test]
    fn a_trickling_client_is_cut_off_and_never_delays_a_scrape_or_the_exit() {
        let server =
            MetricsServer::start("127.0.0.1:0".parse().unwrap(), || "storm_x 1\n".to_string())
                .unwrap();
        let addr = server.addr();
        let mut slow = TcpStream::connect(addr).unwrap();
        slow.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let began = Instant::now();
        let mut cut_off = None;
        for byte in b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: "
            .iter()
            .cycle()
        {
            if began.elapsed() > Duration::from_secs(30) {
                break;
            }
            if slow.write_all(&[*byte]).is_err() {
                cut_off = Some(began.elapsed());
                break;
            }
            let mut buf = [0u8; 256];
            match slow.read(&mut buf) {
                Ok(_) => {
                    cut_off = Some(began.elapsed());
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    cut_off = Some(began.elapsed());
                    break;
                }
            }
            if began.elapsed() < Duration::from_millis(300) {
                assert!(get(addr, "/metrics").ends_with("storm_x 1\n"));
            }
            std::thread::sleep(Duration::from_millis(150));
        }
        let cut_off = cut_off.expect("the trickling connection was never closed");
        assert!(
            cut_off >= HEADER_DEADLINE && cut_off < CONNECTION_DEADLINE + Duration::from_secs(2),
            "closed after {cut_off:?}"
        );
        // stopping while a fresh stuck client holds a connection returns at once
        let _stuck = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let stopping = Instant::now();
        drop(server);
        assert!(
            stopping.elapsed() < Duration::from_secs(2),
            "{:?}",
            stopping.elapsed()
        );
        assert!(TcpStream::connect(addr).is_err(), "the port is released");
    }

    #[test]
    fn other_methods_are_refused() {
        let server = MetricsServer::start("127.0.0.1:0".parse().unwrap(), String::new).unwrap();
        let mut s = TcpStream::connect(server.addr()).unwrap();
        write!(
            s,
            "POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    }
}
