//! The CPU collective: processes joined over TCP in a star around rank 0.
//!
//! Rendezvous: rank 0 listens on MASTER_ADDR:MASTER_PORT (that address only, not every interface), every
//! other rank connects there and introduces itself (magic, version, rank, world size, the launch's job token);
//! rank 0 answers once all have arrived. A connection that is not a rank of this launch (another program, a
//! rank of another job, one that says nothing for a few seconds) is closed and logged, and the rendezvous
//! goes on waiting for the real ranks. Reductions gather every rank's buffer at rank 0, add them in rank order 0, 1, …, W−1 (so the
//! result does not depend on arrival order), and send the result back: every rank ends with the same bytes.
//! Every message is framed (operation tag, byte length), so ranks that disagree on the sequence of
//! collective calls get an error naming both, never a silent mix-up. A rank that dies closes its socket and
//! the others fail at their next collective call; one that hangs (or whose host vanishes without closing
//! anything) is caught by the per-operation socket timeout and TCP keepalive ([`Timeouts`]), so every rank
//! ends with an error instead of waiting forever.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};

use super::{Collective, DistEnv};
use crate::error::{Error, Result};

const MAGIC: &[u8; 4] = b"STRM";
const VERSION: u32 = 2;
/// How long rank 0 waits for a connection's introduction before closing it as a stranger.
const HELLO_DEADLINE: Duration = Duration::from_secs(5);

/// How long the collective waits: for every rank at the rendezvous, and for one send or receive after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub rendezvous: Duration,
    /// The longest a rank waits on a peer inside one collective call. It must cover the longest stretch a
    /// rank spends between collectives while others wait (rank 0 evaluating or writing a checkpoint).
    pub operation: Duration,
}

/// The job token of this launch: `STORM_JOB_TOKEN` (set by `storm launch` to a fresh random value), else
/// derived from the launcher's job id (`TORCHELASTIC_RUN_ID`, `SLURM_JOB_ID`) and the rendezvous address, so
/// ranks of two jobs that meet on one port tell each other apart.
pub fn job_token(env: &DistEnv, var: impl Fn(&str) -> Option<String>) -> u64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    match var("STORM_JOB_TOKEN").filter(|t| !t.is_empty()) {
        Some(token) => h.update(token.as_bytes()),
        None => {
            for key in ["TORCHELASTIC_RUN_ID", "SLURM_JOB_ID"] {
                h.update(var(key).unwrap_or_default().as_bytes());
                h.update([0]);
            }
            h.update(
                format!("{}:{}/{}", env.master_addr, env.master_port, env.world_size).as_bytes(),
            );
        }
    }
    u64::from_le_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    SumF32 = 1,
    MeanF32 = 2,
    BroadcastF32 = 3,
    Barrier = 4,
    SumF64 = 5,
    Bytes = 6,
}

impl Op {
    fn name(tag: u8) -> &'static str {
        match tag {
            1 => "all_reduce_sum",
            2 => "all_reduce_mean",
            3 => "broadcast",
            4 => "barrier",
            5 => "all_reduce_f64",
            6 => "broadcast_bytes",
            _ => "unknown",
        }
    }
}

/// Plain numbers whose every bit pattern is valid, so a buffer of them can be read and written as bytes.
trait Element: Copy + std::ops::AddAssign {}
impl Element for f32 {}
impl Element for f64 {}

