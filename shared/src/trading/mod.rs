//! Single-stock trading downstream task: a Gym-style environment that trades one stock all-in/all-out from
//! an observation (e.g. STORM factor embeddings), a vectorised wrapper that steps several of them together,
//! and the agents that learn a policy on it (PPO, DQN, SAC), beside the signal rule they are compared with.
//!
//! - [`env`]: [`TradingEnv`] — accounting (cash, shares, costs), rewards and the wealth series.
//! - [`episodes`]: [`episodes::EpisodeStarts`] — a fresh seeded start day for every training episode.
//! - [`vec_env`]: [`VecEnv`] — E environments stepped in lockstep with auto-reset.
//! - [`learner`]: [`learner::Learner`], what the task needs of an algorithm, and [`learner::Algorithm`].
//! - [`ppo`]: actor-critic MLP, GAE and the clipped PPO update (the paper's algorithm).
//! - [`dqn`]: double DQN; [`sac`]: soft actor-critic for discrete actions; [`replay`]: their buffer.
//! - [`signal`]: the untrained signal rule (long when a model's predicted return is positive).
//!
//! Timing convention (that of [`crate::portfolio`]): the days are D_0..D_T; the action of step t is traded
//! at the price of D_t and earns the move to D_{t+1}; V_t is the wealth at D_t before that day's trade, so
//! V_0 is the starting cash, a trade's cost shows in V_{t+1}, and an episode of T + 1 days has T steps.

pub mod dqn;
pub mod env;
pub mod episodes;
pub mod learner;
pub mod ppo;
pub mod replay;
pub mod sac;
pub mod signal;
pub mod task;
pub mod vec_env;

pub use env::{Action, EnvConfig, PriceSeries, StepInfo, TradingEnv, Transition};
pub use vec_env::VecEnv;
