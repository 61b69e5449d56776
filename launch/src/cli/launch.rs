//! `storm launch`: a torchrun-style launcher. Starts `--nproc-per-node` copies of this binary running the
//! given storm subcommand, each with the torchrun env contract (RANK, LOCAL_RANK, WORLD_SIZE,
//! LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) and, unless set, OMP_NUM_THREADS = cores / ranks. Children's stderr (and the stdout of ranks > 0) is echoed
//! with a `[rank R]` prefix. The first rank to fail brings the job down: the others are stopped and the
//! launcher exits non-zero with that rank's error.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use storm_shared::distributed::env::DEFAULT_MASTER_PORT;

#[derive(Args)]
pub struct LaunchArgs {
    /// Processes (ranks) on this node; one per GPU with `--device cuda`.
    #[arg(long, default_value_t = 1)]
    pub nproc_per_node: usize,
    /// Nodes in the job (run `storm launch` once per node with its --node-rank).
    #[arg(long, default_value_t = 1)]
    pub nnodes: usize,
    /// This node's index, 0..nnodes.
    #[arg(long, default_value_t = 0)]
    pub node_rank: usize,
    /// Address of the node running rank 0.
    #[arg(long, default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Rendezvous port on the master (default: a free port on a single node, else 29500).
    #[arg(long)]
    pub master_port: Option<u16>,
    /// The storm subcommand every rank runs, after `--`, e.g. `-- pretrain --config c.toml --out run`.
    #[arg(last = true, required = true, value_name = "STORM_ARGS")]
    pub command: Vec<String>,
}

/// The env contract of one child.
pub fn child_env(a: &LaunchArgs, port: u16, local_rank: usize) -> Vec<(&'static str, String)> {
    let world = a.nproc_per_node * a.nnodes;
    vec![
        (
            "RANK",
            (a.node_rank * a.nproc_per_node + local_rank).to_string(),
        ),
        ("LOCAL_RANK", local_rank.to_string()),
        ("WORLD_SIZE", world.to_string()),
        ("LOCAL_WORLD_SIZE", a.nproc_per_node.to_string()),
        ("MASTER_ADDR", a.master_addr.clone()),
        ("MASTER_PORT", port.to_string()),
    ]
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free rendezvous port")?;
    Ok(l.local_addr()?.port())
}

struct Rank {
    rank: usize,
    child: Child,
    status: Option<ExitStatus>,
    /// The last lines the rank wrote on stderr.
    tail: Arc<Mutex<Vec<String>>>,
    readers: Vec<JoinHandle<()>>,
}

/// Echoes `stream` line by line with `prefix`, keeping the last lines in `tail` when given.
fn echo(
    stream: impl Read + Send + 'static,
    prefix: String,
    to_stderr: bool,
    tail: Option<Arc<Mutex<Vec<String>>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in lossy_lines(stream) {
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{prefix}{line}");
            }
            if let Some(tail) = &tail {
                if let Ok(mut t) = tail.lock() {
                    t.push(line);
                    if t.len() > 20 {
                        t.remove(0);
                    }
                }
            }
        }
    })
}

/// The lines of `stream` with bytes that are not UTF-8 replaced (U+FFFD), so a rank that writes such bytes
/// is still drained to the end instead of blocking on a full pipe.
fn lossy_lines(stream: impl Read) -> impl Iterator<Item = String> {
    let mut reader = BufReader::new(stream);
    std::iter::from_fn(move || {
        let mut buf = Vec::new();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => None,
            Ok(_) => {
                if buf.last() == Some(&b'\n') {
                    buf.pop();
                }
                Some(String::from_utf8_lossy(&buf).into_owned())
            }
        }
    })
}

impl Rank {
    /// The rank's own error message (its last `error:` line), else its last stderr line.
    fn error_line(&self) -> String {
        let tail = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        tail.iter()
            .rev()
            .find(|l| l.starts_with("error:"))
            .or(tail.last())
            .cloned()
            .unwrap_or_else(|| "(no output)".into())
    }
}

