//! The trainer's data-parallel bookkeeping, behind one type: [`Replicas`] keeps the model replicas of a
//! process group identical (variables from rank 0 at the start, gradient means, broadcasts of rank-local
//! variables after every step, a bit-for-bit checksum check at the end) and shares the few host values the
//! ranks must agree on (loss means, rank 0's validation summary). At world size 1 every method is a no-op
//! (or runs its computation directly), so the single-process trainer pays nothing.

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::distributed::cross_rank::lock;
use crate::distributed::{reduce_tensors, BucketOp, Collective, SharedCollective, Single};
use crate::error::{Error, Result};
use crate::stats::rank_ic::IcSummary;

pub struct Replicas {
    comm: SharedCollective,
    rank: usize,
    world: usize,
    /// Every variable (parameters and buffers) in name order; empty at world size 1.
    all: Vec<Tensor>,
    /// The trainable variables in name order (their gradients are averaged).
    trainable: Vec<Tensor>,
    /// Codebooks and buffers, which a rank can change from its own data (dead-code resets, usage counters):
    /// broadcast from rank 0 after every step.
    rank_local: Vec<Tensor>,
}

impl Replicas {
    /// World size 1: nothing to exchange.
    pub fn single() -> Replicas {
        Replicas {
            comm: std::sync::Arc::new(std::sync::Mutex::new(Box::new(Single))),
            rank: 0,
            world: 1,
            all: Vec::new(),
            trainable: Vec::new(),
            rank_local: Vec::new(),
        }
    }

    /// The replicas of `vs` in the group of `comm`.
    pub fn new(comm: Box<dyn Collective>, vs: &VarStore) -> Replicas {
        let (rank, world) = (comm.rank(), comm.world_size());
        let mut vars: Vec<(String, Tensor)> = if world > 1 {
            vs.variables().into_iter().collect()
        } else {
            Vec::new()
        };
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let pick = |keep: &dyn Fn(&str, &Tensor) -> bool| -> Vec<Tensor> {
            vars.iter()
                .filter(|(name, t)| keep(name, t))
                .map(|(_, t)| t.shallow_clone())
                .collect()
        };
        Replicas {
            trainable: pick(&|_, t| t.requires_grad()),
            rank_local: pick(&|name, t| !t.requires_grad() || name.ends_with("codebook")),
            all: pick(&|_, _| true),
            comm: std::sync::Arc::new(std::sync::Mutex::new(comm)),
            rank,
            world,
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    pub fn is_rank0(&self) -> bool {
        self.rank == 0
    }

    /// The process group, for a model's batch-coupled loss terms (`distributed::CrossRank`).
    pub fn collective(&self) -> SharedCollective {
        self.comm.clone()
    }

    /// Every variable from rank 0, so that all replicas start identical.
    pub fn sync_from_rank0(&self) -> Result<()> {
        self.reduce(&self.all, BucketOp::Broadcast)
    }

    /// Gradients of the trainable variables, averaged over ranks.
    pub fn mean_gradients(&self) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let grads: Vec<Tensor> = self
            .trainable
            .iter()
            .map(|t| t.grad())
            .filter(|g| g.defined())
            .collect();
        self.reduce(&grads, BucketOp::Mean)
    }

    /// Rank 0's codebooks and buffers to every rank.
    pub fn broadcast_rank_local(&self) -> Result<()> {
        self.reduce(&self.rank_local, BucketOp::Broadcast)
    }

    fn reduce(&self, tensors: &[Tensor], op: BucketOp) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        reduce_tensors(lock(&self.comm).as_mut(), tensors, op)
    }

    /// Element-wise mean over ranks (sums in rank order, then a division by the world size). A non-finite
    /// value on any rank makes the mean non-finite everywhere.
    pub fn mean_f64(&self, values: &mut [f64]) -> Result<()> {
        if self.world == 1 || values.is_empty() {
            return Ok(());
        }
        lock(&self.comm).all_reduce_f64(values)?;
        for v in values.iter_mut() {
            *v /= self.world as f64;
        }
        Ok(())
    }

    /// Rank 0 computes the summary (every valid day once) and sends it to the other ranks.
    pub fn summary_from_rank0(
        &self,
        compute: impl FnOnce() -> Result<IcSummary>,
    ) -> Result<IcSummary> {
        if self.world == 1 {
            return compute();
        }
        let mut values = [0.0f64; 5];
        if self.is_rank0() {
            let s = compute()?;
            values = [s.rank_ic, s.rank_icir, s.ic, s.icir, s.n_days as f64];
        }
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let bytes = lock(&self.comm).broadcast_bytes(bytes)?;
        if bytes.len() != 40 {
            return Err(Error::Training(format!(
                "validation summary from rank 0 has {} bytes, expected 40",
                bytes.len()
            )));
        }
        let v: Vec<f64> = bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .collect();
        Ok(IcSummary {
            rank_ic: v[0],
            rank_icir: v[1],
            ic: v[2],
            icir: v[3],
            n_days: v[4] as usize,
        })
    }

