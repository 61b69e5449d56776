//! The one interface every factor model implements, so that the trainer, `storm eval`, `storm export`,
//! `storm backtest` and the sweep runner treat STORM and the baselines alike. Adding a model means one new
//! module implementing [`FactorModel`], one `ModelKind` variant and one arm in [`build_model`].

use tch::{nn, Tensor};

use super::cafactor::CaFactor;
use super::factor_head::HeadParts;
use super::factorvae::FactorVae;
use super::hirevae::HireVae;
use super::sequence::SequencePredictor;
use super::storm::{term_weights, weighted_total, Storm};
use crate::config::{ExperimentConfig, ModelKind, TrainConfig};
use crate::error::Result;

/// What one training forward pass returns.
#[derive(Debug)]
pub struct ModelOutput {
    /// The objective the optimizer minimises (scalar).
    pub loss: Tensor,
    /// Every unweighted loss term under a stable name, for the loss log.
    pub terms: Vec<(&'static str, Tensor)>,
    /// Return prediction (B, N); never depends on the labels.
    pub prediction: Tensor,
    /// TS / CS codebook indices for models with codebooks (STORM), else None.
    pub ts_indices: Option<Tensor>,
    pub cs_indices: Option<Tensor>,
}

impl ModelOutput {
    /// The output of a model trained by one MSE term and without codebooks.
    pub fn mse(mse: Tensor, prediction: Tensor) -> Self {
        ModelOutput {
            loss: mse.shallow_clone(),
            terms: vec![("mse", mse)],
            prediction,
            ts_indices: None,
            cs_indices: None,
        }
    }
}

/// Per-stock embeddings of a batch, for factor export and the trading task.
#[derive(Debug)]
pub struct Embeddings {
    /// (B, N, H): the stock's factor embedding (STORM, FactorVAE) or last hidden state (sequence models).
    pub factors: Tensor,
    /// TS code indices (B, P · N), time-major, when the model has a TS codebook.
    pub ts_codes: Option<Tensor>,
    /// CS code indices (B, W) when the model has a CS codebook.
    pub cs_codes: Option<Tensor>,
    /// (B, N, S): paper 003's trading state where the model has one (STORM): the stock's TS factor
    /// embedding beside the day's CS factor embedding, before the factor head.
    pub state: Option<Tensor>,
}

/// What the trainer's gradient probe (`train::grad_probe`) measures for a model: each term's weight in the
/// objective, and the name prefixes of the parameters every term trains.
#[derive(Debug, Clone, PartialEq)]
pub struct GradientProbe {
    pub prefixes: Vec<&'static str>,
    pub weights: Vec<(&'static str, f64)>,
}

/// A model mapping windows x (B, W, N, D) to next-day return scores (B, N).
pub trait FactorModel: std::fmt::Debug {
    fn kind(&self) -> ModelKind;

    /// Training forward on x and cross-sectionally normalised labels y (B, N); `weights` are the STORM
    /// loss weights of the config (models with their own loss ignore them).
    fn forward_loss(&self, x: &Tensor, y: &Tensor, weights: &TrainConfig) -> ModelOutput;

    /// Under data parallel: lets batch-coupled loss terms see every rank's samples, so that W ranks at
    /// batch b train as one process at W·b. Models whose terms are all per-sample means ignore it.
    fn use_cross_rank(&mut self, _cross: crate::distributed::CrossRank) {}

    /// Deterministic label-free prediction (B, N).
    fn predict(&self, x: &Tensor) -> Tensor;

    /// Prediction and, for probabilistic models, the predictive std (B, N) used by risk-aware ranking.
    fn predict_with_risk(&self, x: &Tensor) -> (Tensor, Option<Tensor>) {
        (self.predict(x), None)
    }

    fn embeddings(&self, x: &Tensor) -> Embeddings;

    /// Codes per codebook, for models that have codebooks.
    fn codebook_size(&self) -> Option<i64> {
        None
    }

    /// The factor head's prior/posterior parts for windows x and labels y, for models with a FactorVAE-style
    /// head (STORM, FactorVAE); `storm diagnose` reports how well the prior agrees with the posterior.
    fn head_parts(&self, _x: &Tensor, _y: &Tensor) -> Option<HeadParts> {
        None
    }

