//! HireVAE's market level: one market-situation latent z_m (B, L) per sample from the whole cross-section
//! of stock features e (B, N, H), and the conditioning of every stock's features on it.
//!
//! - summary: the mean over stocks ⊕ a learned-score attention pool over stocks, then a LeakyReLU layer;
//! - prior N(μ_p, I): from the summary only (label-free);
//! - posterior N(μ_q, I): from the summary ⊕ the returns of M_m softmax-weighted market portfolios;
//! - conditioning (the regime switch): e ⊙ (1 + scale(z_m)) + shift(z_m), the same for every stock.
//!
//! Both levels of storm's HireVAE are deterministic (means, no sampling), so the market latent has unit
//! variance: with a learned variance that enters no likelihood the KL would be driven to zero by inflating
//! the prior's variance.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::super::factor_head::leaky_relu;
use super::super::transformer::xavier_linear;

#[derive(Debug)]
pub struct MarketEncoder {
    score: nn::Linear,
    summary: nn::Linear,
    prior_mu: nn::Linear,
    portfolio: nn::Linear,
    post_hidden: nn::Linear,
    post_mu: nn::Linear,
    scale: nn::Linear,
    shift: nn::Linear,
    slope: f64,
}

impl MarketEncoder {
    pub fn new(p: &nn::Path, hidden: i64, latent: i64, portfolios: i64, slope: f64) -> Self {
        MarketEncoder {
            score: xavier_linear(&(p / "score"), hidden, 1),
            summary: xavier_linear(&(p / "summary"), 2 * hidden, hidden),
            prior_mu: xavier_linear(&(p / "prior_mu"), hidden, latent),
            portfolio: xavier_linear(&(p / "portfolio"), hidden, portfolios),
            post_hidden: xavier_linear(&(p / "post_hidden"), hidden + portfolios, hidden),
            post_mu: xavier_linear(&(p / "post_mu"), hidden, latent),
            scale: xavier_linear(&(p / "scale"), latent, hidden),
            shift: xavier_linear(&(p / "shift"), latent, hidden),
            slope,
        }
    }

    /// The day's market summary (B, H) from stock features e (B, N, H).
    fn summary(&self, e: &Tensor) -> Tensor {
        let mean = e.mean_dim(1, false, Kind::Float);
        let weights = self.score.forward(e).softmax(1, Kind::Float);
        let pooled = (e * weights).sum_dim_intlist(1, false, Kind::Float);
        leaky_relu(
            &self.summary.forward(&Tensor::cat(&[mean, pooled], -1)),
            self.slope,
        )
    }

    /// Prior mean μ_p (B, L) of the market latent; uses no labels.
    pub fn prior(&self, e: &Tensor) -> Tensor {
        self.prior_mu.forward(&self.summary(e))
    }

    /// Posterior mean μ_q (B, L) of the market latent from e and the day's returns y (B, N).
    pub fn posterior(&self, e: &Tensor, y: &Tensor) -> Tensor {
        let weights = self.portfolio.forward(e).softmax(1, Kind::Float);
        let returns = Tensor::einsum("bnm,bn->bm", &[&weights, y], None::<i64>);
        let input = Tensor::cat(&[self.summary(e), returns], -1);
        self.post_mu
            .forward(&leaky_relu(&self.post_hidden.forward(&input), self.slope))
    }

    /// Stock features e (B, N, H) conditioned on the market latent z (B, L).
    pub fn condition(&self, e: &Tensor, z: &Tensor) -> Tensor {
        let scale = self.scale.forward(z).unsqueeze(1);
        let shift = self.shift.forward(z).unsqueeze(1);
        e * (scale + 1.0) + shift
    }
}

/// KL(N(μ_q, I) ‖ N(μ_p, I)) = ½ ‖μ_q − μ_p‖², summed over the latent, averaged over the batch.
pub fn kl_unit_gaussian(mu_q: &Tensor, mu_p: &Tensor) -> Tensor {
    ((mu_q - mu_p).square() * 0.5)
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}
