//! Transformer building blocks: pre-norm self-attention blocks (LN → MHSA → residual, LN → MLP(GELU) →
//! residual), a pre-norm cross-attention block for the fusion, and `TokenTransformer`, the CLS token +
//! learned positions + stack of blocks + final LayerNorm shared by every encoder and decoder.

use tch::nn::{self, Module};
use tch::Tensor;

/// Linear layer with Xavier-uniform weights and zero bias (the init of the reference and of ViT).
pub(crate) fn xavier_linear(p: &nn::Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    let bound = (6.0 / (in_dim + out_dim) as f64).sqrt();
    nn::linear(
        p,
        in_dim,
        out_dim,
        nn::LinearConfig {
            ws_init: nn::Init::Uniform {
                lo: -bound,
                up: bound,
            },
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

pub(crate) fn layer_norm(p: &nn::Path, dim: i64) -> nn::LayerNorm {
    nn::layer_norm(p, vec![dim], Default::default())
}

/// Std of the normal init of CLS tokens, positional tables and other free embeddings.
pub(crate) const EMBED_INIT_STD: f64 = 0.02;

pub(crate) fn embedding(p: &nn::Path, name: &str, dims: &[i64]) -> Tensor {
    p.var(
        name,
        dims,
        nn::Init::Randn {
            mean: 0.0,
            stdev: EMBED_INIT_STD,
        },
    )
}

/// (B, L, E) → (B, heads, L, E / heads).
fn split_heads(x: &Tensor, heads: i64) -> Tensor {
    let s = x.size();
    x.view([s[0], s[1], heads, s[2] / heads]).transpose(1, 2)
}

/// (B, heads, L, d) → (B, L, heads · d).
fn merge_heads(x: &Tensor) -> Tensor {
    let s = x.size();
    x.transpose(1, 2).reshape([s[0], s[2], s[1] * s[3]])
}

fn attend(q: &Tensor, k: &Tensor, v: &Tensor) -> Tensor {
    Tensor::scaled_dot_product_attention(q, k, v, None::<Tensor>, 0.0, false, None, false)
}

/// Multi-head self-attention with a fused qkv projection.
#[derive(Debug)]
struct SelfAttention {
    qkv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

impl SelfAttention {
    fn new(p: &nn::Path, dim: i64, heads: i64) -> Self {
        SelfAttention {
            qkv: xavier_linear(&(p / "qkv"), dim, 3 * dim),
            proj: xavier_linear(&(p / "proj"), dim, dim),
            heads,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let qkv = self.qkv.forward(x).chunk(3, -1);
        let [q, k, v] = [&qkv[0], &qkv[1], &qkv[2]].map(|t| split_heads(t, self.heads));
        self.proj.forward(&merge_heads(&attend(&q, &k, &v)))
    }
}

/// Multi-head attention of query tokens over a separate context.
#[derive(Debug)]
struct CrossAttention {
    q: nn::Linear,
    kv: nn::Linear,
    proj: nn::Linear,
    heads: i64,
}

impl CrossAttention {
    fn new(p: &nn::Path, dim: i64, heads: i64) -> Self {
        CrossAttention {
            q: xavier_linear(&(p / "q"), dim, dim),
            kv: xavier_linear(&(p / "kv"), dim, 2 * dim),
            proj: xavier_linear(&(p / "proj"), dim, dim),
            heads,
        }
    }

    fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        let q = split_heads(&self.q.forward(x), self.heads);
        let kv = self.kv.forward(context).chunk(2, -1);
        let k = split_heads(&kv[0], self.heads);
        let v = split_heads(&kv[1], self.heads);
        self.proj.forward(&merge_heads(&attend(&q, &k, &v)))
    }
}

#[derive(Debug)]
struct Mlp {
    fc1: nn::Linear,
    fc2: nn::Linear,
}

impl Mlp {
    fn new(p: &nn::Path, dim: i64, hidden: i64) -> Self {
        Mlp {
            fc1: xavier_linear(&(p / "fc1"), dim, hidden),
            fc2: xavier_linear(&(p / "fc2"), hidden, dim),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.fc2.forward(&self.fc1.forward(x).gelu("none"))
    }
}

/// Pre-norm transformer block: x + MHSA(LN(x)), then x + MLP(LN(x)).
#[derive(Debug)]
pub struct Block {
    norm1: nn::LayerNorm,
    attn: SelfAttention,
    norm2: nn::LayerNorm,
    mlp: Mlp,
}

impl Block {
    pub fn new(p: &nn::Path, dim: i64, heads: i64, mlp_ratio: i64) -> Self {
        Block {
            norm1: layer_norm(&(p / "norm1"), dim),
            attn: SelfAttention::new(&(p / "attn"), dim, heads),
            norm2: layer_norm(&(p / "norm2"), dim),
            mlp: Mlp::new(&(p / "mlp"), dim, dim * mlp_ratio),
        }
    }

    /// x: (B, L, E) → (B, L, E).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let x = x + self.attn.forward(&self.norm1.forward(x));
        &x + self.mlp.forward(&self.norm2.forward(&x))
    }
}

/// Pre-norm cross-attention block without MLP (CrossViT): x + Attn(LN_q(x), LN_kv(context)).
#[derive(Debug)]
pub struct CrossBlock {
    norm_q: nn::LayerNorm,
    norm_kv: nn::LayerNorm,
    attn: CrossAttention,
}

impl CrossBlock {
    pub fn new(p: &nn::Path, dim: i64, heads: i64) -> Self {
        CrossBlock {
            norm_q: layer_norm(&(p / "norm_q"), dim),
            norm_kv: layer_norm(&(p / "norm_kv"), dim),
            attn: CrossAttention::new(&(p / "attn"), dim, heads),
        }
    }

    /// x: (B, Lq, E), context: (B, Lk, E) → (B, Lq, E).
    pub fn forward(&self, x: &Tensor, context: &Tensor) -> Tensor {
        x + self
            .attn
            .forward(&self.norm_q.forward(x), &self.norm_kv.forward(context))
    }
}

/// Prepends a learned CLS token, adds learned positions, runs `depth` blocks and a final LayerNorm.
///
/// Tokens are laid out time-major on an (n_time × n_space) grid, index = t · n_space + s; the position of a
/// token is `pos_time[t] + pos_space[s]` (separable tables; no space table when n_space = 1 or when it is
/// switched off). The CLS token
/// is a free vector and so carries its own position.
#[derive(Debug)]
pub struct TokenTransformer {
    cls: Tensor,
    pos_time: Tensor,
    pos_space: Option<Tensor>,
    blocks: Vec<Block>,
    norm: nn::LayerNorm,
    n_time: i64,
    n_space: i64,
}

impl TokenTransformer {
    pub fn new(
        p: &nn::Path,
        dim: i64,
        depth: i64,
        heads: i64,
        mlp_ratio: i64,
        grid: (i64, i64),
    ) -> Self {
        Self::with_space_positions(p, dim, depth, heads, mlp_ratio, grid, true)
    }

    /// As `new`; with `space_positions = false` no `pos_space` table exists and tokens are told apart only
    /// by their time position and content (STORM's `model.stock_embedding = "none"`).
    pub fn with_space_positions(
        p: &nn::Path,
        dim: i64,
        depth: i64,
        heads: i64,
        mlp_ratio: i64,
        grid: (i64, i64),
        space_positions: bool,
    ) -> Self {
        let (n_time, n_space) = grid;
        let blocks_p = p / "blocks";
        TokenTransformer {
            cls: embedding(p, "cls", &[1, 1, dim]),
            pos_time: embedding(p, "pos_time", &[n_time, dim]),
            pos_space: (space_positions && n_space > 1)
                .then(|| embedding(p, "pos_space", &[n_space, dim])),
            blocks: (0..depth)
                .map(|i| Block::new(&(&blocks_p / i), dim, heads, mlp_ratio))
                .collect(),
            norm: layer_norm(&(p / "norm"), dim),
            n_time,
            n_space,
        }
    }

    /// Positional table for the L = n_time · n_space tokens: (L, E).
    fn positions(&self) -> Tensor {
        let e = self.pos_time.size()[1];
        let pos = self
            .pos_time
            .unsqueeze(1)
            .expand([self.n_time, self.n_space, e], false);
        let pos = match &self.pos_space {
            Some(space) => pos + space.unsqueeze(0),
            None => pos,
        };
        pos.reshape([self.n_time * self.n_space, e])
    }

    /// tokens: (B, L, E) → (B, 1 + L, E), index 0 = CLS.
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let b = tokens.size()[0];
        let x = tokens + self.positions().unsqueeze(0);
        let cls = self.cls.expand([b, 1, -1], false);
        let mut x = Tensor::cat(&[cls, x], 1);
        for block in &self.blocks {
            x = block.forward(&x);
        }
        self.norm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn block_and_token_transformer_shapes() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let t = TokenTransformer::new(&(vs.root() / "enc"), 8, 2, 2, 2, (3, 4));
        let y = t.forward(&Tensor::randn([2, 12, 8], (Kind::Float, Device::Cpu)));
        assert_eq!(y.size(), vec![2, 13, 8]);
        let names = vs.variables();
        assert!(names.contains_key("enc.cls"));
        assert!(names.contains_key("enc.pos_space"));
        assert!(names.contains_key("enc.blocks.1.attn.qkv.weight"));
        assert!(names.contains_key("enc.norm.bias"));

        let c = CrossBlock::new(&(vs.root() / "x"), 8, 2);
        let q = Tensor::randn([2, 1, 8], (Kind::Float, Device::Cpu));
        let ctx = Tensor::randn([2, 5, 8], (Kind::Float, Device::Cpu));
        assert_eq!(c.forward(&q, &ctx).size(), vec![2, 1, 8]);
    }

    #[test]
    fn attention_is_per_sample() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let block = Block::new(&vs.root(), 8, 2, 2);
        let x = Tensor::randn([3, 5, 8], (Kind::Float, Device::Cpu));
        let y = block.forward(&x);
        let x2 = x.copy();
        let _ = x2.get(2).fill_(7.0);
        let y2 = block.forward(&x2);
        assert!(y
            .narrow(0, 0, 2)
            .allclose(&y2.narrow(0, 0, 2), 1e-6, 1e-6, false));
    }
}
