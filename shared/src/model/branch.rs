//! One VQ-VAE branch (TS or CS): patch embedding → encoder (CLS + positions + blocks + LN) → quantiser →
//! decoder (Linear `proj_in` → own CLS + positions → blocks → LN → per-token Linear `head` to the patch) →
//! unpatchify.

use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

use super::patch::{CsPatch, Geometry, TsPatch};
use super::quantizer::Quantizer;
use super::transformer::{xavier_linear, TokenTransformer};
use crate::config::{ModelConfig, Reconstruction, StockEmbedding};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BranchKind {
    /// Time series: p days × one stock per token.
    Ts,
    /// Cross section: one day × all stocks per token.
    Cs,
}

#[derive(Debug)]
enum Patch {
    Ts(TsPatch),
    Cs(CsPatch),
}

#[derive(Debug)]
pub struct Branch {
    kind: BranchKind,
    embed: Patch,
    encoder: TokenTransformer,
    quantizer: Quantizer,
    decoder_in: nn::Linear,
    decoder: TokenTransformer,
    head: nn::Linear,
}

impl Branch {
    pub(crate) fn new(p: &nn::Path, kind: BranchKind, cfg: &ModelConfig, geo: Geometry) -> Self {
        let dim = cfg.embed_dim as i64;
        let mlp = cfg.mlp_ratio as i64;
        let embed = match kind {
            BranchKind::Ts => Patch::Ts(TsPatch::new(
                &(p / "embed"),
                geo,
                cfg.patch_days as i64,
                dim,
            )),
            BranchKind::Cs => Patch::Cs(CsPatch::new(
                &(p / "embed"),
                geo,
                cfg.cs_stem_dim as i64,
                dim,
            )),
        };
        let (grid, patch_size) = match &embed {
            Patch::Ts(e) => (e.grid(), e.patch_size()),
            Patch::Cs(e) => (e.grid(), e.patch_size()),
        };
        // the space axis of the TS grid is the stock; the CS grid has none
        let stock_positions = cfg.stock_embedding == StockEmbedding::Learned;
        Branch {
            kind,
            embed,
            encoder: TokenTransformer::with_space_positions(
                &(p / "encoder"),
                dim,
                cfg.encoder_depth as i64,
                cfg.encoder_heads as i64,
                mlp,
                grid,
                stock_positions,
            ),
            quantizer: Quantizer::new(
                &(p / "quantizer"),
                cfg.codebook_size as i64,
                dim,
                cfg.dead_code_steps as i64,
                cfg.diversity_temperature,
            ),
            decoder_in: xavier_linear(&(p / "decoder" / "proj_in"), dim, dim),
            decoder: TokenTransformer::with_space_positions(
                &(p / "decoder"),
                dim,
                cfg.decoder_depth as i64,
                cfg.decoder_heads as i64,
                mlp,
                grid,
                stock_positions,
            ),
            head: xavier_linear(&(p / "decoder" / "head"), dim, patch_size),
        }
    }

    /// For the CS branch: each stock's share of the last day's token (B, N, E); None for TS.
    pub fn stock_shares(&self, x: &Tensor) -> Option<Tensor> {
        match &self.embed {
            Patch::Cs(e) => Some(e.stock_shares(x)),
            Patch::Ts(_) => None,
        }
    }

    pub fn kind(&self) -> BranchKind {
        self.kind
    }

    pub fn quantizer(&self) -> &Quantizer {
        &self.quantizer
    }

    /// x: (B, W, N, D) → encoder output (B, 1 + L, E); index 0 is the CLS token, the rest z_e.
    pub fn encode(&self, x: &Tensor) -> Tensor {
        let tokens = match &self.embed {
            Patch::Ts(e) => e.forward(x),
            Patch::Cs(e) => e.forward(x),
        };
        self.encoder.forward(&tokens)
    }

    /// The reconstruction term of quantised tokens (B, L, E) against the window x (B, W, N, D).
    pub fn reconstruction_loss(
        &self,
        quantized: &Tensor,
        x: &Tensor,
        form: Reconstruction,
    ) -> Tensor {
        reconstruction_loss(&self.decode(quantized), x, form)
    }

    /// Quantised tokens (B, L, E) → reconstruction of the window (B, W, N, D).
    pub fn decode(&self, quantized: &Tensor) -> Tensor {
        let h = self.decoder.forward(&self.decoder_in.forward(quantized));
        let patches = self.head.forward(&h.narrow(1, 1, h.size()[1] - 1));
        match &self.embed {
            Patch::Ts(e) => e.unpatchify(&patches),
            Patch::Cs(e) => e.unpatchify(&patches),
        }
    }
}

/// ‖x − x̂‖² in the chosen form: `Mean` over all B · W · N · D entries, or `SquaredNorm` summed over each
/// window's entries and averaged over the B samples (W · N · D times larger).
pub fn reconstruction_loss(reconstruction: &Tensor, x: &Tensor, form: Reconstruction) -> Tensor {
    match form {
        Reconstruction::Mean => reconstruction.mse_loss(x, Reduction::Mean),
        Reconstruction::SquaredNorm => {
            (reconstruction - x).square().sum(Kind::Float) / x.size()[0] as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squared_norm_is_the_per_sample_sum_and_mean_the_per_entry_mean() {
        // two samples of 1 × 2 × 1 entries; errors (1, 2) and (0, −3): squares 1 + 4 and 0 + 9
        let x = Tensor::from_slice(&[0f32, 0., 1., 1.]).view([2, 1, 2, 1]);
        let r = Tensor::from_slice(&[1f32, 2., 1., -2.]).view([2, 1, 2, 1]);
        let norm = reconstruction_loss(&r, &x, Reconstruction::SquaredNorm).double_value(&[]);
        assert!((norm - (5.0 + 9.0) / 2.0).abs() < 1e-6, "{norm}");
        let mean = reconstruction_loss(&r, &x, Reconstruction::Mean).double_value(&[]);
        assert!((mean - 14.0 / 4.0).abs() < 1e-6, "{mean}");
    }
}
