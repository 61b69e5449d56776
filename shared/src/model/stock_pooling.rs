//! Per-stock factor embeddings by attention (`model.factor_pooling = "attention"`, paper §4.3.2).
//!
//! With P = W / p patches, N stocks, E the token width and both branches on, for each stock i:
//! 1. its P fused TS tokens (B, N, P, E) get a learned recency embedding `recency[t]` (P, E);
//! 2. they cross-attend (pre-norm, residual, `heads` heads) to the sample's CS context: the W fused CS day
//!    tokens and the W quantised CS codes (marked by a learned `cs_code` vector), (B, 2W, E) — so each
//!    stock reads the cross section through its own tokens, not through one summary shared by all stocks;
//! 3. its P quantised TS codes (+ recency + a learned `ts_code` marker) join those tokens as extra
//!    [CLS]-like tokens ("codebook embeddings added to the latent features");
//! 4. a learned query pools the 2P tokens (attention pooling, pre-norm, residual) → (B, N, E).
//!
//! Without CS (STORM-w/o-CS) step 2 is skipped. Without TS (STORM-w/o-TS) stock i's query is the learned
//! query plus the stock's own share of the last CS token (`CsPatch::stock_shares`), and it pools the CS
//! context of step 2 directly. Codes enter through the straight-through output, so these losses train
//! the encoders, not the codebooks.

use tch::nn;
use tch::Tensor;

use super::transformer::{embedding, CrossBlock};

/// Sizes of the pooling: P patches, N stocks, E width, attention heads, and which branches are on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolingShape {
    pub patches: i64,
    pub stocks: i64,
    pub dim: i64,
    pub heads: i64,
    pub use_ts: bool,
    pub use_cs: bool,
}

/// The TS side of the pooling: recency positions, the code marker and (with CS) the cross-attention.
#[derive(Debug)]
struct TsPart {
    recency: Tensor,
    ts_code: Tensor,
    to_cs: Option<CrossBlock>,
}

#[derive(Debug)]
pub(crate) struct StockPooling {
    ts: Option<TsPart>,
    cs_code: Option<Tensor>,
    query: Tensor,
    pool: CrossBlock,
    shape: PoolingShape,
}

/// The fused tokens and straight-through codes of one branch: (B, L, E) each, without the CLS. TS tokens
/// are time-major (L = P · N), CS tokens one per day (L = W).
pub(crate) struct BranchTokens<'a> {
    pub tokens: &'a Tensor,
    pub codes: &'a Tensor,
}

/// What the pooling reads: the TS tokens (and the CS ones when that branch is on), or without TS the CS
/// tokens and each stock's share of the last CS token (B, N, E).
pub(crate) enum PoolingInput<'a> {
    Ts {
        ts: BranchTokens<'a>,
        cs: Option<BranchTokens<'a>>,
    },
    CsOnly {
        cs: BranchTokens<'a>,
        shares: Tensor,
    },
}

impl StockPooling {
    pub(crate) fn new(p: &nn::Path, shape: PoolingShape) -> Self {
        let dim = shape.dim;
        let ts = shape.use_ts.then(|| TsPart {
            recency: embedding(p, "recency", &[shape.patches, dim]),
            ts_code: embedding(p, "ts_code", &[1, 1, dim]),
            to_cs: shape
                .use_cs
                .then(|| CrossBlock::new(&(p / "ts_to_cs"), dim, shape.heads)),
        });
        StockPooling {
            ts,
            cs_code: shape.use_cs.then(|| embedding(p, "cs_code", &[1, 1, dim])),
            query: embedding(p, "query", &[1, 1, dim]),
            pool: CrossBlock::new(&(p / "pool"), dim, shape.heads),
            shape,
        }
    }

    /// Width of each stock's pooled features: E.
    pub(crate) fn width(&self) -> i64 {
        self.shape.dim
    }

    /// Per-stock features (B, N, E).
    pub(crate) fn forward(&self, input: PoolingInput) -> Tensor {
        let context =
            |cs: &BranchTokens, mark: &Tensor| Tensor::cat(&[cs.tokens, &(cs.codes + mark)], 1);
        match (input, &self.ts, &self.cs_code) {
            (PoolingInput::Ts { ts, cs }, Some(part), mark) => {
                let ctx = cs.as_ref().zip(mark.as_ref()).map(|(c, m)| context(c, m));
                self.pool_ts(ts, part, ctx.as_ref())
            }
            (PoolingInput::CsOnly { cs, shares }, None, Some(mark)) => self
                .pool
                .forward(&(shares + &self.query), &context(&cs, mark)),
            // `Storm` builds the input from the same use_ts / use_cs flags as the pooling
            _ => unreachable!(
                "the pooling input does not match the branches the pooling was built for"
            ),
        }
    }