pub fn run(a: LaunchArgs) -> Result<()> {
    if a.nproc_per_node == 0 || a.nnodes == 0 {
        bail!("--nproc-per-node and --nnodes must be at least 1");
    }
    if a.node_rank >= a.nnodes {
        bail!(
            "--node-rank {} is out of range for --nnodes {}",
            a.node_rank,
            a.nnodes
        );
    }
    if a.command.first().is_some_and(|c| c == "launch") {
        bail!("`storm launch -- launch …` would nest launchers; give the storm subcommand to run");
    }
    let port = match a.master_port {
        Some(p) => p,
        None if a.nnodes == 1 => free_port()?,
        None => DEFAULT_MASTER_PORT,
    };
    let exe = std::env::current_exe().context("locating the storm binary")?;
    // like torchrun: ranks share the node's cores instead of each spinning up a thread per core
    let threads = std::env::var("OMP_NUM_THREADS").unwrap_or_else(|_| {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        (cores / a.nproc_per_node).max(1).to_string()
    });
    // ranks of this launch tell each other from a stray or foreign rank on the same port by this token; on
    // one node it is fresh per launch, across nodes it must agree, so it is left to STORM_JOB_TOKEN (or the
    // default derived from the launcher's job id and the rendezvous address)
    let token = (a.nnodes == 1 && std::env::var_os("STORM_JOB_TOKEN").is_none()).then(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("{}-{nanos}", std::process::id())
    });
    let mut ranks = Vec::with_capacity(a.nproc_per_node);
    for local in 0..a.nproc_per_node {
        match spawn_rank(&a, &exe, port, local, &threads, token.as_deref()) {
            Ok(rank) => ranks.push(rank),
            Err(e) => {
                stop(&mut ranks);
                return Err(e);
            }
        }
    }
    let failed = supervise(&mut ranks)?;
    stop(&mut ranks);
    for r in &mut ranks {
        for h in r.readers.drain(..) {
            let _ = h.join();
        }
    }
    match failed {
        None => Ok(()),
        Some(first) => Err(failure(&ranks, first)),
    }
}

