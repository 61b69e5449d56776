//! FactorVAE-style factor head (paper §4.3.2; FactorVAE §3), shared by STORM and the FactorVAE baseline.
//! From per-stock factor embeddings e (B, N, H): the posterior (training only) reads the true returns
//! through M softmax-weighted portfolios; the prior pools the N stocks of ONE sample with K_f learned-query
//! attention heads (STORM: softmax of scaled dot products; FactorVAE eq. 14: ReLU-normalised cosine
//! similarity); the alpha and beta layers give
//! per-stock idiosyncratic returns and factor exposures; ŷ = α + β·z. The training loss is the analytic
//! Gaussian NLL of y under the posterior-decoded return distribution plus KL(posterior ‖ prior); the
//! prediction is the prior mean μ_α + β·μ_prior, deterministic and label-free.

use std::f64::consts::PI;

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::transformer::xavier_linear;

/// Floor added to every Softplus std so that logs and divisions stay finite.
const SIGMA_FLOOR: f64 = 1e-6;

#[derive(Debug)]
pub struct FactorOutput {
    /// Prior-mean prediction μ_α + β·μ_prior, (B, N).
    pub prediction: Tensor,
    /// Gaussian NLL of y under the posterior reconstruction, mean over stocks and batch.
    pub nll: Tensor,
    /// KL(posterior ‖ prior), summed over factors, mean over the batch.
    pub kl: Tensor,
}

/// How a prior head weighs the N stocks of a sample against its learned query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorAttention {
    /// softmax(q·kᵢ / √H) — STORM.
    Softmax,
    /// max(0, cos(q, kᵢ)) / Σⱼ max(0, cos(q, kⱼ)) — FactorVAE eq. 14. When no stock has a positive cosine the
    /// weights are all zero (a small constant keeps the division finite) and the head's summary is 0.
    ReluCosine,
}

/// See [`FactorHead::parts`]; the prediction is `alpha + beta_mu`.
#[derive(Debug)]
pub struct HeadParts {
    /// Prior and posterior factor means (B, K).
    pub mu_prior: Tensor,
    pub mu_post: Tensor,
    /// KL(posterior ‖ prior) of each factor (B, K).
    pub kl: Tensor,
    /// μ_α (B, N) and β · μ_prior (B, N).
    pub alpha: Tensor,
    pub beta_mu: Tensor,
}

/// Sizes and choices of a factor head.
#[derive(Debug, Clone, Copy)]
pub struct HeadConfig {
    /// Width H of the factor embeddings e.
    pub hidden: i64,
    /// Latent factors K.
    pub factors: i64,
    /// Portfolios M of the posterior.
    pub portfolios: i64,
    pub prior: PriorAttention,
    /// Negative slope of the LeakyReLU hidden layers.
    pub leaky_slope: f64,
}

#[derive(Debug)]
struct Distribution {
    hidden: nn::Linear,
    mu: nn::Linear,
    sigma: nn::Linear,
    slope: f64,
}

impl Distribution {
    /// LeakyReLU hidden layer then a mean and a Softplus std of width `out` (FactorVAE eq. 10).
    fn new(p: &nn::Path, dim: i64, out: i64, slope: f64) -> Self {
        Distribution {
            hidden: xavier_linear(&(p / "hidden"), dim, dim),
            mu: xavier_linear(&(p / "mu"), dim, out),
            sigma: xavier_linear(&(p / "sigma"), dim, out),
            slope,
        }
    }

    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = leaky_relu(&self.hidden.forward(x), self.slope);
        (self.mu.forward(&h), positive(&self.sigma.forward(&h)))
    }
}

/// LeakyReLU with an explicit negative slope.
pub fn leaky_relu(x: &Tensor, slope: f64) -> Tensor {
    x.maximum(&(x * slope))
}

fn positive(x: &Tensor) -> Tensor {
    x.softplus() + SIGMA_FLOOR
}

#[derive(Debug)]
pub struct FactorHead {
    portfolio: nn::Linear,
    post_mu: nn::Linear,
    post_sigma: nn::Linear,
    prior_query: Tensor,
    prior_key: nn::Linear,
    prior_value: nn::Linear,
    prior_dist: Distribution,
    alpha: Distribution,
    beta: nn::Linear,
    hidden: i64,
    factors: i64,
    attention: PriorAttention,
}

