//! FactorVAE-style factor head (paper §4.3.2; FactorVAE §3). From per-stock factor embeddings e (B, N, H):
//! the posterior (training only) reads the true returns through M softmax-weighted portfolios; the prior
//! pools the N stocks of ONE sample with K_f learned-query attention heads; the alpha and beta layers give
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

#[derive(Debug)]
struct Distribution {
    hidden: nn::Linear,
    mu: nn::Linear,
    sigma: nn::Linear,
}

impl Distribution {
    /// LeakyReLU hidden layer then a mean and a Softplus std of width `out` (FactorVAE eq. 10).
    fn new(p: &nn::Path, dim: i64, out: i64) -> Self {
        Distribution {
            hidden: xavier_linear(&(p / "hidden"), dim, dim),
            mu: xavier_linear(&(p / "mu"), dim, out),
            sigma: xavier_linear(&(p / "sigma"), dim, out),
        }
    }

    fn forward(&self, x: &Tensor) -> (Tensor, Tensor) {
        let h = self.hidden.forward(x).leaky_relu();
        (self.mu.forward(&h), positive(&self.sigma.forward(&h)))
    }
}

fn positive(x: &Tensor) -> Tensor {
    x.softplus() + SIGMA_FLOOR
}

#[derive(Debug)]
pub struct FactorHead {
    embed: nn::Linear,
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
}

impl FactorHead {
    /// `in_dim`: width of the raw per-stock features that `embed` maps to the H-dim factor embedding.
    pub fn new(p: &nn::Path, in_dim: i64, hidden: i64, factors: i64, portfolios: i64) -> Self {
        let prior = p / "prior";
        FactorHead {
            embed: xavier_linear(&(p / "embed"), in_dim, hidden),
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
            prior_dist: Distribution::new(&prior, hidden, 1),
            alpha: Distribution::new(&(p / "alpha"), hidden, 1),
            beta: xavier_linear(&(p / "beta"), hidden, factors),
            hidden,
            factors,
        }
    }

    /// Raw per-stock features (B, N, in_dim) → factor embeddings e (B, N, H).
    pub fn embed(&self, features: &Tensor) -> Tensor {
        self.embed.forward(features).leaky_relu()
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
    /// its own sample (softmax of scaled dot products), then a shared distribution network per head.
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
        let scores = Tensor::einsum("bknh,kh->bkn", &[&keys, &self.prior_query], None::<i64>)
            / (self.hidden as f64).sqrt();
        let pooled = Tensor::einsum(
            "bkn,bknh->bkh",
            &[&scores.softmax(-1, Kind::Float), &values],
            None::<i64>,
        );
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

    /// Prediction, NLL and KL for embeddings e (B, N, H) and labels y (B, N).
    pub fn forward(&self, e: &Tensor, y: &Tensor) -> FactorOutput {
        let (mu_alpha, sigma_alpha, beta) = self.alpha_beta(e);
        let (mu_prior, sigma_prior) = self.prior(e);
        let (mu_post, sigma_post) = self.posterior(e, y);
        let mu_y = decode_mean(&mu_alpha, &beta, &mu_post);
        let var_y = sigma_alpha.square()
            + Tensor::einsum(
                "bnk,bk->bn",
                &[beta.square(), sigma_post.square()],
                None::<i64>,
            );
        FactorOutput {
            prediction: decode_mean(&mu_alpha, &beta, &mu_prior),
            nll: gaussian_nll(y, &mu_y, &var_y.sqrt()),
            kl: kl_diag_gaussian(&mu_post, &sigma_post, &mu_prior, &sigma_prior),
        }
    }
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

    #[test]
    fn head_shapes_and_label_free_prediction() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let head = FactorHead::new(&(vs.root() / "factor"), 10, 6, 3, 4);
        let e = head.embed(&Tensor::randn([2, 5, 10], opts()));
        assert_eq!(e.size(), vec![2, 5, 6]);
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