/// Starts local rank `local` with its torchrun-style environment, its output echoed with a rank prefix.
fn spawn_rank(
    a: &LaunchArgs,
    exe: &Path,
    port: u16,
    local: usize,
    threads: &str,
    token: Option<&str>,
) -> Result<Rank> {
    let env = child_env(a, port, local);
    let rank: usize = env[0].1.parse().expect("a number");
    let mut cmd = Command::new(exe);
    if let Some(token) = token {
        cmd.env("STORM_JOB_TOKEN", token);
    }
    cmd.args(&a.command)
        .envs(env)
        .env("OMP_NUM_THREADS", threads)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // a rank dies with the launcher instead of lingering
    storm_worker::child::die_with_parent(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting rank {rank}"))?;
    let tail = Arc::new(Mutex::new(Vec::new()));
    let prefix = format!("[rank {rank}] ");
    let mut readers = Vec::new();
    if let Some(err) = child.stderr.take() {
        readers.push(echo(err, prefix.clone(), true, Some(tail.clone())));
    }
    if let Some(out) = child.stdout.take() {
        // rank 0's stdout is the job's result; the others' is labelled
        let p = if rank == 0 { String::new() } else { prefix };
        readers.push(echo(out, p, false, None));
    }
    Ok(Rank {
        rank,
        child,
        status: None,
        tail,
        readers,
    })
}

/// The launcher's error after rank `first` was seen failing: the root cause is a failed rank that did not
/// merely lose a peer, else the first one seen.
fn failure(ranks: &[Rank], first: usize) -> anyhow::Error {
    let failed: Vec<&Rank> = ranks
        .iter()
        .filter(|r| r.status.is_some_and(|s| !s.success()))
        .collect();
    let cause = failed
        .iter()
        .find(|r| !r.error_line().contains("has exited"))
        .copied()
        .or_else(|| ranks.iter().find(|r| r.rank == first))
        .expect("a failed rank");
    let status = cause.status.map_or("killed".to_string(), |s| s.to_string());
    anyhow::anyhow!(
        "rank {} failed ({status}): {}; stopped the other {} rank(s)",
        cause.rank,
        cause.error_line().trim_start_matches("error: "),
        ranks.len() - 1
    )
}

/// Waits for every rank; returns the first rank seen failing (the others are still running then).
fn supervise(ranks: &mut [Rank]) -> Result<Option<usize>> {
    loop {
        let mut running = 0;
        let mut failed = None;
        for r in ranks.iter_mut() {
            if r.status.is_some() {
                continue;
            }
            match r
                .child
                .try_wait()
                .with_context(|| format!("waiting for rank {}", r.rank))?
            {
                Some(s) => {
                    r.status = Some(s);
                    if !s.success() && failed.is_none() {
                        failed = Some(r.rank);
                    }
                }
                None => running += 1,
            }
        }
        if failed.is_some() {
            // give the ranks that lose their peer a moment to report it themselves
            std::thread::sleep(Duration::from_millis(300));
            for r in ranks.iter_mut().filter(|r| r.status.is_none()) {
                r.status = r.child.try_wait().ok().flatten();
            }
            return Ok(failed);
        }
        if running == 0 {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops every rank still running: SIGTERM, then SIGKILL after a grace period.
fn stop(ranks: &mut [Rank]) {
    let alive: Vec<usize> = (0..ranks.len())
        .filter(|&i| ranks[i].status.is_none())
        .collect();
    if alive.is_empty() {
        return;
    }
    for &i in &alive {
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(ranks[i].child.id() as libc::pid_t, libc::SIGTERM);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for &i in &alive {
        let r = &mut ranks[i];
        loop {
            if let Ok(Some(_)) = r.child.try_wait() {
                break;
            }
            if Instant::now() >= deadline {
                let _ = r.child.kill();
                let _ = r.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_that_are_not_utf8_do_not_stop_the_draining() {
        let bytes = b"first\n\xff\xfe broken \xe2\x82\n\nlast without newline".to_vec();
        let lines: Vec<String> = lossy_lines(std::io::Cursor::new(bytes)).collect();
        assert_eq!(
            lines,
            [
                "first",
                "\u{fffd}\u{fffd} broken \u{fffd}",
                "",
                "last without newline"
            ]
        );
        // through `echo`: every line after the bad bytes reaches the tail
        let tail = Arc::new(Mutex::new(Vec::new()));
        let mut big = b"\xff\n".to_vec();
        for i in 0..50 {
            big.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        echo(
            std::io::Cursor::new(big),
            String::new(),
            true,
            Some(tail.clone()),
        )
        .join()
        .unwrap();
        assert_eq!(
            tail.lock().unwrap().last().map(String::as_str),
            Some("line 49")
        );
    }

    #[test]
    fn children_get_the_torchrun_contract() {
        let a = LaunchArgs {
            nproc_per_node: 4,
            nnodes: 2,
            node_rank: 1,
            master_addr: "n0".into(),
            master_port: None,
            command: vec!["pretrain".into()],
        };
        let env = child_env(&a, 1234, 2);
        let get = |k: &str| env.iter().find(|(n, _)| *n == k).unwrap().1.clone();
        assert_eq!(get("RANK"), "6");
        assert_eq!(get("LOCAL_RANK"), "2");
        assert_eq!(get("WORLD_SIZE"), "8");
        assert_eq!(get("LOCAL_WORLD_SIZE"), "4");
        assert_eq!(get("MASTER_ADDR"), "n0");
        assert_eq!(get("MASTER_PORT"), "1234");
        // and the library reads them back
        let parsed = storm_shared::distributed::DistEnv::from_vars(|k| {
            env.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            (parsed.rank, parsed.world_size, parsed.local_rank),
            (6, 8, 2)
        );
    }
}
