//! Soft actor-critic for discrete actions (Christodoulou, 2019): a softmax actor, twin Q-networks with
//! Polyak-averaged targets, and a learned temperature α. With π(·|s) the actor's probabilities over the
//! three actions and Q̄ = min(Q̄₁, Q̄₂) the targets' smaller estimate:
//!
//! - critic target: y = r · reward_scale + γ · [s′ not terminal] · Σ_a π(a|s′) (Q̄(s′, a) − α log π(a|s′));
//!   each critic regresses Q_i(s, a) on y (mean squared error);
//! - actor loss: Σ_a π(a|s) (α log π(a|s) − min(Q₁, Q₂)(s, a)), averaged over the batch;
//! - temperature loss: log α · (H(π(·|s)) − H̄), so α grows when the policy's entropy falls below the
//!   target H̄ = `target_entropy_ratio` · log 3 and shrinks when it is above.
//!
//! Actions are sampled from π while training and the most probable action is the greedy policy. Replay
//! sampling draws from its own seeded generator; initial weights and action sampling from libtorch's.

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, OptimizerConfig};
use tch::{Device, Kind, Tensor};

use super::env::Action;
use super::learner::{argmax_row, obs_tensor, polyak_update, relu_mlp, Learner, RoundStats};
use super::replay::ReplayBuffer;
use super::vec_env::VecEnv;
use crate::error::{Error, Result};

/// SAC hyper-parameters (`[trade.sac]`; every field optional).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SacConfig {
    /// Environment steps per environment per round.
    pub n_steps: usize,
    pub buffer_size: usize,
    pub batch_size: usize,
    /// Transitions collected before the first gradient step.
    pub learning_starts: usize,
    /// Gradient steps per round.
    pub gradient_steps: usize,
    pub gamma: f64,
    /// Polyak rate of the target critics.
    pub tau: f64,
    pub learning_rate: f64,
    /// Starting temperature α.
    pub initial_alpha: f64,
    /// Target entropy as a share of the maximum, log 3. The original 0.98 keeps a three-action policy
    /// almost uniform; 0.5 lets it commit.
    pub target_entropy_ratio: f64,
    /// Rewards (daily returns) are multiplied by this: 100 puts them in percent, so that α's scale and
    /// the critics' do not differ by orders of magnitude.
    pub reward_scale: f64,
    /// Width of the actor's and each critic's two hidden layers.
    pub hidden: i64,
}

impl Default for SacConfig {
    fn default() -> Self {
        SacConfig {
            n_steps: 16,
            buffer_size: 50_000,
            batch_size: 64,
            learning_starts: 1_000,
            gradient_steps: 16,
            gamma: 0.99,
            tau: 0.005,
            learning_rate: 3e-4,
            initial_alpha: 0.1,
            target_entropy_ratio: 0.5,
            reward_scale: 100.0,
            hidden: 64,
        }
    }
}

