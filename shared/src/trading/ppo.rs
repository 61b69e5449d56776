//! PPO for the trading environment: an actor-critic MLP ([`ActorCritic`]), rollouts of `n_steps` on a
//! [`VecEnv`] ([`Rollout`]), generalised advantage estimation ([`gae`]) and the clipped-objective update with
//! value loss, entropy bonus, advantage normalisation and gradient-norm clipping ([`Ppo`]). Randomness
//! (initial weights, action sampling, minibatch order) comes from libtorch's generator: seed it with
//! `tch::manual_seed` for a reproducible run on CPU.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::env::{Action, TradingEnv};
use super::learner::{Learner, RoundStats};
use super::vec_env::{StepEnd, VecEnv};
use crate::error::{Error, Result};
use crate::portfolio::WealthSeries;

/// PPO hyper-parameters (`[trade.ppo]` in sweep and paper configs; every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PpoConfig {
    /// Steps per environment per rollout.
    pub n_steps: usize,
    /// Passes over each rollout.
    pub epochs: usize,
    /// Samples per gradient step.
    pub minibatch_size: usize,
    pub gamma: f64,
    /// GAE λ.
    pub lambda: f64,
    /// Clip range ε of the probability ratio.
    pub clip: f64,
    pub value_coef: f64,
    pub entropy_coef: f64,
    /// Maximum global gradient norm.
    pub max_grad_norm: f64,
    pub learning_rate: f64,
    /// Width of the two hidden layers of the actor and of the critic.
    pub hidden: i64,
}

impl Default for PpoConfig {
    fn default() -> Self {
        PpoConfig {
            n_steps: 128,
            epochs: 4,
            minibatch_size: 64,
            gamma: 0.99,
            lambda: 0.95,
            clip: 0.2,
            value_coef: 0.5,
            entropy_coef: 0.01,
            max_grad_norm: 0.5,
            learning_rate: 3e-4,
            hidden: 64,
        }
    }
}

impl PpoConfig {
    pub fn validate(&self) -> Result<()> {
        self.validate_as("trade", "ppo.")
    }

    /// Checks every field; a message names `origin` and the field as `<prefix><field>`.
    pub fn validate_as(&self, origin: &str, prefix: &str) -> Result<()> {
        let bad =
            |field: &str, why: String| Err(Error::config(origin, format!("{prefix}{field}"), why));
        for (field, v) in [
            ("n_steps", self.n_steps),
            ("epochs", self.epochs),
            ("minibatch_size", self.minibatch_size),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        for (field, v) in [("gamma", self.gamma), ("lambda", self.lambda)] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("{v} must be in [0, 1]"));
            }
        }
        for (field, v) in [
            ("clip", self.clip),
            ("learning_rate", self.learning_rate),
            ("max_grad_norm", self.max_grad_norm),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(field, format!("{v} must be finite and > 0"));
            }
        }
        for (field, v) in [
            ("value_coef", self.value_coef),
            ("entropy_coef", self.entropy_coef),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return bad(field, format!("{v} must be finite and ≥ 0"));
            }
        }
        if self.hidden <= 0 {
            return bad("hidden", format!("{} must be at least 1", self.hidden));
        }
        Ok(())
    }
}

/// Separate actor (action logits) and critic (state value) MLPs, two tanh hidden layers each.
#[derive(Debug)]
pub struct ActorCritic {
    actor: nn::Sequential,
    critic: nn::Sequential,
}

impl ActorCritic {
    pub fn new(p: &nn::Path, obs_dim: i64, hidden: i64, n_actions: i64) -> Self {
        ActorCritic {
            actor: mlp(&(p / "actor"), obs_dim, hidden, n_actions),
            critic: mlp(&(p / "critic"), obs_dim, hidden, 1),
        }
    }

    /// (B, obs_dim) → logits (B, n_actions) and values (B).
    pub fn forward(&self, obs: &Tensor) -> (Tensor, Tensor) {
        (
            self.actor.forward(obs),
            self.critic.forward(obs).squeeze_dim(-1),
        )
    }
}

