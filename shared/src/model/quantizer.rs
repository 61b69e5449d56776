//! Vector quantiser of one branch (paper §4.1.3): a trainable K × E codebook, nearest-code assignment by
//! Euclidean distance, straight-through gradients, the codebook and commitment losses (each counted once),
//! the diversity loss (eq. 4) and the orthogonality loss (eq. 5), and dead-code resets.
//!
//! Dead codes: the non-trainable buffer `steps_unused` (saved in checkpoints) counts, per code, the training
//! forwards since the code was last assigned. At the start of a training forward every code whose count
//! has reached `dead_code_steps` is overwritten (under `no_grad`) with an encoder output of the current
//! batch drawn uniformly with tch's seeded RNG, and its count restarts at 0. Resetting before the codebook
//! is used keeps the autograd graph of the step valid. Under data parallelism each replica would reset
//! differently: the trainer must keep replicas in sync (e.g. broadcast codebook and buffer from rank 0).

use tch::nn;
use tch::{Device, Kind, Reduction, Tensor};

use crate::distributed::CrossRank;

/// Everything a quantiser forward returns. Losses are unweighted scalars.
#[derive(Debug)]
pub struct QuantOutput {
    /// Straight-through output z_e + sg(z_q − z_e), (B, L, E).
    pub quantized: Tensor,
    /// Code index per token, (B, L) int64.
    pub indices: Tensor,
    /// mean ‖sg(z_e) − z_q‖²: moves the codes.
    pub codebook: Tensor,
    /// mean ‖z_e − sg(z_q)‖²: moves the encoder.
    pub commit: Tensor,
    pub diversity: Tensor,
    pub orthogonal: Tensor,
    /// Σ of the soft assignments over the batch's vectors (K,) and their number: the diversity term's
    /// inputs, for recomputing it over a data-parallel global batch.
    pub usage_sum: Tensor,
    pub vectors: i64,
}

#[derive(Debug)]
pub struct Quantizer {
    codebook: Tensor,
    steps_unused: Tensor,
    dead_code_steps: i64,
    temperature: f64,
}

impl Quantizer {
    pub fn new(p: &nn::Path, codes: i64, dim: i64, dead_code_steps: i64, temperature: f64) -> Self {
        // Encoder outputs leave a LayerNorm (unit-scale elements), so unit-normal codes live on the same
        // scale; dead-code resets then move unused codes onto the data.
        let codebook = p.var(
            "codebook",
            &[codes, dim],
            nn::Init::Randn {
                mean: 0.0,
                stdev: 1.0,
            },
        );
        Quantizer {
            codebook,
            steps_unused: p.zeros_no_train("steps_unused", &[codes]),
            dead_code_steps,
            temperature,
        }
    }

    pub fn codebook(&self) -> &Tensor {
        &self.codebook
    }

    pub fn codes(&self) -> i64 {
        self.codebook.size()[0]
    }

    /// Training forwards since each code was last used, (K,).
    pub fn steps_unused(&self) -> &Tensor {
        &self.steps_unused
    }

    /// Nearest code per vector and the straight-through output, without losses or buffer updates.
    /// z_e: (B, L, E) → (quantized (B, L, E), indices (B, L)).
    pub fn assign(&self, z_e: &Tensor) -> (Tensor, Tensor) {
        let flat = flatten(z_e);
        let idx = tch::no_grad(|| sq_distances(&flat, &self.codebook).argmin(1, false));
        let z_q = self.codebook.index_select(0, &idx).view_as(z_e);
        let quantized = z_e + (&z_q - z_e).detach();
        (quantized, idx.view([z_e.size()[0], z_e.size()[1]]))
    }

    /// Full forward with losses. With `train`, dead codes are reset first and usage counters updated.
    pub fn forward(&self, z_e: &Tensor, train: bool) -> QuantOutput {
        self.forward_across(z_e, train, None)
    }

    /// [`Self::forward`] under data parallel: a code counts as used when any rank's batch used it, as in
    /// one process over the global batch.
    pub fn forward_across(
        &self,
        z_e: &Tensor,
        train: bool,
        cross: Option<&CrossRank>,
    ) -> QuantOutput {
        let flat = flatten(z_e);
        if train {
            self.reset_dead_codes(&flat.detach());
        }
        let d2 = sq_distances(&flat, &self.codebook);
        let idx = d2.detach().argmin(1, false);
        let z_q = self.codebook.index_select(0, &idx).view_as(z_e);
        let codebook = z_q.mse_loss(&z_e.detach(), Reduction::Mean);
        let commit = z_e.mse_loss(&z_q.detach(), Reduction::Mean);
        let quantized = z_e + (&z_q - z_e).detach();
        let probs = (-d2 / self.temperature).softmax(-1, Kind::Float);
        let usage_sum = probs.sum_dim_intlist(0, false, Kind::Float);
        let vectors = probs.size()[0];
        if train {
            self.count_usage(&idx, cross);
        }
        QuantOutput {
            quantized,
            indices: idx.view([z_e.size()[0], z_e.size()[1]]),
            codebook,
            commit,
            diversity: diversity_loss_from_usage(&usage_sum, vectors),
            orthogonal: orthogonality_loss(&self.codebook),
            usage_sum,
            vectors,
        }
    }