impl SacConfig {
    /// Checks every field; a message names `origin` and the field as `<prefix><field>`.
    pub fn validate_as(&self, origin: &str, prefix: &str) -> Result<()> {
        let bad =
            |field: &str, why: String| Err(Error::config(origin, format!("{prefix}{field}"), why));
        for (field, v) in [
            ("n_steps", self.n_steps),
            ("buffer_size", self.buffer_size),
            ("batch_size", self.batch_size),
            ("gradient_steps", self.gradient_steps),
        ] {
            if v == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        for (field, v) in [
            ("gamma", self.gamma),
            ("tau", self.tau),
            ("target_entropy_ratio", self.target_entropy_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, format!("{v} must be in [0, 1]"));
            }
        }
        for (field, v) in [
            ("learning_rate", self.learning_rate),
            ("initial_alpha", self.initial_alpha),
            ("reward_scale", self.reward_scale),
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

/// The soft critic target y (B) from the next states' action probabilities and log-probabilities and the
/// smaller target Q-value (all (B, A)).
pub fn soft_q_target(
    rewards: &Tensor,
    not_terminal: &Tensor,
    next_probs: &Tensor,
    next_log_probs: &Tensor,
    next_q_min: &Tensor,
    alpha: f64,
    gamma: f64,
) -> Tensor {
    let soft_value = (next_probs * (next_q_min - next_log_probs * alpha)).sum_dim_intlist(
        -1,
        false,
        Kind::Float,
    );
    rewards + soft_value * not_terminal * gamma
}

/// The actor loss: mean over the batch of Σ_a π(a|s) (α log π(a|s) − Q(s, a)).
pub fn actor_loss(probs: &Tensor, log_probs: &Tensor, q_min: &Tensor, alpha: f64) -> Tensor {
    (probs * (log_probs * alpha - q_min))
        .sum_dim_intlist(-1, false, Kind::Float)
        .mean(Kind::Float)
}

/// The temperature loss log α · (mean entropy − target entropy); its gradient raises α when the policy is
/// less random than the target.
pub fn temperature_loss(log_alpha: &Tensor, entropy: &Tensor, target_entropy: f64) -> Tensor {
    log_alpha * (entropy.mean(Kind::Float) - target_entropy)
}

/// The actor's action probabilities and log-probabilities (B, A).
fn policy(actor: &nn::Sequential, obs: &Tensor) -> (Tensor, Tensor) {
    let log_probs = actor.forward(obs).log_softmax(-1, Kind::Float);
    (log_probs.exp(), log_probs)
}

/// Entropy of each row of probabilities (B, A) → (B).
fn entropy(probs: &Tensor, log_probs: &Tensor) -> Tensor {
    -(probs * log_probs).sum_dim_intlist(-1, false, Kind::Float)
}

pub struct Sac {
    actor_vs: nn::VarStore,
    actor: nn::Sequential,
    critic_vs: nn::VarStore,
    q1: nn::Sequential,
    q2: nn::Sequential,
    target_vs: nn::VarStore,
    q1_target: nn::Sequential,
    q2_target: nn::Sequential,
    /// Owns log α.
    _alpha_vs: nn::VarStore,
    log_alpha: Tensor,
    actor_opt: nn::Optimizer,
    critic_opt: nn::Optimizer,
    alpha_opt: nn::Optimizer,
    buffer: ReplayBuffer,
    config: SacConfig,
    obs_dim: usize,
    target_entropy: f64,
}

impl Sac {
    pub fn new(obs_dim: usize, config: SacConfig, seed: u64, device: Device) -> Result<Self> {
        config.validate_as("trade", "sac.")?;
        let (d, h, a) = (obs_dim as i64, config.hidden, Action::COUNT as i64);
        let actor_vs = nn::VarStore::new(device);
        let actor = relu_mlp(&(actor_vs.root() / "actor"), d, h, a);
        let critic_vs = nn::VarStore::new(device);
        let q1 = relu_mlp(&(critic_vs.root() / "q1"), d, h, a);
        let q2 = relu_mlp(&(critic_vs.root() / "q2"), d, h, a);
        let target_vs = nn::VarStore::new(device);
        let q1_target = relu_mlp(&(target_vs.root() / "q1"), d, h, a);
        let q2_target = relu_mlp(&(target_vs.root() / "q2"), d, h, a);
        polyak_update(&target_vs, &critic_vs, 1.0);
        let alpha_vs = nn::VarStore::new(device);
        let log_alpha = alpha_vs.root().var(
            "log_alpha",
            &[1],
            nn::Init::Const(config.initial_alpha.ln()),
        );
        let lr = config.learning_rate;
        Ok(Sac {
            actor_opt: nn::Adam::default().build(&actor_vs, lr)?,
            critic_opt: nn::Adam::default().build(&critic_vs, lr)?,
            alpha_opt: nn::Adam::default().build(&alpha_vs, lr)?,
            actor_vs,
            actor,
            critic_vs,
            q1,
            q2,
            target_vs,
            q1_target,
            q2_target,
            _alpha_vs: alpha_vs,
            log_alpha,
            buffer: ReplayBuffer::new(config.buffer_size, obs_dim, seed),
            target_entropy: config.target_entropy_ratio * (Action::COUNT as f64).ln(),
            config,
            obs_dim,
        })
    }

    /// The current temperature α.
    pub fn alpha(&self) -> f64 {
        self.log_alpha.exp().double_value(&[0])
    }

    fn learn(&mut self) {
        let c = self.config;
        let b = self.buffer.sample(c.batch_size, self.actor_vs.device());
        let alpha = self.alpha();
        let y = tch::no_grad(|| {
            let (p, logp) = policy(&self.actor, &b.next_obs);
            let q_min = self
                .q1_target
                .forward(&b.next_obs)
                .min_other(&self.q2_target.forward(&b.next_obs));
            soft_q_target(
                &(&b.rewards * c.reward_scale),
                &b.not_terminal,
                &p,
                &logp,
                &q_min,
                alpha,
                c.gamma,
            )
        });
        let taken = |q: &nn::Sequential| {
            q.forward(&b.obs)
                .gather(-1, &b.actions.unsqueeze(-1), false)
                .squeeze_dim(-1)
        };
        let critic_loss = ((taken(&self.q1) - &y).square().mean(Kind::Float)
            + (taken(&self.q2) - &y).square().mean(Kind::Float))
            * 0.5;
        self.critic_opt.backward_step(&critic_loss);

        let (p, logp) = policy(&self.actor, &b.obs);
        let q_min = tch::no_grad(|| self.q1.forward(&b.obs).min_other(&self.q2.forward(&b.obs)));
        self.actor_opt
            .backward_step(&actor_loss(&p, &logp, &q_min, alpha));

        let h = tch::no_grad(|| entropy(&p, &logp));
        let t_loss = temperature_loss(&self.log_alpha, &h, self.target_entropy).sum(Kind::Float);
        self.alpha_opt.backward_step(&t_loss);
        polyak_update(&self.target_vs, &self.critic_vs, c.tau);
    }
}

impl Learner for Sac {
    fn train_round(&mut self, envs: &mut VecEnv, obs: &mut Vec<f32>) -> Result<RoundStats> {
        let (actor, device, obs_dim) = (&self.actor, self.actor_vs.device(), self.obs_dim);
        // actions sampled from π
        let act = |obs: &[f32]| {
            tch::no_grad(|| {
                let (p, _) = policy(actor, &obs_tensor(obs, obs_dim, device));
                Ok(Vec::<i64>::try_from(
                    p.multinomial(1, true).squeeze_dim(-1),
                )?)
            })
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
        Ok(stats)
    }

    fn greedy_action(&self, obs: &[f32]) -> Result<usize> {
        let logits = tch::no_grad(|| {
            self.actor
                .forward(&obs_tensor(obs, self.obs_dim, self.actor_vs.device()))
        });
        Ok(argmax_row(&logits))
    }

    fn policy_vars(&self) -> &nn::VarStore {
        &self.actor_vs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(v: &[f32], shape: &[i64]) -> Tensor {
        Tensor::from_slice(v).view(shape)
    }

    #[test]
    fn soft_target_and_actor_loss_by_hand() {
        // one transition, r = 1, γ = 0.5, α = 0.5, π(·|s′) = (0.5, 0.25, 0.25), Q̄(s′) = (2, 4, 0):
        //   Σ π (Q̄ − α log π) = 0.5 (2 + 0.5 ln 2) + 0.25 (4 + 0.5 ln 4) + 0.25 (0 + 0.5 ln 4)
        //                     = 2 + 0.25 ln 2 + 0.25 ln 4 = 2 + 0.75 ln 2
        //   y = 1 + 0.5 (2 + 0.75 ln 2) = 2 + 0.375 ln 2
        let p = t(&[0.5, 0.25, 0.25], &[1, 3]);
        let logp = p.log();
        let q = t(&[2.0, 4.0, 0.0], &[1, 3]);
        let y = soft_q_target(&t(&[1.0], &[1]), &t(&[1.0], &[1]), &p, &logp, &q, 0.5, 0.5);
        let want = 2.0 + 0.375 * 2f64.ln();
        assert!((y.double_value(&[0]) - want).abs() < 1e-6, "{y:?}");
        // terminal: the reward alone
        let y = soft_q_target(&t(&[1.0], &[1]), &t(&[0.0], &[1]), &p, &logp, &q, 0.5, 0.5);
        assert_eq!(y.double_value(&[0]), 1.0);
        // actor: Σ π (α log π − Q) = −(2 + 0.75 ln 2) (the negated soft value above)
        let l = actor_loss(&p, &logp, &q, 0.5).double_value(&[]);
        assert!((l + 2.0 + 0.75 * 2f64.ln()).abs() < 1e-6, "{l}");
    }

    #[test]
    fn temperature_rises_when_entropy_is_below_target() {
        let vs = nn::VarStore::new(Device::Cpu);
        let log_alpha = vs.root().var("log_alpha", &[1], nn::Init::Const(0.0));
        let mut opt = nn::Sgd::default().build(&vs, 0.1).unwrap();
        // entropy 0.2 below a target of 0.5: d loss / d log α = 0.2 − 0.5 = −0.3 → log α rises by 0.03
        let loss = temperature_loss(&log_alpha, &t(&[0.2, 0.2], &[2]), 0.5).sum(Kind::Float);
        opt.backward_step(&loss);
        assert!((log_alpha.double_value(&[0]) - 0.03).abs() < 1e-6);
        // above the target it falls
        let loss = temperature_loss(&log_alpha, &t(&[1.0], &[1]), 0.5).sum(Kind::Float);
        opt.backward_step(&loss);
        assert!((log_alpha.double_value(&[0]) - (0.03 - 0.05)).abs() < 1e-6);
        // entropy of (0.5, 0.25, 0.25) = 1.5 ln 2
        let p = t(&[0.5, 0.25, 0.25], &[1, 3]);
        let h = entropy(&p, &p.log()).double_value(&[0]);
        assert!((h - 1.5 * 2f64.ln()).abs() < 1e-6);
        let bad = SacConfig {
            tau: 2.0,
            ..SacConfig::default()
        };
        assert!(Sac::new(2, bad, 0, Device::Cpu).is_err());
    }
}
