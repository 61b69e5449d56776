//! The whole STORM model: TS and CS branches (either may be disabled for the ablations), fusion + CLIP
//! when both are on, the factor head, and the weighted total loss.
//!
//! Factor embedding of stock i (input of the factor head), `model.factor_pooling = "mean"`: the TS part
//! is the mean over stock i's time patches of [fused TS token ⊕ its quantised code] (the fused tokens
//! equal the encoder output z_e when fusion has no self-attention or is off); the CS part, shared by all
//! stocks of the sample, is [fused CS CLS ⊕ mean of the quantised CS tokens]. With `"attention"` the
//! features come from `StockPooling` (stock_pooling.rs). Quantised codes enter through the
//! straight-through output, so the factor losses train the encoders, not the codebooks.

use tch::nn::{self, Module};
use tch::{Kind, Tensor};

use super::branch::{Branch, BranchKind};
use super::factor_head::{leaky_relu, FactorHead, HeadConfig, PriorAttention};
use super::fusion::{Clip, Fusion};
use super::patch::Geometry;
use super::quantizer::{diversity_loss_from_usage, QuantOutput};
use super::stock_pooling::{BranchTokens, PoolingInput, PoolingShape, StockPooling};
use super::transformer::xavier_linear;
use crate::config::{FactorPooling, ModelConfig, Reconstruction};
use crate::distributed::cross_rank::{grad_scaled, or_nan};
use crate::distributed::CrossRank;
use crate::error::{Error, Result};

mod losses;
pub use losses::{term_weights, weighted_total, BranchLosses, StormOutput};

/// One branch after encoding and quantisation (and fusion, once applied).
struct Side {
    /// (B, 1 + L, E) with the CLS at index 0.
    seq: Tensor,
    quant: QuantOutput,
}

#[derive(Debug)]
pub struct Storm {
    ts: Option<Branch>,
    cs: Option<Branch>,
    fusion: Option<Fusion>,
    clip: Option<Clip>,
    /// Attention pooling of each stock's tokens; None for `factor_pooling = "mean"`.
    pooling: Option<StockPooling>,
    /// Maps the per-stock branch features to the H-wide factor embedding e (LeakyReLU).
    factor_embed: nn::Linear,
    factor: FactorHead,
    geo: Geometry,
    patch_days: i64,
    reconstruction: Reconstruction,
    /// Set under data parallel: CLIP and diversity over the global batch.
    cross_rank: Option<CrossRank>,
}

impl Storm {
    pub fn set_cross_rank(&mut self, cross: CrossRank) {
        self.cross_rank = (cross.world() > 1).then_some(cross);
    }

    /// Builds the model under `p` for windows of `window` days × `n_stocks` × `n_features`. Errors when the
    /// data does not fit the config (the config itself is range-checked at load).
    pub fn new(
        p: &nn::Path,
        cfg: &ModelConfig,
        n_stocks: i64,
        n_features: i64,
        window: i64,
    ) -> Result<Self> {
        check_shapes(cfg, n_stocks, n_features, window)?;
        if cfg.portfolio_count as i64 > n_stocks {
            tracing::warn!(
                "model.portfolio_count = {} exceeds the {n_stocks} stocks: the portfolio layer's extra \
                 portfolios can only repeat combinations of the same stocks",
                cfg.portfolio_count
            );
        }
        let geo = Geometry {
            window,
            stocks: n_stocks,
            features: n_features,
        };
        let dim = cfg.embed_dim as i64;
        let ts = cfg
            .use_ts
            .then(|| Branch::new(&(p / "ts"), BranchKind::Ts, cfg, geo));
        let cs = cfg
            .use_cs
            .then(|| Branch::new(&(p / "cs"), BranchKind::Cs, cfg, geo));
        let both = cfg.use_ts && cfg.use_cs;
        let fusion = (both && cfg.fusion_depth > 0).then(|| {
            Fusion::new(
                &(p / "fusion"),
                cfg.fusion_depth as i64,
                dim,
                cfg.encoder_heads as i64,
                cfg.mlp_ratio as i64,
                cfg.fusion_self_attention,
            )
        });
        let clip = both.then(|| Clip::new(&(p / "clip")));
        let pooling = (cfg.factor_pooling == FactorPooling::Attention).then(|| {
            let shape = PoolingShape {
                patches: window / cfg.patch_days as i64,
                stocks: n_stocks,
                dim,
                heads: cfg.encoder_heads as i64,
                use_ts: cfg.use_ts,
                use_cs: cfg.use_cs,
            };
            StockPooling::new(&(p / "factor" / "pool"), shape)
        });
        let branches = i64::from(cfg.use_ts) + i64::from(cfg.use_cs);
        let hidden = cfg.factor_hidden as i64;
        // without TS, the per-stock part comes from each stock's share of the CS token (E more inputs)
        let per_stock = if cfg.use_ts { 0 } else { dim };
        let features = pooling
            .as_ref()
            .map_or(2 * dim * branches + per_stock, StockPooling::width);
        let factor_embed = xavier_linear(&(p / "factor" / "embed"), features, hidden);
        let factor = FactorHead::new(
            &(p / "factor"),
            HeadConfig {
                hidden,
                factors: cfg.factor_count as i64,
                portfolios: cfg.portfolio_count as i64,
                prior: PriorAttention::Softmax,
                leaky_slope: 0.01,
            },
        );
        Ok(Storm {
            ts,
            cs,
            fusion,
            clip,
            pooling,
            factor_embed,
            factor,
            geo,
            patch_days: cfg.patch_days as i64,
            reconstruction: cfg.reconstruction,
            cross_rank: None,
        })
    }

