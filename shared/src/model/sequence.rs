//! The plain return predictors of the STORM paper's tables: LSTM, GRU and Transformer. Each reads one
//! stock's window (W days × D features) at a time, summarises it into a hidden vector (the recurrent
//! nets' last output; the Transformer's CLS token), and regresses the next-day return with a linear layer
//! under MSE. Stocks never see each other, so these are purely time-series models.

use tch::nn::{self, Module, RNN};
use tch::{Kind, Reduction, Tensor};

use super::interface::{check_dims, Embeddings, FactorModel, ModelOutput};
use super::transformer::{xavier_linear, TokenTransformer};
use crate::config::{ModelKind, SequenceConfig, TrainConfig};
use crate::error::{Error, Result};

/// MLP width of each Transformer block relative to `hidden`.
const TRANSFORMER_MLP_RATIO: i64 = 4;

#[derive(Debug)]
enum Encoder {
    Lstm(nn::LSTM),
    Gru(nn::GRU),
    Transformer {
        embed: nn::Linear,
        body: TokenTransformer,
    },
}

#[derive(Debug)]
pub struct SequencePredictor {
    kind: ModelKind,
    encoder: Encoder,
    out: nn::Linear,
}

impl SequencePredictor {
    pub fn new(
        p: &nn::Path,
        kind: ModelKind,
        cfg: &SequenceConfig,
        n_stocks: i64,
        n_features: i64,
        window: i64,
    ) -> Result<Self> {
        check_dims(n_stocks, n_features, window)?;
        let (hidden, layers) = (cfg.hidden as i64, cfg.layers as i64);
        let rnn = nn::RNNConfig {
            num_layers: layers,
            ..Default::default()
        };
        let enc = p / "encoder";
        let encoder = match kind {
            ModelKind::Lstm => Encoder::Lstm(nn::lstm(&enc, n_features, hidden, rnn)),
            ModelKind::Gru => Encoder::Gru(nn::gru(&enc, n_features, hidden, rnn)),
            ModelKind::Transformer => Encoder::Transformer {
                embed: xavier_linear(&(&enc / "embed"), n_features, hidden),
                body: TokenTransformer::new(
                    &enc,
                    hidden,
                    layers,
                    cfg.heads as i64,
                    TRANSFORMER_MLP_RATIO,
                    (window, 1),
                ),
            },
            other => {
                return Err(Error::Model(format!(
                    "{} is not a sequence model",
                    other.name()
                )))
            }
        };
        Ok(SequencePredictor {
            kind,
            encoder,
            out: xavier_linear(&(p / "out"), hidden, 1),
        })
    }

    /// Hidden summary of every stock's window: x (B, W, N, D) → (B, N, H).
    pub fn hidden(&self, x: &Tensor) -> Tensor {
        let s = x.size();
        let (b, w, n, d) = (s[0], s[1], s[2], s[3]);
        let seq = x.permute([0, 2, 1, 3]).reshape([b * n, w, d]);
        let last = match &self.encoder {
            Encoder::Lstm(rnn) => rnn.seq(&seq).0.select(1, w - 1),
            Encoder::Gru(rnn) => rnn.seq(&seq).0.select(1, w - 1),
            Encoder::Transformer { embed, body } => body.forward(&embed.forward(&seq)).select(1, 0),
        };
        last.view([b, n, -1])
    }
}

impl FactorModel for SequencePredictor {
    fn kind(&self) -> ModelKind {
        self.kind
    }

    fn forward_loss(&self, x: &Tensor, y: &Tensor, _weights: &TrainConfig) -> ModelOutput {
        let prediction = self.predict(x);
        let mse = prediction.mse_loss(y, Reduction::Mean);
        ModelOutput::mse(mse, prediction)
    }

    fn predict(&self, x: &Tensor) -> Tensor {
        self.out.forward(&self.hidden(x)).squeeze_dim(-1)
    }

    fn embeddings(&self, x: &Tensor) -> Embeddings {
        Embeddings {
            factors: self.hidden(x).to_kind(Kind::Float),
            ts_codes: None,
            cs_codes: None,
            state: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn every_kind_has_the_right_shapes_and_is_per_stock() {
        for kind in [ModelKind::Lstm, ModelKind::Gru, ModelKind::Transformer] {
            tch::manual_seed(0);
            let vs = nn::VarStore::new(Device::Cpu);
            let cfg = SequenceConfig {
                hidden: 8,
                layers: 2,
                heads: 2,
            };
            let m = SequencePredictor::new(&vs.root(), kind, &cfg, 4, 5, 6).expect("valid");
            let x = Tensor::randn([3, 6, 4, 5], (Kind::Float, Device::Cpu));
            let y = Tensor::randn([3, 4], (Kind::Float, Device::Cpu));
            let out = m.forward_loss(&x, &y, &TrainConfig::default());
            assert_eq!(out.prediction.size(), vec![3, 4], "{kind:?}");
            assert_eq!(m.embeddings(&x).factors.size(), vec![3, 4, 8]);
            let mse = out.loss.double_value(&[]);
            let by_hand = (&out.prediction - &y)
                .square()
                .mean(Kind::Float)
                .double_value(&[]);
            assert!((mse - by_hand).abs() < 1e-6);
            // Another stock's history does not move stock 0's prediction.
            let x2 = x.copy();
            let _ = x2.narrow(2, 3, 1).fill_(2.0);
            let (a, b) = (m.predict(&x), m.predict(&x2));
            assert!(a.select(1, 0).allclose(&b.select(1, 0), 1e-6, 1e-6, false));
            assert!(!a.select(1, 3).allclose(&b.select(1, 3), 1e-6, 1e-6, false));
        }
    }

    #[test]
    fn storm_kind_is_rejected() {
        let vs = nn::VarStore::new(Device::Cpu);
        let err = SequencePredictor::new(
            &vs.root(),
            ModelKind::Storm,
            &SequenceConfig::default(),
            2,
            2,
            2,
        )
        .expect_err("storm is not a sequence model");
        assert!(err.to_string().contains("not a sequence model"));
    }
}
