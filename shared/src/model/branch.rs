//! One VQ-VAE branch (TS or CS): patch embedding → encoder (CLS + positions + blocks + LN) → quantiser →
//! decoder (Linear `proj_in` → own CLS + positions → blocks → LN → per-token Linear `head` to the patch) →
//! unpatchify.

use tch::nn::{self, Module};
use tch::Tensor;

use super::patch::{CsPatch, Geometry, TsPatch};
use super::quantizer::Quantizer;
use super::transformer::{xavier_linear, TokenTransformer};
use crate::config::ModelConfig;

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
        Branch {
            kind,
            embed,
            encoder: TokenTransformer::new(
                &(p / "encoder"),
                dim,
                cfg.encoder_depth as i64,
                cfg.encoder_heads as i64,
                mlp,
                grid,
            ),
            quantizer: Quantizer::new(
                &(p / "quantizer"),
                cfg.codebook_size as i64,
                dim,
                cfg.dead_code_steps as i64,
                cfg.diversity_temperature,
            ),
            decoder_in: xavier_linear(&(p / "decoder" / "proj_in"), dim, dim),
            decoder: TokenTransformer::new(
                &(p / "decoder"),
                dim,
                cfg.decoder_depth as i64,
                cfg.decoder_heads as i64,
                mlp,
                grid,
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