    pub fn factor_head(&self) -> &FactorHead {
        &self.factor
    }

    pub fn ts(&self) -> Option<&Branch> {
        self.ts.as_ref()
    }

    pub fn cs(&self) -> Option<&Branch> {
        self.cs.as_ref()
    }

    /// Checks a batch against the model's geometry: x (B, W, N, D) float, y (B, N) when given.
    pub fn check_input(&self, x: &Tensor, y: Option<&Tensor>) -> Result<()> {
        let Geometry {
            window,
            stocks,
            features,
        } = self.geo;
        let s = x.size();
        if s.len() != 4 || s[1] != window || s[2] != stocks || s[3] != features || s[0] < 1 {
            return Err(Error::Model(format!(
                "model input has shape {s:?}; expected (B, {window}, {stocks}, {features})"
            )));
        }
        if x.kind() != Kind::Float {
            return Err(Error::Model(format!(
                "model input is {:?}; expected Float",
                x.kind()
            )));
        }
        if let Some(y) = y {
            if y.size() != [s[0], stocks] {
                return Err(Error::Model(format!(
                    "labels have shape {:?}; expected ({}, {stocks})",
                    y.size(),
                    s[0]
                )));
            }
        }
        Ok(())
    }

    /// Training/validation forward with every loss term. `train` enables the quantisers' dead-code resets
    /// and usage counters (pass false for validation).
    pub fn forward_train(&self, x: &Tensor, y: &Tensor, train: bool) -> StormOutput {
        let across = self.cross_rank.as_ref().filter(|_| train);
        let quantize =
            |b: &Branch, seq: &Tensor| b.quantizer().forward_across(&tokens(seq), train, across);
        let (ts, cs) = self.fuse(self.encode(x, quantize));
        let global = across;
        let clip = match (&ts, &cs, &self.clip, global) {
            (Some(t), Some(c), Some(clip), Some(cr)) => {
                or_nan(clip.forward_global(&cls(&t.seq), &cls(&c.seq), cr), x)
            }
            (Some(t), Some(c), Some(clip), None) => clip.forward(&cls(&t.seq), &cls(&c.seq)),
            _ => Tensor::zeros([], (Kind::Float, x.device())),
        };
        let e = self.embed(x, ts.as_ref(), cs.as_ref());
        let factor = self.factor.forward(&e, y);
        let losses = |branch: &Option<Branch>, side: &Option<Side>| match (branch, side) {
            (Some(b), Some(s)) => BranchLosses {
                recon: b.reconstruction_loss(&s.quant.quantized, x, self.reconstruction),
                codebook: s.quant.codebook.shallow_clone(),
                commit: s.quant.commit.shallow_clone(),
                diversity: match global {
                    Some(cr) => or_nan(global_diversity(&s.quant, cr), x),
                    None => s.quant.diversity.shallow_clone(),
                },
                orthogonal: s.quant.orthogonal.shallow_clone(),
            },
            _ => BranchLosses::zeros(x.device()),
        };
        StormOutput {
            ts: losses(&self.ts, &ts),
            cs: losses(&self.cs, &cs),
            clip,
            nll: factor.nll,
            kl: factor.kl,
            prediction: factor.prediction,
            ts_indices: ts.map(|s| s.quant.indices),
            cs_indices: cs.map(|s| s.quant.indices),
        }
    }

    /// Prior-mean return prediction (B, N) from x alone; no decoders, no loss terms.
    pub fn predict(&self, x: &Tensor) -> Tensor {
        self.factor.predict(&self.factor_embeddings(x).0)
    }

