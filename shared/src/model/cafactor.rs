//! The conditional autoencoder of Gu, Kelly & Xiu (2021, "Autoencoder asset pricing models", Journal of
//! Econometrics 222(1)), CA1–CA3, as a return predictor:
//!
//! - characteristics z_i: the stock's D features on the window's last day, (B, N, D) — the features are the
//!   causal per-ticker z-scores the data pipeline produces (GKX rank-normalise their characteristics
//!   cross-sectionally to [−1, 1]; no further transform is applied here);
//! - beta network: an MLP z_i → β_i (K loadings) with ReLU hidden layers of the paper's widths (CA1 = [32],
//!   CA2 = [32, 16], CA3 = [32, 16, 8]) and a linear output layer with bias; GKX's batch normalisation
//!   before each activation is left out;
//! - factor network (training only): the D characteristic-managed portfolios x_t = Z_t' y_t / N (the simple
//!   form, not GKX's least-squares (Z'Z)⁻¹Z'y: with N = 29 stocks and D = 152 features Z'Z is singular),
//!   then one linear layer without bias (GKX's f_t = W x_t) gives the K factors f_t;
//! - loss: MSE of y_{t,i} − β_i · f_t over stocks and batch; the trainer's AdamW weight decay is the only
//!   regularisation (GKX's L1 penalty and their ensembling over seeds are left out);
//! - prediction (label-free, as GKX): β_i · λ, where λ is the mean of f_t over every training window seen
//!   so far.
//!
//! λ and the number of windows behind it are non-trainable variables `factor_mean` (K) and `factor_count`
//! (1) of the var store, so they are saved in every checkpoint and restored on resume, eval and export.
//! `forward_loss` — the trainer's training forward; validation, eval, export and backtest call `predict` —
//! updates them in place under `no_grad` with a running mean, and only while gradients are enabled (a
//! forward under `no_grad` leaves λ alone). A window whose factors are not finite is not counted. Under data
//! parallel every rank adds the global batch's factors (one all-reduce of K + 1 numbers), so λ is the one
//! process's λ. The prediction `forward_loss` returns uses λ as it was before the batch's update, so it
//! never depends on the batch's labels.
//!
//! `embeddings` are the loadings β (B, N, K): the model's whole per-stock output, of which the prediction
//! is a linear function. There is no risk estimate.

use tch::nn::{self, Module};
use tch::{Kind, Reduction, Tensor};

use super::interface::{check_dims, Embeddings, FactorModel, ModelOutput};
use super::transformer::xavier_linear;
use crate::config::{CaFactorConfig, ModelKind, TrainConfig};
use crate::distributed::CrossRank;
use crate::error::{Error, Result};

/// Hidden widths of the beta network; CA<d> uses the first d (Gu, Kelly & Xiu 2021, §2).
pub const BETA_HIDDEN: [i64; 3] = [32, 16, 8];

#[derive(Debug)]
pub struct CaFactor {
    hidden: Vec<nn::Linear>,
    beta: nn::Linear,
    factor: nn::Linear,
    /// λ, the running mean of the training factors (K,), non-trainable.
    factor_mean: Tensor,
    /// Training windows averaged into λ (1,), non-trainable (float: exact up to 2²⁴ windows).
    factor_count: Tensor,
    cross_rank: Option<CrossRank>,
}

impl CaFactor {
    pub fn new(
        p: &nn::Path,
        cfg: &CaFactorConfig,
        n_stocks: i64,
        n_features: i64,
        window: i64,
    ) -> Result<Self> {
        check_dims(n_stocks, n_features, window)?;
        if !(1..=BETA_HIDDEN.len()).contains(&cfg.depth) {
            return Err(Error::Model(format!(
                "CAFactor depth {} is out of range 1..={}",
                cfg.depth,
                BETA_HIDDEN.len()
            )));
        }
        if cfg.factors == 0 {
            return Err(Error::Model("CAFactor needs at least one factor".into()));
        }
        let k = cfg.factors as i64;
        let beta_path = p / "beta";
        let mut hidden = Vec::with_capacity(cfg.depth);
        let mut width = n_features;
        for (i, &h) in BETA_HIDDEN[..cfg.depth].iter().enumerate() {
            hidden.push(xavier_linear(&(&beta_path / "hidden" / i), width, h));
            width = h;
        }
        let bound = (6.0 / (n_features + k) as f64).sqrt();
        let factor = nn::linear(
            p / "factor",
            n_features,
            k,
            nn::LinearConfig {
                ws_init: nn::Init::Uniform {
                    lo: -bound,
                    up: bound,
                },
                bs_init: None,
                bias: false,
            },
        );
        Ok(CaFactor {
            hidden,
            beta: xavier_linear(&(&beta_path / "out"), width, k),
            factor,
            factor_mean: p.zeros_no_train("factor_mean", &[k]),
            factor_count: p.zeros_no_train("factor_count", &[1]),
            cross_rank: None,
        })
    }