impl FactorHead {
    pub fn new(p: &nn::Path, cfg: HeadConfig) -> Self {
        let HeadConfig {
            hidden,
            factors,
            portfolios,
            prior: attention,
            leaky_slope,
        } = cfg;
        let prior = p / "prior";
        FactorHead {
            portfolio: xavier_linear(&(p / "portfolio"), hidden, portfolios),
            post_mu: xavier_linear(&(p / "post_mu"), portfolios, factors),
            post_sigma: xavier_linear(&(p / "post_sigma"), portfolios, factors),
            prior_query: prior.var(
                "query",
                &[factors, hidden],
                nn::Init::Randn {
                    mean: 0.0,
                    stdev: 1.0,
                },
            ),
            prior_key: xavier_linear(&(&prior / "key"), hidden, factors * hidden),
            prior_value: xavier_linear(&(&prior / "value"), hidden, factors * hidden),
            prior_dist: Distribution::new(&prior, hidden, 1, leaky_slope),
            alpha: Distribution::new(&(p / "alpha"), hidden, 1, leaky_slope),
            beta: xavier_linear(&(p / "beta"), hidden, factors),
            hidden,
            factors,
            attention,
        }
    }

    /// Posterior (μ, σ) of the factors (B, K_f) from e (B, N, H) and the true returns y (B, N).
    pub fn posterior(&self, e: &Tensor, y: &Tensor) -> (Tensor, Tensor) {
        let weights = self.portfolio.forward(e).softmax(1, Kind::Float);
        let returns = Tensor::einsum("bnm,bn->bm", &[&weights, y], None::<i64>);
        (
            self.post_mu.forward(&returns),
            positive(&self.post_sigma.forward(&returns)),
        )
    }

    /// Prior (μ, σ) of the factors (B, K_f): K_f heads, each a learned query attending over the N stocks of
    /// its own sample, then a shared distribution network per head.
    pub fn prior(&self, e: &Tensor) -> (Tensor, Tensor) {
        let s = e.size();
        let (b, n) = (s[0], s[1]);
        let heads = |layer: &nn::Linear| {
            layer
                .forward(e)
                .view([b, n, self.factors, self.hidden])
                .permute([0, 2, 1, 3])
        };
        let (keys, values) = (heads(&self.prior_key), heads(&self.prior_value));
        let weights = attention_weights(self.attention, &keys, &self.prior_query);
        let pooled = Tensor::einsum("bkn,bknh->bkh", &[&weights, &values], None::<i64>);
        let (mu, sigma) = self.prior_dist.forward(&pooled);
        (mu.squeeze_dim(-1), sigma.squeeze_dim(-1))
    }

    /// Alpha (μ_α, σ_α) (B, N) and beta (B, N, K_f).
    pub fn alpha_beta(&self, e: &Tensor) -> (Tensor, Tensor, Tensor) {
        let (mu, sigma) = self.alpha.forward(e);
        (
            mu.squeeze_dim(-1),
            sigma.squeeze_dim(-1),
            self.beta.forward(e),
        )
    }

    /// Prior-mean return prediction (B, N). Uses no labels.
    pub fn predict(&self, e: &Tensor) -> Tensor {
        let (mu_alpha, _, beta) = self.alpha_beta(e);
        let (mu_prior, _) = self.prior(e);
        decode_mean(&mu_alpha, &beta, &mu_prior)
    }

    /// Prior predictive mean and std of each stock's return (B, N), FactorVAE eq. 12 with the prior
    /// factors: σ = (σ_α² + Σ_k β_k² σ_prior,k²)^½ — the risk estimate of TopK-Drop's risk-aware variant.
    pub fn predict_distribution(&self, e: &Tensor) -> (Tensor, Tensor) {
        let (mu_alpha, sigma_alpha, beta) = self.alpha_beta(e);
        let (mu_prior, sigma_prior) = self.prior(e);
        (
            decode_mean(&mu_alpha, &beta, &mu_prior),
            decode_std(&sigma_alpha, &beta, &sigma_prior),
        )
    }

    /// The parts of a prediction that say whether the prior learned what the posterior sees (issue 19):
    /// prior and posterior factor means, the KL per factor, and the prediction's two summands.
    pub fn parts(&self, e: &Tensor, y: &Tensor) -> HeadParts {
        let (mu_alpha, _, beta) = self.alpha_beta(e);
        let (mu_prior, sigma_prior) = self.prior(e);
        let (mu_post, sigma_post) = self.posterior(e, y);
        let kl = (&sigma_prior / &sigma_post).log()
            + (sigma_post.square() + (&mu_post - &mu_prior).square())
                / (sigma_prior.square() * 2.0)
            - 0.5;
        HeadParts {
            beta_mu: Tensor::einsum("bnk,bk->bn", &[&beta, &mu_prior], None::<i64>),
            alpha: mu_alpha,
            mu_prior,
            mu_post,
            kl,
        }
    }

