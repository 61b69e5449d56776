//! How well a factor head's prior (what predictions use) agrees with its posterior (what the labels say),
//! for `storm diagnose` (issue 19): the correlation over days of each factor's prior and posterior means,
//! the KL per factor, and the shares of the prediction's cross-sectional variance that come from α and from
//! β·μ_prior. A prior that never learned the posterior predicts with α alone.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::data::windows::WindowTensors;
use crate::error::Result;
use crate::model::{FactorModel, HeadParts};
use crate::stats::rank_ic::{mean_std, pearson};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorAgreement {
    /// Pearson correlation over days of μ_prior,k and μ_post,k, for each factor k.
    pub factor_mean_correlation: Vec<f64>,
    /// Mean over days of KL(posterior ‖ prior) of each factor.
    pub kl_per_factor: Vec<f64>,
    /// Mean over days of var_cs(μ_α) / var_cs(prediction) and of var_cs(β·μ_prior) / var_cs(prediction)
    /// (they need not sum to 1: the two parts covary).
    pub alpha_variance_share: f64,
    pub beta_variance_share: f64,
}

fn rows(t: &Tensor) -> Result<(Vec<f64>, usize)> {
    let cols = t.size()[1] as usize;
    let flat = Vec::<f64>::try_from(
        t.to_kind(Kind::Double)
            .to_device(tch::Device::Cpu)
            .flatten(0, -1),
    )?;
    Ok((flat, cols))
}

/// Column `k` of a row-major (T, K) matrix.
fn column(flat: &[f64], cols: usize, k: usize) -> Vec<f64> {
    flat.iter().skip(k).step_by(cols).copied().collect()
}

fn variance(row: &[f64]) -> f64 {
    mean_std(row).1.powi(2)
}

/// The agreement over the windows ending at `ends` (labelled days); None for a model without a factor head.
pub fn prior_agreement(
    model: &dyn FactorModel,
    tensors: &WindowTensors,
    ends: &[usize],
) -> Result<Option<PriorAgreement>> {
    let mut parts: Vec<HeadParts> = Vec::new();
    for chunk in ends.chunks(64) {
        let batch = tensors.batch(chunk)?;
        match tch::no_grad(|| model.head_parts(&batch.x, &batch.y)) {
            Some(p) => parts.push(p),
            None => return Ok(None),
        }
    }
    if parts.is_empty() {
        return Ok(None);
    }
    let cat =
        |f: fn(&HeadParts) -> &Tensor| Tensor::cat(&parts.iter().map(f).collect::<Vec<_>>(), 0);
    let (prior, k) = rows(&cat(|p| &p.mu_prior))?;
    let (post, _) = rows(&cat(|p| &p.mu_post))?;
    let (kl, _) = rows(&cat(|p| &p.kl))?;
    let (alpha, n) = rows(&cat(|p| &p.alpha))?;
    let (beta_mu, _) = rows(&cat(|p| &p.beta_mu))?;
    let (mut alpha_share, mut beta_share) = (Vec::new(), Vec::new());
    for (a, b) in alpha.chunks(n).zip(beta_mu.chunks(n)) {
        let prediction: Vec<f64> = a.iter().zip(b).map(|(x, y)| x + y).collect();
        let total = variance(&prediction);
        if total > 0.0 {
            alpha_share.push(variance(a) / total);
            beta_share.push(variance(b) / total);
        }
    }
    Ok(Some(PriorAgreement {
        factor_mean_correlation: (0..k)
            .map(|j| pearson(&column(&prior, k, j), &column(&post, k, j)).unwrap_or(f64::NAN))
            .collect(),
        kl_per_factor: (0..k).map(|j| mean_std(&column(&kl, k, j)).0).collect(),
        alpha_variance_share: mean_std(&alpha_share).0,
        beta_variance_share: mean_std(&beta_share).0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_and_variances() {
        let flat = [1.0, 10.0, 2.0, 20.0, 3.0, 30.0];
        assert_eq!(column(&flat, 2, 1), vec![10.0, 20.0, 30.0]);
        assert!((variance(&[1.0, 2.0, 3.0]) - 1.0).abs() < 1e-12);
    }
}