    /// Characteristics z (B, N, D): each stock's features on the window's last day.
    pub fn characteristics(x: &Tensor) -> Tensor {
        x.select(1, x.size()[1] - 1)
    }

    /// Loadings β (B, N, K) from characteristics z (B, N, D).
    pub fn betas(&self, z: &Tensor) -> Tensor {
        let h = self
            .hidden
            .iter()
            .fold(z.shallow_clone(), |h, layer| layer.forward(&h).relu());
        self.beta.forward(&h)
    }

    /// Factors f (B, K) from characteristics z (B, N, D) and labels y (B, N): the characteristic-managed
    /// portfolios Z'y / N through the factor layer.
    pub fn factors(&self, z: &Tensor, y: &Tensor) -> Tensor {
        let n = z.size()[1] as f64;
        let portfolios = z
            .transpose(1, 2)
            .matmul(&y.to_kind(z.kind()).unsqueeze(-1))
            .squeeze_dim(-1)
            / n;
        self.factor.forward(&portfolios)
    }

    /// λ, the mean of the training factors seen so far (K,).
    pub fn factor_mean(&self) -> &Tensor {
        &self.factor_mean
    }

    /// Training windows averaged into λ (1,).
    pub fn factor_count(&self) -> &Tensor {
        &self.factor_count
    }

    /// β · λ (B, N).
    fn price(beta: &Tensor, lambda: &Tensor) -> Tensor {
        beta.matmul(&lambda.to_kind(beta.kind()))
    }

    /// Adds a batch's factors f (B, K) to the running mean λ (the global batch's under data parallel).
    fn update_factor_mean(&self, f: &Tensor) {
        tch::no_grad(|| {
            let f = f.detach().to_kind(Kind::Float);
            let k = f.size()[1];
            let finite = f.isfinite().all_dim(-1, true);
            let kept = f.where_self(&finite, &f.zeros_like());
            let mut stats = Tensor::cat(
                &[
                    kept.sum_dim_intlist(0, false, Kind::Float),
                    finite.sum(Kind::Float).reshape([1]),
                ],
                0,
            );
            if let Some(cr) = &self.cross_rank {
                // on failure the local sums stand; the trainer's next collective reports the error
                if let Ok(all) = cr.sum(&stats) {
                    stats = all;
                }
            }
            let (sum, count) = (stats.narrow(0, 0, k), stats.narrow(0, k, 1));
            let total = &self.factor_count + &count;
            let next =
                &self.factor_mean + (sum - &self.factor_mean * &count) / total.clamp_min(1.0);
            self.factor_mean.shallow_clone().copy_(&next);
            self.factor_count.shallow_clone().copy_(&total);
        });
    }
}

impl FactorModel for CaFactor {
    fn kind(&self) -> ModelKind {
        ModelKind::CaFactor
    }

    fn use_cross_rank(&mut self, cross: CrossRank) {
        self.cross_rank = Some(cross);
    }

    fn forward_loss(&self, x: &Tensor, y: &Tensor, _weights: &TrainConfig) -> ModelOutput {
        let z = Self::characteristics(x);
        let beta = self.betas(&z);
        let f = self.factors(&z, y);
        let fit = beta.matmul(&f.unsqueeze(-1)).squeeze_dim(-1);
        let mse = fit.mse_loss(y, Reduction::Mean);
        // λ before this batch's update: the prediction never sees the batch's labels
        let prediction = Self::price(&beta, &self.factor_mean.copy());
        if f.requires_grad() {
            self.update_factor_mean(&f);
        }
        ModelOutput::mse(mse, prediction)
    }

