//! [`VecEnv`]: E [`TradingEnv`]s (e.g. windows at different start days) stepped in lockstep, with their
//! observations and rewards packed into flat `f32` buffers for the policy, and auto-reset of finished
//! episodes: to the same window, or with [`VecEnv::with_starts`] to a fresh window drawn from a seeded
//! [`EpisodeStarts`]. Deterministic: the only randomness is that seeded stream.

use crate::error::{Error, Result};

use super::env::TradingEnv;
use super::episodes::{Coverage, EpisodeStarts};
use crate::portfolio::WealthSeries;

/// How a step left its environment's episode.
#[derive(Debug, Clone, PartialEq)]
pub enum StepEnd {
    /// The episode goes on.
    Continues,
    /// The series itself ended: nothing follows, the next state has no value.
    Terminal,
    /// Only the episode's window ended (the environment was reset): the observation it ended on, whose
    /// value a learner bootstraps from.
    Truncated(Vec<f32>),
}

impl StepEnd {
    /// The episode ended on this step (and the environment was reset).
    pub fn is_done(&self) -> bool {
        !matches!(self, StepEnd::Continues)
    }
}

/// The result of [`VecEnv::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct VecStep {
    /// E × obs_dim row-major; a finished environment's row is the first observation of its next episode.
    pub obs: Vec<f32>,
    /// One reward per environment.
    pub rewards: Vec<f32>,
    /// How each environment's episode stands after this step.
    pub ends: Vec<StepEnd>,
}

impl VecStep {
    pub fn dones(&self) -> Vec<bool> {
        self.ends.iter().map(StepEnd::is_done).collect()
    }
}

/// E environments with the same observation size.
#[derive(Debug, Clone)]
pub struct VecEnv {
    envs: Vec<TradingEnv>,
    obs_dim: usize,
    /// The wealth series of each environment's last finished episode.
    finished: Vec<Option<WealthSeries>>,
    /// Where each new episode starts; None: every environment replays its own window.
    starts: Option<EpisodeStarts>,
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
            starts: None,
        })
    }

    /// Environments whose every episode, the first included, starts at the next window of `starts`.
    pub fn with_starts(envs: Vec<TradingEnv>, starts: EpisodeStarts) -> Result<Self> {
        let mut v = VecEnv::new(envs)?;
        v.starts = Some(starts);
        Ok(v)
    }

    /// What the episodes started so far covered (None without [`EpisodeStarts`]).
    pub fn coverage(&self) -> Option<Coverage> {
        self.starts.as_ref().map(EpisodeStarts::coverage)
    }

    /// Resets environment i, at a fresh window when there are [`EpisodeStarts`].
    fn reset_env(&mut self, i: usize) -> Result<Vec<f32>> {
        match &mut self.starts {
            Some(starts) => {
                let (start, end) = starts.next_window();
                self.envs[i].reset_to(start, end)
            }
            None => Ok(self.envs[i].reset()),
        }
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
    pub fn reset(&mut self) -> Result<Vec<f32>> {
        let mut obs = Vec::with_capacity(self.n_envs() * self.obs_dim);
        for i in 0..self.n_envs() {
            obs.extend(self.reset_env(i)?);
        }
        Ok(obs)
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
            ends: Vec::with_capacity(n),
        };
        for (i, &action) in actions.iter().enumerate() {
            let step = self.envs[i].step(action)?;
            out.rewards.push(step.reward as f32);
            if step.done {
                self.finished[i] = Some(self.envs[i].wealth_series());
                out.ends.push(if step.terminal {
                    StepEnd::Terminal
                } else {
                    StepEnd::Truncated(step.obs)
                });
                out.obs.extend(self.reset_env(i)?);
            } else {
                out.ends.push(StepEnd::Continues);
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
        assert_eq!(vec.reset().unwrap(), first.repeat(3));
        for action in [2, 1, 0, 2, 1] {
            let step = single.step(action).unwrap();
            let out = vec.step(&[action; 3]).unwrap();
            assert_eq!(out.rewards, vec![step.reward as f32; 3]);
            assert_eq!(out.dones(), vec![step.done; 3]);
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
        assert_eq!(vec.reset().unwrap(), vec![0.0, 0.5, 0.0, 3.0, 3.5, 0.0]);
        let out = vec.step(&[2, 2]).unwrap();
        assert_eq!(out.obs, vec![1.0, 1.5, 1.0, 4.0, 4.5, 1.0]);
        assert_eq!(out.dones(), vec![false, false]);
        assert!(vec.last_episode(0).is_none());
        let out = vec.step(&[1, 1]).unwrap();
        // Env 0's window ended at day 2 of 6 (truncated, with day 2's observation); env 1 reached the
        // series' last day (terminal).
        assert_eq!(
            out.ends,
            vec![StepEnd::Truncated(vec![2.0, 2.5, 1.0]), StepEnd::Terminal]
        );
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
    fn fresh_windows_on_every_reset() {
        let s = series();
        let cfg = EnvConfig::default();
        let envs = vec![TradingEnv::new(s.clone(), cfg).unwrap(); 2];
        let starts = EpisodeStarts::new(s.len(), 2, 5).unwrap();
        let mut expected = starts.clone();
        let mut vec = VecEnv::with_starts(envs, starts).unwrap();
        vec.reset().unwrap();
        let mut windows = [expected.next_window(), expected.next_window()];
        for _ in 0..10 {
            assert_eq!(vec.envs()[0].days(), windows[0]);
            assert_eq!(vec.envs()[1].days(), windows[1]);
            let out = vec.step(&[1, 1]).unwrap();
            // Each reset (in environment order) takes the stream's next window.
            for (i, end) in out.ends.iter().enumerate() {
                if end.is_done() {
                    windows[i] = expected.next_window();
                }
            }
        }
        assert_eq!(vec.coverage(), Some(expected.coverage()));
        assert!(vec.coverage().unwrap().episodes > 2);
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
