//! Experiment configuration: one TOML file describes data, splits, model and training. Every table rejects
//! unknown keys, every value is range-checked once here at load, and errors name the offending field.

mod base;
mod data_options;
mod lightgbm;
mod model_options;
mod overrides;
mod validate;

use std::path::{Path, PathBuf};

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use data_options::MissingPolicy;
pub use lightgbm::LightGbmConfig;
use model_options::is_default;
pub use model_options::{
    FactorPooling, HireVaeConfig, Reconstruction, ReferenceFactor, SelectBy, StockEmbedding,
};
pub use overrides::apply_override;

/// The name under which the bundled DJ30 data set is addressed in configs and on the command line.
pub const BUILTIN_DJ30: &str = "builtin:dj30";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    /// Free-form name of the experiment, used in run directories and reports.
    #[serde(default = "default_name")]
    pub name: String,
    #[serde(default)]
    pub data: DataConfig,
    #[serde(default)]
    pub splits: SplitsConfig,
    #[serde(default)]
    pub model: ModelConfig,
    #[serde(default)]
    pub train: TrainConfig,
}

fn default_name() -> String {
    "storm".to_string()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `builtin:dj30` or a path to a long-format OHLCV file (CSV, CSV.gz or Parquet). A relative path is
    /// resolved against the directory of the config file.
    pub source: String,
    /// Tickers to keep; empty keeps every ticker in the file.
    pub tickers: Vec<String>,
    /// Input rows before this date are ignored (features still need warm-up history after it).
    pub start: Option<NaiveDate>,
    /// Input rows after this date are ignored.
    pub end: Option<NaiveDate>,
    /// Days of history in one model window (W).
    pub window: usize,
    /// Rows of past statistics used by the causal per-ticker z-score.
    pub scaler_window: usize,
    /// What to do with an empty price or volume field (see `MissingPolicy`).
    #[serde(skip_serializing_if = "is_default")]
    pub missing: MissingPolicy,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            source: BUILTIN_DJ30.to_string(),
            tickers: Vec::new(),
            start: None,
            end: None,
            window: 64,
            scaler_window: 64,
            missing: MissingPolicy::Error,
        }
    }
}

/// An inclusive range of calendar dates. A window belongs to the split that contains its last day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DateRange {
    pub start: NaiveDate,
    pub end: NaiveDate,
}

impl DateRange {
    pub fn contains(&self, d: NaiveDate) -> bool {
        self.start <= d && d <= self.end
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid literal date")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitsConfig {
    pub train: DateRange,
    pub valid: DateRange,
    pub test: DateRange,
}

impl Default for SplitsConfig {
    fn default() -> Self {
        SplitsConfig {
            train: DateRange {
                start: date(2008, 4, 1),
                end: date(2019, 12, 31),
            },
            valid: DateRange {
                start: date(2020, 1, 1),
                end: date(2021, 3, 31),
            },
            test: DateRange {
                start: date(2021, 4, 1),
                end: date(2024, 3, 8),
            },
        }
    }
}

/// Which split of the data a window or a prediction belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    Valid,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Valid, Split::Test];

    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Valid => "valid",
            Split::Test => "test",
        }
    }
}

impl std::str::FromStr for Split {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "train" => Ok(Split::Train),
            "valid" => Ok(Split::Valid),
            "test" => Ok(Split::Test),
            other => Err(format!(
                "unknown split `{other}`; expected train, valid or test"
            )),
        }
    }
}

impl SplitsConfig {
    pub fn range(&self, split: Split) -> DateRange {
        match split {
            Split::Train => self.train,
            Split::Valid => self.valid,
            Split::Test => self.test,
        }
    }
}

