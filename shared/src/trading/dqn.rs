//! Double DQN (van Hasselt et al., 2016) for the trading environment: an online Q-network acting ε-greedily
//! on a [`VecEnv`], a replay buffer, and a target network copied from the online one every
//! `target_update` gradient steps. The target of a transition (s, a, r, s′) is
//! r · reward_scale + γ · [s′ not terminal] · Q_target(s′, argmax_a′ Q_online(s′, a′)) and the loss is
//! the Huber loss of Q_online(s, a) against it. ε decays linearly from `epsilon_start` to `epsilon_end`
//! over the first `exploration_fraction` of the rounds. Exploration and replay sampling draw from the
//! learner's own seeded generator; initial weights from libtorch's (seed it with `tch::manual_seed`).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Reduction, Tensor};

use super::env::Action;
use super::learner::{argmax_row, obs_tensor, polyak_update, relu_mlp, Learner, RoundStats};
use super::replay::ReplayBuffer;
use super::vec_env::VecEnv;
use crate::error::{Error, Result};

/// DQN hyper-parameters (`[trade.dqn]`; every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DqnConfig {
    /// Environment steps per environment per round.
    pub n_steps: usize,
    /// Transitions kept (the oldest are overwritten).
    pub buffer_size: usize,
    pub batch_size: usize,
    /// Transitions collected before the first gradient step.
    pub learning_starts: usize,
    /// Gradient steps per round.
    pub gradient_steps: usize,
    /// Gradient steps between copies of the online network into the target network.
    pub target_update: usize,
    pub gamma: f64,
    pub learning_rate: f64,
    pub epsilon_start: f64,
    pub epsilon_end: f64,
    /// Share of the rounds over which ε decays.
    pub exploration_fraction: f64,
    /// Rewards (daily returns) are multiplied by this in the targets: 100 puts them in percent, the scale
    /// at which the Huber loss and the default learning rate work.
    pub reward_scale: f64,
    pub max_grad_norm: f64,
    /// Width of the Q-network's two hidden layers.
    pub hidden: i64,
}

impl Default for DqnConfig {
    fn default() -> Self {
        DqnConfig {
            n_steps: 16,
            buffer_size: 50_000,
            batch_size: 64,
            learning_starts: 1_000,
            gradient_steps: 16,
            target_update: 250,
            gamma: 0.99,
            learning_rate: 5e-4,
            epsilon_start: 1.0,
            epsilon_end: 0.05,
            exploration_fraction: 0.3,
            reward_scale: 100.0,
            max_grad_norm: 10.0,
            hidden: 64,
        }
    }
}

impl DqnConfig {
    /// Checks every field; a message names `origin` and the field as `<prefix><field>`.
    pub fn validate_as(&self, origin: &str, prefix: &str) -> Result<()> {
        let bad =
            |field: &str, why: String| Err(Error::config(origin, format!("{prefix}{field}"), why));
        for (field, v) in [
            ("n_steps", self.n_steps),
            ("buffer_size", self.buffer_size),
            ("batch_size", self.batch_size),
            ("gradient_steps", self.gradient_steps),
            ("target_update", self.target_update),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        for (field, v) in [
            ("gamma", self.gamma),
            ("epsilon_start", self.epsilon_start),
            ("epsilon_end", self.epsilon_end),
            ("exploration_fraction", self.exploration_fraction),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("{v} must be in [0, 1]"));
            }
        }
        for (field, v) in [
            ("learning_rate", self.learning_rate),
            ("reward_scale", self.reward_scale),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, format!("{v} must be finite and > 0"));
            }
        }
        if self.hidden <= 0 {
            return bad("hidden", format!("{} must be at least 1", self.hidden));
        }
        Ok(())
    }
}

/// Double-DQN targets: r + γ · not_terminal · Q_target(s′, argmax_a Q_online(s′, a)), all (B) but the
/// Q-values (B, A).
pub fn double_dqn_targets(
    rewards: &Tensor,
    not_terminal: &Tensor,
    q_next_online: &Tensor,
    q_next_target: &Tensor,
    gamma: f64,
) -> Tensor {
    let best = q_next_online.argmax(-1, true);
    let next = q_next_target.gather(-1, &best, false).squeeze_dim(-1);
    rewards + next * not_terminal * gamma
}

pub struct Dqn {
    online_vs: nn::VarStore,
    online: nn::Sequential,
    target_vs: nn::VarStore,
    target: nn::Sequential,
    opt: nn::Optimizer,
    buffer: ReplayBuffer,
    rng: ChaCha8Rng,
    config: DqnConfig,
    obs_dim: usize,
    /// Rounds planned in all (for the ε schedule) and done so far.
    total_rounds: usize,
    rounds: usize,
    gradient_steps: usize,
}

