//! Data parallelism: a [`Collective`] joins the processes of one job (ranks 0..W) for gradient all-reduce,
//! broadcasts and barriers.
//!
//! - [`Single`]: world size 1, every operation a no-op (a plain `storm pretrain`).
//! - [`TcpCollective`]: CPU processes over TCP, star topology through rank 0, sums in a fixed rank order
//!   (every rank ends with the same bytes; runs are deterministic).
//! - [`NcclCollective`]: CUDA tensors through NCCL (cudarc, libraries opened at run time); small values,
//!   barriers and the NCCL unique id travel over the TCP rendezvous.
//!
//! [`connect`] builds the collective of a process from the env contract ([`env::DistEnv`]);
//! [`cross_rank`] lets batch-coupled loss terms (CLIP, codebook diversity) see the global batch.

pub mod cross_rank;
pub mod env;
pub mod nccl;
pub mod tcp;
pub mod watchdog;

use std::time::Duration;

use tch::{Device, Kind, Tensor};

pub use cross_rank::{CrossRank, SharedCollective};
pub use env::DistEnv;
pub use nccl::NcclCollective;
pub use tcp::{job_token, TcpCollective, Timeouts};

use crate::error::{Error, Result};

/// Gradient bucket size: gradients are flattened into buckets of about this many bytes, one collective
/// call per bucket.
pub const BUCKET_BYTES: usize = 25 << 20;

/// The operations data-parallel training needs. Tensors are flat (1-d), contiguous f32; they are updated in
/// place, and after every call all ranks hold identical values.
pub trait Collective: Send {
    fn rank(&self) -> usize;
    fn world_size(&self) -> usize;
    /// Backend name for logs (`single`, `tcp`, `nccl`).
    fn backend(&self) -> &'static str;
    /// Element-wise sum over ranks.
    fn all_reduce_sum(&mut self, t: &Tensor) -> Result<()>;
    /// Element-wise mean over ranks.
    fn all_reduce_mean(&mut self, t: &Tensor) -> Result<()>;
    /// Rank 0's values to every rank.
    fn broadcast(&mut self, t: &Tensor) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&mut self) -> Result<()>;
    /// Element-wise sum over ranks of a few f64 values (losses, flags, counts), summed in rank order.
    fn all_reduce_f64(&mut self, values: &mut [f64]) -> Result<()>;
    /// Rank 0's bytes to every rank (others pass anything, e.g. an empty vector).
    fn broadcast_bytes(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>>;

    fn is_rank0(&self) -> bool {
        self.rank() == 0
    }
}

/// World size 1: nothing to exchange.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&mut self, _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn all_reduce_mean(&mut self, _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn broadcast(&mut self, _: &Tensor) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self) -> Result<()> {
        Ok(())
    }
    fn all_reduce_f64(&mut self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>> {
        Ok(bytes)
    }
}

/// The collective's limits from the environment: `STORM_RENDEZVOUS_TIMEOUT` (seconds to wait for every
/// rank, default 300) and `STORM_COLLECTIVE_TIMEOUT` (seconds a rank waits on a peer inside one collective
/// call, default 1800: generous, since other ranks wait at a barrier while rank 0 evaluates or checkpoints).
/// The NCCL watchdog uses the latter too.
pub fn timeouts() -> Result<Timeouts> {
    let secs = |key: &str, default: u64| -> Result<Duration> {
        match std::env::var(key) {
            Err(_) => Ok(Duration::from_secs(default)),
            Ok(v) => match v.trim().parse::<u64>() {
                Ok(s) if (1..=7 * 24 * 3600).contains(&s) => Ok(Duration::from_secs(s)),
                _ => Err(Error::DistEnv(format!(
                    "{key}={v:?}: expected whole seconds between 1 and 604800 (a week)"
                ))),
            },
        }
    };
    Ok(Timeouts {
        rendezvous: secs("STORM_RENDEZVOUS_TIMEOUT", 300)?,
        operation: secs("STORM_COLLECTIVE_TIMEOUT", 1800)?,
    })
}