/// Model architecture (paper §5.2 defaults). Consumed by the model module.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Model family: `storm`, a baseline (`factorvae`, `hirevae`, `cafactor`, `lstm`, `gru`, `transformer`,
    /// `lightgbm`)
    /// or `reference` (a zero-training price factor). The fields below up to `reconstruction` describe STORM; the baselines
    /// read their own sub-tables.
    pub kind: ModelKind,
    /// Days per time-series patch (paper 8).
    pub patch_days: usize,
    pub embed_dim: usize,
    pub encoder_depth: usize,
    pub encoder_heads: usize,
    pub decoder_depth: usize,
    pub decoder_heads: usize,
    pub mlp_ratio: usize,
    /// Codes per codebook (TS and CS each).
    pub codebook_size: usize,
    /// Width of the per-stock feature stem in front of the cross-sectional patch embedding.
    pub cs_stem_dim: usize,
    /// Ablations: STORM-w/o-TS sets `use_ts = false`, STORM-w/o-CS sets `use_cs = false`.
    pub use_ts: bool,
    pub use_cs: bool,
    /// Cross-attention fusion layers between the branches' CLS tokens (CrossViT, paper §4.3.1); 0 disables.
    pub fusion_depth: usize,
    /// Whether each fusion layer also runs a self-attention block per branch after the cross-attention.
    pub fusion_self_attention: bool,
    /// Width H of the per-stock factor embedding e_i of the factor head.
    pub factor_hidden: usize,
    /// Latent factors K_f of the FactorVAE-style head.
    pub factor_count: usize,
    /// Portfolios M of the posterior's portfolio layer.
    pub portfolio_count: usize,
    /// Training steps after which an unused code is reset to an encoder output of the batch; 0 disables.
    pub dead_code_steps: usize,
    /// τ of the diversity loss's soft assignment softmax(−‖z_e − e_k‖²/τ), in units of squared distance.
    /// The squared distance grows with embed_dim, so τ ≈ embed_dim keeps the assignment soft.
    pub diversity_temperature: f64,
    /// How STORM builds each stock's factor embedding from the fused tokens (see `FactorPooling`).
    #[serde(skip_serializing_if = "is_default")]
    pub factor_pooling: FactorPooling,
    /// Whether STORM's TS encoder and decoder add a learned per-stock position to every token.
    #[serde(skip_serializing_if = "is_default")]
    pub stock_embedding: StockEmbedding,
    /// Form of STORM's reconstruction terms (paper eq. 6); see `Reconstruction`.
    #[serde(skip_serializing_if = "is_default")]
    pub reconstruction: Reconstruction,
    /// FactorVAE (`kind = "factorvae"`).
    pub factorvae: FactorVaeConfig,
    /// The plain return predictors (`kind = "lstm" | "gru" | "transformer"`).
    pub sequence: SequenceConfig,
    /// The price factor of `kind = "reference"`.
    #[serde(skip_serializing_if = "is_default")]
    pub reference: ReferenceFactor,
    /// The conditional autoencoder (`kind = "cafactor"`).
    #[serde(skip_serializing_if = "is_default")]
    pub cafactor: CaFactorConfig,
    /// Gradient-boosted trees (`kind = "lightgbm"`).
    #[serde(skip_serializing_if = "is_default")]
    pub lightgbm: LightGbmConfig,
    /// HireVAE's market level (`kind = "hirevae"`; its stock level reads `factorvae`).
    #[serde(skip_serializing_if = "is_default")]
    pub hirevae: HireVaeConfig,
}

/// Which model a config trains. Every kind is trained, evaluated and backtested the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    Storm,
    FactorVae,
    Lstm,
    Gru,
    Transformer,
    /// A zero-training reference factor (`model.reference`): nothing to train, evaluated like a model.
    Reference,
    /// The conditional autoencoder of Gu, Kelly & Xiu (2021), `model.cafactor`.
    CaFactor,
    /// Gradient-boosted trees on each (day, stock)'s features, `model.lightgbm`: no torch module.
    LightGbm,
    /// HireVAE (Wei et al., IJCAI 2023): FactorVAE under a market-situation latent, `model.hirevae`.
    HireVae,
}

impl ModelKind {
    pub const ALL: [ModelKind; 9] = [
        ModelKind::Storm,
        ModelKind::FactorVae,
        ModelKind::Lstm,
        ModelKind::Gru,
        ModelKind::Transformer,
        ModelKind::Reference,
        ModelKind::CaFactor,
        ModelKind::LightGbm,
        ModelKind::HireVae,
    ];

