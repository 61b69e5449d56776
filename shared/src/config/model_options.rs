//! STORM's factor-module options (issue 19): factor pooling, per-stock position embeddings and the form
//! of the reconstruction loss. Each defaults to the behaviour before the option existed.

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
