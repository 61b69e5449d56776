//! HireVAE (Wei et al., IJCAI 2023, "An Online and Adaptive Factor Model Based on Hierarchical and
//! Regime-Switch VAE"): FactorVAE's stock level under a market-situation latent (`hirevae/market.rs`).
//!
//! - stock features e (B, N, H): FactorVAE's extractor (projection + LeakyReLU + GRU), `[model.factorvae]`;
//! - market latent z_m (B, L): posterior mean from e and the day's returns, prior mean from e alone;
//! - the stock-wise factor latents are FactorVAE's factor head run on e conditioned on z_m: in training on
//!   the posterior market mean (the hierarchical q(z_s | z_m, x, y) and p(z_s | z_m, x)), in prediction
//!   on the prior market mean;
//! - loss: Gaussian NLL + γ · (KL_stock + KL_market); prediction: the prior mean, label-free.
//!
//! The choices where the paper is open are listed in docs/TRAINING.md ("HireVAE").

mod market;

use tch::{Kind, Tensor};

use super::factor_head::HeadParts;
use super::factorvae::FactorVae;
use super::interface::{Embeddings, FactorModel, GradientProbe, ModelOutput};
use crate::config::{FactorVaeConfig, HireVaeConfig, ModelKind, TrainConfig};
use crate::error::Result;
use market::{kl_unit_gaussian, MarketEncoder};

#[derive(Debug)]
pub struct HireVae {
    stock: FactorVae,
    market: MarketEncoder,
    gamma: f64,
}

impl HireVae {
    pub fn new(
        p: &tch::nn::Path,
        stock: &FactorVaeConfig,
        cfg: &HireVaeConfig,
        n_stocks: i64,
        n_features: i64,
        window: i64,
    ) -> Result<Self> {
        Ok(HireVae {
            stock: FactorVae::new(p, stock, n_stocks, n_features, window)?,
            market: MarketEncoder::new(
                &(p / "market"),
                stock.hidden as i64,
                cfg.market_latent as i64,
                cfg.market_portfolios as i64,
                stock.leaky_slope,
            ),
            gamma: stock.gamma,
        })
    }

    /// Stock features conditioned on the prior market latent (B, N, H): what prediction reads.
    pub fn prior_features(&self, x: &Tensor) -> Tensor {
        let e = self.stock.features(x);
        self.market.condition(&e, &self.market.prior(&e))
    }

    pub fn head(&self) -> &super::factor_head::FactorHead {
        self.stock.head()
    }
}

#[cfg(test)]
impl HireVae {
    /// Market prior and posterior means (B, L) for windows x and labels y.
    pub fn market_means(&self, x: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
        let e = self.stock.features(x);
        (self.market.prior(&e), self.market.posterior(&e, y))
    }

    /// Stock features conditioned on the posterior market latent (B, N, H): what the stock level trains on.
    pub fn posterior_features(&self, x: &Tensor, y: &Tensor) -> Tensor {
        let e = self.stock.features(x);
        self.market.condition(&e, &self.market.posterior(&e, y))
    }
}

impl FactorModel for HireVae {
    fn kind(&self) -> ModelKind {
        ModelKind::HireVae
    }

    fn forward_loss(&self, x: &Tensor, y: &Tensor, _weights: &TrainConfig) -> ModelOutput {
        let e = self.stock.features(x);
        let (mu_prior, mu_post) = (self.market.prior(&e), self.market.posterior(&e, y));
        let out = self.head().forward(&self.market.condition(&e, &mu_post), y);
        let kl_market = kl_unit_gaussian(&mu_post, &mu_prior);
        let loss = &out.nll + (&out.kl + &kl_market) * self.gamma;
        ModelOutput {
            loss,
            terms: vec![("nll", out.nll), ("kl", out.kl), ("kl_market", kl_market)],
            prediction: self.head().predict(&self.market.condition(&e, &mu_prior)),
            ts_indices: None,
            cs_indices: None,
        }
    }

    fn predict(&self, x: &Tensor) -> Tensor {
        self.head().predict(&self.prior_features(x))
    }

    fn head_parts(&self, x: &Tensor, y: &Tensor) -> Option<HeadParts> {
        Some(self.head().parts(&self.prior_features(x), y))
    }

    fn gradient_probe(&self, _weights: &TrainConfig) -> Option<GradientProbe> {
        Some(GradientProbe {
            prefixes: vec!["extractor."],
            weights: vec![("nll", 1.0), ("kl", self.gamma), ("kl_market", self.gamma)],
        })
    }

    fn predict_with_risk(&self, x: &Tensor) -> (Tensor, Option<Tensor>) {
        let (mu, sigma) = self.head().predict_distribution(&self.prior_features(x));
        (mu, Some(sigma))
    }

    fn embeddings(&self, x: &Tensor) -> Embeddings {
        Embeddings {
            factors: self.prior_features(x).to_kind(Kind::Float),
            ts_codes: None,
            cs_codes: None,
            state: None,
        }
    }
}

#[cfg(test)]
mod tests;