    /// The name used in configs (`model.kind`).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Storm => "storm",
            ModelKind::FactorVae => "factorvae",
            ModelKind::Lstm => "lstm",
            ModelKind::Gru => "gru",
            ModelKind::Transformer => "transformer",
            ModelKind::Reference => "reference",
            ModelKind::CaFactor => "cafactor",
            ModelKind::LightGbm => "lightgbm",
            ModelKind::HireVae => "hirevae",
        }
    }

    /// Whether the model is a torch module with per-stock factor embeddings (to export and trade on).
    pub fn has_embeddings(self) -> bool {
        !matches!(self, ModelKind::Reference | ModelKind::LightGbm)
    }
}

/// FactorVAE (Duan et al., AAAI 2022): defaults K = 8, M = 10, H = 128, γ = 0.01.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FactorVaeConfig {
    /// Width H of the feature extractor (projection and GRU) and of the stock latent features e.
    pub hidden: usize,
    /// Latent factors K (also the heads of the factor predictor's global attention).
    pub factors: usize,
    /// Portfolios M of the factor encoder's portfolio layer.
    pub portfolios: usize,
    /// γ, weight of KL(posterior ‖ prior) in the loss.
    pub gamma: f64,
    /// Negative slope ζ of the LeakyReLU layers.
    pub leaky_slope: f64,
}

impl Default for FactorVaeConfig {
    fn default() -> Self {
        FactorVaeConfig {
            hidden: 128,
            factors: 8,
            portfolios: 10,
            gamma: 0.01,
            leaky_slope: 0.01,
        }
    }
}

/// The conditional autoencoder of Gu, Kelly & Xiu (2021, "Autoencoder asset pricing models", J.
/// Econometrics): a beta network from each stock's last-day characteristics to K loadings and, in training,
/// a linear factor network on characteristic-managed portfolios. Defaults CA2, K = 6.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaFactorConfig {
    /// Hidden layers of the beta network, 1..=3: CA1 = [32], CA2 = [32, 16], CA3 = [32, 16, 8].
    pub depth: usize,
    /// Latent factors K.
    pub factors: usize,
}

impl Default for CaFactorConfig {
    fn default() -> Self {
        CaFactorConfig {
            depth: 2,
            factors: 6,
        }
    }
}

/// Per-stock sequence models that regress the next-day return with MSE (Qlib's defaults: 64 wide, 2
/// layers, no dropout; the Transformer has 2 heads).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SequenceConfig {
    pub hidden: usize,
    pub layers: usize,
    /// Attention heads (Transformer only); must divide `hidden`.
    pub heads: usize,
}

impl Default for SequenceConfig {
    fn default() -> Self {
        SequenceConfig {
            hidden: 64,
            layers: 2,
            heads: 2,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            kind: ModelKind::Storm,
            patch_days: 8,
            embed_dim: 256,
            encoder_depth: 4,
            encoder_heads: 4,
            decoder_depth: 2,
            decoder_heads: 8,
            mlp_ratio: 4,
            codebook_size: 512,
            cs_stem_dim: 32,
            use_ts: true,
            use_cs: true,
            fusion_depth: 1,
            fusion_self_attention: true,
            factor_hidden: 128,
            factor_count: 16,
            portfolio_count: 32,
            dead_code_steps: 100,
            diversity_temperature: 256.0,
            factor_pooling: FactorPooling::Mean,
            stock_embedding: StockEmbedding::Learned,
            reconstruction: Reconstruction::Mean,
            factorvae: FactorVaeConfig::default(),
            sequence: SequenceConfig::default(),
            reference: ReferenceFactor::default(),
            cafactor: CaFactorConfig::default(),
            lightgbm: LightGbmConfig::default(),
            hirevae: HireVaeConfig::default(),
        }
    }
}

