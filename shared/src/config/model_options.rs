//! Model options added after the first round: STORM's factor-module options (issue 19: factor pooling,
//! per-stock position embeddings, the form of the reconstruction loss, the selection criterion) and the
//! zero-training reference factors and HireVAE's market level (issue 14). Each defaults to the behaviour
//! before the option existed.

use serde::{Deserialize, Serialize};

/// True for a field's default value; new options are left out of the serialised config when at their
/// default, so that the hash of a config written before they existed does not change.
pub(super) fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// How STORM turns the fused tokens into one factor embedding per stock (paper §4.3.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorPooling {
    /// Mean over the stock's TS patches of [token ⊕ code], plus one CS summary [CLS ⊕ mean code] that is
    /// the same for every stock of the sample (without TS: each stock's share of the last CS token).
    #[default]
    Mean,
    /// The stock's TS tokens (with a learned recency embedding) cross-attend to the CS day tokens and
    /// codes, then a learned query pools them together with the stock's TS codes as extra tokens.
    Attention,
}

/// Whether TS tokens carry a learned per-stock position (`pos_space` of the TS encoder and decoder).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StockEmbedding {
    #[default]
    Learned,
    /// No per-stock position anywhere: a TS token is known only by its content and its time position.
    None,
}

/// Which validation score picks the `best/` checkpoint that eval, export and backtest use by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectBy {
    /// The validation RankIC of the evaluation itself.
    #[default]
    RankIc,
    /// The mean validation RankIC of this evaluation and the two before it (fewer at the start): steadier
    /// than one noisy evaluation (a 314-day RankIC has a standard error near 0.011).
    SmoothedRankIc,
}

impl SelectBy {
    /// Evaluations averaged by `SmoothedRankIc`.
    pub const SMOOTHING: usize = 3;

    pub fn name(self) -> &'static str {
        match self {
            SelectBy::RankIc => "rank_ic",
            SelectBy::SmoothedRankIc => "smoothed_rank_ic",
        }
    }
}

/// The form of each branch's reconstruction term ‖x − x̂‖².
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reconstruction {
    /// Mean over every entry of the batch (B · W · N · D values).
    #[default]
    Mean,
    /// The paper's squared norm per sample: sum over the window's W · N · D entries, mean over the batch.
    SquaredNorm,
}

impl Reconstruction {
    pub fn name(self) -> &'static str {
        match self {
            Reconstruction::Mean => "mean",
            Reconstruction::SquaredNorm => "squared_norm",
        }
    }
}

/// A zero-training reference factor (`model.kind = "reference"`): a one-line price signal computed at each
/// day's close from that day's and earlier adjusted prices only, scored like a model's prediction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReferenceFactor {
    /// −(p_t / p_{t−1} − 1): yesterday's losers are expected to bounce.
    #[default]
    #[serde(rename = "reversal_1d")]
    Reversal1d,
    /// −(p_t / p_{t−5} − 1).
    #[serde(rename = "reversal_5d")]
    Reversal5d,
    /// p_t / p_{t−20} − 1: recent winners keep winning.
    #[serde(rename = "momentum_20d")]
    Momentum20d,
    /// p_t / p_{t−60} − 1.
    #[serde(rename = "momentum_60d")]
    Momentum60d,
    /// −(sample std of the 20 daily returns ending at t): the calmest stocks score highest.
    #[serde(rename = "low_volatility_20d")]
    LowVolatility20d,
}

impl ReferenceFactor {
    pub const ALL: [ReferenceFactor; 5] = [
        ReferenceFactor::Reversal1d,
        ReferenceFactor::Reversal5d,
        ReferenceFactor::Momentum20d,
        ReferenceFactor::Momentum60d,
        ReferenceFactor::LowVolatility20d,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ReferenceFactor::Reversal1d => "reversal_1d",
            ReferenceFactor::Reversal5d => "reversal_5d",
            ReferenceFactor::Momentum20d => "momentum_20d",
            ReferenceFactor::Momentum60d => "momentum_60d",
            ReferenceFactor::LowVolatility20d => "low_volatility_20d",
        }
    }

    /// Days of history before t that the factor reads (prices p_{t−h} .. p_t).
    pub fn lookback(self) -> usize {
        match self {
            ReferenceFactor::Reversal1d => 1,
            ReferenceFactor::Reversal5d => 5,
            ReferenceFactor::Momentum20d | ReferenceFactor::LowVolatility20d => 20,
            ReferenceFactor::Momentum60d => 60,
        }
    }
}

/// HireVAE's market level (Wei et al., IJCAI 2023; `kind = "hirevae"`). The stock level, feature extractor
/// and KL weight γ are FactorVAE's and read `[model.factorvae]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HireVaeConfig {
    /// Width L of the market-situation latent z_m.
    pub market_latent: usize,
    /// Portfolios M_m through which the market posterior reads the day's returns.
    pub market_portfolios: usize,
}

impl Default for HireVaeConfig {
    fn default() -> Self {
        HireVaeConfig {
            market_latent: 4,
            market_portfolios: 10,
        }
    }
}