fn mlp(p: &nn::Path, input: i64, hidden: i64, output: i64) -> nn::Sequential {
    nn::seq()
        .add(nn::linear(p / "l0", input, hidden, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(p / "l1", hidden, hidden, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(p / "out", hidden, output, Default::default()))
}

/// How a rollout step relates to the step after it, for [`gae`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Boundary {
    /// The episode goes on: bootstrap from the next step's value and carry its advantage back.
    Continues,
    /// The series ended: no value follows.
    Terminal,
    /// The episode was cut at its window's end: bootstrap from the critic's value of the state it ended
    /// on, but carry nothing back from the next (new) episode.
    Truncated { next_value: f32 },
}

/// Generalised advantage estimates and returns (advantage + value) of a time-major rollout
/// (`rewards[t * n_envs + e]`); `boundaries[t * n_envs + e]` says how step t of environment e ends and
/// `last_values` are the critic's values of the observations after the last step.
/// Errors when the lengths do not describe whole steps of `last_values.len()` environments.
pub fn gae(
    rewards: &[f32],
    values: &[f32],
    boundaries: &[Boundary],
    last_values: &[f32],
    gamma: f32,
    lambda: f32,
) -> Result<(Vec<f32>, Vec<f32>)> {
    let n_envs = last_values.len();
    let n = rewards.len();
    if n_envs == 0 || values.len() != n || boundaries.len() != n || !n.is_multiple_of(n_envs) {
        return Err(Error::Trading(format!(
            "GAE needs whole steps of {n_envs} environments: {n} rewards, {} values, {} boundaries",
            values.len(),
            boundaries.len()
        )));
    }
    let mut advantages = vec![0.0f32; n];
    let mut next_adv = vec![0.0f32; n_envs];
    let mut next_value = last_values.to_vec();
    for i in (0..n).rev() {
        let e = i % n_envs;
        let (bootstrap, carry) = match boundaries[i] {
            Boundary::Continues => (next_value[e], 1.0),
            Boundary::Terminal => (0.0, 0.0),
            Boundary::Truncated { next_value } => (next_value, 0.0),
        };
        let delta = rewards[i] + gamma * bootstrap - values[i];
        next_adv[e] = delta + gamma * lambda * carry * next_adv[e];
        advantages[i] = next_adv[e];
        next_value[e] = values[i];
    }
    let returns = advantages.iter().zip(values).map(|(a, v)| a + v).collect();
    Ok((advantages, returns))
}

/// One rollout, time-major (step t of environment e at index t × E + e).
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// N × obs_dim.
    pub obs: Vec<f32>,
    pub actions: Vec<i64>,
    pub log_probs: Vec<f32>,
    pub values: Vec<f32>,
    pub rewards: Vec<f32>,
    pub boundaries: Vec<Boundary>,
    /// Critic values of the observations after the last step, one per environment.
    pub last_values: Vec<f32>,
}

/// Losses of one update, averaged over its minibatches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateStats {
    pub policy_loss: f64,
    pub value_loss: f64,
    pub entropy: f64,
    /// Mean reward per step in the rollout.
    pub mean_reward: f64,
}

/// A PPO learner: the model, its optimiser and the hyper-parameters.
pub struct Ppo {
    vs: nn::VarStore,
    model: ActorCritic,
    opt: nn::Optimizer,
    config: PpoConfig,
    obs_dim: usize,
}

impl Ppo {
    pub fn new(obs_dim: usize, config: PpoConfig, device: Device) -> Result<Self> {
        config.validate()?;
        let vs = nn::VarStore::new(device);
        let model = ActorCritic::new(
            &vs.root(),
            obs_dim as i64,
            config.hidden,
            Action::COUNT as i64,
        );
        let opt = nn::Adam::default().build(&vs, config.learning_rate)?;
        Ok(Ppo {
            vs,
            model,
            opt,
            config,
            obs_dim,
        })
    }