    fn predict(&self, x: &Tensor) -> Tensor {
        Self::price(&self.betas(&Self::characteristics(x)), &self.factor_mean)
    }

    fn embeddings(&self, x: &Tensor) -> Embeddings {
        Embeddings {
            factors: self.betas(&Self::characteristics(x)).to_kind(Kind::Float),
            ts_codes: None,
            cs_codes: None,
            state: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::OptimizerConfig;
    use tch::Device;

    const B: i64 = 3;
    const W: i64 = 4;
    const N: i64 = 5;
    const D: i64 = 6;

    fn config(depth: usize, factors: usize) -> CaFactorConfig {
        CaFactorConfig { depth, factors }
    }

    fn build(seed: i64, cfg: &CaFactorConfig) -> (nn::VarStore, CaFactor) {
        tch::manual_seed(seed);
        let vs = nn::VarStore::new(Device::Cpu);
        let m = CaFactor::new(&vs.root(), cfg, N, D, W).expect("valid");
        (vs, m)
    }

    fn batch(seed: i64, b: i64) -> (Tensor, Tensor) {
        tch::manual_seed(seed);
        (
            Tensor::randn([b, W, N, D], (Kind::Float, Device::Cpu)),
            Tensor::randn([b, N], (Kind::Float, Device::Cpu)),
        )
    }

    /// Trains on `batches` with Adam; returns the factors of every batch computed by hand from the
    /// factor layer's weight just before the batch's forward.
    fn train(vs: &nn::VarStore, m: &CaFactor, batches: &[(Tensor, Tensor)]) -> Vec<Tensor> {
        let mut opt = nn::Adam::default().build(vs, 1e-2).unwrap();
        let weight = vs.variables()["factor.weight"].shallow_clone();
        let mut by_hand = Vec::new();
        for (x, y) in batches {
            let z = x.select(1, W - 1);
            let portfolios = z.transpose(1, 2).matmul(&y.unsqueeze(-1)).squeeze_dim(-1) / N as f64;
            by_hand.push(tch::no_grad(|| portfolios.matmul(&weight.tr())));
            let out = m.forward_loss(x, y, &TrainConfig::default());
            opt.zero_grad();
            out.loss.backward();
            opt.step();
        }
        by_hand
    }

    #[test]
    fn every_depth_has_the_right_shapes_and_widths() {
        for depth in 1..=3 {
            let (vs, m) = build(0, &config(depth, 4));
            let (x, y) = batch(1, B);
            let out = m.forward_loss(&x, &y, &TrainConfig::default());
            assert_eq!(out.prediction.size(), [B, N]);
            assert_eq!(out.loss.size(), Vec::<i64>::new());
            assert_eq!(m.predict(&x).size(), [B, N]);
            let e = m.embeddings(&x);
            assert_eq!(e.factors.size(), [B, N, 4]);
            assert!(e.ts_codes.is_none() && e.cs_codes.is_none());
            assert_eq!(m.factors(&x.select(1, W - 1), &y).size(), [B, 4]);
            let vars = vs.variables();
            let mut width = D;
            for (i, &h) in BETA_HIDDEN[..depth].iter().enumerate() {
                assert_eq!(vars[&format!("beta.hidden.{i}.weight")].size(), [h, width]);
                width = h;
            }
            assert_eq!(vars["beta.out.weight"].size(), [4, BETA_HIDDEN[depth - 1]]);
            assert_eq!(vars["factor.weight"].size(), [4, D]);
            assert!(!vars.contains_key("factor.bias"));
            assert!(!vars["factor_mean"].requires_grad());
            // the MSE is that of y − β f
            let z = x.select(1, W - 1);
            let fit = m
                .betas(&z)
                .matmul(&m.factors(&z, &y).unsqueeze(-1))
                .squeeze_dim(-1);
            let by_hand = (&fit - &y).square().mean(Kind::Float).double_value(&[]);
            assert!((out.loss.double_value(&[]) - by_hand).abs() < 1e-6);
        }
        let vs = nn::VarStore::new(Device::Cpu);
        for bad in [config(0, 6), config(4, 6), config(2, 0)] {
            assert!(CaFactor::new(&vs.root(), &bad, N, D, W).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn prediction_never_depends_on_the_labels() {
        let (vs, m) = build(0, &config(2, 3));
        let batches: Vec<_> = (0..3).map(|s| batch(10 + s, B)).collect();
        let _ = train(&vs, &m, &batches);
        let (x, y) = batch(20, B);
        let before = m.predict(&x);
        assert!(before.abs().sum(Kind::Float).double_value(&[]) > 0.0);
        let (mean, count) = (m.factor_mean().copy(), m.factor_count().copy());
        let restore = || {
            tch::no_grad(|| {
                m.factor_mean().shallow_clone().copy_(&mean);
                m.factor_count().shallow_clone().copy_(&count);
            })
        };
        let a = m.forward_loss(&x, &y, &TrainConfig::default());
        assert!(!m.factor_mean().equal(&mean), "a training forward moves λ");
        restore();
        let b = m.forward_loss(&x, &(&y * -3.0 + 1.0), &TrainConfig::default());
        restore();
        assert!(a.prediction.equal(&b.prediction));
        assert!(a.prediction.equal(&before));
        assert!(m.predict(&x).equal(&before));
        // another stock's characteristics do not move stock 0's prediction
        let x2 = x.copy();
        let _ = x2.narrow(2, 3, 1).fill_(2.0);
        let p2 = m.predict(&x2);
        assert!(before.select(1, 0).equal(&p2.select(1, 0)));
        // a forward without gradients (a validation loss) leaves λ alone
        let _ = tch::no_grad(|| m.forward_loss(&x, &y, &TrainConfig::default()));
        assert!(m.factor_mean().equal(&mean) && m.factor_count().equal(&count));
    }

    #[test]
    fn lambda_is_the_mean_of_the_training_factors() {
        let (vs, m) = build(0, &config(3, 4));
        // batches of different sizes: λ is the mean over windows, not over batches
        let batches: Vec<_> = [3, 1, 4, 2]
            .iter()
            .enumerate()
            .map(|(i, &b)| batch(30 + i as i64, b))
            .collect();
        let by_hand = train(&vs, &m, &batches);
        let all = Tensor::cat(&by_hand, 0);
        let expected = all.mean_dim(0, false, Kind::Float);
        assert_eq!(m.factor_count().double_value(&[0]), 10.0);
        assert!(
            m.factor_mean().allclose(&expected, 1e-5, 1e-6, false),
            "{:?} vs {:?}",
            Vec::<f32>::try_from(m.factor_mean()).unwrap(),
            Vec::<f32>::try_from(&expected).unwrap()
        );
        // the factors moved between batches (the hand check is not of a constant)
        assert!(!by_hand[0]
            .mean_dim(0, false, Kind::Float)
            .allclose(&expected, 1e-3, 1e-3, false));
        // and the prediction is β · λ
        let (x, _) = batch(40, B);
        let beta = m.betas(&x.select(1, W - 1));
        let price = (&beta * m.factor_mean()).sum_dim_intlist(-1, false, Kind::Float);
        assert!(m.predict(&x).allclose(&price, 1e-5, 1e-6, false));
    }

    #[test]
    fn lambda_survives_a_checkpoint_round_trip() {
        let cfg = config(2, 3);
        let (vs, m) = build(0, &cfg);
        let batches: Vec<_> = (0..3).map(|s| batch(50 + s, B)).collect();
        let _ = train(&vs, &m, &batches);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("model.safetensors");
        vs.save(&file).unwrap();
        let (mut vs2, m2) = build(7, &cfg);
        assert!(m2.factor_count().double_value(&[0]) == 0.0);
        vs2.load(&file).unwrap();
        assert!(m2.factor_mean().equal(m.factor_mean()));
        assert_eq!(m2.factor_count().double_value(&[0]), 3.0 * B as f64);
        let (x, _) = batch(60, B);
        assert!(m2.predict(&x).equal(&m.predict(&x)));
    }

    #[test]
    fn seeded_training_is_bit_for_bit_repeatable() {
        let cfg = config(3, 6);
        let batches: Vec<_> = (0..4).map(|s| batch(70 + s, B)).collect();
        let (x, _) = batch(80, B);
        let run = || {
            let (vs, m) = build(3, &cfg);
            let _ = train(&vs, &m, &batches);
            (m.factor_mean().copy(), m.predict(&x))
        };
        let (a, b) = (run(), run());
        assert!(a.0.equal(&b.0) && a.1.equal(&b.1));
    }
}
