//! What the trading task needs of a reinforcement-learning algorithm ([`Learner`]), the algorithms
//! ([`Algorithm`]: PPO, double DQN, discrete SAC, and the untrained signal rule) and the small pieces they share: MLPs, Polyak averaging,
//! parameter snapshots for model selection.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

use super::vec_env::VecEnv;
use crate::error::Result;

/// The trading algorithm (`trade.algorithms`, `storm trade --algorithm`).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Algorithm {
    /// Proximal policy optimisation (on-policy, the paper's).
    #[default]
    Ppo,
    /// Double DQN with a replay buffer and a target network.
    Dqn,
    /// Soft actor-critic for discrete actions (twin critics, learned temperature).
    Sac,
    /// Not learned: long when the model's predicted next-day return is positive, flat otherwise (Table 3's
    /// signal strategies; states are the run's predictions, see [`super::signal`]).
    Signal,
}

impl Algorithm {
    /// The reinforcement-learning algorithms (every one but the signal rule).
    pub const LEARNED: [Algorithm; 3] = [Algorithm::Ppo, Algorithm::Dqn, Algorithm::Sac];

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Ppo => "ppo",
            Algorithm::Dqn => "dqn",
            Algorithm::Sac => "sac",
            Algorithm::Signal => "signal",
        }
    }

    /// Whether the algorithm trains a policy (all but the signal rule).
    pub fn is_learned(self) -> bool {
        self != Algorithm::Signal
    }

    /// Display name in tables.
    pub fn label(self) -> &'static str {
        match self {
            Algorithm::Ppo => "PPO",
            Algorithm::Dqn => "DQN",
            Algorithm::Sac => "SAC",
            Algorithm::Signal => "Signal",
        }
    }
}

/// What one training round did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundStats {
    /// Environment steps taken (all environments).
    pub env_steps: usize,
    /// Mean reward per environment step.
    pub mean_reward: f64,
}

/// A learner the trading task can train round by round and select on the valid days.
pub trait Learner {
    /// One training round on `envs` from the observations `obs` (E × obs_dim, advanced in place): act,
    /// learn.
    fn train_round(&mut self, envs: &mut VecEnv, obs: &mut Vec<f32>) -> Result<RoundStats>;
    /// The action the trained policy takes in state `obs` (no exploration).
    fn greedy_action(&self, obs: &[f32]) -> Result<usize>;
    /// The parameters the greedy policy depends on (saved and restored by model selection).
    fn policy_vars(&self) -> &nn::VarStore;
}

/// Runs `f` with one libtorch intra-op thread, then restores the previous count. The trading networks are
/// MLPs of a few thousand weights on minibatches of 64: splitting such ops across threads costs more in
/// hand-offs than it saves (`storm bench rollout`: PPO updates ran 9× faster on one thread than on two
/// busy cores). One thread also makes a policy's numbers independent of the host's core count.
pub fn single_threaded<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(i32);
    impl Drop for Restore {
        fn drop(&mut self) {
            tch::set_num_threads(self.0);
        }
    }
    let _restore = Restore(tch::get_num_threads());
    tch::set_num_threads(1);
    f()
}

/// Deep copies of a store's parameters, sorted by name.
pub fn snapshot(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
    let mut vars: Vec<(String, Tensor)> = vs
        .variables()
        .into_iter()
        .map(|(k, v)| (k, v.detach().copy()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// Writes a [`snapshot`] back into the store it was taken from.
pub fn restore(vs: &nn::VarStore, saved: &[(String, Tensor)]) {
    let mut vars = vs.variables();
    tch::no_grad(|| {
        for (name, value) in saved {
            if let Some(v) = vars.get_mut(name) {
                v.copy_(value);
            }
        }
    });
}

/// target ← τ · online + (1 − τ) · target for every parameter of the same name (τ = 1 copies).
pub fn polyak_update(target: &nn::VarStore, online: &nn::VarStore, tau: f64) {
    let online = online.variables();
    let mut target = target.variables();
    tch::no_grad(|| {
        for (name, t) in target.iter_mut() {
            if let Some(o) = online.get(name) {
                let mixed = &*t * (1.0 - tau) + o * tau;
                t.copy_(&mixed);
            }
        }
    });
}

/// Two ReLU hidden layers of width `hidden`.
pub fn relu_mlp(p: &nn::Path, input: i64, hidden: i64, output: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(p / "l0", input, hidden, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "l1", hidden, hidden, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(p / "out", hidden, output, Default::default()))
}

/// The index of the largest entry of a (1, A) row.
pub fn argmax_row(row: &Tensor) -> usize {
    row.argmax(-1, false).int64_value(&[0]) as usize
}

/// (B, obs_dim) observations as a tensor.
pub fn obs_tensor(obs: &[f32], obs_dim: usize, device: tch::Device) -> Tensor {
    Tensor::from_slice(obs)
        .view([-1, obs_dim as i64])
        .to_device(device)
}

/// Runs `module` without gradients.
pub fn eval_no_grad(module: &impl Module, x: &Tensor) -> Tensor {
    tch::no_grad(|| module.forward(x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn polyak_mixes_by_name_and_snapshots_restore() {
        let a = nn::VarStore::new(Device::Cpu);
        let b = nn::VarStore::new(Device::Cpu);
        let wa = a.root().zeros("w", &[2]);
        let wb = b.root().ones("w", &[2]);
        polyak_update(&a, &b, 0.25);
        assert_eq!(Vec::<f32>::try_from(&wa).unwrap(), [0.25, 0.25]);
        let saved = snapshot(&a);
        polyak_update(&a, &b, 1.0);
        assert_eq!(wa.sum(Kind::Float).double_value(&[]), 2.0);
        restore(&a, &saved);
        assert_eq!(Vec::<f32>::try_from(&wa).unwrap(), [0.25, 0.25]);
        drop(wb);
    }
}