    pub fn var_store(&self) -> &nn::VarStore {
        &self.vs
    }

    fn tensor(&self, obs: &[f32]) -> Tensor {
        Tensor::from_slice(obs)
            .view([-1, self.obs_dim as i64])
            .to_device(self.vs.device())
    }

    /// Runs `n_steps` sampled actions on every environment from the current observations `obs`
    /// (E × obs_dim), which it advances.
    pub fn collect(&self, env: &mut VecEnv, obs: &mut Vec<f32>) -> Result<Rollout> {
        let n = self.config.n_steps * env.n_envs();
        let mut r = Rollout {
            obs: Vec::with_capacity(n * self.obs_dim),
            actions: Vec::with_capacity(n),
            log_probs: Vec::with_capacity(n),
            values: Vec::with_capacity(n),
            rewards: Vec::with_capacity(n),
            boundaries: Vec::with_capacity(n),
            last_values: Vec::new(),
        };
        for _ in 0..self.config.n_steps {
            let (actions, log_probs, values) = tch::no_grad(|| self.sample(obs))?;
            let indices: Vec<usize> = actions.iter().map(|&a| a as usize).collect();
            let step = env.step(&indices)?;
            r.obs.extend_from_slice(obs);
            r.actions.extend(actions);
            r.log_probs.extend(log_probs);
            r.values.extend(values);
            r.rewards.extend(&step.rewards);
            r.boundaries.extend(self.boundaries(&step.ends)?);
            *obs = step.obs;
        }
        r.last_values = self.values(obs)?;
        Ok(r)
    }

    /// The critic's values of E × obs_dim observations.
    fn values(&self, obs: &[f32]) -> Result<Vec<f32>> {
        tch::no_grad(|| {
            let (_, values) = self.model.forward(&self.tensor(obs));
            Ok(Vec::<f32>::try_from(values.to_kind(Kind::Float))?)
        })
    }

    /// One step's boundaries, with the critic's values of the states truncated episodes ended on
    /// (one batched forward pass, only on steps where some episode was truncated).
    fn boundaries(&self, ends: &[StepEnd]) -> Result<Vec<Boundary>> {
        let cut: Vec<f32> = ends
            .iter()
            .filter_map(|e| match e {
                StepEnd::Truncated(obs) => Some(obs.as_slice()),
                _ => None,
            })
            .flatten()
            .copied()
            .collect();
        let mut cut_values = if cut.is_empty() {
            Vec::new()
        } else {
            self.values(&cut)?
        }
        .into_iter();
        ends.iter()
            .map(|e| match e {
                StepEnd::Continues => Ok(Boundary::Continues),
                StepEnd::Terminal => Ok(Boundary::Terminal),
                StepEnd::Truncated(_) => cut_values
                    .next()
                    .map(|next_value| Boundary::Truncated { next_value })
                    .ok_or_else(|| Error::Trading("a truncated episode has no value".into())),
            })
            .collect()
    }

    /// Sampled actions with their log-probabilities and the critic's values.
    fn sample(&self, obs: &[f32]) -> Result<(Vec<i64>, Vec<f32>, Vec<f32>)> {
        let (logits, values) = self.model.forward(&self.tensor(obs));
        let log_p = logits.log_softmax(-1, Kind::Float);
        let actions = log_p.exp().multinomial(1, true);
        let chosen = log_p.gather(-1, &actions, false).squeeze_dim(-1);
        Ok((
            Vec::<i64>::try_from(actions.squeeze_dim(-1))?,
            Vec::<f32>::try_from(chosen)?,
            Vec::<f32>::try_from(values)?,
        ))
    }

