//! Patch embeddings of the two branches and the inverse "unpatchify" used by the decoders.
//!
//! TS: a patch is p days × one stock; tokens are time-major, index = t_patch · N + stock, L = (W / p) · N;
//! the embedding is Linear(p · D → E). CS: a per stock-day stem Linear(D → S), then one token per day from
//! the N · S stem values, Linear(N · S → E); L = W.

use tch::nn::{self, Module};
use tch::Tensor;

use super::transformer::xavier_linear;

/// Window geometry shared by both patchings: W days, N stocks, D features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub window: i64,
    pub stocks: i64,
    pub features: i64,
}

#[derive(Debug)]
pub struct TsPatch {
    proj: nn::Linear,
    geo: Geometry,
    patch_days: i64,
}

impl TsPatch {
    pub(crate) fn new(p: &nn::Path, geo: Geometry, patch_days: i64, dim: i64) -> Self {
        TsPatch {
            proj: xavier_linear(&(p / "proj"), patch_days * geo.features, dim),
            geo,
            patch_days,
        }
    }

    /// Token grid (n_time, n_space) = (W / p, N).
    pub fn grid(&self) -> (i64, i64) {
        (self.geo.window / self.patch_days, self.geo.stocks)
    }

    /// Values per token: p · D.
    pub fn patch_size(&self) -> i64 {
        self.patch_days * self.geo.features
    }

    /// x: (B, W, N, D) → (B, (W / p) · N, p · D), time-major.
    pub fn patchify(&self, x: &Tensor) -> Tensor {
        let Geometry {
            window: w,
            stocks: n,
            features: d,
        } = self.geo;
        let (b, p) = (x.size()[0], self.patch_days);
        x.reshape([b, w / p, p, n, d])
            .permute([0, 1, 3, 2, 4])
            .reshape([b, (w / p) * n, p * d])
    }

    /// Inverse of `patchify`: (B, (W / p) · N, p · D) → (B, W, N, D).
    pub fn unpatchify(&self, tokens: &Tensor) -> Tensor {
        let Geometry {
            window: w,
            stocks: n,
            features: d,
        } = self.geo;
        let (b, p) = (tokens.size()[0], self.patch_days);
        tokens
            .reshape([b, w / p, n, p, d])
            .permute([0, 1, 3, 2, 4])
            .reshape([b, w, n, d])
    }

    /// x: (B, W, N, D) → tokens (B, (W / p) · N, E).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        self.proj.forward(&self.patchify(x))
    }
}

#[derive(Debug)]
pub struct CsPatch {
    stem: nn::Linear,
    proj: nn::Linear,
    geo: Geometry,
}

impl CsPatch {
    pub(crate) fn new(p: &nn::Path, geo: Geometry, stem_dim: i64, dim: i64) -> Self {
        CsPatch {
            stem: xavier_linear(&(p / "stem"), geo.features, stem_dim),
            proj: xavier_linear(&(p / "proj"), geo.stocks * stem_dim, dim),
            geo,
        }
    }

    /// Token grid (n_time, n_space) = (W, 1).
    pub fn grid(&self) -> (i64, i64) {
        (self.geo.window, 1)
    }

    /// Values per token: N · D.
    pub fn patch_size(&self) -> i64 {
        self.geo.stocks * self.geo.features
    }

    /// Inverse patching: (B, W, N · D) → (B, W, N, D).
    pub fn unpatchify(&self, tokens: &Tensor) -> Tensor {
        let b = tokens.size()[0];
        tokens.reshape([b, self.geo.window, self.geo.stocks, self.geo.features])
    }

    /// x: (B, W, N, D) → tokens (B, W, E).
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let b = x.size()[0];
        let stem = self.stem.forward(x);
        self.proj.forward(&stem.reshape([b, self.geo.window, -1]))
    }

    /// Each stock's additive share of the last day's token (B, N, E): the token is Σ_i W_i · stem(x_i) + b,
    /// and stock i's share is W_i · stem(x_i), its own position in the cross-sectional embedding space.
    pub fn stock_shares(&self, x: &Tensor) -> Tensor {
        let stem = self.stem.forward(&x.select(1, self.geo.window - 1));
        let s = stem.size();
        let weight = self.proj.ws.view([-1, s[1], s[2]]);
        Tensor::einsum("bns,ens->bne", &[&stem, &weight], None::<i64>)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    fn geo() -> Geometry {
        Geometry {
            window: 8,
            stocks: 3,
            features: 5,
        }
    }

    #[test]
    fn ts_patch_layout_is_time_major_and_invertible() {
        let vs = nn::VarStore::new(Device::Cpu);
        let ts = TsPatch::new(&vs.root(), geo(), 4, 6);
        let x = Tensor::randn([2, 8, 3, 5], (Kind::Float, Device::Cpu));
        let tokens = ts.patchify(&x);
        assert_eq!(tokens.size(), vec![2, 6, 20]);
        // token 1·N + 2 = patch of days 4..8 of stock 2; its values are day-major then feature.
        let expect = x.narrow(1, 4, 4).select(2, 2).reshape([2, 20]);
        assert!(tokens.select(1, 3 + 2).equal(&expect));
        assert!(ts.unpatchify(&tokens).equal(&x));
        assert_eq!(ts.forward(&x).size(), vec![2, 6, 6]);
    }

    #[test]
    fn cs_patch_shapes() {
        let vs = nn::VarStore::new(Device::Cpu);
        let cs = CsPatch::new(&vs.root(), geo(), 2, 6);
        let x = Tensor::randn([2, 8, 3, 5], (Kind::Float, Device::Cpu));
        assert_eq!(cs.forward(&x).size(), vec![2, 8, 6]);
        let flat = x.reshape([2, 8, 15]);
        assert!(cs.unpatchify(&flat).equal(&x));
        assert_eq!(cs.patch_size(), 15);
    }
}