/// Optimisation and loss weights (paper §5.2 defaults). Consumed by the trainer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub seed: u64,
    pub batch_size: usize,
    pub epochs: usize,
    pub warmup_epochs: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub grad_clip: f64,
    pub loss_weight_clip: f64,
    pub loss_weight_recon_ts: f64,
    pub loss_weight_recon_cs: f64,
    pub loss_weight_commit: f64,
    pub loss_weight_orthogonal: f64,
    pub loss_weight_diversity: f64,
    pub loss_weight_prediction: f64,
    pub loss_weight_kl: f64,
    /// Optimizer steps between checkpoints (0: at the end of every epoch).
    pub checkpoint_every: u64,
    /// Step checkpoints kept besides `best/`.
    pub keep_checkpoints: usize,
    /// Evaluate validation RankIC every this many epochs (and at the end).
    pub eval_every_epochs: u64,
    /// Abort after this many consecutive steps with a non-finite loss (each is skipped).
    pub max_consecutive_nonfinite: u64,
    /// bf16 autocast on CUDA (ignored on CPU).
    pub bf16: bool,
    /// Optimizer steps between progress log lines (and per-term gradient-norm probes).
    pub log_every: u64,
    /// The validation score that picks `checkpoints/best/` (see `SelectBy`).
    #[serde(skip_serializing_if = "is_default")]
    pub select_by: SelectBy,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 42,
            batch_size: 32,
            epochs: 1000,
            warmup_epochs: 100,
            lr: 1e-4,
            weight_decay: 0.05,
            beta1: 0.9,
            beta2: 0.95,
            grad_clip: 1.0,
            loss_weight_clip: 1e-3,
            loss_weight_recon_ts: 1e-3,
            loss_weight_recon_cs: 1e-3,
            loss_weight_commit: 1.0,
            loss_weight_orthogonal: 0.1,
            loss_weight_diversity: 0.1,
            loss_weight_prediction: 0.1,
            loss_weight_kl: 0.1,
            checkpoint_every: 0,
            keep_checkpoints: 3,
            eval_every_epochs: 1,
            max_consecutive_nonfinite: 10,
            bf16: false,
            log_every: 50,
            select_by: SelectBy::RankIc,
        }
    }
}

impl ExperimentConfig {
    /// Reads, applies `key=value` overrides, deserialises and validates a config file. Relative data paths
    /// are resolved against the directory of the file that names them. A top-level `base = "other.toml"`
    /// (relative to this file) starts from that config and overrides it table by table, key by key.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let origin = path.display().to_string();
        let value = base::load_tree(path, 0)?;
        let mut cfg = Self::from_value(value, &origin, overrides)?;
        // a relative source given by an override is taken from the config's directory too
        cfg.data.source = resolve_source(&cfg.data.source, path.parent());
        Ok(cfg)
    }

    /// Parses config text; `origin` names it in error messages. `base` needs a file (use `load`).
    pub fn from_toml_str(text: &str, origin: &str, overrides: &[String]) -> Result<Self> {
        let value: toml::Value = toml::from_str(text)
            .map_err(|e| Error::config(origin, "<syntax>", e.message().to_string()))?;
        if value.get(base::BASE_KEY).is_some() {
            return Err(Error::config(
                origin,
                base::BASE_KEY,
                "a base config can only be used when loading from a file",
            ));
        }
        Self::from_value(value, origin, overrides)
    }

    fn from_value(mut value: toml::Value, origin: &str, overrides: &[String]) -> Result<Self> {
        for ov in overrides {
            if let Some(kind) = base::kind_override(ov) {
                base::drop_storm_only_options_on_kind_change(&mut value, &kind);
            }
            apply_override(&mut value, ov)
                .map_err(|(field, msg)| Error::config(origin, field, msg))?;
        }
        let cfg: ExperimentConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = e.path().to_string();
            Error::config(origin, field, e.into_inner().to_string())
        })?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// A stable hash of the resolved config, recorded with every artifact made from it.
    pub fn hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let json = serde_json::to_string(self).unwrap_or_default();
        let digest = Sha256::digest(json.as_bytes());
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Resolves a data source string: `builtin:…` stays as is, a relative path is taken from `base`.
pub fn resolve_source(source: &str, base: Option<&Path>) -> String {
    if source.starts_with("builtin:") {
        return source.to_string();
    }
    let p = PathBuf::from(source);
    let joined = match base {
        Some(b) if p.is_relative() => b.join(p),
        _ => p,
    };
    std::path::absolute(&joined)
        .unwrap_or(joined)
        .display()
        .to_string()
}

#[cfg(test)]
mod tests;