    /// Prediction, NLL and KL for embeddings e (B, N, H) and labels y (B, N).
    pub fn forward(&self, e: &Tensor, y: &Tensor) -> FactorOutput {
        let (mu_alpha, sigma_alpha, beta) = self.alpha_beta(e);
        let (mu_prior, sigma_prior) = self.prior(e);
        let (mu_post, sigma_post) = self.posterior(e, y);
        let mu_y = decode_mean(&mu_alpha, &beta, &mu_post);
        let sigma_y = decode_std(&sigma_alpha, &beta, &sigma_post);
        FactorOutput {
            prediction: decode_mean(&mu_alpha, &beta, &mu_prior),
            nll: gaussian_nll(y, &mu_y, &sigma_y),
            kl: kl_diag_gaussian(&mu_post, &sigma_post, &mu_prior, &sigma_prior),
        }
    }
}

/// Attention weights (B, K, N) of K learned queries (K, H) over keys (B, K, N, H).
fn attention_weights(kind: PriorAttention, keys: &Tensor, query: &Tensor) -> Tensor {
    match kind {
        PriorAttention::Softmax => {
            let hidden = query.size()[1] as f64;
            let scores =
                Tensor::einsum("bknh,kh->bkn", &[keys, query], None::<i64>) / hidden.sqrt();
            scores.softmax(-1, Kind::Float)
        }
        PriorAttention::ReluCosine => {
            let dot = Tensor::einsum("bknh,kh->bkn", &[keys, query], None::<i64>);
            let key_norm = keys.norm_scalaropt_dim(2, [-1], false);
            let query_norm = query.norm_scalaropt_dim(2, [-1], false).unsqueeze(-1);
            let cosine = dot / (key_norm * query_norm + 1e-12);
            let positive = cosine.relu();
            let total = positive.sum_dim_intlist(-1, true, Kind::Float);
            positive / (total + 1e-12)
        }
    }
}

/// (σ_α² + Σ_k β_k² σ_z,k²)^½: (B, N), (B, N, K), (B, K) → (B, N).
fn decode_std(sigma_alpha: &Tensor, beta: &Tensor, sigma_z: &Tensor) -> Tensor {
    (sigma_alpha.square()
        + Tensor::einsum(
            "bnk,bk->bn",
            &[beta.square(), sigma_z.square()],
            None::<i64>,
        ))
    .sqrt()
}

/// μ_α + β·μ_z: (B, N) + (B, N, K)·(B, K) → (B, N).
fn decode_mean(mu_alpha: &Tensor, beta: &Tensor, mu_z: &Tensor) -> Tensor {
    mu_alpha + Tensor::einsum("bnk,bk->bn", &[beta, mu_z], None::<i64>)
}

/// Mean Gaussian negative log-likelihood ½ ln 2π + ln σ + (y − μ)² / (2σ²) over all entries.
pub fn gaussian_nll(y: &Tensor, mu: &Tensor, sigma: &Tensor) -> Tensor {
    let z = (y - mu) / sigma;
    (sigma.log() + z.square() * 0.5 + 0.5 * (2.0 * PI).ln()).mean(Kind::Float)
}