impl Dqn {
    pub fn new(
        obs_dim: usize,
        config: DqnConfig,
        total_rounds: usize,
        seed: u64,
        device: Device,
    ) -> Result<Self> {
        config.validate_as("trade", "dqn.")?;
        let n_actions = Action::COUNT as i64;
        let online_vs = nn::VarStore::new(device);
        let online = relu_mlp(
            &(online_vs.root() / "q"),
            obs_dim as i64,
            config.hidden,
            n_actions,
        );
        let target_vs = nn::VarStore::new(device);
        let target = relu_mlp(
            &(target_vs.root() / "q"),
            obs_dim as i64,
            config.hidden,
            n_actions,
        );
        polyak_update(&target_vs, &online_vs, 1.0);
        let opt = nn::Adam::default().build(&online_vs, config.learning_rate)?;
        Ok(Dqn {
            online_vs,
            online,
            target_vs,
            target,
            opt,
            buffer: ReplayBuffer::new(config.buffer_size, obs_dim, seed),
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x5eed_d09e),
            config,
            obs_dim,
            total_rounds: total_rounds.max(1),
            rounds: 0,
            gradient_steps: 0,
        })
    }

    /// ε of the current round.
    pub fn epsilon(&self) -> f64 {
        let c = &self.config;
        let span = c.exploration_fraction * self.total_rounds as f64;
        let frac = if span > 0.0 {
            (self.rounds as f64 / span).min(1.0)
        } else {
            1.0
        };
        c.epsilon_start + frac * (c.epsilon_end - c.epsilon_start)
    }

    fn learn(&mut self) {
        let c = self.config;
        let b = self.buffer.sample(c.batch_size, self.online_vs.device());
        let targets = tch::no_grad(|| {
            double_dqn_targets(
                &(&b.rewards * c.reward_scale),
                &b.not_terminal,
                &self.online.forward(&b.next_obs),
                &self.target.forward(&b.next_obs),
                c.gamma,
            )
        });
        let q = self
            .online
            .forward(&b.obs)
            .gather(-1, &b.actions.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let loss = q.smooth_l1_loss(&targets, Reduction::Mean, 1.0);
        self.opt.backward_step_clip_norm(&loss, c.max_grad_norm);
        self.gradient_steps += 1;
        if self.gradient_steps.is_multiple_of(c.target_update) {
            polyak_update(&self.target_vs, &self.online_vs, 1.0);
        }
    }
}

impl Learner for Dqn {
    fn train_round(&mut self, envs: &mut VecEnv, obs: &mut Vec<f32>) -> Result<RoundStats> {
        let eps = self.epsilon();
        let (online, device, obs_dim) = (&self.online, self.online_vs.device(), self.obs_dim);
        let rng = &mut self.rng;
        // ε-greedy on the online network's values
        let act = |obs: &[f32]| {
            let q = tch::no_grad(|| online.forward(&obs_tensor(obs, obs_dim, device)));
            let greedy = Vec::<i64>::try_from(q.argmax(-1, false))?;
            Ok(greedy
                .into_iter()
                .map(|g| {
                    if rng.random::<f64>() < eps {
                        rng.random_range(0..Action::COUNT as i64)
                    } else {
                        g
                    }
                })
                .collect())
        };
        let stats = self.buffer.collect(envs, obs, self.config.n_steps, act)?;
        if self
            .buffer
            .ready(self.config.learning_starts, self.config.batch_size)
        {
            for _ in 0..self.config.gradient_steps {
                self.learn();
            }
        }
        self.rounds += 1;
        Ok(stats)
    }

    fn greedy_action(&self, obs: &[f32]) -> Result<usize> {
        let q = tch::no_grad(|| {
            self.online
                .forward(&obs_tensor(obs, self.obs_dim, self.online_vs.device()))
        });
        Ok(argmax_row(&q.to_kind(Kind::Float)))
    }

    fn policy_vars(&self) -> &nn::VarStore {
        &self.online_vs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn double_dqn_target_by_hand() {
        // two transitions, γ = 0.5:
        //   1: online picks action 2 at s′ (3 > 1 > 0); target's value of action 2 is 10 → 1 + 0.5·10 = 6
        //   2: terminal → only its reward, 2
        let rewards = Tensor::from_slice(&[1.0f32, 2.0]);
        let not_terminal = Tensor::from_slice(&[1.0f32, 0.0]);
        let online = Tensor::from_slice(&[0.0f32, 1.0, 3.0, 5.0, 0.0, 0.0]).view([2, 3]);
        let target = Tensor::from_slice(&[7.0f32, 8.0, 10.0, 4.0, 4.0, 4.0]).view([2, 3]);
        let y = double_dqn_targets(&rewards, &not_terminal, &online, &target, 0.5);
        assert_eq!(Vec::<f32>::try_from(y).unwrap(), [6.0, 2.0]);
        // plain DQN would have taken the target's own maximum (action 2 too here); make them differ:
        let target = Tensor::from_slice(&[9.0f32, 8.0, 2.0, 4.0, 4.0, 4.0]).view([2, 3]);
        let y = double_dqn_targets(&rewards, &not_terminal, &online, &target, 0.5);
        assert_eq!(Vec::<f32>::try_from(y).unwrap(), [2.0, 2.0]);
    }

    #[test]
    fn epsilon_decays_linearly_then_stays() {
        let cfg = DqnConfig {
            exploration_fraction: 0.5,
            ..DqnConfig::default()
        };
        let mut d = Dqn::new(2, cfg, 10, 0, Device::Cpu).unwrap();
        let mut eps = Vec::new();
        for r in 0..8 {
            d.rounds = r;
            eps.push((d.epsilon() * 1000.0).round() / 1000.0);
        }
        assert_eq!(eps, [1.0, 0.81, 0.62, 0.43, 0.24, 0.05, 0.05, 0.05]);
        let bad = DqnConfig {
            gamma: 1.5,
            ..DqnConfig::default()
        };
        let err = Dqn::new(2, bad, 10, 0, Device::Cpu).err().unwrap();
        assert!(err.to_string().contains("dqn.gamma"), "{err}");
    }
}