    /// `epochs` passes of shuffled minibatches of the clipped PPO loss over `rollout`.
    pub fn update(&mut self, rollout: &Rollout) -> Result<UpdateStats> {
        let c = self.config;
        let (adv, returns) = gae(
            &rollout.rewards,
            &rollout.values,
            &rollout.boundaries,
            &rollout.last_values,
            c.gamma as f32,
            c.lambda as f32,
        )?;
        let device = self.vs.device();
        let n = rollout.actions.len() as i64;
        let obs = self.tensor(&rollout.obs);
        let actions = Tensor::from_slice(&rollout.actions).to_device(device);
        let old_log_p = Tensor::from_slice(&rollout.log_probs).to_device(device);
        let returns = Tensor::from_slice(&returns).to_device(device);
        let adv = Tensor::from_slice(&adv).to_device(device);
        let adv = (&adv - adv.mean(Kind::Float)) / (adv.std(true) + 1e-8);
        let (mut sums, mut batches) = ([0.0f64; 3], 0usize);
        for _ in 0..c.epochs {
            let order = Tensor::randperm(n, (Kind::Int64, device));
            for start in (0..n).step_by(c.minibatch_size) {
                let len = (c.minibatch_size as i64).min(n - start);
                let idx = order.narrow(0, start, len);
                let losses = self.losses(
                    &obs.index_select(0, &idx),
                    &actions.index_select(0, &idx),
                    &old_log_p.index_select(0, &idx),
                    &adv.index_select(0, &idx),
                    &returns.index_select(0, &idx),
                );
                let [policy, value, entropy] = &losses;
                let loss = policy + value * c.value_coef - entropy * c.entropy_coef;
                self.opt.backward_step_clip_norm(&loss, c.max_grad_norm);
                for (sum, l) in sums.iter_mut().zip(&losses) {
                    *sum += l.double_value(&[]);
                }
                batches += 1;
            }
        }
        let k = batches as f64;
        Ok(UpdateStats {
            policy_loss: sums[0] / k,
            value_loss: sums[1] / k,
            entropy: sums[2] / k,
            mean_reward: rollout.rewards.iter().map(|&r| r as f64).sum::<f64>() / n as f64,
        })
    }

    /// [clipped policy loss, value loss, entropy] of one minibatch.
    fn losses(
        &self,
        obs: &Tensor,
        actions: &Tensor,
        old_log_p: &Tensor,
        adv: &Tensor,
        returns: &Tensor,
    ) -> [Tensor; 3] {
        let (logits, values) = self.model.forward(obs);
        let log_p_all = logits.log_softmax(-1, Kind::Float);
        let log_p = log_p_all
            .gather(-1, &actions.unsqueeze(-1), false)
            .squeeze_dim(-1);
        let ratio = (log_p - old_log_p).exp();
        let clip = self.config.clip;
        let surr1 = &ratio * adv;
        let surr2 = ratio.clamp(1.0 - clip, 1.0 + clip) * adv;
        let policy = -surr1.min_other(&surr2).mean(Kind::Float);
        let value = (values - returns).square().mean(Kind::Float);
        let entropy = -(log_p_all.exp() * &log_p_all)
            .sum_dim_intlist(-1, false, Kind::Float)
            .mean(Kind::Float);
        [policy, value, entropy]
    }

    /// `n_updates` rounds of collect + update on `env`, starting from a reset.
    pub fn train(&mut self, env: &mut VecEnv, n_updates: usize) -> Result<Vec<UpdateStats>> {
        let mut obs = env.reset()?;
        (0..n_updates)
            .map(|_| {
                let rollout = self.collect(env, &mut obs)?;
                self.update(&rollout)
            })
            .collect()
    }

    /// The most probable action for one observation.
    pub fn greedy_action(&self, obs: &[f32]) -> Result<usize> {
        let (logits, _) = tch::no_grad(|| self.model.forward(&self.tensor(obs)));
        Ok(logits.argmax(-1, false).int64_value(&[0]) as usize)
    }

