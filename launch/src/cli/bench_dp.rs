//! `storm bench allreduce`: time of the data-parallel gradient all-reduce at the paper model's size. Without
//! the env contract it relaunches itself through `storm launch --nproc-per-node W`; each rank then times
//! (a) one flat all-reduce mean of all the gradient's elements and (b) the trainer's path: every parameter
//! tensor flattened into ~25 MB buckets, all-reduced and copied back. Rank 0 prints the table.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use storm_shared::distributed::{self, buckets, reduce_tensors, BucketOp, DistEnv, BUCKET_BYTES};
use storm_shared::model::build_model;
use tch::{nn, Kind, Tensor};

#[derive(Args)]
pub struct AllReduceBenchArgs {
    /// Ranks (processes) on this machine.
    #[arg(long, default_value_t = 2)]
    pub world: usize,
    /// Timed all-reduces per case (after one warm-up).
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// cpu (TCP collective) or cuda (NCCL; one GPU per rank).
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: AllReduceBenchArgs) -> Result<()> {
    let env = DistEnv::from_env().context("reading the process-group environment")?;
    match env {
        Some(env) => rank(&a, &env),
        None => relaunch(&a),
    }
}

fn relaunch(a: &AllReduceBenchArgs) -> Result<()> {
    if a.world < 2 {
        bail!("--world must be at least 2");
    }
    let exe = std::env::current_exe().context("locating the storm binary")?;
    let status = Command::new(exe)
        .args(["launch", "--nproc-per-node", &a.world.to_string(), "--"])
        .args(["bench", "allreduce", "--iters", &a.iters.to_string()])
        .args(["--device", &a.device])
        .status()
        .context("starting the ranks")?;
    if !status.success() {
        bail!("the all-reduce benchmark failed ({status})");
    }
    Ok(())
}

fn median_ms(mut f: impl FnMut() -> Result<()>, iters: usize) -> Result<f64> {
    f()?;
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters.max(1) {
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

fn rank(a: &AllReduceBenchArgs, env: &DistEnv) -> Result<()> {
    let device = match a.device.as_str() {
        "cuda" => super::train::parse_device(&format!("cuda:{}", env.local_rank))?,
        other => super::train::parse_device(other)?,
    };
    let mut comm = distributed::connect(Some(env), device)?;
    // the paper model's parameters stand in for its gradients (same shapes, same order as the trainer)
    let path = super::home::shipped_config("dj30.toml")?;
    let cfg = super::data::load_config(Some(&path), &[])?;
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    build_model(&vs.root(), &cfg, 29, 152, cfg.data.window as i64)?;
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .filter(|(_, t)| t.requires_grad())
        .collect();
    vars.sort_by(|x, y| x.0.cmp(&y.0));
    let grads: Vec<Tensor> = vars.iter().map(|(_, t)| t.detach().copy()).collect();
    let elements: usize = grads.iter().map(Tensor::numel).sum();
    let n_buckets = buckets(&grads, BUCKET_BYTES).len();
    let flat = Tensor::randn([elements as i64], (Kind::Float, device));
    comm.barrier()?;
    let flat_ms = median_ms(|| Ok(comm.all_reduce_mean(&flat)?), a.iters)?;
    comm.barrier()?;
    let bucket_ms = median_ms(
        || Ok(reduce_tensors(comm.as_mut(), &grads, BucketOp::Mean)?),
        a.iters,
    )?;
    comm.barrier()?;
    if comm.is_rank0() {
        let mb = elements as f64 * 4.0 / 1e6;
        println!(
            "| backend | ranks | f32 elements | MB | case | ms (median of {}) | MB/s per rank |",
            a.iters
        );
        println!("|---|---|---|---|---|---|---|");
        for (case, ms) in [
            ("one flat all-reduce mean".to_string(), flat_ms),
            (
                format!(
                    "trainer path: {} tensors in {n_buckets} bucket(s) of ≤ 25 MB",
                    grads.len()
                ),
                bucket_ms,
            ),
        ] {
            println!(
                "| {} | {} | {elements} | {mb:.1} | {case} | {ms:.1} | {:.0} |",
                comm.backend(),
                comm.world_size(),
                mb * 1e3 / ms
            );
        }
    }
    Ok(())
}
