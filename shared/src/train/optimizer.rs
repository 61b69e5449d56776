//! AdamW written over tch tensors, so that its moments can be saved and restored exactly (libtorch's own
//! optimizer state is not reachable from tch). Decoupled weight decay as in Loshchilov & Hutter; bias
//! correction on. Parameters are visited in sorted-name order, so the update is deterministic.

use std::collections::HashMap;

use tch::nn::VarStore;
use tch::{Kind, Tensor};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

struct Slot {
    name: String,
    param: Tensor,
    m: Tensor,
    v: Tensor,
}

pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Optimizer steps taken (drives bias correction).
    pub steps: i64,
}

impl AdamW {
    /// Tracks every trainable variable of `vs` (buffers created without gradients are skipped).
    pub fn new(vs: &VarStore, cfg: AdamWConfig) -> Self {
        let mut vars: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .filter(|(_, t)| t.requires_grad())
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = vars
            .into_iter()
            .map(|(name, param)| Slot {
                m: param.zeros_like().detach(),
                v: param.zeros_like().detach(),
                name,
                param,
            })
            .collect();
        AdamW {
            cfg,
            slots,
            steps: 0,
        }
    }

    pub fn zero_grad(&mut self) {
        for s in &mut self.slots {
            let mut g = s.param.grad();
            if g.defined() {
                let _ = g.detach_().zero_();
            }
        }
    }