fn bytes_of<T: Element>(v: &[T]) -> &[u8] {
    // SAFETY: f32/f64 have no padding; any initialised value is readable as bytes.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

fn bytes_of_mut<T: Element>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: every bit pattern is a valid f32/f64, so writing arbitrary bytes keeps the slice valid.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

pub struct TcpCollective {
    rank: usize,
    world: usize,
    operation_timeout: Duration,
    /// Rank 0: the streams of ranks 1..W in rank order. Others: the stream to rank 0.
    peers: Vec<TcpStream>,
    scratch32: Vec<f32>,
    scratch64: Vec<f64>,
}

impl TcpCollective {
    /// Joins the process group described by `env` under `token` (see [`job_token`]).
    pub fn connect(env: &DistEnv, token: u64, timeouts: Timeouts) -> Result<Self> {
        let peers = if env.rank == 0 {
            accept_all(env, token, timeouts.rendezvous)?
        } else {
            vec![connect_to_master(env, token, timeouts.rendezvous)?]
        };
        for (i, s) in peers.iter().enumerate() {
            let peer = if env.rank == 0 { i + 1 } else { 0 };
            watch_link(s, timeouts.operation)
                .map_err(|e| Error::Network(format!("setting up the link to rank {peer}: {e}")))?;
        }
        Ok(TcpCollective {
            rank: env.rank,
            world: env.world_size,
            operation_timeout: timeouts.operation,
            peers,
            scratch32: Vec::new(),
            scratch64: Vec::new(),
        })
    }

    fn peer_rank(&self, i: usize) -> usize {
        if self.rank == 0 {
            i + 1
        } else {
            0
        }
    }

    fn send(&mut self, i: usize, op: Op, payload: &[u8]) -> Result<()> {
        let peer = self.peer_rank(i);
        let mut header = [0u8; 9];
        header[0] = op as u8;
        header[1..].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        let s = &mut self.peers[i];
        s.write_all(&header)
            .and_then(|_| s.write_all(payload))
            .map_err(|e| link_error(peer, "sending to", e, self.operation_timeout))
    }

    /// Reads one frame's header and checks that it is `op` with `len` bytes (`None`: any length); returns
    /// the length.
    fn recv_header(&mut self, i: usize, op: Op, len: Option<usize>) -> Result<usize> {
        let peer = self.peer_rank(i);
        let mut header = [0u8; 9];
        self.peers[i]
            .read_exact(&mut header)
            .map_err(|e| link_error(peer, "receiving from", e, self.operation_timeout))?;
        let got = u64::from_le_bytes(header[1..].try_into().expect("8 bytes")) as usize;
        if header[0] != op as u8 || len.is_some_and(|l| l != got) {
            return Err(Error::Network(format!(
                "collective mismatch: rank {} called {} ({} bytes) while rank {} called {} ({got} bytes); \
                 the ranks run different code or configs",
                self.rank,
                Op::name(op as u8),
                len.map_or("any".into(), |l| l.to_string()),
                peer,
                Op::name(header[0]),
            )));
        }
        Ok(got)
    }

    fn recv_into(&mut self, i: usize, buf: &mut [u8]) -> Result<()> {
        let peer = self.peer_rank(i);
        self.peers[i]
            .read_exact(buf)
            .map_err(|e| link_error(peer, "receiving from", e, self.operation_timeout))
    }

    /// Sum (and `finish`) over ranks of `data`, in rank order, identical on every rank.
    fn reduce<T: Element>(
        &mut self,
        op: Op,
        data: &mut [T],
        scratch: fn(&mut Self) -> &mut Vec<T>,
        zero: T,
        finish: impl Fn(&mut [T]),
    ) -> Result<()> {
        let nbytes = std::mem::size_of_val(data);
        if self.rank == 0 {
            let mut buf = std::mem::take(scratch(self));
            buf.clear();
            buf.resize(data.len(), zero);
            for i in 0..self.peers.len() {
                self.recv_header(i, op, Some(nbytes))?;
                self.recv_into(i, bytes_of_mut(&mut buf))?;
                for (a, b) in data.iter_mut().zip(&buf) {
                    *a += *b;
                }
            }
            *scratch(self) = buf;
            finish(data);
            for i in 0..self.peers.len() {
                self.send(i, op, bytes_of(data))?;
            }
        } else {
            self.send(0, op, bytes_of(data))?;
            self.recv_header(0, op, Some(nbytes))?;
            self.recv_into(0, bytes_of_mut(data))?;
        }
        Ok(())
    }

    fn broadcast_raw(&mut self, op: Op, data: &mut [u8]) -> Result<()> {
        if self.rank == 0 {
            for i in 0..self.peers.len() {
                self.send(i, op, data)?;
            }
        } else {
            self.recv_header(0, op, Some(data.len()))?;
            self.recv_into(0, data)?;
        }
        Ok(())
    }

    /// Runs `f` on the tensor's f32 values in place: directly on its memory when it is a contiguous CPU
    /// f32 tensor, else on a CPU copy that is written back.
    fn with_f32(
        &mut self,
        t: &Tensor,
        f: impl FnOnce(&mut Self, &mut [f32]) -> Result<()>,
    ) -> Result<()> {
        let n = t.numel();
        if t.device() == Device::Cpu && t.kind() == Kind::Float && t.is_contiguous() {
            // SAFETY: a contiguous CPU f32 tensor owns `n` f32 values at data_ptr; nothing else touches the
            // tensor while the slice lives (tch tensors are used from one thread).
            let data = unsafe { std::slice::from_raw_parts_mut(t.data_ptr().cast::<f32>(), n) };
            return f(self, data);
        }
        let cpu = t
            .detach()
            .to_device(Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        let mut data = vec![0f32; n];
        cpu.f_copy_data(&mut data, n)?;
        f(self, &mut data)?;
        let back = Tensor::from_slice(&data)
            .view(t.size().as_slice())
            .to_device(t.device())
            .to_kind(t.kind());
        tch::no_grad(|| t.shallow_clone().f_copy_(&back))?;
        Ok(())
    }
}

fn link_error(peer: usize, what: &str, e: std::io::Error, timeout: Duration) -> Error {
    let hint = match e.kind() {
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe => {
            " (the rank has exited; see its error)".to_string()
        }
        ErrorKind::WouldBlock | ErrorKind::TimedOut => format!(
            " (nothing for {}s: the rank is hung or its host is gone; STORM_COLLECTIVE_TIMEOUT sets this limit)",
            timeout.as_secs_f64()
        ),
        _ => String::new(),
    };
    Error::Network(format!("{what} rank {peer} failed: {e}{hint}"))
}

/// After the rendezvous: every read and write on `s` gives up after `timeout`, and TCP keepalive probes a
/// silent peer so a host that vanished without closing its socket is noticed.
fn watch_link(s: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(30))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    socket2::SockRef::from(s).set_tcp_keepalive(&keepalive)
}

fn accept_all(env: &DistEnv, token: u64, timeout: Duration) -> Result<Vec<TcpStream>> {
    let listener = TcpListener::bind((env.master_addr.as_str(), env.master_port)).map_err(|e| {
        let hint = if e.kind() == ErrorKind::AddrNotAvailable {
            "MASTER_ADDR must be an address of rank 0's machine"
        } else {
            "is another job using it? set MASTER_PORT"
        };
        Error::Network(format!(
            "rank 0 cannot listen on {}:{} for the rendezvous: {e} ({hint})",
            env.master_addr, env.master_port
        ))
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| Error::Network(format!("rendezvous socket: {e}")))?;
    let deadline = Instant::now() + timeout;
    let mut slots: Vec<Option<TcpStream>> = (1..env.world_size).map(|_| None).collect();
    while slots.iter().any(Option::is_none) {
        match listener.accept() {
            Ok((stream, from)) => {
                let (rank, stream) = match greet_worker(stream, from, env, token) {
                    Ok(joined) => joined,
                    Err(e) => {
                        tracing::warn!("{e}; closed that connection, still waiting for the ranks");
                        continue;
                    }
                };
                if slots[rank - 1].is_some() {
                    return Err(Error::Network(format!(
                        "two processes joined the rendezvous as rank {rank} (the second from {from})"
                    )));
                }
                slots[rank - 1] = Some(stream);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let missing: Vec<String> = slots
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    return Err(Error::Network(format!(
                        "rendezvous timed out after {}s on port {}: rank(s) {} never joined",
                        timeout.as_secs(),
                        env.master_port,
                        missing.join(", ")
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(Error::Network(format!("rendezvous accept failed: {e}"))),
        }
    }
    let mut peers: Vec<TcpStream> = slots.into_iter().flatten().collect();
    let mut ack = Vec::with_capacity(12);
    ack.extend_from_slice(MAGIC);
    ack.extend_from_slice(&VERSION.to_le_bytes());
    ack.extend_from_slice(&(env.world_size as u32).to_le_bytes());
    for (i, s) in peers.iter_mut().enumerate() {
        s.write_all(&ack)
            .map_err(|e| link_error(i + 1, "greeting", e, HELLO_DEADLINE))?;
    }
    Ok(peers)
}

/// Reads a connecting rank's introduction and checks it against this job; an error means "not one of ours".
fn greet_worker(
    stream: TcpStream,
    from: SocketAddr,
    env: &DistEnv,
    token: u64,
) -> Result<(usize, TcpStream)> {
    let mut stream = stream;
    let setup = |s: &TcpStream| -> std::io::Result<()> {
        s.set_nonblocking(false)?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(HELLO_DEADLINE))
    };
    setup(&stream).map_err(|e| Error::Network(format!("rendezvous with {from}: {e}")))?;
    let mut hello = [0u8; 24];
    stream
        .read_exact(&mut hello)
        .map_err(|e| Error::Network(format!("rendezvous with {from}: no introduction: {e}")))?;
    let word = |i: usize| u32::from_le_bytes(hello[i..i + 4].try_into().expect("4 bytes"));
    if &hello[..4] != MAGIC || word(4) != VERSION {
        return Err(Error::Network(format!(
            "rendezvous: {from} is not a storm rank of this version (port {} in use by something else?)",
            env.master_port
        )));
    }
    if u64::from_le_bytes(hello[16..24].try_into().expect("8 bytes")) != token {
        return Err(Error::Network(format!(
            "rendezvous: {from} is a storm rank of another launch (its job token differs)"
        )));
    }
    let (rank, world) = (word(8) as usize, word(12) as usize);
    if world != env.world_size || rank == 0 || rank >= world {
        return Err(Error::Network(format!(
            "rendezvous: {from} joined as rank {rank} of {world}, but this job has WORLD_SIZE {}",
            env.world_size
        )));
    }
    stream
        .set_read_timeout(None)
        .map_err(|e| Error::Network(format!("rendezvous with {from}: {e}")))?;
    Ok((rank, stream))
}

fn connect_to_master(env: &DistEnv, token: u64, timeout: Duration) -> Result<TcpStream> {
    let deadline = Instant::now() + timeout;
    let target = format!("{}:{}", env.master_addr, env.master_port);
    let mut last_error = String::from("no address");
    let mut stream = loop {
        let addrs: Vec<SocketAddr> = match target.to_socket_addrs() {
            Ok(a) => a.collect(),
            Err(e) => {
                last_error = format!("cannot resolve {target}: {e}");
                Vec::new()
            }
        };
        let connected = addrs.iter().find_map(|a| {
            TcpStream::connect_timeout(a, Duration::from_secs(5))
                .map_err(|e| last_error = e.to_string())
                .ok()
        });
        if let Some(s) = connected {
            break s;
        }
        if Instant::now() >= deadline {
            return Err(Error::Network(format!(
                "rank {} could not reach rank 0 at {target} within {}s: {last_error}",
                env.rank,
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let io = |e: std::io::Error| Error::Network(format!("rendezvous with rank 0 at {target}: {e}"));
    stream.set_nodelay(true).map_err(io)?;
    let mut hello = Vec::with_capacity(24);
    hello.extend_from_slice(MAGIC);
    hello.extend_from_slice(&VERSION.to_le_bytes());
    hello.extend_from_slice(&(env.rank as u32).to_le_bytes());
    hello.extend_from_slice(&(env.world_size as u32).to_le_bytes());
    hello.extend_from_slice(&token.to_le_bytes());
    stream.write_all(&hello).map_err(io)?;
    let wait = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    let mut ack = [0u8; 12];
    stream.read_exact(&mut ack).map_err(|e| {
        Error::Network(format!(
            "rank {} joined {target} but rank 0 never confirmed the group: {e}",
            env.rank
        ))
    })?;
    if &ack[..4] != MAGIC {
        return Err(Error::Network(format!(
            "{target} is not a storm rendezvous"
        )));
    }
    stream.set_read_timeout(None).map_err(io)?;
    Ok(stream)
}

impl Collective for TcpCollective {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.world
    }
    fn backend(&self) -> &'static str {
        "tcp"
    }

    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<()> {
        self.with_f32(t, |c, data| {
            c.reduce(Op::SumF32, data, |c| &mut c.scratch32, 0.0, |_| {})
        })
    }

    fn all_reduce_mean(&mut self, t: &Tensor) -> Result<()> {
        let w = self.world as f32;
        self.with_f32(t, |c, data| {
            c.reduce(
                Op::MeanF32,
                data,
                |c| &mut c.scratch32,
                0.0,
                |d| d.iter_mut().for_each(|x| *x /= w),
            )
        })
    }

    fn broadcast(&mut self, t: &Tensor) -> Result<()> {
        self.with_f32(t, |c, data| {
            c.broadcast_raw(Op::BroadcastF32, bytes_of_mut(data))
        })
    }

    fn barrier(&mut self) -> Result<()> {
        self.reduce(Op::Barrier, &mut [0f64], |c| &mut c.scratch64, 0.0, |_| {})
    }

    fn all_reduce_f64(&mut self, values: &mut [f64]) -> Result<()> {
        self.reduce(Op::SumF64, values, |c| &mut c.scratch64, 0.0, |_| {})
    }

    fn broadcast_bytes(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        if self.rank == 0 {
            let mut b = bytes;
            self.broadcast_raw(Op::Bytes, &mut b)?;
            Ok(b)
        } else {
            let len = self.recv_header(0, Op::Bytes, None)?;
            let mut b = vec![0u8; len];
            self.recv_into(0, &mut b)?;
            Ok(b)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    const TIMEOUTS: Timeouts = Timeouts {
        rendezvous: Duration::from_secs(20),
        operation: Duration::from_secs(20),
    };

    fn env(rank: usize, world: usize, port: u16) -> DistEnv {
        DistEnv {
            rank,
            local_rank: rank,
            world_size: world,
            local_world_size: world,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        }
    }

    /// Runs `f` on `world` ranks (threads) joined over loopback; returns each rank's result in rank order.
    fn group<T: Send + 'static>(
        world: usize,
        f: impl Fn(&mut TcpCollective) -> T + Send + Sync + Copy + 'static,
    ) -> Vec<T> {
        let port = free_port();
        let handles: Vec<_> = (0..world)
            .map(|r| {
                std::thread::spawn(move || {
                    let mut c = TcpCollective::connect(&env(r, world, port), 7, TIMEOUTS)
                        .expect("rendezvous");
                    f(&mut c)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    }

    #[test]
    fn sums_means_and_broadcasts_are_identical_on_every_rank() {
        let out = group(3, |c| {
            let r = c.rank() as f32;
            let t = Tensor::from_slice(&[r, 1.0, 0.1 * r]);
            c.all_reduce_sum(&t).unwrap();
            let sum = Vec::<f32>::try_from(&t).unwrap();
            let m = Tensor::from_slice(&[r, 3.0]);
            c.all_reduce_mean(&m).unwrap();
            let mean = Vec::<f32>::try_from(&m).unwrap();
            let b = Tensor::from_slice(&[r + 10.0]);
            c.broadcast(&b).unwrap();
            let bcast = Vec::<f32>::try_from(&b).unwrap();
            let mut v = [c.rank() as f64, 0.5];
            c.all_reduce_f64(&mut v).unwrap();
            c.barrier().unwrap();
            let bytes = c
                .broadcast_bytes(if c.rank() == 0 {
                    b"hello".to_vec()
                } else {
                    vec![]
                })
                .unwrap();
            (sum, mean, bcast, v, bytes)
        });
        for (sum, mean, bcast, v, bytes) in &out {
            // fixed order 0 + 1 + 2
            assert_eq!(sum, &[3.0, 3.0, (0.0f32 + 0.1) + 0.2]);
            assert_eq!(mean, &[1.0, 3.0]);
            assert_eq!(bcast, &[10.0]);
            assert_eq!(v, &[3.0, 1.5]);
            assert_eq!(bytes, b"hello");
        }
        let first = &out[0].0;
        assert!(out.iter().all(|o| o
            .0
            .iter()
            .zip(first)
            .all(|(a, b)| a.to_bits() == b.to_bits())));
    }

    #[test]
    fn non_contiguous_and_large_tensors_are_reduced() {
        let out = group(2, |c| {
            let big =
                Tensor::ones([3_000_000], (Kind::Float, Device::Cpu)) * (c.rank() as f64 + 1.0);
            c.all_reduce_mean(&big).unwrap();
            let t = Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0])
                .view([2, 2])
                .tr();
            c.all_reduce_sum(&t).unwrap();
            (
                big.mean(Kind::Double).double_value(&[]),
                Vec::<f32>::try_from(&t.reshape([-1])).unwrap(),
            )
        });
        for (mean, t) in out {
            assert_eq!(mean, 1.5);
            assert_eq!(t, [2.0, 6.0, 4.0, 8.0]);
        }
    }

    #[test]
    fn mismatched_calls_and_dead_ranks_are_errors() {
        let out = group(2, |c| {
            if c.rank() == 0 {
                c.barrier().map_err(|e| e.to_string())
            } else {
                c.all_reduce_f64(&mut [1.0, 2.0]).map_err(|e| e.to_string())
            }
        });
        let err = out[0].as_ref().unwrap_err();
        assert!(err.contains("collective mismatch"), "{err}");
        let out = group(2, |c| {
            if c.rank() == 1 {
                return Ok(());
            }
            // rank 1 has dropped its connection
            std::thread::sleep(Duration::from_millis(100));
            c.barrier().map_err(|e| e.to_string())
        });
        let err = out[0].as_ref().unwrap_err();
        assert!(err.contains("rank 1"), "{err}");
    }

    #[test]
    fn a_missing_rank_times_out_naming_it() {
        let port = free_port();
        let quick = Timeouts {
            rendezvous: Duration::from_secs(1),
            ..TIMEOUTS
        };
        let err = TcpCollective::connect(&env(0, 3, port), 7, quick)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("rank(s) 1, 2 never joined"), "{err}");
    }

    /// Before, a stranger on the port (or a rank of another launch) aborted the whole rendezvous.
    #[test]
    fn strangers_on_the_port_are_turned_away_and_the_rendezvous_goes_on() {
        let port = free_port();
        let rank0 = std::thread::spawn(move || {
            TcpCollective::connect(&env(0, 2, port), 7, TIMEOUTS).map(|mut c| c.barrier())
        });
        let addr = format!("127.0.0.1:{port}");
        let knock = || loop {
            if let Ok(s) = TcpStream::connect(&addr) {
                break s;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // not a storm rank at all
        let mut http = knock();
        http.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        // a storm rank of another launch: right magic, version and world size, another token
        let foreign = std::thread::spawn(move || {
            TcpCollective::connect(
                &env(1, 2, port),
                8,
                Timeouts {
                    rendezvous: Duration::from_secs(2),
                    ..TIMEOUTS
                },
            )
            .err()
            .map(|e| e.to_string())
        });
        let foreign = foreign
            .join()
            .unwrap()
            .expect("the foreign rank is refused");
        assert!(foreign.contains("never confirmed"), "{foreign}");
        let mut ours = TcpCollective::connect(&env(1, 2, port), 7, TIMEOUTS).unwrap();
        ours.barrier().unwrap();
        rank0.join().unwrap().unwrap().unwrap();
    }

    /// A rank that joined and then hangs (alive, socket open, never calling the collective) turns into an
    /// error on the rank waiting for it once the operation timeout passes, not a wait forever.
    #[test]
    fn a_hung_rank_is_an_error_after_the_operation_timeout() {
        let port = free_port();
        let quick = Timeouts {
            operation: Duration::from_millis(500),
            ..TIMEOUTS
        };
        let (done, hang_until) = std::sync::mpsc::channel::<()>();
        let hung = std::thread::spawn(move || {
            let c = TcpCollective::connect(&env(1, 2, port), 7, quick).unwrap();
            let _ = hang_until.recv();
            drop(c);
        });
        let mut c = TcpCollective::connect(&env(0, 2, port), 7, quick).unwrap();
        let began = Instant::now();
        let err = c.barrier().unwrap_err().to_string();
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "{:?}",
            began.elapsed()
        );
        assert!(err.contains("rank 1") && err.contains("hung"), "{err}");
        done.send(()).unwrap();
        hung.join().unwrap();
    }

    #[test]
    fn the_job_token_comes_from_the_launch() {
        let e = env(0, 2, 29500);
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let launched = job_token(&e, vars(&[("STORM_JOB_TOKEN", "a1")]));
        assert_eq!(launched, job_token(&e, vars(&[("STORM_JOB_TOKEN", "a1")])));
        assert_ne!(launched, job_token(&e, vars(&[("STORM_JOB_TOKEN", "a2")])));
        let slurm = job_token(&e, vars(&[("SLURM_JOB_ID", "41")]));
        assert_ne!(slurm, job_token(&e, vars(&[("SLURM_JOB_ID", "42")])));
        assert_ne!(
            slurm,
            job_token(&env(0, 2, 29501), vars(&[("SLURM_JOB_ID", "41")]))
        );
    }
}