    /// Runs one full episode of the greedy policy on `env` (reset first); returns its wealth series.
    pub fn run_greedy(&self, env: &mut TradingEnv) -> Result<WealthSeries> {
        let mut obs = env.reset();
        loop {
            let step = env.step(self.greedy_action(&obs)?)?;
            if step.done {
                return Ok(env.wealth_series());
            }
            obs = step.obs;
        }
    }
}

impl Learner for Ppo {
    /// One rollout of `n_steps` per environment, then the PPO update on it.
    fn train_round(&mut self, envs: &mut VecEnv, obs: &mut Vec<f32>) -> Result<RoundStats> {
        let rollout = self.collect(envs, obs)?;
        let stats = self.update(&rollout)?;
        Ok(RoundStats {
            env_steps: rollout.rewards.len(),
            mean_reward: stats.mean_reward,
        })
    }

    fn greedy_action(&self, obs: &[f32]) -> Result<usize> {
        Ppo::greedy_action(self, obs)
    }

    fn policy_vars(&self) -> &nn::VarStore {
        &self.vs
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::trading::env::{EnvConfig, PriceSeries};

    #[test]
    fn gae_three_steps_by_hand() {
        use Boundary::{Continues as C, Terminal as T};
        // One env, γ = 0.5, λ = 0.5 (γλ = 0.25); r = [1, 2, 3], V = [0.5, 1, 1.5], V(after) = 2, no end:
        //   δ_2 = 3 + 0.5·2   − 1.5 = 2.5         A_2 = 2.5
        //   δ_1 = 2 + 0.5·1.5 − 1   = 1.75        A_1 = 1.75 + 0.25·2.5   = 2.375
        //   δ_0 = 1 + 0.5·1   − 0.5 = 1.0         A_0 = 1.0  + 0.25·2.375 = 1.59375
        let (rewards, values) = ([1.0, 2.0, 3.0], [0.5, 1.0, 1.5]);
        let (adv, ret) = gae(&rewards, &values, &[C; 3], &[2.0], 0.5, 0.5).unwrap();
        assert_eq!(adv, vec![1.59375, 2.375, 2.5]);
        assert_eq!(ret, vec![2.09375, 3.375, 4.0]);
        // The series ends with step 1 (and step 2 ends another): no bootstrap into either.
        //   A_2 = 3 − 1.5 = 1.5;  A_1 = 2 − 1 = 1;  A_0 = 1 + 0.5·1 − 0.5 + 0.25·1 = 1.25
        let (adv, _) = gae(&rewards, &values, &[C, T, T], &[2.0], 0.5, 0.5).unwrap();
        assert_eq!(adv, vec![1.25, 1.0, 1.5]);
        // Step 1's window is cut where the critic values the next state at 4: it bootstraps from 4 but
        // takes no advantage from step 2 (a new episode).
        //   A_2 = 2.5 (as in the first case);  A_1 = 2 + 0.5·4 − 1 = 3;  A_0 = 1 + 0.5·1 − 0.5 + 0.25·3 = 1.75
        let cut = Boundary::Truncated { next_value: 4.0 };
        let (adv, _) = gae(&rewards, &values, &[C, cut, C], &[2.0], 0.5, 0.5).unwrap();
        assert_eq!(adv, vec![1.75, 3.0, 2.5]);
        // Two envs interleaved time-major are independent.
        let (adv2, _) = gae(
            &[1.0, 0.0, 2.0, 0.0, 3.0, 0.0],
            &[0.5, 0.0, 1.0, 0.0, 1.5, 0.0],
            &[C; 6],
            &[2.0, 0.0],
            0.5,
            0.5,
        )
        .unwrap();
        assert_eq!(adv2, vec![1.59375, 0.0, 2.375, 0.0, 2.5, 0.0]);
        assert!(gae(&rewards, &values, &[C; 2], &[2.0], 0.5, 0.5).is_err());
        assert!(gae(&rewards, &values, &[C; 3], &[2.0, 1.0], 0.5, 0.5).is_err());
        assert!(gae(&rewards, &values, &[C; 3], &[], 0.5, 0.5).is_err());
    }

    #[test]
    fn truncated_steps_bootstrap_from_the_critic() {
        // No manual_seed: the assertions hold for any weights, and reseeding libtorch's global generator
        // here would disturb tests running in parallel that draw from it.
        let series = planted(20, 1);
        let envs = vec![TradingEnv::window(series.clone(), EnvConfig::default(), 0, 3).unwrap()];
        let mut vec_env = VecEnv::new(envs).unwrap();
        let ppo = Ppo::new(
            2,
            PpoConfig {
                n_steps: 7,
                ..PpoConfig::default()
            },
            Device::Cpu,
        )
        .unwrap();
        let mut obs = vec_env.reset().unwrap();
        let r = ppo.collect(&mut vec_env, &mut obs).unwrap();
        // Windows of 3 steps over 20 days: steps 2 and 5 are cut, none reaches the series' end. A replay of
        // the same actions ends on the observation whose critic value each cut step bootstraps from.
        let mut replay = TradingEnv::window(series, EnvConfig::default(), 0, 3).unwrap();
        let mut cuts = 0;
        for (t, b) in r.boundaries.iter().enumerate() {
            let step = replay.step(r.actions[t] as usize).unwrap();
            match b {
                Boundary::Truncated { next_value } => {
                    assert!(step.done && !step.terminal, "step {t}");
                    assert_eq!(*next_value, ppo.values(&step.obs).unwrap()[0]);
                    replay.reset();
                    cuts += 1;
                }
                Boundary::Continues => assert!(!step.done, "step {t}"),
                Boundary::Terminal => panic!("no step reaches the series' end"),
            }
        }
        assert_eq!(cuts, 2);
    }

    /// Feature f_t = ±1 at random; the price moves by +2 % × f_t from day t to t + 1.
    fn planted(days: usize, seed: u64) -> Arc<PriceSeries> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let features: Vec<f32> = (0..days)
            .map(|_| if rng.random_bool(0.5) { 1.0 } else { -1.0 })
            .collect();
        let mut prices = vec![100.0];
        for f in &features[..days - 1] {
            prices.push(prices.last().unwrap() * (1.0 + 0.02 * *f as f64));
        }
        Arc::new(PriceSeries::new(prices, features, 1).unwrap())
    }

