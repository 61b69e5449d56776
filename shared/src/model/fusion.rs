//! Fusion of the two branches (paper §4.3.1). `Fusion` is a CrossViT-style multi-scale encoder: in each
//! layer each branch's CLS token attends to [its own CLS; the other branch's tokens] (pre-norm cross-
//! attention, residual), then optionally one self-attention block per branch spreads the fused CLS over
//! the branch's tokens. `Clip` aligns the two fused CLS tokens with a CLIP-style symmetric InfoNCE loss.

use tch::nn;
use tch::{Kind, Tensor};

use super::transformer::{Block, CrossBlock};
use crate::distributed::cross_rank::grad_scaled;
use crate::distributed::CrossRank;
use crate::error::Result;

#[derive(Debug)]
struct FusionLayer {
    ts_cross: CrossBlock,
    cs_cross: CrossBlock,
    ts_self: Option<Block>,
    cs_self: Option<Block>,
}

#[derive(Debug)]
pub struct Fusion {
    layers: Vec<FusionLayer>,
}

impl Fusion {
    pub fn new(
        p: &nn::Path,
        depth: i64,
        dim: i64,
        heads: i64,
        mlp_ratio: i64,
        self_attention: bool,
    ) -> Self {
        let layers_p = p / "layers";
        let layers = (0..depth)
            .map(|i| {
                let lp = &layers_p / i;
                FusionLayer {
                    ts_cross: CrossBlock::new(&(&lp / "ts_cross"), dim, heads),
                    cs_cross: CrossBlock::new(&(&lp / "cs_cross"), dim, heads),
                    ts_self: self_attention
                        .then(|| Block::new(&(&lp / "ts_self"), dim, heads, mlp_ratio)),
                    cs_self: self_attention
                        .then(|| Block::new(&(&lp / "cs_self"), dim, heads, mlp_ratio)),
                }
            })
            .collect();
        Fusion { layers }
    }

    /// ts, cs: encoder outputs (B, 1 + L, E) with the CLS at index 0 → fused sequences of the same shapes.
    pub fn forward(&self, ts: &Tensor, cs: &Tensor) -> (Tensor, Tensor) {
        let (mut ts, mut cs) = (ts.shallow_clone(), cs.shallow_clone());
        for layer in &self.layers {
            let (ts_cls, ts_tok) = split_cls(&ts);
            let (cs_cls, cs_tok) = split_cls(&cs);
            let ts_cls_new = layer
                .ts_cross
                .forward(&ts_cls, &Tensor::cat(&[&ts_cls, &cs_tok], 1));
            let cs_cls_new = layer
                .cs_cross
                .forward(&cs_cls, &Tensor::cat(&[&cs_cls, &ts_tok], 1));
            ts = Tensor::cat(&[ts_cls_new, ts_tok], 1);
            cs = Tensor::cat(&[cs_cls_new, cs_tok], 1);
            if let Some(block) = &layer.ts_self {
                ts = block.forward(&ts);
            }
            if let Some(block) = &layer.cs_self {
                cs = block.forward(&cs);
            }
        }
        (ts, cs)
    }
}

/// (B, 1 + L, E) → (CLS (B, 1, E), tokens (B, L, E)).
fn split_cls(seq: &Tensor) -> (Tensor, Tensor) {
    let len = seq.size()[1];
    (seq.narrow(1, 0, 1), seq.narrow(1, 1, len - 1))
}

/// CLIP initial temperature 0.07 and the cap of the logit scale at 100, as in CLIP.
const LOGIT_SCALE_INIT: f64 = 1.0 / 0.07;
const LOGIT_SCALE_MAX: f64 = 100.0;

/// Learnable logit scale (stored as its log) for the contrastive loss.
#[derive(Debug)]
pub struct Clip {
    logit_scale: Tensor,
}

impl Clip {
    pub fn new(p: &nn::Path) -> Self {
        Clip {
            logit_scale: p.var("logit_scale", &[], nn::Init::Const(LOGIT_SCALE_INIT.ln())),
        }
    }