/// KL(N(μ_q, σ_q²) ‖ N(μ_p, σ_p²)) for diagonal Gaussians of shape (B, K): summed over the last dimension
/// (factors), averaged over the rest (batch).
pub fn kl_diag_gaussian(
    mu_q: &Tensor,
    sigma_q: &Tensor,
    mu_p: &Tensor,
    sigma_p: &Tensor,
) -> Tensor {
    let term = (sigma_p / sigma_q).log()
        + (sigma_q.square() + (mu_q - mu_p).square()) / (sigma_p.square() * 2.0)
        - 0.5;
    term.sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn opts() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    #[test]
    fn kl_is_zero_for_identical_and_matches_closed_form() {
        let mu = Tensor::randn([3, 4], opts());
        let sigma = Tensor::rand([3, 4], opts()) + 0.1;
        let kl = kl_diag_gaussian(&mu, &sigma, &mu, &sigma).double_value(&[]);
        assert!(kl.abs() < 1e-6, "{kl}");
        // 1-D: KL(N(1, 0.5²) ‖ N(0, 2²)) = ln(2/0.5) + (0.25 + 1)/(2·4) − ½.
        let kl = kl_diag_gaussian(
            &t(&[1.0], &[1, 1]),
            &t(&[0.5], &[1, 1]),
            &t(&[0.0], &[1, 1]),
            &t(&[2.0], &[1, 1]),
        );
        let expect = 4f64.ln() + 1.25 / 8.0 - 0.5;
        assert!((kl.double_value(&[]) - expect).abs() < 1e-6);
        // Summed over factors, averaged over the batch: two identical rows of two factors = 2 × 1-D value.
        let two = |v: f32| Tensor::full([2, 2], v as f64, opts());
        let kl = kl_diag_gaussian(&two(1.0), &two(0.5), &two(0.0), &two(2.0)).double_value(&[]);
        assert!((kl - 2.0 * expect).abs() < 1e-5);
    }

    #[test]
    fn gaussian_nll_matches_formula() {
        let y = t(&[0.5, -1.0], &[1, 2]);
        let mu = t(&[0.0, 0.0], &[1, 2]);
        let sigma = t(&[1.0, 2.0], &[1, 2]);
        let c = 0.5 * (2.0 * PI).ln();
        let expect = ((c + 0.125) + (c + 2f64.ln() + 0.125)) / 2.0;
        assert!((gaussian_nll(&y, &mu, &sigma).double_value(&[]) - expect).abs() < 1e-6);
    }

    fn cfg(prior: PriorAttention) -> HeadConfig {
        HeadConfig {
            hidden: 6,
            factors: 3,
            portfolios: 4,
            prior,
            leaky_slope: 0.01,
        }
    }

    #[test]
    fn relu_cosine_weights_match_hand_computation() {
        // One sample, one head, three stocks with 2-d keys; query (1, 0).
        let keys = t(&[1.0, 0.0, 1.0, 1.0, -1.0, 0.5], &[1, 1, 3, 2]);
        let query = t(&[2.0, 0.0], &[1, 2]);
        let w = attention_weights(PriorAttention::ReluCosine, &keys, &query);
        // cosines 1, 1/√2, negative → relu 1, 0.7071, 0 → normalised.
        let c = 0.5f64.sqrt();
        let expect = [1.0 / (1.0 + c), c / (1.0 + c), 0.0];
        let got = Vec::<f32>::try_from(w.flatten(0, -1)).unwrap();
        for (g, e) in got.iter().zip(expect) {
            assert!((*g as f64 - e).abs() < 1e-6, "{got:?}");
        }
        // No positive cosine: all-zero weights, finite.
        let w = attention_weights(PriorAttention::ReluCosine, &(-keys.abs()), &query);
        assert_eq!(w.abs().sum(Kind::Float).double_value(&[]), 0.0);
        // Softmax weights sum to one.
        let keys = Tensor::randn([2, 3, 4, 5], opts());
        let w = attention_weights(
            PriorAttention::Softmax,
            &keys,
            &Tensor::randn([3, 5], opts()),
        );
        let sums = w.sum_dim_intlist(-1, false, Kind::Float);
        assert!(sums.allclose(&Tensor::ones([2, 3], opts()), 1e-5, 1e-6, false));
    }

    #[test]
    fn predictive_std_matches_eq_12() {
        let sigma_alpha = t(&[0.5, 1.0], &[1, 2]);
        let beta = t(&[1.0, 2.0, 0.0, -1.0], &[1, 2, 2]);
        let sigma_z = t(&[0.1, 0.2], &[1, 2]);
        let got =
            Vec::<f32>::try_from(decode_std(&sigma_alpha, &beta, &sigma_z).flatten(0, -1)).unwrap();
        let expect = [
            (0.25f64 + 0.01 + 4.0 * 0.04).sqrt(),
            (1.0f64 + 0.0 + 0.04).sqrt(),
        ];
        for (g, e) in got.iter().zip(expect) {
            assert!((*g as f64 - e).abs() < 1e-6);
        }
    }

    #[test]
    fn head_shapes_and_label_free_prediction() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let head = FactorHead::new(&(vs.root() / "factor"), cfg(PriorAttention::Softmax));
        let e = Tensor::randn([2, 5, 6], opts());
        let y = Tensor::randn([2, 5], opts());
        let out = head.forward(&e, &y);
        assert_eq!(out.prediction.size(), vec![2, 5]);
        assert_eq!(out.nll.size(), Vec::<i64>::new());
        let out2 = head.forward(&e, &(y * 3.0));
        assert!(out.prediction.equal(&out2.prediction));
        assert!(out.prediction.equal(&head.predict(&e)));
        let (mu, sigma) = head.prior(&e);
        assert_eq!(mu.size(), vec![2, 3]);
        assert!(sigma.min().double_value(&[]) > 0.0);
    }
}