    #[test]
    fn ppo_learns_a_planted_signal() {
        crate::testing::run_alone("trading::ppo::tests::ppo_learns_a_planted_signal_alone");
    }

    #[test]
    #[ignore = "seeds libtorch's global RNG, which parallel tests draw from; run alone by ppo_learns_a_planted_signal"]
    fn ppo_learns_a_planted_signal_alone() {
        tch::manual_seed(7);
        let series = planted(300, 3);
        let cfg = EnvConfig::default();
        let envs = (0..8)
            .map(|e| TradingEnv::window(series.clone(), cfg, e * 30, e * 30 + 40).unwrap())
            .collect();
        let mut vec_env = VecEnv::new(envs).unwrap();
        let config = PpoConfig {
            n_steps: 32,
            learning_rate: 3e-3,
            ..PpoConfig::default()
        };
        let mut ppo = Ppo::new(2, config, Device::Cpu).unwrap();
        let stats = ppo.train(&mut vec_env, 25).unwrap();
        assert!(stats.iter().all(|s| s.policy_loss.is_finite()));

        let mut test_env = TradingEnv::new(planted(300, 11), cfg).unwrap();
        let greedy = ppo.run_greedy(&mut test_env).unwrap().metrics(0.0).unwrap();
        test_env.reset();
        while !test_env.step(Action::Buy as usize).unwrap().done {}
        let buy_hold = test_env.metrics(0.0).unwrap();
        assert!(
            greedy.cw > buy_hold.cw && greedy.cw > 2.0,
            "PPO CW {} vs buy & hold {}",
            greedy.cw,
            buy_hold.cw
        );
    }
}