    /// Factor embeddings e (B, N, factor_hidden) and the TS (B, (W / p) · N) and CS (B, W) code indices,
    /// for export and inspection.
    pub fn factor_embeddings(&self, x: &Tensor) -> (Tensor, Option<Tensor>, Option<Tensor>) {
        let (ts, cs) = self.fuse(self.encode(x, assign_only));
        let e = self.embed(x, ts.as_ref(), cs.as_ref());
        (e, ts.map(|s| s.quant.indices), cs.map(|s| s.quant.indices))
    }

    /// [`Storm::factor_embeddings`] and the trading state of paper 003 (B, N, S): each stock's TS factor
    /// embedding (the mean over its patches of [fused token ⊕ code], 2E) beside the day's CS factor
    /// embedding ([fused CLS ⊕ mean CS code], 2E) — the "mean" pooling's features, whatever the pooling.
    pub fn embeddings_and_state(
        &self,
        x: &Tensor,
    ) -> (Tensor, Option<Tensor>, Option<Tensor>, Tensor) {
        let (ts, cs) = self.fuse(self.encode(x, assign_only));
        let state = self.mean_features(x, ts.as_ref(), cs.as_ref());
        let features = match &self.pooling {
            Some(pooling) => self.pooled_features(pooling, x, ts.as_ref(), cs.as_ref()),
            None => state.shallow_clone(),
        };
        let e = self.embed_features(&features);
        (
            e,
            ts.map(|s| s.quant.indices),
            cs.map(|s| s.quant.indices),
            state,
        )
    }

    /// Prior predictive mean and std of each stock's return (B, N).
    pub fn predict_distribution(&self, x: &Tensor) -> (Tensor, Tensor) {
        self.factor
            .predict_distribution(&self.factor_embeddings(x).0)
    }

    fn embed(&self, x: &Tensor, ts: Option<&Side>, cs: Option<&Side>) -> Tensor {
        self.embed_features(&self.factor_features(x, ts, cs))
    }

    /// The factor embedding e of per-stock branch features.
    fn embed_features(&self, features: &Tensor) -> Tensor {
        leaky_relu(&self.factor_embed.forward(features), 0.01)
    }

    fn encode(
        &self,
        x: &Tensor,
        quantize: impl Fn(&Branch, &Tensor) -> QuantOutput,
    ) -> (Option<Side>, Option<Side>) {
        let run = |branch: &Option<Branch>| {
            branch.as_ref().map(|b| {
                let seq = b.encode(x);
                let quant = quantize(b, &seq);
                Side { seq, quant }
            })
        };
        (run(&self.ts), run(&self.cs))
    }

    fn fuse(&self, sides: (Option<Side>, Option<Side>)) -> (Option<Side>, Option<Side>) {
        match (sides, &self.fusion) {
            ((Some(mut ts), Some(mut cs)), Some(fusion)) => {
                let (t, c) = fusion.forward(&ts.seq, &cs.seq);
                ts.seq = t;
                cs.seq = c;
                (Some(ts), Some(cs))
            }
            (sides, _) => sides,
        }
    }

    /// Per-stock raw features for the factor head: (B, N, 2E · branches), plus each stock's share of the
    /// last CS token (E) when the TS branch is off — otherwise STORM-w/o-TS would give every stock of a
    /// day the same embedding and so the same score.
    fn factor_features(&self, x: &Tensor, ts: Option<&Side>, cs: Option<&Side>) -> Tensor {
        match &self.pooling {
            Some(pooling) => self.pooled_features(pooling, x, ts, cs),
            None => self.mean_features(x, ts, cs),
        }
    }

    /// The `"mean"` pooling's per-stock features (see [`Storm::factor_features`]).
    fn mean_features(&self, x: &Tensor, ts: Option<&Side>, cs: Option<&Side>) -> Tensor {
        let n = self.geo.stocks;
        let mut parts = Vec::with_capacity(2);
        if let Some(ts) = ts {
            let both = Tensor::cat(&[tokens(&ts.seq), ts.quant.quantized.shallow_clone()], -1);
            let s = both.size();
            let per_patch = both.view([s[0], self.geo.window / self.patch_days, n, s[2]]);
            parts.push(per_patch.mean_dim(1, false, Kind::Float));
        }
        if let Some(cs) = cs {
            let q_mean = cs.quant.quantized.mean_dim(1, false, Kind::Float);
            let summary = Tensor::cat(&[cls(&cs.seq), q_mean], -1);
            let b = summary.size()[0];
            parts.push(summary.unsqueeze(1).expand([b, n, -1], false));
            if ts.is_none() {
                if let Some(shares) = self.cs.as_ref().and_then(|c| c.stock_shares(x)) {
                    parts.push(shares);
                }
            }
        }
        Tensor::cat(&parts, -1)
    }
}