    /// Scales gradients so that their global L2 norm is at most `max_norm`; returns the norm before.
    pub fn clip_grad_norm(&mut self, max_norm: f64) -> f64 {
        let grads: Vec<Tensor> = self
            .slots
            .iter()
            .map(|s| s.param.grad())
            .filter(|g| g.defined())
            .collect();
        if grads.is_empty() {
            return 0.0;
        }
        let total = tch::no_grad(|| {
            grads
                .iter()
                .map(|g| g.to_kind(Kind::Double).square().sum(Kind::Double))
                .fold(Tensor::from(0f64), |acc, x| {
                    acc + x.to_device(tch::Device::Cpu)
                })
                .sqrt()
                .double_value(&[])
        });
        if max_norm > 0.0 && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            tch::no_grad(|| {
                for mut g in grads {
                    let _ = g.g_mul_scalar_(scale);
                }
            });
        }
        total
    }

    /// One AdamW update with learning rate `lr`.
    pub fn step(&mut self, lr: f64) {
        self.steps += 1;
        let AdamWConfig {
            beta1,
            beta2,
            eps,
            weight_decay,
        } = self.cfg;
        let bias1 = 1.0 - beta1.powi(self.steps as i32);
        let bias2 = 1.0 - beta2.powi(self.steps as i32);
        tch::no_grad(|| {
            for s in &mut self.slots {
                let g = s.param.grad();
                if !g.defined() {
                    continue;
                }
                let _ = s.m.g_mul_scalar_(beta1).g_add_(&(&g * (1.0 - beta1)));
                let _ = s.v.g_mul_scalar_(beta2).g_add_(&(&g * &g * (1.0 - beta2)));
                if weight_decay > 0.0 {
                    let _ = s.param.g_mul_scalar_(1.0 - lr * weight_decay);
                }
                let denom = (&s.v / bias2).sqrt() + eps;
                let update = (&s.m / bias1) / denom * lr;
                let _ = s.param.g_sub_(&update);
            }
        });
    }

    /// Moments as named tensors (`m.<param>`, `v.<param>`) plus the step counter, for a checkpoint.
    pub fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len() + 1);
        for s in &self.slots {
            out.push((format!("m.{}", s.name), s.m.shallow_clone()));
            out.push((format!("v.{}", s.name), s.v.shallow_clone()));
        }
        out.push(("steps".to_string(), Tensor::from_slice(&[self.steps])));
        out
    }

    /// Restores moments and step counter saved by [`AdamW::state`]; every parameter must be present.
    pub fn load_state(&mut self, tensors: Vec<(String, Tensor)>) -> Result<()> {
        let mut map: HashMap<String, Tensor> = tensors.into_iter().collect();
        let steps = map
            .remove("steps")
            .ok_or_else(|| Error::Run("optimizer state has no `steps`".into()))?;
        let steps = steps
            .f_int64_value(&[0])
            .map_err(|e| Error::Run(format!("optimizer state `steps` is unreadable: {e}")))?;
        // every tensor is checked before any is copied, so a bad file leaves the optimizer as it was
        let mut restores = Vec::with_capacity(2 * self.slots.len());
        for (i, s) in self.slots.iter().enumerate() {
            for (moment, target) in [(0, &s.m), (1, &s.v)] {
                let key = format!("{}.{}", ["m", "v"][moment], s.name);
                let saved = map.remove(&key).ok_or_else(|| {
                    Error::Run(format!(
                        "optimizer state lacks `{key}` (was the model changed?)"
                    ))
                })?;
                if saved.size() != target.size() {
                    return Err(Error::Run(format!(
                        "optimizer state `{key}` has shape {:?} but the model's parameter has {:?} (was \
                         the model changed?)",
                        saved.size(),
                        target.size()
                    )));
                }
                restores.push((i, moment, saved));
            }
        }
        for (i, moment, saved) in restores {
            let s = &mut self.slots[i];
            let target = if moment == 0 { &mut s.m } else { &mut s.v };
            tch::no_grad(|| target.f_copy_(&saved))
                .map_err(|e| Error::Run(format!("restoring the optimizer state: {e}")))?;
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn, Device};

    fn cfg() -> AdamWConfig {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.05,
        }
    }

    /// One step by hand: p=1, g=2, lr=0.1 → m̂ = 2, v̂ = 4, p = 1·(1 − 0.1·0.05) − 0.1·2/(2+eps) = 0.895.
    #[test]
    fn first_step_matches_hand_computation() {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root().var("p", &[1], nn::Init::Const(1.0));
        let mut opt = AdamW::new(&vs, cfg());
        let loss = (&p * 2.0).sum(Kind::Float);
        loss.backward();
        opt.step(0.1);
        let got = p.double_value(&[0]);
        assert!((got - 0.895).abs() < 1e-6, "{got}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let vs = nn::VarStore::new(Device::Cpu);
        let a = vs.root().var("a", &[2], nn::Init::Const(1.0));
        let mut opt = AdamW::new(&vs, cfg());
        (&a * Tensor::from_slice(&[3.0f32, 4.0]))
            .sum(Kind::Float)
            .backward();
        let norm = opt.clip_grad_norm(1.0);
        assert!((norm - 5.0).abs() < 1e-6);
        let g = a.grad();
        let clipped = (g.square().sum(Kind::Double)).sqrt().double_value(&[]);
        assert!((clipped - 1.0).abs() < 1e-5, "{clipped}");
    }

    #[test]
    fn state_round_trips_exactly() {
        let vs = nn::VarStore::new(Device::Cpu);
        let p = vs.root().var("p", &[3], nn::Init::Const(0.5));
        let mut opt = AdamW::new(&vs, cfg());
        for _ in 0..3 {
            opt.zero_grad();
            (&p * &p).sum(Kind::Float).backward();
            opt.step(0.01);
        }
        let state = opt.state();
        let mut other = AdamW::new(&vs, cfg());
        other.load_state(state).unwrap();
        assert_eq!(other.steps, 3);
        for (a, b) in opt.slots.iter().zip(&other.slots) {
            assert!(a.m.equal(&b.m) && a.v.equal(&b.v));
        }
        let err = other.load_state(vec![]).unwrap_err();
        assert!(err.to_string().contains("steps"));
    }

    /// Before, a state saved for other parameter shapes panicked inside the copy; now it is an error that
    /// names the tensor, and the optimizer is left as it was.
    #[test]
    fn a_state_for_other_shapes_is_an_error_not_a_panic() {
        let make = |n: i64| {
            let vs = nn::VarStore::new(Device::Cpu);
            let _w = vs.root().var("w", &[n], nn::Init::Const(1.0));
            let opt = AdamW::new(&vs, cfg());
            (vs, opt)
        };
        let (_vs_big, big) = make(32);
        let (_vs, mut small) = make(16);
        small.steps = 3;
        let err = small.load_state(big.state()).unwrap_err().to_string();
        assert!(
            err.contains("has shape [32]") && err.contains("[16]"),
            "{err}"
        );
        assert_eq!(small.steps, 3, "nothing was restored");
    }
}