    /// Checks that every rank holds the same variables (checksums compared bit for bit); a collective, so
    /// it is also a barrier.
    pub fn check_agree(&self) -> Result<()> {
        if self.world == 1 {
            return Ok(());
        }
        let (abs, sq) = tch::no_grad(|| {
            self.all.iter().fold((0f64, 0f64), |(a, q), t| {
                let t = t.to_kind(Kind::Double);
                (
                    a + t.abs().sum(Kind::Double).double_value(&[]),
                    q + t.square().sum(Kind::Double).double_value(&[]),
                )
            })
        });
        let mut sums = vec![0f64; 2 * self.world];
        sums[2 * self.rank] = abs;
        sums[2 * self.rank + 1] = sq;
        lock(&self.comm).all_reduce_f64(&mut sums)?;
        let differs: Vec<usize> = (1..self.world)
            .filter(|r| {
                sums[2 * r].to_bits() != sums[0].to_bits()
                    || sums[2 * r + 1].to_bits() != sums[1].to_bits()
            })
            .collect();
        if !differs.is_empty() {
            return Err(Error::Training(format!(
                "data-parallel replicas diverged: the parameters of rank(s) {differs:?} differ from rank 0's \
                 (checkpoints hold rank 0's)"
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tch::{nn, Device};

    /// Rank 0 of a pretend group of two whose other rank holds `peer` times rank 0's f64 values (1.0: a
    /// replica in agreement). With `checksums`, the values are the replica checksum layout (rank 1's own
    /// slots are the second half).
    pub(crate) struct PeerOfTwo {
        pub peer: f64,
        pub checksums: bool,
    }

    impl Collective for PeerOfTwo {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn backend(&self) -> &'static str {
            "test"
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
        fn all_reduce_f64(&mut self, values: &mut [f64]) -> Result<()> {
            if self.checksums {
                values[2] = values[0] * self.peer;
                values[3] = values[1] * self.peer;
            } else {
                values.iter_mut().for_each(|v| *v += *v * self.peer);
            }
            Ok(())
        }
        fn broadcast_bytes(&mut self, bytes: Vec<u8>) -> Result<Vec<u8>> {
            Ok(bytes)
        }
    }

    fn store() -> VarStore {
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("w", &[2], nn::Init::Const(1.5));
        vs
    }

    fn summary(rank_ic: f64) -> IcSummary {
        IcSummary {
            rank_ic,
            rank_icir: 2.0,
            ic: 0.25,
            icir: 1.0,
            n_days: 7,
        }
    }

    #[test]
    fn world_one_exchanges_nothing() {
        let vs = store();
        let r = Replicas::new(Box::new(Single), &vs);
        assert_eq!((r.rank(), r.world(), r.is_rank0()), (0, 1, true));
        let mut v = [3.0, f64::NAN];
        r.mean_f64(&mut v).unwrap();
        assert_eq!(v[0], 3.0);
        assert!(v[1].is_nan());
        r.sync_from_rank0().unwrap();
        r.mean_gradients().unwrap();
        r.broadcast_rank_local().unwrap();
        r.check_agree().unwrap();
        assert_eq!(
            r.summary_from_rank0(|| Ok(summary(0.5))).unwrap().rank_ic,
            0.5
        );
        assert!(r.all.is_empty() && r.rank_local.is_empty());
    }

    #[test]
    fn means_divide_the_rank_order_sum_by_the_world_size() {
        let r = Replicas::new(
            Box::new(PeerOfTwo {
                peer: 3.0,
                checksums: false,
            }),
            &store(),
        );
        // rank 0 has 1 and 0.5, rank 1 three times that: means 2 and 1
        let mut v = [1.0, 0.5];
        r.mean_f64(&mut v).unwrap();
        assert_eq!(v, [2.0, 1.0]);
        let got = r.summary_from_rank0(|| Ok(summary(0.125))).unwrap();
        assert_eq!((got.rank_ic, got.n_days), (0.125, 7));
    }

    #[test]
    fn a_diverged_replica_is_an_error() {
        let vs = store();
        Replicas::new(
            Box::new(PeerOfTwo {
                peer: 1.0,
                checksums: true,
            }),
            &vs,
        )
        .check_agree()
        .unwrap();
        let err = Replicas::new(
            Box::new(PeerOfTwo {
                peer: 1.0 + 1e-12,
                checksums: true,
            }),
            &vs,
        )
        .check_agree()
        .unwrap_err();
        assert!(err.to_string().contains("rank(s) [1]"), "{err}");
    }
}