impl Storm {
    /// `factor_pooling = "attention"`: (B, N, E) from `StockPooling`.
    fn pooled_features(
        &self,
        pooling: &StockPooling,
        x: &Tensor,
        ts: Option<&Side>,
        cs: Option<&Side>,
    ) -> Tensor {
        let ts_tokens = ts.map(|s| tokens(&s.seq));
        let cs_tokens = cs.map(|s| tokens(&s.seq));
        let ts_view = branch_tokens(ts, ts_tokens.as_ref());
        let cs_view = branch_tokens(cs, cs_tokens.as_ref());
        let input = match (ts_view, cs_view) {
            (Some(ts), cs) => PoolingInput::Ts { ts, cs },
            (None, cs) => match (cs, self.cs.as_ref().and_then(|c| c.stock_shares(x))) {
                (Some(cs), Some(shares)) => PoolingInput::CsOnly { cs, shares },
                _ => unreachable!("Storm::new refuses a model without branches"),
            },
        };
        pooling.forward(input)
    }
}

fn branch_tokens<'a>(
    side: Option<&'a Side>,
    tokens: Option<&'a Tensor>,
) -> Option<BranchTokens<'a>> {
    side.zip(tokens).map(|(s, tokens)| BranchTokens {
        tokens,
        codes: &s.quant.quantized,
    })
}

fn assign_only(b: &Branch, seq: &Tensor) -> QuantOutput {
    let (quantized, indices) = b.quantizer().assign(&tokens(seq));
    let zero = || Tensor::zeros([], (Kind::Float, seq.device()));
    QuantOutput {
        quantized,
        indices,
        codebook: zero(),
        commit: zero(),
        diversity: zero(),
        orthogonal: zero(),
        usage_sum: zero(),
        vectors: 0,
    }
}

/// CLS token of a (B, 1 + L, E) sequence: (B, E).
fn cls(seq: &Tensor) -> Tensor {
    seq.select(1, 0)
}

/// Patch tokens of a (B, 1 + L, E) sequence: (B, L, E).
fn tokens(seq: &Tensor) -> Tensor {
    seq.narrow(1, 1, seq.size()[1] - 1)
}

fn check_shapes(cfg: &ModelConfig, n_stocks: i64, n_features: i64, window: i64) -> Result<()> {
    let fail = |msg: String| Err(Error::Model(msg));
    super::interface::check_dims(n_stocks, n_features, window)?;
    if !cfg.use_ts && !cfg.use_cs {
        return fail("model.use_ts / model.use_cs: at least one branch must be on".into());
    }
    let nonzero = [
        ("patch_days", cfg.patch_days),
        ("embed_dim", cfg.embed_dim),
        ("encoder_heads", cfg.encoder_heads),
        ("decoder_heads", cfg.decoder_heads),
        ("mlp_ratio", cfg.mlp_ratio),
        ("codebook_size", cfg.codebook_size),
        ("cs_stem_dim", cfg.cs_stem_dim),
        ("factor_hidden", cfg.factor_hidden),
        ("factor_count", cfg.factor_count),
        ("portfolio_count", cfg.portfolio_count),
    ];
    if let Some((name, _)) = nonzero.iter().find(|(_, v)| *v == 0) {
        return fail(format!("model.{name} must be at least 1"));
    }
    if window % cfg.patch_days as i64 != 0 {
        return fail(format!(
            "model.patch_days {} must divide the window of {window} days",
            cfg.patch_days
        ));
    }
    for (name, heads) in [
        ("encoder_heads", cfg.encoder_heads),
        ("decoder_heads", cfg.decoder_heads),
    ] {
        if !cfg.embed_dim.is_multiple_of(heads) {
            return fail(format!(
                "model.{name} {heads} must divide model.embed_dim {}",
                cfg.embed_dim
            ));
        }
    }
    if !(cfg.diversity_temperature > 0.0 && cfg.diversity_temperature.is_finite()) {
        return fail(format!(
            "model.diversity_temperature {} must be a positive number",
            cfg.diversity_temperature
        ));
    }
    Ok(())
}

/// The diversity term (eq. 4) over the global batch: codebook usage summed over ranks, gradient through
/// this rank's vectors weighted by the world size (see `distributed::cross_rank`).
fn global_diversity(q: &QuantOutput, cr: &CrossRank) -> Result<Tensor> {
    let usage = cr.sum(&q.usage_sum)?;
    let mut vectors = [q.vectors as f64];
    cr.sum_f64(&mut vectors)?;
    let term = diversity_loss_from_usage(&usage, vectors[0] as i64);
    Ok(grad_scaled(&term, cr.world() as f64))
}

#[cfg(test)]
mod tests;