    /// a, b: (B, E) → scalar loss.
    pub fn forward(&self, a: &Tensor, b: &Tensor) -> Tensor {
        clip_loss(a, b, &self.logit_scale)
    }

    /// The loss over every rank's rows (data parallel), with gradients such that averaging them over
    /// ranks gives the gradient of the global loss (see `distributed::cross_rank`).
    pub fn forward_global(&self, a: &Tensor, b: &Tensor, cr: &CrossRank) -> Result<Tensor> {
        let w = cr.world() as f64;
        let (a, b) = (cr.gather_rows(a)?, cr.gather_rows(b)?);
        let scale = grad_scaled(&self.logit_scale, 1.0 / w);
        Ok(grad_scaled(&clip_loss(&a, &b, &scale), w))
    }
}

/// Symmetric InfoNCE over the batch: the i-th rows of a and b (B, E) are positives, all other pairs
/// negatives. Rows are L2-normalised and the logits scaled by exp(min(log_scale, ln 100)).
/// 0 when B < 2 (no negatives).
pub fn clip_loss(a: &Tensor, b: &Tensor, log_scale: &Tensor) -> Tensor {
    let n = a.size()[0];
    if n < 2 {
        return Tensor::zeros([], (Kind::Float, a.device()));
    }
    let unit = |x: &Tensor| {
        x / x
            .square()
            .sum_dim_intlist(-1, true, Kind::Float)
            .sqrt()
            .clamp_min(1e-12)
    };
    let scale = log_scale.clamp_max(LOGIT_SCALE_MAX.ln()).exp();
    let logits = unit(a).matmul(&unit(b).tr()) * scale;
    let labels = Tensor::arange(n, (Kind::Int64, a.device()));
    (logits.cross_entropy_for_logits(&labels) + logits.tr().cross_entropy_for_logits(&labels)) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn opts() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    #[test]
    fn clip_is_ln_b_for_identical_logits() {
        let a = Tensor::ones([4, 3], opts());
        let b = Tensor::randn([1, 3], opts()).expand([4, 3], false);
        let loss = clip_loss(&a, &b, &Tensor::from(2.0f32)).double_value(&[]);
        assert!((loss - 4f64.ln()).abs() < 1e-5, "{loss}");
    }

    #[test]
    fn clip_is_small_for_aligned_pairs_and_zero_for_one_sample() {
        let a = Tensor::eye(4, opts()) * 5.0;
        let loss = clip_loss(&a, &a, &Tensor::from(100f32.ln())).double_value(&[]);
        assert!(loss < 1e-6, "{loss}");
        // A log scale above ln 100 is clamped: same loss.
        let clamped = clip_loss(&a, &a, &Tensor::from(10f32)).double_value(&[]);
        assert!((clamped - loss).abs() < 1e-9);
        let one = Tensor::ones([1, 3], opts());
        assert_eq!(
            clip_loss(&one, &one, &Tensor::from(1f32)).double_value(&[]),
            0.0
        );
    }

    #[test]
    fn fusion_keeps_shapes_and_mixes_the_branches() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let fusion = Fusion::new(&(vs.root() / "fusion"), 2, 8, 2, 2, true);
        let ts = Tensor::randn([2, 7, 8], opts());
        let cs = Tensor::randn([2, 5, 8], opts());
        let (ft, fc) = fusion.forward(&ts, &cs);
        assert_eq!(ft.size(), vec![2, 7, 8]);
        assert_eq!(fc.size(), vec![2, 5, 8]);
        // The TS CLS depends on the CS tokens (a constant shift would vanish in the LayerNorm).
        let cs2 = &cs + Tensor::randn([2, 5, 8], opts());
        let (ft2, _) = fusion.forward(&ts, &cs2);
        assert!(!ft
            .get(0)
            .get(0)
            .allclose(&ft2.get(0).get(0), 1e-6, 1e-6, false));
        assert!(vs
            .variables()
            .contains_key("fusion.layers.1.cs_cross.attn.kv.weight"));
    }
}