    fn count_usage(&self, idx: &Tensor, cross: Option<&CrossRank>) {
        tch::no_grad(|| {
            let mut counts = idx.bincount(None::<Tensor>, self.codes());
            if let Some(cr) = cross {
                // on failure the local counts stand; the trainer's next collective reports the error
                if let Ok(all) = cr.sum(&counts.to_kind(Kind::Float)) {
                    counts = all;
                }
            }
            let used = counts.gt(0);
            let next = (&self.steps_unused + 1.0).masked_fill(&used, 0.0);
            self.steps_unused.shallow_clone().copy_(&next);
        });
    }

    fn reset_dead_codes(&self, flat: &Tensor) {
        if self.dead_code_steps == 0 {
            return;
        }
        tch::no_grad(|| {
            let dead = self
                .steps_unused
                .ge(self.dead_code_steps as f64)
                .nonzero()
                .view([-1]);
            let n_dead = dead.size()[0];
            let n_vectors = flat.size()[0];
            if n_dead == 0 || n_vectors == 0 {
                return;
            }
            let pick = Tensor::randint(n_vectors, [n_dead], (Kind::Int64, flat.device()));
            let fresh = flat.index_select(0, &pick).to_kind(self.codebook.kind());
            let _ = self.codebook.shallow_clone().index_copy_(0, &dead, &fresh);
            let _ = self.steps_unused.shallow_clone().index_fill_(0, &dead, 0.0);
        });
    }
}

fn flatten(z_e: &Tensor) -> Tensor {
    let e = z_e.size()[z_e.dim() - 1];
    z_e.reshape([-1, e])
}

/// Squared Euclidean distances between rows of x (V, E) and codes (K, E): (V, K), clamped ≥ 0.
fn sq_distances(x: &Tensor, codes: &Tensor) -> Tensor {
    let x2 = x.square().sum_dim_intlist(-1, true, Kind::Float);
    let c2 = codes.square().sum_dim_intlist(-1, false, Kind::Float);
    (x2 - x.matmul(&codes.tr()) * 2.0 + c2.unsqueeze(0)).clamp_min(0.0)
}

/// Diversity loss (eq. 4) from soft assignments p (V, K): with p̄ the mean of p over the V vectors,
/// (1/K) Σ_k p̄_k ln p̄_k — minimal (−ln K / K) when usage is uniform, 0 when one code takes everything.
pub fn diversity_loss_from_probs(probs: &Tensor) -> Tensor {
    let k = probs.size()[probs.dim() - 1];
    let flat = probs.reshape([-1, k]);
    diversity_loss_from_usage(&flat.sum_dim_intlist(0, false, Kind::Float), flat.size()[0])
}

/// The same from Σ p over `vectors` vectors (K,).
pub fn diversity_loss_from_usage(usage_sum: &Tensor, vectors: i64) -> Tensor {
    let k = usage_sum.size()[0];
    let mean = usage_sum / vectors.max(1) as f64;
    (&mean * mean.clamp_min(1e-12).log()).sum(Kind::Float) / k as f64
}

/// Diversity loss of vectors z_e (…, E) against `codes` (K, E) with the soft assignment
/// softmax(−‖z_e − e_k‖² / τ) over codes.
pub fn diversity_loss(z_e: &Tensor, codes: &Tensor, temperature: f64) -> Tensor {
    let d2 = sq_distances(&flatten(z_e), codes);
    diversity_loss_from_probs(&(-d2 / temperature).softmax(-1, Kind::Float))
}

/// Orthogonality loss (eq. 5): (1/K²) ‖ê êᵀ − I_K‖²_F with ê the L2-normalised codes (K, E).
pub fn orthogonality_loss(codes: &Tensor) -> Tensor {
    let k = codes.size()[0];
    let norm = codes
        .square()
        .sum_dim_intlist(-1, true, Kind::Float)
        .sqrt()
        .clamp_min(1e-12);
    let unit = codes / norm;
    let gram = unit.matmul(&unit.tr());
    let eye = Tensor::eye(k, (gram.kind(), gram.device()));
    (gram - eye).square().sum(Kind::Float) / (k * k) as f64
}

/// Number of uses of each of the `codes` codes in `indices` (any shape): (K,) float.
pub fn code_usage(indices: &Tensor, codes: i64) -> Tensor {
    indices
        .reshape([-1])
        .bincount(None::<Tensor>, codes)
        .to_kind(Kind::Float)
}

/// Perplexity of the code usage in `indices`: exp of the entropy of the usage frequencies; equals the
/// number of codes in use when usage is uniform over them. 0 for empty `indices`.
pub fn perplexity(indices: &Tensor, codes: i64) -> f64 {
    let counts = code_usage(indices, codes);
    let total = counts.sum(Kind::Float).double_value(&[]);
    if total <= 0.0 {
        return 0.0;
    }
    let p = counts / total;
    let entropy = -(&p * p.clamp_min(1e-12).log()).sum(Kind::Float);
    entropy.exp().double_value(&[])
}

/// Codebook health from each branch's code indices of a batch (None: branch off); `codes` is the codebook
/// size. Costs a bincount and a copy of K counts per branch, so call it every `log_every` steps.
pub fn record_codebook_usage(branches: &[(&str, Option<&Tensor>)], codes: i64) {
    if !crate::telemetry::enabled() {
        return;
    }
    for (branch, indices) in branches {
        let Some(idx) = indices else { continue };
        let counts = code_usage(idx, codes).to_kind(Kind::Int64);
        if let Ok(counts) = Vec::<i64>::try_from(counts.to_device(Device::Cpu)) {
            crate::telemetry::record_code_counts(branch, &counts);
        }
    }
}

#[cfg(test)]
mod tests;
