//! Factor models behind one interface (`FactorModel`, built by `build_model` from the config's
//! `model.kind`): STORM, FactorVAE (`factorvae.rs`), HireVAE (`hirevae.rs`), the conditional autoencoder
//! CAFactor (`cafactor.rs`) and the LSTM/GRU/Transformer return predictors (`sequence.rs`); and two
//! predictors that are not torch modules: the zero-training reference factors (`reference.rs`), which score days from prices, and the
//! LightGBM booster (`lightgbm.rs`).
//!
//! The STORM model (paper §4): two VQ-VAE branches over the same window — time-series (TS: p days × one
//! stock per token) and cross-sectional (CS: one day × all stocks per token) — a CrossViT-style fusion of
//! their CLS tokens with a CLIP alignment loss, and a FactorVAE-style factor head whose prior mean is the
//! return prediction. Input x is (B, W, N, D) float32, labels y are (B, N) next-day returns.
//!
//! Corrections of the public reference (reference-notes §2): the encoders keep their CLS tokens and CLIP
//! and fusion use them; VQ losses are counted once; the diversity softmax is over negative distances; the
//! prior attends over the stocks of one sample, never across the batch; predictions are the deterministic
//! prior mean.
//!
//! Variable names in the `VarStore` (and so in safetensors checkpoints) follow the module tree:
//! `ts.embed.proj.weight`, `ts.encoder.blocks.0.attn.qkv.weight`, `ts.quantizer.codebook`,
//! `cs.decoder.head.weight`, `fusion.layers.0.ts_cross.attn.q.weight`, `clip.logit_scale`,
//! `factor.prior.query`, …
//!
//! Parameter count of the paper config (W = 64, N = 29, D = 152, embed 256, codebook 512, patch 8, encoder
//! 4 × 4 heads, decoder 2 × 8 heads, fusion depth 1 with self-attention, H = 128, K_f = 16, M = 16, attention
//! pooling of the factor embeddings; `dj30.toml`): 15,165,917 trainable parameters (the reference has 15.18 M;
//! `ModelConfig::default()`, mean pooling and M = 32, has 14,735,597); test `storm::tests::paper_config_shapes`
//! recomputes it from `dj30.toml`.

mod branch;
mod cafactor;
mod factor_head;
mod factorvae;
mod fusion;
mod hirevae;
mod interface;
pub mod lightgbm;
mod patch;
mod quantizer;
pub mod reference;
mod sequence;
mod stock_pooling;
mod storm;
mod transformer;

pub use branch::{reconstruction_loss, Branch, BranchKind};
pub use cafactor::CaFactor;
pub use factor_head::{
    gaussian_nll, kl_diag_gaussian, FactorHead, FactorOutput, HeadConfig, HeadParts, PriorAttention,
};
pub use factorvae::FactorVae;
pub use fusion::{clip_loss, Clip, Fusion};
pub use interface::{build_model, Embeddings, FactorModel, GradientProbe, ModelOutput};
pub use patch::{CsPatch, TsPatch};
pub use quantizer::{
    code_usage, diversity_loss, diversity_loss_from_probs, orthogonality_loss, perplexity,
    record_codebook_usage, QuantOutput, Quantizer,
};
pub use sequence::SequencePredictor;
pub use storm::{term_weights, weighted_total, BranchLosses, Storm, StormOutput};
pub use transformer::{Block, CrossBlock, TokenTransformer};

use tch::nn;

/// Number of trainable scalars in a var store.
pub fn parameter_count(vs: &nn::VarStore) -> i64 {
    vs.trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}
