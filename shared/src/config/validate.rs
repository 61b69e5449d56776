//! Range and consistency checks run once when a config is loaded.

use super::{DateRange, ExperimentConfig, FactorPooling, ModelKind, Reconstruction};
use crate::error::{Error, Result};

impl ExperimentConfig {
    pub(super) fn validate(&self, origin: &str) -> Result<()> {
        let fail = |field: &str, msg: String| Err(Error::config(origin, field, msg));
        let d = &self.data;
        if d.source.trim().is_empty() {
            return fail("data.source", "must name a file or builtin:dj30".into());
        }
        if !(2..=4096).contains(&d.window) {
            return fail(
                "data.window",
                format!("{} is out of range 2..=4096", d.window),
            );
        }
        if !(2..=4096).contains(&d.scaler_window) {
            return fail(
                "data.scaler_window",
                format!("{} is out of range 2..=4096", d.scaler_window),
            );
        }
        if let (Some(s), Some(e)) = (d.start, d.end) {
            if s > e {
                return fail("data.start", format!("{s} is after data.end {e}"));
            }
        }
        let s = &self.splits;
        for (name, r) in [("train", s.train), ("valid", s.valid), ("test", s.test)] {
            check_range(origin, name, r)?;
        }
        if s.train.end >= s.valid.start {
            return fail(
                "splits.valid.start",
                format!(
                    "{} must be after splits.train.end {}",
                    s.valid.start, s.train.end
                ),
            );
        }
        if s.valid.end >= s.test.start {
            return fail(
                "splits.test.start",
                format!(
                    "{} must be after splits.valid.end {}",
                    s.test.start, s.valid.end
                ),
            );
        }
        match self.model.kind {
            ModelKind::Storm => self.validate_storm(origin)?,
            ModelKind::FactorVae => self.validate_factorvae(origin)?,
            ModelKind::Lstm | ModelKind::Gru | ModelKind::Transformer => {
                self.validate_sequence(origin)?
            }
            ModelKind::Reference => self.validate_reference(origin)?,
            ModelKind::CaFactor => self.validate_cafactor(origin)?,
            ModelKind::LightGbm => self.model.lightgbm.validate(origin)?,
            ModelKind::HireVae => {
                self.validate_factorvae(origin)?;
                self.validate_hirevae(origin)?
            }
        }
        self.validate_factor_module_options(origin)?;
        let t = &self.train;
        if t.batch_size == 0 {
            return fail("train.batch_size", "must be at least 1".into());
        }
        if t.keep_checkpoints == 0 {
            return fail("train.keep_checkpoints", "must be at least 1".into());
        }
        if t.eval_every_epochs == 0 {
            return fail("train.eval_every_epochs", "must be at least 1".into());
        }
        if t.max_consecutive_nonfinite == 0 {
            return fail(
                "train.max_consecutive_nonfinite",
                "must be at least 1".into(),
            );
        }
        if t.log_every == 0 {
            return fail("train.log_every", "must be at least 1".into());
        }
        if t.epochs == 0 {
            return fail("train.epochs", "must be at least 1".into());
        }
        if t.warmup_epochs > t.epochs {
            return fail(
                "train.warmup_epochs",
                format!("{} exceeds train.epochs {}", t.warmup_epochs, t.epochs),
            );
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return fail("train.lr", format!("{} must be a positive number", t.lr));
        }
        for (field, v) in [("train.beta1", t.beta1), ("train.beta2", t.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return fail(field, format!("{v} must be in [0, 1)"));
            }
        }
        for (field, v) in [
            ("train.weight_decay", t.weight_decay),
            ("train.grad_clip", t.grad_clip),
            ("train.loss_weight_clip", t.loss_weight_clip),
            ("train.loss_weight_recon_ts", t.loss_weight_recon_ts),
            ("train.loss_weight_recon_cs", t.loss_weight_recon_cs),
            ("train.loss_weight_commit", t.loss_weight_commit),
            ("train.loss_weight_orthogonal", t.loss_weight_orthogonal),
            ("train.loss_weight_diversity", t.loss_weight_diversity),
            ("train.loss_weight_prediction", t.loss_weight_prediction),
            ("train.loss_weight_kl", t.loss_weight_kl),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return fail(field, format!("{v} must be a finite number >= 0"));
            }
        }
        Ok(())
    }

    /// A reference factor scores the same days as the models: its history must fit in the window.
    fn validate_reference(&self, origin: &str) -> Result<()> {
        let (factor, window) = (self.model.reference, self.data.window);
        if window <= factor.lookback() {
            return Err(Error::config(
                origin,
                "data.window",
                format!(
                    "{window} is too short for model.reference = \"{}\", which reads {} days before each day",
                    factor.name(),
                    factor.lookback()
                ),
            ));
        }
        Ok(())
    }

    fn validate_storm(&self, origin: &str) -> Result<()> {
        let fail = |field: &str, msg: String| Err(Error::config(origin, field, msg));
        let d = &self.data;
        let m = &self.model;
        if !m.use_ts && !m.use_cs {
            return fail(
                "model.use_ts",
                "at least one of use_ts and use_cs must be true".into(),
            );
        }
        for (field, v) in [
            ("model.patch_days", m.patch_days),
            ("model.embed_dim", m.embed_dim),
            ("model.encoder_depth", m.encoder_depth),
            ("model.encoder_heads", m.encoder_heads),
            ("model.decoder_depth", m.decoder_depth),
            ("model.decoder_heads", m.decoder_heads),
            ("model.mlp_ratio", m.mlp_ratio),
            ("model.codebook_size", m.codebook_size),
            ("model.cs_stem_dim", m.cs_stem_dim),
            ("model.factor_hidden", m.factor_hidden),
            ("model.factor_count", m.factor_count),
            ("model.portfolio_count", m.portfolio_count),
        ] {
            if v == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if !d.window.is_multiple_of(m.patch_days) {
            return fail(
                "model.patch_days",
                format!("{} must divide data.window {}", m.patch_days, d.window),
            );
        }
        for (field, heads) in [
            ("model.encoder_heads", m.encoder_heads),
            ("model.decoder_heads", m.decoder_heads),
        ] {
            if !m.embed_dim.is_multiple_of(heads) {
                return fail(
                    field,
                    format!("{heads} must divide model.embed_dim {}", m.embed_dim),
                );
            }
        }
        if m.fusion_depth > 64 {
            return fail(
                "model.fusion_depth",
                format!("{} is out of range 0..=64", m.fusion_depth),
            );
        }
        if !(m.diversity_temperature > 0.0 && m.diversity_temperature.is_finite()) {
            return fail(
                "model.diversity_temperature",
                format!("{} must be a positive number", m.diversity_temperature),
            );
        }
        Ok(())
    }

    /// `factor_pooling` and `reconstruction` shape STORM's factor module and VQ-VAE losses; a baseline has
    /// neither, so a non-default value there would silently do nothing. (`stock_embedding` is accepted for
    /// every kind: the baselines have no per-stock embedding, which `none` describes truly.)
    fn validate_factor_module_options(&self, origin: &str) -> Result<()> {
        let m = &self.model;
        if m.kind == ModelKind::Storm {
            return Ok(());
        }
        let kind = m.kind.name();
        if m.factor_pooling != FactorPooling::default() {
            return Err(Error::config(
                origin,
                "model.factor_pooling",
                format!("applies to model.kind = \"storm\" only, not \"{kind}\"; remove it"),
            ));
        }
        if m.reconstruction != Reconstruction::default() {
            return Err(Error::config(
                origin,
                "model.reconstruction",
                format!(
                    "\"{}\" applies to model.kind = \"storm\" only (\"{kind}\" has no decoder); remove it",
                    m.reconstruction.name()
                ),
            ));
        }
        Ok(())
    }

    fn validate_factorvae(&self, origin: &str) -> Result<()> {
        let fail = |field: &str, msg: String| Err(Error::config(origin, field, msg));
        let f = &self.model.factorvae;
        for (field, v) in [
            ("model.factorvae.hidden", f.hidden),
            ("model.factorvae.factors", f.factors),
            ("model.factorvae.portfolios", f.portfolios),
        ] {
            if v == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if !(f.gamma >= 0.0 && f.gamma.is_finite()) {
            return fail(
                "model.factorvae.gamma",
                format!("{} must be a finite number >= 0", f.gamma),
            );
        }
        if !(0.0..1.0).contains(&f.leaky_slope) {
            return fail(
                "model.factorvae.leaky_slope",
                format!("{} must be in [0, 1)", f.leaky_slope),
            );
        }
        Ok(())
    }

    fn validate_hirevae(&self, origin: &str) -> Result<()> {
        let h = &self.model.hirevae;
        for (field, v) in [
            ("model.hirevae.market_latent", h.market_latent),
            ("model.hirevae.market_portfolios", h.market_portfolios),
        ] {
            if v == 0 {
                return Err(Error::config(origin, field, "must be at least 1"));
            }
        }
        Ok(())
    }

    fn validate_cafactor(&self, origin: &str) -> Result<()> {
        let c = &self.model.cafactor;
        if !(1..=3).contains(&c.depth) {
            return Err(Error::config(
                origin,
                "model.cafactor.depth",
                format!(
                    "{} is out of range 1..=3 (CA1 = [32], CA2 = [32, 16], CA3 = [32, 16, 8])",
                    c.depth
                ),
            ));
        }
        if c.factors == 0 {
            return Err(Error::config(
                origin,
                "model.cafactor.factors",
                "must be at least 1",
            ));
        }
        Ok(())
    }

    fn validate_sequence(&self, origin: &str) -> Result<()> {
        let fail = |field: &str, msg: String| Err(Error::config(origin, field, msg));
        let q = &self.model.sequence;
        for (field, v) in [
            ("model.sequence.hidden", q.hidden),
            ("model.sequence.layers", q.layers),
            ("model.sequence.heads", q.heads),
        ] {
            if v == 0 {
                return fail(field, "must be at least 1".into());
            }
        }
        if self.model.kind == ModelKind::Transformer && !q.hidden.is_multiple_of(q.heads) {
            return fail(
                "model.sequence.heads",
                format!("{} must divide model.sequence.hidden {}", q.heads, q.hidden),
            );
        }
        Ok(())
    }
}

fn check_range(origin: &str, name: &str, r: DateRange) -> Result<()> {
    if r.start > r.end {
        return Err(Error::config(
            origin,
            format!("splits.{name}"),
            format!("start {} is after end {}", r.start, r.end),
        ));
    }
    Ok(())
}