    /// Per-term gradient norms to log, for models whose objective has several terms.
    fn gradient_probe(&self, _weights: &TrainConfig) -> Option<GradientProbe> {
        None
    }
}

/// Builds the model a config names under `p`, for windows of `window` days × `n_stocks` × `n_features`.
pub fn build_model(
    p: &nn::Path,
    cfg: &ExperimentConfig,
    n_stocks: i64,
    n_features: i64,
    window: i64,
) -> Result<Box<dyn FactorModel>> {
    let m = &cfg.model;
    Ok(match m.kind {
        ModelKind::Storm => Box::new(Storm::new(p, m, n_stocks, n_features, window)?),
        ModelKind::FactorVae => Box::new(FactorVae::new(
            p,
            &m.factorvae,
            n_stocks,
            n_features,
            window,
        )?),
        ModelKind::HireVae => Box::new(HireVae::new(
            p,
            &m.factorvae,
            &m.hirevae,
            n_stocks,
            n_features,
            window,
        )?),
        ModelKind::CaFactor => Box::new(CaFactor::new(
            p,
            &m.cafactor,
            n_stocks,
            n_features,
            window,
        )?),
        kind @ (ModelKind::Lstm | ModelKind::Gru | ModelKind::Transformer) => Box::new(
            SequencePredictor::new(p, kind, &m.sequence, n_stocks, n_features, window)?,
        ),
        ModelKind::Reference => {
            return Err(crate::error::Error::Model(format!(
                "model.kind = \"reference\" ({}) is a price factor with no torch model to build or train",
                m.reference.name()
            )))
        }
        ModelKind::LightGbm => {
            return Err(crate::error::Error::Model(
                "model.kind = \"lightgbm\" is a LightGBM booster, not a torch model: it is trained and \
                 loaded by the boosting trainer"
                    .into(),
            ))
        }
    })
}

impl FactorModel for Storm {
    fn kind(&self) -> ModelKind {
        ModelKind::Storm
    }

    fn use_cross_rank(&mut self, cross: crate::distributed::CrossRank) {
        self.set_cross_rank(cross);
    }

    fn forward_loss(&self, x: &Tensor, y: &Tensor, weights: &TrainConfig) -> ModelOutput {
        let out = self.forward_train(x, y, true);
        let loss = weighted_total(&out, weights);
        let terms = out
            .terms()
            .iter()
            .map(|(name, t)| (*name, t.shallow_clone()))
            .collect();
        ModelOutput {
            loss,
            terms,
            prediction: out.prediction,
            ts_indices: out.ts_indices,
            cs_indices: out.cs_indices,
        }
    }

    fn predict(&self, x: &Tensor) -> Tensor {
        Storm::predict(self, x)
    }

    fn predict_with_risk(&self, x: &Tensor) -> (Tensor, Option<Tensor>) {
        let (mu, sigma) = self.predict_distribution(x);
        (mu, Some(sigma))
    }

    fn gradient_probe(&self, weights: &TrainConfig) -> Option<GradientProbe> {
        Some(GradientProbe {
            prefixes: vec!["ts.embed.", "ts.encoder.", "cs.embed.", "cs.encoder."],
            weights: term_weights(weights).to_vec(),
        })
    }

    fn embeddings(&self, x: &Tensor) -> Embeddings {
        let (factors, ts_codes, cs_codes, state) = self.embeddings_and_state(x);
        Embeddings {
            factors,
            ts_codes,
            cs_codes,
            state: Some(state),
        }
    }

    fn codebook_size(&self) -> Option<i64> {
        self.ts().or(self.cs()).map(|b| b.quantizer().codes())
    }

    fn head_parts(&self, x: &Tensor, y: &Tensor) -> Option<HeadParts> {
        Some(self.factor_head().parts(&self.factor_embeddings(x).0, y))
    }
}

/// The data dimensions every model needs: at least one stock, feature and day.
pub(crate) fn check_dims(n_stocks: i64, n_features: i64, window: i64) -> Result<()> {
    if n_stocks < 1 || n_features < 1 || window < 1 {
        return Err(crate::error::Error::Model(format!(
            "model needs at least one stock, feature and day; got N = {n_stocks}, D = {n_features}, W = {window}"
        )));
    }
    Ok(())
}
