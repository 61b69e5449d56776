//! [`VecEnv`]: E [`TradingEnv`]s (e.g. windows at different start days) stepped in lockstep, with their
//! observations and rewards packed into flat `f32` buffers for the policy, and auto-reset of finished
//! episodes. Fully deterministic: no randomness lives here.

use crate::error::{Error, Result};

use super::env::TradingEnv;
use crate::portfolio::WealthSeries;

/// The result of [`VecEnv::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct VecStep {
    /// E × obs_dim row-major; a finished environment's row is the first observation of its next episode.
    pub obs: Vec<f32>,
    /// One reward per environment.
    pub rewards: Vec<f32>,
    /// Whether each environment's episode ended on this step (and was reset).
    pub dones: Vec<bool>,
}

/// E environments with the same observation size.
#[derive(Debug, Clone)]
pub struct VecEnv {
    envs: Vec<TradingEnv>,
    obs_dim: usize,
    /// The wealth series of each environment's last finished episode.
    finished: Vec<Option<WealthSeries>>,
}

impl VecEnv {
    pub fn new(envs: Vec<TradingEnv>) -> Result<Self> {
        let Some(first) = envs.first() else {
            return Err(Error::Trading(
                "a VecEnv needs at least one environment".into(),
            ));
        };
        let obs_dim = first.obs_dim();
        if let Some(i) = envs.iter().position(|e| e.obs_dim() != obs_dim) {
            return Err(Error::Trading(format!(
                "environment {i} has observations of size {}, environment 0 of size {obs_dim}",
                envs[i].obs_dim()
            )));
        }
        let finished = vec![None; envs.len()];
        Ok(VecEnv {
            envs,
            obs_dim,
            finished,
        })
    }

    pub fn n_envs(&self) -> usize {
        self.envs.len()
    }

    pub fn obs_dim(&self) -> usize {
        self.obs_dim
    }

    pub fn envs(&self) -> &[TradingEnv] {
        &self.envs
    }

    /// Resets every environment; returns the E × obs_dim first observations.
    pub fn reset(&mut self) -> Vec<f32> {
        let mut obs = Vec::with_capacity(self.n_envs() * self.obs_dim);
        for env in &mut self.envs {
            obs.extend(env.reset());
        }
        obs
    }

    /// Steps environment i with `actions[i]`; an environment whose episode ends is reset.
    pub fn step(&mut self, actions: &[usize]) -> Result<VecStep> {
        if actions.len() != self.n_envs() {
            return Err(Error::Trading(format!(
                "{} actions for {} environments",
                actions.len(),
                self.n_envs()
            )));
        }
        let n = self.n_envs();
        let mut out = VecStep {
            obs: Vec::with_capacity(n * self.obs_dim),
            rewards: Vec::with_capacity(n),
            dones: Vec::with_capacity(n),
        };
        for (i, (env, &action)) in self.envs.iter_mut().zip(actions).enumerate() {
            let step = env.step(action)?;
            out.rewards.push(step.reward as f32);
            out.dones.push(step.done);
            if step.done {
                self.finished[i] = Some(env.wealth_series());
                out.obs.extend(env.reset());
            } else {
                out.obs.extend(step.obs);
            }
        }
        Ok(out)
    }

    /// The wealth series of environment i's last finished episode, if any.
    pub fn last_episode(&self, i: usize) -> Option<&WealthSeries> {
        self.finished.get(i).and_then(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::trading::env::{EnvConfig, PriceSeries};

    fn series() -> Arc<PriceSeries> {
        let prices = vec![10.0, 11.0, 9.0, 12.0, 12.5, 8.0];
        let features = (0..12).map(|i| i as f32 * 0.5).collect();
        Arc::new(PriceSeries::new(prices, features, 2).unwrap())
    }

    #[test]
    fn copies_match_a_single_env() {
        let s = series();
        let cfg = EnvConfig::default();
        let mut single = TradingEnv::new(s.clone(), cfg).unwrap();
        let mut vec = VecEnv::new(vec![TradingEnv::new(s, cfg).unwrap(); 3]).unwrap();
        let first = single.reset();
        assert_eq!(vec.reset(), first.repeat(3));
        for action in [2, 1, 0, 2, 1] {
            let step = single.step(action).unwrap();
            let out = vec.step(&[action; 3]).unwrap();
            assert_eq!(out.rewards, vec![step.reward as f32; 3]);
            assert_eq!(out.dones, vec![step.done; 3]);
            if !step.done {
                assert_eq!(out.obs, step.obs.repeat(3));
            }
        }
        assert_eq!(vec.last_episode(0), Some(&single.wealth_series()));
    }

    #[test]
    fn auto_reset_and_offsets() {
        let s = series();
        let cfg = EnvConfig::default();
        let envs = vec![
            TradingEnv::window(s.clone(), cfg, 0, 2).unwrap(),
            TradingEnv::window(s.clone(), cfg, 3, 5).unwrap(),
        ];
        let mut vec = VecEnv::new(envs).unwrap();
        // Features of day t are [t, t + 0.5]; position last.
        assert_eq!(vec.reset(), vec![0.0, 0.5, 0.0, 3.0, 3.5, 0.0]);
        let out = vec.step(&[2, 2]).unwrap();
        assert_eq!(out.obs, vec![1.0, 1.5, 1.0, 4.0, 4.5, 1.0]);
        assert_eq!(out.dones, vec![false, false]);
        assert!(vec.last_episode(0).is_none());
        let out = vec.step(&[1, 1]).unwrap();
        assert_eq!(out.dones, vec![true, true]);
        // Both episodes ended: back to their first day, flat.
        assert_eq!(out.obs, vec![0.0, 0.5, 0.0, 3.0, 3.5, 0.0]);
        assert_eq!(vec.last_episode(1).unwrap().wealth.len(), 3);
        // Deterministic: a clone replays identically.
        let mut a = vec.clone();
        let mut b = vec;
        for actions in [[2, 0], [0, 2], [1, 1]] {
            assert_eq!(a.step(&actions).unwrap(), b.step(&actions).unwrap());
        }
    }

    #[test]
    fn bad_inputs_are_errors() {
        assert!(VecEnv::new(Vec::new()).is_err());
        let s = series();
        let other = Arc::new(PriceSeries::new(vec![1.0, 2.0], vec![0.0; 2], 1).unwrap());
        let cfg = EnvConfig::default();
        let mixed = vec![
            TradingEnv::new(s.clone(), cfg).unwrap(),
            TradingEnv::new(other, cfg).unwrap(),
        ];
        assert!(VecEnv::new(mixed).is_err());
        let mut vec = VecEnv::new(vec![TradingEnv::new(s, cfg).unwrap()]).unwrap();
        assert!(vec.step(&[1, 1]).is_err());
        assert!(vec.step(&[7]).is_err());
    }
}
