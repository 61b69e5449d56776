//! A fixed-capacity replay buffer of transitions for the off-policy learners (DQN, SAC), filled from
//! [`VecEnv`] steps and sampled uniformly with its own seeded generator (so a run is reproducible without
//! touching libtorch's global one).

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tch::{Device, Tensor};

use super::learner::RoundStats;
use super::vec_env::{StepEnd, VecEnv, VecStep};
use crate::error::{Error, Result};

/// A sampled minibatch: obs and next_obs (B, obs_dim), actions (B) int64, rewards and `not_terminal`
/// (1 where the next state has a value, 0 at the series' end) (B) float.
pub struct Batch {
    pub obs: Tensor,
    pub actions: Tensor,
    pub rewards: Tensor,
    pub next_obs: Tensor,
    pub not_terminal: Tensor,
}

pub struct ReplayBuffer {
    capacity: usize,
    obs_dim: usize,
    obs: Vec<f32>,
    next_obs: Vec<f32>,
    actions: Vec<i64>,
    rewards: Vec<f32>,
    not_terminal: Vec<f32>,
    /// Where the next transition goes once the buffer is full (the oldest is overwritten).
    cursor: usize,
    rng: ChaCha8Rng,
}

impl ReplayBuffer {
    pub fn new(capacity: usize, obs_dim: usize, seed: u64) -> Self {
        ReplayBuffer {
            capacity: capacity.max(1),
            obs_dim,
            obs: Vec::new(),
            next_obs: Vec::new(),
            actions: Vec::new(),
            rewards: Vec::new(),
            not_terminal: Vec::new(),
            cursor: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.actions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.actions.is_empty()
    }

    /// One transition; `next_obs` is the state the action led to (for a truncated episode, the state it
    /// ended on, not the first state of the next episode).
    pub fn push(
        &mut self,
        obs: &[f32],
        action: i64,
        reward: f32,
        next_obs: &[f32],
        terminal: bool,
    ) {
        let d = self.obs_dim;
        let not_terminal = if terminal { 0.0 } else { 1.0 };
        if self.len() < self.capacity {
            self.obs.extend_from_slice(obs);
            self.next_obs.extend_from_slice(next_obs);
            self.actions.push(action);
            self.rewards.push(reward);
            self.not_terminal.push(not_terminal);
            return;
        }
        let i = self.cursor;
        self.obs[i * d..(i + 1) * d].copy_from_slice(obs);
        self.next_obs[i * d..(i + 1) * d].copy_from_slice(next_obs);
        self.actions[i] = action;
        self.rewards[i] = reward;
        self.not_terminal[i] = not_terminal;
        self.cursor = (self.cursor + 1) % self.capacity;
    }

    /// Every environment's transition of one [`VecEnv`] step taken from `obs` (E × obs_dim) with `actions`.
    pub fn push_step(&mut self, obs: &[f32], actions: &[i64], step: &VecStep) {
        let d = self.obs_dim;
        for (e, end) in step.ends.iter().enumerate() {
            let before = &obs[e * d..(e + 1) * d];
            let (next, terminal) = match end {
                StepEnd::Continues => (&step.obs[e * d..(e + 1) * d], false),
                StepEnd::Truncated(last) => (last.as_slice(), false),
                // masked out of the target: any state of the right size will do
                StepEnd::Terminal => (before, true),
            };
            self.push(before, actions[e], step.rewards[e], next, terminal);
        }
    }

    /// Whether a learner that starts after `learning_starts` transitions and samples `batch_size` may learn.
    pub fn ready(&self, learning_starts: usize, batch_size: usize) -> bool {
        self.len() >= learning_starts.max(batch_size)
    }

    /// `n_steps` lockstep steps of `envs` from `obs` (advanced in place), each with the actions `act` picks
    /// for the current observations; every transition goes into the buffer.
    pub fn collect(
        &mut self,
        envs: &mut VecEnv,
        obs: &mut Vec<f32>,
        n_steps: usize,
        mut act: impl FnMut(&[f32]) -> Result<Vec<i64>>,
    ) -> Result<RoundStats> {
        let (mut reward, mut steps) = (0.0f64, 0usize);
        for _ in 0..n_steps {
            let actions = act(obs)?;
            if actions.len() != envs.n_envs() {
                return Err(Error::Trading(format!(
                    "the policy chose {} actions for {} environments",
                    actions.len(),
                    envs.n_envs()
                )));
            }
            let indices: Vec<usize> = actions.iter().map(|&a| a as usize).collect();
            let step = envs.step(&indices)?;
            self.push_step(obs, &actions, &step);
            reward += step.rewards.iter().map(|&r| r as f64).sum::<f64>();
            steps += step.rewards.len();
            *obs = step.obs;
        }
        Ok(RoundStats {
            env_steps: steps,
            mean_reward: reward / steps.max(1) as f64,
        })
    }

    /// `size` transitions drawn uniformly with replacement. The buffer must not be empty.
    pub fn sample(&mut self, size: usize, device: Device) -> Batch {
        let d = self.obs_dim;
        let picks: Vec<usize> = (0..size)
            .map(|_| self.rng.random_range(0..self.len()))
            .collect();
        let rows = |src: &[f32]| {
            let mut out = Vec::with_capacity(size * d);
            for &i in &picks {
                out.extend_from_slice(&src[i * d..(i + 1) * d]);
            }
            Tensor::from_slice(&out)
                .view([size as i64, d as i64])
                .to_device(device)
        };
        let pick_f32 = |src: &[f32]| {
            let v: Vec<f32> = picks.iter().map(|&i| src[i]).collect();
            Tensor::from_slice(&v).to_device(device)
        };
        let actions: Vec<i64> = picks.iter().map(|&i| self.actions[i]).collect();
        Batch {
            obs: rows(&self.obs),
            next_obs: rows(&self.next_obs),
            actions: Tensor::from_slice(&actions).to_device(device),
            rewards: pick_f32(&self.rewards),
            not_terminal: pick_f32(&self.not_terminal),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrites_the_oldest_when_full_and_keeps_truncated_next_states() {
        let mut b = ReplayBuffer::new(2, 1, 0);
        b.push(&[1.0], 0, 0.1, &[2.0], false);
        b.push(&[2.0], 1, 0.2, &[3.0], false);
        b.push(&[3.0], 2, 0.3, &[4.0], true);
        assert_eq!(b.len(), 2);
        assert_eq!(b.obs, [3.0, 2.0]);
        assert_eq!(b.actions, [2, 1]);
        assert_eq!(b.not_terminal, [0.0, 1.0]);

        let step = VecStep {
            obs: vec![10.0, 20.0, 30.0],
            rewards: vec![1.0, 2.0, 3.0],
            ends: vec![
                StepEnd::Continues,
                StepEnd::Truncated(vec![99.0]),
                StepEnd::Terminal,
            ],
        };
        let mut b = ReplayBuffer::new(8, 1, 0);
        b.push_step(&[1.0, 2.0, 3.0], &[0, 1, 2], &step);
        // continues → the next observation; truncated → the state it ended on, still bootstrapped;
        // terminal → masked
        assert_eq!(b.next_obs, [10.0, 99.0, 3.0]);
        assert_eq!(b.not_terminal, [1.0, 1.0, 0.0]);
        let batch = b.sample(5, Device::Cpu);
        assert_eq!(batch.obs.size(), [5, 1]);
        // every sampled row is a stored transition: obs o has action o − 1
        let obs = Vec::<f32>::try_from(batch.obs.view([-1])).unwrap();
        let act = Vec::<i64>::try_from(batch.actions).unwrap();
        assert!(obs.iter().zip(&act).all(|(o, a)| *o as i64 - 1 == *a));
    }

    #[test]
    fn sampling_is_seeded() {
        let fill = |seed| {
            let mut b = ReplayBuffer::new(100, 1, seed);
            for i in 0..100 {
                b.push(&[i as f32], i, 0.0, &[0.0], false);
            }
            Vec::<i64>::try_from(b.sample(10, Device::Cpu).actions).unwrap()
        };
        assert_eq!(fill(3), fill(3));
        assert_ne!(fill(3), fill(4));
    }
}