    fn pool_ts(&self, ts: BranchTokens, part: &TsPart, context: Option<&Tensor>) -> Tensor {
        let PoolingShape {
            patches, stocks, ..
        } = self.shape;
        let b = ts.tokens.size()[0];
        // (B, P · N, E) time-major → (B, N, P, E) + recency[t]
        let per_stock = |x: &Tensor| {
            x.view([b, patches, stocks, -1]).permute([0, 2, 1, 3]) + part.recency.unsqueeze(0)
        };
        let tokens = per_stock(ts.tokens);
        let codes = per_stock(ts.codes) + &part.ts_code;
        let e = tokens.size()[3];
        let tokens = match (&part.to_cs, context) {
            // the N · P queries of a sample attend to the same context independently
            (Some(cross), Some(ctx)) => cross
                .forward(&tokens.reshape([b, stocks * patches, e]), ctx)
                .view([b, stocks, patches, e]),
            _ => tokens,
        };
        let seq = Tensor::cat(&[codes, tokens], 2).reshape([b * stocks, 2 * patches, e]);
        let query = self.query.expand([b * stocks, 1, e], false);
        self.pool.forward(&query, &seq).view([b, stocks, e])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn opts() -> (Kind, Device) {
        (Kind::Float, Device::Cpu)
    }

    fn shape(use_ts: bool, use_cs: bool) -> PoolingShape {
        PoolingShape {
            patches: 3,
            stocks: 4,
            dim: 8,
            heads: 2,
            use_ts,
            use_cs,
        }
    }

    #[test]
    fn each_stock_pools_its_own_patches_in_time_major_layout() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let pool = StockPooling::new(&(vs.root() / "pool"), shape(true, false));
        let tokens = Tensor::randn([2, 12, 8], opts());
        let codes = Tensor::randn([2, 12, 8], opts());
        let run = |t: &Tensor| {
            let ts = BranchTokens {
                tokens: t,
                codes: &codes,
            };
            pool.forward(PoolingInput::Ts { ts, cs: None })
        };
        let out = run(&tokens);
        assert_eq!(out.size(), vec![2, 4, 8]);
        // Changing the last patch of stock 2 (token index 2 · N + 2) changes stock 2 only.
        let moved = tokens.copy();
        let _ = moved.get(0).get(2 * 4 + 2).fill_(5.0);
        let diff = (run(&moved) - &out)
            .abs()
            .sum_dim_intlist(-1, false, Kind::Float);
        let changed: Vec<bool> = (0..4)
            .map(|i| diff.get(0).double_value(&[i]) > 1e-6)
            .collect();
        assert_eq!(changed, [false, false, true, false]);
        assert_eq!(diff.get(1).sum(Kind::Float).double_value(&[]), 0.0);
        assert!(!vs.variables().contains_key("pool.ts_to_cs.attn.q.weight"));
    }

    #[test]
    fn cross_section_reaches_stocks_differently_and_cs_only_uses_the_shares() {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let pool = StockPooling::new(&(vs.root() / "pool"), shape(true, true));
        let ts_tok = Tensor::randn([1, 12, 8], opts());
        let ts_code = Tensor::randn([1, 12, 8], opts());
        let cs_code = Tensor::randn([1, 5, 8], opts());
        let run = |cs_tok: &Tensor| {
            let ts = BranchTokens {
                tokens: &ts_tok,
                codes: &ts_code,
            };
            let cs = BranchTokens {
                tokens: cs_tok,
                codes: &cs_code,
            };
            pool.forward(PoolingInput::Ts { ts, cs: Some(cs) })
        };
        let cs_tok = Tensor::randn([1, 5, 8], opts());
        let a = run(&cs_tok);
        let b = run(&(&cs_tok + Tensor::randn([1, 5, 8], opts())));
        let shift = (&b - &a).get(0);
        assert_eq!(a.size(), vec![1, 4, 8]);
        // A change of the cross section moves the stocks, and not all by the same vector.
        let spread = shift.std_dim(0, false, false).mean(Kind::Float);
        assert!(spread.double_value(&[]) > 1e-4, "{spread:?}");

        let cs_only = StockPooling::new(&(vs.root() / "cs_only"), shape(false, true));
        let shares = Tensor::randn([1, 4, 8], opts());
        let cs = BranchTokens {
            tokens: &cs_tok,
            codes: &cs_code,
        };
        let out = cs_only.forward(PoolingInput::CsOnly { cs, shares });
        assert_eq!(out.size(), vec![1, 4, 8]);
        assert!(out.std_dim(1, false, false).min().double_value(&[]) > 1e-4);
        assert!(!vs.variables().contains_key("cs_only.recency"));
    }
}