/// The collective of this process: [`Single`] without a contract or with world size 1 (unless
/// `STORM_DIST_BACKEND` names a backend); else NCCL for a
/// CUDA device and TCP for the CPU. `STORM_DIST_BACKEND=tcp|nccl` overrides the choice.
pub fn connect(env: Option<&DistEnv>, device: Device) -> Result<Box<dyn Collective>> {
    let requested = std::env::var("STORM_DIST_BACKEND")
        .ok()
        .filter(|b| !b.is_empty());
    // a backend named explicitly is used even by one rank (the GPU check runs NCCL at world size 1)
    let Some(env) = env.filter(|e| e.world_size > 1 || requested.is_some()) else {
        return Ok(Box::new(Single));
    };
    let backend = match requested.as_deref() {
        None => {
            if device.is_cuda() {
                "nccl"
            } else {
                "tcp"
            }
        }
        Some("tcp") => "tcp",
        Some("nccl") => "nccl",
        Some(other) => {
            return Err(Error::DistEnv(format!(
                "STORM_DIST_BACKEND={other:?}: expected tcp or nccl"
            )))
        }
    };
    let timeouts = timeouts()?;
    let token = job_token(env, |k| std::env::var(k).ok());
    let tcp = TcpCollective::connect(env, token, timeouts)?;
    tracing::info!(
        rank = env.rank,
        world_size = env.world_size,
        backend,
        "joined the process group"
    );
    match (backend, device) {
        ("nccl", Device::Cuda(i)) => Ok(Box::new(NcclCollective::new(tcp, i, timeouts.operation)?)),
        ("nccl", _) => Err(Error::DistEnv(
            "the NCCL backend needs a CUDA device (--device cuda); use STORM_DIST_BACKEND=tcp on the CPU"
                .into(),
        )),
        _ => Ok(Box::new(tcp)),
    }
}

/// Groups tensors into runs of at most `bucket_bytes` (a tensor larger than that is a bucket of its own);
/// returns index ranges into `tensors`.
pub fn buckets(tensors: &[Tensor], bucket_bytes: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut bytes = 0usize;
    for (i, t) in tensors.iter().enumerate() {
        let size = t.numel() * 4;
        if i > start && bytes + size > bucket_bytes {
            out.push(start..i);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < tensors.len() {
        out.push(start..tensors.len());
    }
    out
}

/// What to do with each bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BucketOp {
    Mean,
    Broadcast,
}

/// Applies `op` to every tensor of `tensors` (in this order on every rank) through flat f32 buckets of
/// about [`BUCKET_BYTES`], writing the results back into the tensors. Tensors of another kind are cast to
/// f32 and back.
pub fn reduce_tensors(c: &mut dyn Collective, tensors: &[Tensor], op: BucketOp) -> Result<()> {
    if c.world_size() == 1 || tensors.is_empty() {
        return Ok(());
    }
    tch::no_grad(|| {
        for range in buckets(tensors, BUCKET_BYTES) {
            let group = &tensors[range];
            let flat = Tensor::cat(
                &group
                    .iter()
                    .map(|t| t.detach().to_kind(Kind::Float).reshape([-1]))
                    .collect::<Vec<_>>(),
                0,
            );
            match op {
                BucketOp::Mean => c.all_reduce_mean(&flat)?,
                BucketOp::Broadcast => c.broadcast(&flat)?,
            }
            let mut offset = 0i64;
            for t in group {
                let n = t.numel() as i64;
                let part = flat.narrow(0, offset, n).view(t.size().as_slice());
                t.shallow_clone().copy_(&part);
                offset += n;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_is_a_no_op() {
        let mut c = Single;
        let t = Tensor::from_slice(&[1.0f32, 2.0]);
        c.all_reduce_mean(&t).unwrap();
        c.broadcast(&t).unwrap();
        c.barrier().unwrap();
        let mut v = [3.0, f64::NAN];
        c.all_reduce_f64(&mut v).unwrap();
        assert_eq!(v[0], 3.0);
        assert!(v[1].is_nan());
        assert_eq!(c.broadcast_bytes(b"x".to_vec()).unwrap(), b"x");
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), [1.0, 2.0]);
    }

    #[test]
    fn buckets_respect_the_size_and_keep_order() {
        let ts: Vec<Tensor> = [10i64, 10, 30, 5, 5]
            .iter()
            .map(|n| Tensor::zeros([*n], (Kind::Float, Device::Cpu)))
            .collect();
        // 4 bytes per element; 80 bytes = 20 elements per bucket
        assert_eq!(buckets(&ts, 80), vec![0..2, 2..3, 3..5]);
        assert_eq!(buckets(&ts, 1 << 20), vec![0..5]);
        assert!(buckets(&[], 80).is_empty());
    }

    #[test]
    fn no_contract_or_world_one_gives_single() {
        let c = connect(None, Device::Cpu).unwrap();
        assert_eq!((c.world_size(), c.backend()), (1, "single"));
        let env = DistEnv {
            rank: 0,
            local_rank: 0,
            world_size: 1,
            local_world_size: 1,
            master_addr: "127.0.0.1".into(),
            master_port: 1,
        };
        assert_eq!(
            connect(Some(&env), Device::Cpu).unwrap().backend(),
            "single"
        );
    }
}
