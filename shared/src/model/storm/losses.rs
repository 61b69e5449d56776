//! What STORM's training forward returns — each branch's unweighted losses, the prediction and the codes —
//! and how the terms are weighted into the objective.

use tch::{Kind, Tensor};

use crate::config::TrainConfig;

/// Unweighted losses of one branch; zeros for a disabled branch.
#[derive(Debug)]
pub struct BranchLosses {
    /// ‖x − x̂‖² of the branch's reconstruction against the whole input x (paper eq. 6), in the form of
    /// `model.reconstruction`.
    pub recon: Tensor,
    pub codebook: Tensor,
    pub commit: Tensor,
    pub diversity: Tensor,
    pub orthogonal: Tensor,
}

impl BranchLosses {
    pub(super) fn zeros(device: tch::Device) -> Self {
        let z = || Tensor::zeros([], (Kind::Float, device));
        BranchLosses {
            recon: z(),
            codebook: z(),
            commit: z(),
            diversity: z(),
            orthogonal: z(),
        }
    }
}

/// Output of `Storm::forward_train`: unweighted scalar losses, predictions and code indices.
#[derive(Debug)]
pub struct StormOutput {
    pub ts: BranchLosses,
    pub cs: BranchLosses,
    /// CLIP loss of the fused CLS tokens; 0 with one branch or B < 2.
    pub clip: Tensor,
    /// Gaussian NLL of y under the posterior-decoded returns.
    pub nll: Tensor,
    /// KL(posterior ‖ prior).
    pub kl: Tensor,
    /// Prior-mean prediction (B, N); independent of y.
    pub prediction: Tensor,
    /// TS code indices (B, (W / p) · N), time-major; None when the branch is off.
    pub ts_indices: Option<Tensor>,
    /// CS code indices (B, W); None when the branch is off.
    pub cs_indices: Option<Tensor>,
}

impl StormOutput {
    /// Every loss term with a stable name, for logging.
    pub fn terms(&self) -> [(&'static str, &Tensor); 13] {
        [
            ("recon_ts", &self.ts.recon),
            ("recon_cs", &self.cs.recon),
            ("codebook_ts", &self.ts.codebook),
            ("codebook_cs", &self.cs.codebook),
            ("commit_ts", &self.ts.commit),
            ("commit_cs", &self.cs.commit),
            ("diversity_ts", &self.ts.diversity),
            ("diversity_cs", &self.cs.diversity),
            ("orthogonal_ts", &self.ts.orthogonal),
            ("orthogonal_cs", &self.cs.orthogonal),
            ("clip", &self.clip),
            ("nll", &self.nll),
            ("kl", &self.kl),
        ]
    }
}

/// The training objective: Σ of the terms with the weights of `TrainConfig` (the codebook term has
/// weight 1; commit, orthogonal and diversity weights apply to both branches).
pub fn weighted_total(out: &StormOutput, w: &TrainConfig) -> Tensor {
    let both = |a: &Tensor, b: &Tensor| a + b;
    out.ts.recon.shallow_clone() * w.loss_weight_recon_ts
        + &out.cs.recon * w.loss_weight_recon_cs
        + both(&out.ts.codebook, &out.cs.codebook)
        + both(&out.ts.commit, &out.cs.commit) * w.loss_weight_commit
        + both(&out.ts.orthogonal, &out.cs.orthogonal) * w.loss_weight_orthogonal
        + both(&out.ts.diversity, &out.cs.diversity) * w.loss_weight_diversity
        + &out.clip * w.loss_weight_clip
        + &out.nll * w.loss_weight_prediction
        + &out.kl * w.loss_weight_kl
}

/// Each term's weight in [`weighted_total`], in the order of [`StormOutput::terms`].
pub fn term_weights(w: &TrainConfig) -> [(&'static str, f64); 13] {
    [
        ("recon_ts", w.loss_weight_recon_ts),
        ("recon_cs", w.loss_weight_recon_cs),
        ("codebook_ts", 1.0),
        ("codebook_cs", 1.0),
        ("commit_ts", w.loss_weight_commit),
        ("commit_cs", w.loss_weight_commit),
        ("diversity_ts", w.loss_weight_diversity),
        ("diversity_cs", w.loss_weight_diversity),
        ("orthogonal_ts", w.loss_weight_orthogonal),
        ("orthogonal_cs", w.loss_weight_orthogonal),
        ("clip", w.loss_weight_clip),
        ("nll", w.loss_weight_prediction),
        ("kl", w.loss_weight_kl),
    ]
}
