//! FactorVAE (Duan et al., AAAI 2022, the STORM paper's strongest baseline), as its paper describes it:
//!
//! - feature extractor (eq. 4): per stock, a linear projection + LeakyReLU of each day's C features, a GRU
//!   over the window, and the last hidden state as the stock's latent features e (B, N, H);
//! - factor encoder (eqs. 6–8, training only): M portfolios with softmax weights over the stocks, their
//!   returns y_p = Σ_i y_i a_p, and a mapping layer to the posterior factors N(μ_post, σ_post²);
//! - factor decoder (eqs. 9–12): alpha layer N(μ_α, σ_α²) and beta layer β = w e + b;
//! - factor predictor (eqs. 14–16): K heads of global attention with a learned query and ReLU-normalised
//!   cosine weights, then a distribution network for the prior factors;
//! - loss (eq. 17): Gaussian NLL of y under the posterior reconstruction + γ · KL(posterior ‖ prior);
//! - prediction (eq. 18): the prior mean μ_α + β μ_prior, deterministic and label-free.
//!
//! The encoder, decoder and predictor are the factor head STORM uses too (`factor_head.rs`), with the
//! paper's ReLU-cosine attention. Unlike the public reference (reference-notes §7) nothing here can see the
//! labels at prediction time.

use tch::nn::{self, Module, RNN};
use tch::{Kind, Tensor};

use super::factor_head::{leaky_relu, FactorHead, HeadConfig, PriorAttention};
use super::interface::{check_dims, Embeddings, FactorModel, ModelOutput};
use super::transformer::xavier_linear;
use crate::config::{FactorVaeConfig, ModelKind, TrainConfig};
use crate::error::Result;

#[derive(Debug)]
pub struct FactorVae {
    proj: nn::Linear,
    gru: nn::GRU,
    head: FactorHead,
    gamma: f64,
    slope: f64,
}

impl FactorVae {
    pub fn new(
        p: &nn::Path,
        cfg: &FactorVaeConfig,
        n_stocks: i64,
        n_features: i64,
        window: i64,
    ) -> Result<Self> {
        check_dims(n_stocks, n_features, window)?;
        let hidden = cfg.hidden as i64;
        let extractor = p / "extractor";
        Ok(FactorVae {
            proj: xavier_linear(&(&extractor / "proj"), n_features, hidden),
            gru: nn::gru(&extractor / "gru", hidden, hidden, Default::default()),
            head: FactorHead::new(
                &(p / "factor"),
                HeadConfig {
                    hidden,
                    factors: cfg.factors as i64,
                    portfolios: cfg.portfolios as i64,
                    prior: PriorAttention::ReluCosine,
                    leaky_slope: cfg.leaky_slope,
                },
            ),
            gamma: cfg.gamma,
            slope: cfg.leaky_slope,
        })
    }

    /// Latent features e (B, N, H): x (B, W, N, D) → per-stock sequences (B·N, W, D) → projection +
    /// LeakyReLU → GRU → last hidden state.
    pub fn features(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (b, w, n, d) = (s[0], s[1], s[2], s[3]);
        let seq = x.permute([0, 2, 1, 3]).reshape([b * n, w, d]);
        let h = leaky_relu(&self.proj.forward(&seq), self.slope);
        let (out, _) = self.gru.seq(&h);
        out.select(1, w - 1).view([b, n, -1])
    }

    pub fn head(&self) -> &FactorHead {
        &self.head
    }
}

impl FactorModel for FactorVae {
    fn kind(&self) -> ModelKind {
        ModelKind::FactorVae
    }

    fn forward_loss(&self, x: &Tensor, y: &Tensor, _weights: &TrainConfig) -> ModelOutput {
        let e = self.features(x);
        let out = self.head.forward(&e, y);
        let loss = &out.nll + &out.kl * self.gamma;
        ModelOutput {
            loss,
            terms: vec![("nll", out.nll), ("kl", out.kl)],
            prediction: out.prediction,
            ts_indices: None,
            cs_indices: None,
        }
    }

    fn predict(&self, x: &Tensor) -> Tensor {
        self.head.predict(&self.features(x))
    }

    fn head_parts(&self, x: &Tensor, y: &Tensor) -> Option<super::factor_head::HeadParts> {
        Some(self.head.parts(&self.features(x), y))
    }

    fn gradient_probe(&self, _weights: &TrainConfig) -> Option<crate::model::GradientProbe> {
        Some(crate::model::GradientProbe {
            prefixes: vec!["extractor."],
            weights: vec![("nll", 1.0), ("kl", self.gamma)],
        })
    }

    fn predict_with_risk(&self, x: &Tensor) -> (Tensor, Option<Tensor>) {
        let (mu, sigma) = self.head.predict_distribution(&self.features(x));
        (mu, Some(sigma))
    }

    fn embeddings(&self, x: &Tensor) -> Embeddings {
        Embeddings {
            factors: self.features(x).to_kind(Kind::Float),
            ts_codes: None,
            cs_codes: None,
            state: None,
        }
    }
}

#[cfg(test)]
mod tests;
