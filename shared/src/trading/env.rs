//! [`TradingEnv`]: one stock, one position (flat or all-in long), actions sell / hold / buy traded at the
//! day's price with a proportional cost. Owns the accounting (cash, shares, costs, trades) and the episode's
//! wealth series, which [`TradingEnv::wealth_series`] hands to the portfolio metrics.

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::portfolio::WealthSeries;
use crate::stats::financial::FinancialMetrics;

/// Default proportional transaction cost (1 bp of the traded value).
pub const DEFAULT_COST_RATE: f64 = 1e-4;
/// Default starting cash.
pub const DEFAULT_CASH: f64 = 1e6;

/// The three discrete actions; their indices are the policy's outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Sell every share (no-op when flat).
    Sell = 0,
    /// Keep the position.
    Hold = 1,
    /// Spend all the cash on shares (no-op when long).
    Buy = 2,
}

impl Action {
    pub const COUNT: usize = 3;

    pub fn from_index(index: usize) -> Result<Self> {
        match index {
            0 => Ok(Action::Sell),
            1 => Ok(Action::Hold),
            2 => Ok(Action::Buy),
            _ => Err(Error::Trading(format!(
                "action index {index} is not one of 0 (sell), 1 (hold), 2 (buy)"
            ))),
        }
    }
}

/// A validated price series with its per-day observation features, shared (via `Arc`) by environments.
#[derive(Debug, Clone, PartialEq)]
pub struct PriceSeries {
    prices: Vec<f64>,
    /// (T + 1) × F row-major.
    features: Vec<f32>,
    n_features: usize,
}

impl PriceSeries {
    /// `prices[t]` (finite, > 0) and `features[t * n_features..(t + 1) * n_features]` for each day t; at
    /// least 2 days (one step).
    pub fn new(prices: Vec<f64>, features: Vec<f32>, n_features: usize) -> Result<Self> {
        if prices.len() < 2 {
            return Err(Error::Trading(format!(
                "a trading series needs at least 2 days, got {}",
                prices.len()
            )));
        }
        if features.len() != prices.len() * n_features {
            return Err(Error::Trading(format!(
                "{} days × {n_features} features need {} feature values, got {}",
                prices.len(),
                prices.len() * n_features,
                features.len()
            )));
        }
        if let Some(t) = prices.iter().position(|p| !(p.is_finite() && *p > 0.0)) {
            return Err(Error::Trading(format!(
                "prices must be finite and positive; day {t} has {}",
                prices[t]
            )));
        }
        if let Some(i) = features.iter().position(|f| !f.is_finite()) {
            return Err(Error::Trading(format!(
                "features must be finite; day {} feature {} is {}",
                i / n_features.max(1),
                i % n_features.max(1),
                features[i]
            )));
        }
        Ok(PriceSeries {
            prices,
            features,
            n_features,
        })
    }

    /// Number of days.
    pub fn len(&self) -> usize {
        self.prices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.prices.is_empty()
    }

    pub fn n_features(&self) -> usize {
        self.n_features
    }

    pub fn price(&self, day: usize) -> f64 {
        self.prices[day]
    }

    pub fn features(&self, day: usize) -> &[f32] {
        &self.features[day * self.n_features..(day + 1) * self.n_features]
    }

    /// The series a policy trades `days` days late: step t observes day t's state and trades at day
    /// t + `days`'s price, so the last `days` states and the first `days` prices drop out.
    pub fn delayed(&self, days: usize) -> Result<PriceSeries> {
        if days == 0 {
            return Ok(self.clone());
        }
        if self.len() < days + 2 {
            return Err(Error::Trading(format!(
                "a {}-day series traded {days} day(s) late leaves fewer than 2 days",
                self.len()
            )));
        }
        let kept = self.len() - days;
        PriceSeries::new(
            self.prices[days..].to_vec(),
            self.features[..kept * self.n_features].to_vec(),
            self.n_features,
        )
    }
}

/// Trading parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EnvConfig {
    /// Cost as a fraction of the traded value, in [0, 1).
    pub cost_rate: f64,
    /// Starting cash, > 0.
    pub initial_cash: f64,
}

impl Default for EnvConfig {
    fn default() -> Self {
        EnvConfig {
            cost_rate: DEFAULT_COST_RATE,
            initial_cash: DEFAULT_CASH,
        }
    }
}

impl EnvConfig {
    pub fn validate(&self) -> Result<()> {
        if !(self.cost_rate.is_finite() && (0.0..1.0).contains(&self.cost_rate)) {
            return Err(Error::Trading(format!(
                "cost rate must be in [0, 1), got {}",
                self.cost_rate
            )));
        }
        if !(self.initial_cash.is_finite() && self.initial_cash > 0.0) {
            return Err(Error::Trading(format!(
                "initial cash must be finite and positive, got {}",
                self.initial_cash
            )));
        }
        Ok(())
    }
}

/// What happened on one step, after the trade and the move to the next day.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// The day the action was traded on (absolute index in the series).
    pub day: usize,
    /// The action as executed (a buy when long or a sell when flat is a no-op, reported as given).
    pub action: Action,
    /// Whether shares changed hands.
    pub traded: bool,
    /// Value of the shares bought or sold at the day's price, cost excluded.
    pub traded_value: f64,
    /// Cost paid on this step.
    pub cost: f64,
    /// Cash and shares after the trade.
    pub cash: f64,
    pub shares: f64,
    /// Wealth at the next day, V_{t+1}.
    pub wealth: f64,
}

/// The result of [`TradingEnv::step`].
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// Observation of the next day: its features then the position (0 flat, 1 long).
    pub obs: Vec<f32>,
    /// (V_{t+1} − V_t) / V_t.
    pub reward: f64,
    /// The next day is the episode's last: no further step.
    pub done: bool,
    /// The episode ended at the series' real end (nothing follows), not only at its window's end: a
    /// learner bootstraps from the next state's value on a `done` that is not `terminal`.
    pub terminal: bool,
    pub info: StepInfo,
}

/// One stock, traded all-in / all-out over the days `start..=end` of a [`PriceSeries`].
#[derive(Debug, Clone)]
pub struct TradingEnv {
    series: Arc<PriceSeries>,
    config: EnvConfig,
    start: usize,
    end: usize,
    day: usize,
    cash: f64,
    shares: f64,
    wealth: Vec<f64>,
    traded_value: Vec<f64>,
    cost: Vec<f64>,
    n_trades: usize,
}

impl TradingEnv {
    /// An environment over the whole series, already reset.
    pub fn new(series: Arc<PriceSeries>, config: EnvConfig) -> Result<Self> {
        let last = series.len() - 1;
        Self::window(series, config, 0, last)
    }

    /// An environment over the days `start..=end` (at least one step), already reset.
    pub fn window(
        series: Arc<PriceSeries>,
        config: EnvConfig,
        start: usize,
        end: usize,
    ) -> Result<Self> {
        config.validate()?;
        check_window(&series, start, end)?;
        let mut env = TradingEnv {
            series,
            config,
            start,
            end,
            day: start,
            cash: config.initial_cash,
            shares: 0.0,
            wealth: Vec::new(),
            traded_value: Vec::new(),
            cost: Vec::new(),
            n_trades: 0,
        };
        env.reset();
        Ok(env)
    }

    /// Moves the episode to the days `start..=end` (at least one step) and resets; returns the first
    /// observation.
    pub fn reset_to(&mut self, start: usize, end: usize) -> Result<Vec<f32>> {
        check_window(&self.series, start, end)?;
        (self.start, self.end) = (start, end);
        Ok(self.reset())
    }

    /// First and last day of the episode (absolute indices in the series).
    pub fn days(&self) -> (usize, usize) {
        (self.start, self.end)
    }

    /// Days in the whole series.
    pub fn series_len(&self) -> usize {
        self.series.len()
    }

    /// Observation size: features + position.
    pub fn obs_dim(&self) -> usize {
        self.series.n_features() + 1
    }

    /// Steps per episode.
    pub fn n_steps(&self) -> usize {
        self.end - self.start
    }

    /// Back to the first day, flat, with the starting cash; returns the first observation.
    pub fn reset(&mut self) -> Vec<f32> {
        self.day = self.start;
        self.cash = self.config.initial_cash;
        self.shares = 0.0;
        self.wealth.clear();
        self.wealth.push(self.config.initial_cash);
        self.traded_value.clear();
        self.cost.clear();
        self.n_trades = 0;
        self.observation()
    }

    /// Trade `action` (0 sell, 1 hold, 2 buy) at today's price and move to the next day.
    pub fn step(&mut self, action: usize) -> Result<Transition> {
        let action = Action::from_index(action)?;
        if self.is_done() {
            return Err(Error::Trading(format!(
                "episode ended on day {}: reset before stepping",
                self.day
            )));
        }
        let before = self.value_at(self.day);
        let (traded_value, cost) = self.trade(action);
        let day = self.day;
        self.day += 1;
        let after = self.value_at(self.day);
        self.wealth.push(after);
        self.traded_value.push(traded_value);
        self.cost.push(cost);
        Ok(Transition {
            obs: self.observation(),
            reward: (after - before) / before,
            done: self.is_done(),
            terminal: self.day + 1 >= self.series.len(),
            info: StepInfo {
                day,
                action,
                traded: traded_value > 0.0,
                traded_value,
                cost,
                cash: self.cash,
                shares: self.shares,
                wealth: after,
            },
        })
    }

    /// Executes `action` at today's price; returns (traded value, cost).
    fn trade(&mut self, action: Action) -> (f64, f64) {
        let price = self.series.price(self.day);
        let rate = self.config.cost_rate;
        match action {
            Action::Buy if self.shares == 0.0 => {
                self.shares = self.cash / (price * (1.0 + rate));
                let value = self.shares * price;
                let cost = value * rate;
                self.cash = 0.0;
                self.n_trades += 1;
                (value, cost)
            }
            Action::Sell if self.shares > 0.0 => {
                let value = self.shares * price;
                let cost = value * rate;
                self.cash += value - cost;
                self.shares = 0.0;
                self.n_trades += 1;
                (value, cost)
            }
            _ => (0.0, 0.0),
        }
    }

    fn value_at(&self, day: usize) -> f64 {
        self.cash + self.shares * self.series.price(day)
    }

    fn observation(&self) -> Vec<f32> {
        let mut obs = Vec::with_capacity(self.obs_dim());
        obs.extend_from_slice(self.series.features(self.day));
        obs.push(self.position() as f32);
        obs
    }

    pub fn is_done(&self) -> bool {
        self.day >= self.end
    }

    /// The current day (absolute index in the series).
    pub fn day(&self) -> usize {
        self.day
    }

    /// 1 when long, 0 when flat.
    pub fn position(&self) -> u8 {
        u8::from(self.shares > 0.0)
    }

    pub fn cash(&self) -> f64 {
        self.cash
    }

    pub fn shares(&self) -> f64 {
        self.shares
    }

    /// Number of buys and sells so far in the episode.
    pub fn n_trades(&self) -> usize {
        self.n_trades
    }

    /// Sum of the costs paid so far in the episode.
    pub fn total_cost(&self) -> f64 {
        self.cost.iter().sum()
    }

    /// V_start..V_day so far.
    pub fn wealth(&self) -> &[f64] {
        &self.wealth
    }

    /// The episode so far as a wealth series (wealth, traded value and cost per step).
    pub fn wealth_series(&self) -> WealthSeries {
        WealthSeries {
            wealth: self.wealth.clone(),
            traded_value: self.traded_value.clone(),
            cost: self.cost.clone(),
        }
    }

    /// Financial metrics of the episode so far (at least one step).
    pub fn metrics(&self, risk_free: f64) -> Result<FinancialMetrics> {
        FinancialMetrics::compute(&self.wealth, &self.traded_value, &self.cost, risk_free)
    }
}

fn check_window(series: &PriceSeries, start: usize, end: usize) -> Result<()> {
    if start >= end || end >= series.len() {
        return Err(Error::Trading(format!(
            "episode days {start}..={end} must hold at least 2 days of the series' {}",
            series.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-9 * b.abs().max(1.0)
    }

    macro_rules! assert_close {
        ($a:expr, $b:expr) => {
            assert!(close($a, $b), "{} = {} ≠ {}", stringify!($a), $a, $b)
        };
    }

    #[test]
    fn a_delayed_series_pairs_each_state_with_a_later_price() {
        let prices = vec![10.0, 11.0, 12.0, 13.0];
        let features = vec![0.0, 1.0, 2.0, 3.0];
        let series = PriceSeries::new(prices, features, 1).unwrap();
        let late = series.delayed(1).unwrap();
        assert_eq!(late.len(), 3);
        // step t sees day t's state and trades at day t+1's price
        for t in 0..3 {
            assert_eq!(late.features(t), &[t as f32]);
            assert_eq!(late.price(t), 11.0 + t as f64);
        }
        assert_eq!(series.delayed(0).unwrap(), series);
        assert_eq!(series.delayed(2).unwrap().len(), 2);
        let err = series.delayed(3).unwrap_err().to_string();
        assert!(err.contains("fewer than 2 days"), "{err}");
        // a buy on day 0's state now pays day 1's price: 1e6 / 11 shares, worth that × 13 at the end
        let config = EnvConfig {
            cost_rate: 0.0,
            ..EnvConfig::default()
        };
        let mut env = TradingEnv::new(Arc::new(late), config).unwrap();
        env.step(Action::Buy as usize).unwrap();
        env.step(Action::Hold as usize).unwrap();
        assert_close!(*env.wealth().last().unwrap(), 1e6 / 11.0 * 13.0);
    }

    fn env(prices: &[f64], rate: f64, cash: f64) -> TradingEnv {
        let n = prices.len();
        let features: Vec<f32> = (0..n).map(|t| t as f32).collect();
        let series = PriceSeries::new(prices.to_vec(), features, 1).unwrap();
        let config = EnvConfig {
            cost_rate: rate,
            initial_cash: cash,
        };
        TradingEnv::new(Arc::new(series), config).unwrap()
    }

    #[test]
    fn buy_hold_sell_accounting() {
        // Prices [100, 110, 99, 121], cost rate 1e-3, cash 1000; actions buy, hold, sell.
        let mut env = env(&[100.0, 110.0, 99.0, 121.0], 1e-3, 1000.0);
        assert_eq!(env.reset(), vec![0.0, 0.0]);
        assert_eq!(env.n_steps(), 3);

        // Day 0, buy at 100: shares = 1000 / (100 × 1.001) = 9.99000999…; traded value = 999.000999…,
        // cost = 0.999000999…, cash 0. V_1 = shares × 110 = 1098.901098901…; reward = V_1/1000 − 1.
        let shares = 1000.0 / 100.1;
        let s = env.step(2).unwrap();
        assert_close!(s.info.shares, shares);
        assert_close!(s.info.cash, 0.0);
        assert_close!(s.info.traded_value, shares * 100.0);
        assert_close!(s.info.cost, shares * 100.0 * 1e-3);
        assert_close!(s.info.cost, 0.999000999000999);
        assert_close!(s.info.wealth, 1098.901098901099);
        assert_close!(s.reward, 0.0989010989010989);
        assert!(s.info.traded && !s.done);
        assert_eq!(s.obs, vec![1.0, 1.0]);

        // Day 1, hold: V_2 = shares × 99 = 989.010989…; reward = 99/110 − 1 = −0.1.
        let s = env.step(1).unwrap();
        assert_close!(s.info.shares, shares);
        assert_close!(s.info.cost, 0.0);
        assert_close!(s.info.wealth, 989.010989010989);
        assert_close!(s.reward, -0.1);
        assert!(!s.info.traded && !s.done);
        assert_eq!(s.obs, vec![2.0, 1.0]);

        // Day 2, sell at 99: proceeds 989.010989…, cost 0.989010989…, cash = V_3 = 988.021978021978
        // (the price of day 3 no longer matters); reward = 0.999 − 1 = −0.001.
        let s = env.step(0).unwrap();
        assert_close!(s.info.shares, 0.0);
        assert_close!(s.info.traded_value, 989.010989010989);
        assert_close!(s.info.cost, 0.989010989010989);
        assert_close!(s.info.cash, 988.021978021978);
        assert_close!(s.info.wealth, 988.021978021978);
        assert_close!(s.reward, -0.001);
        assert!(
            s.info.traded && s.done && s.terminal,
            "the series' last day is terminal"
        );
        assert_eq!(s.obs, vec![3.0, 0.0]);

        assert_eq!(env.n_trades(), 2);
        assert_close!(env.total_cost(), 0.999000999000999 + 0.989010989010989);
        let w = env.wealth();
        assert_eq!(w.len(), 4);
        assert_close!(w[0], 1000.0);
        assert_close!(w[3], 988.021978021978);
        let m = env.metrics(0.0).unwrap();
        assert_eq!(m.n_days, 3);
        assert_close!(m.cw, 0.988021978021978);
        assert_close!(m.total_cost, env.total_cost());
        assert!(env.step(1).is_err(), "stepping past the end is an error");

        // Reset restores the start.
        assert_eq!(env.reset(), vec![0.0, 0.0]);
        assert_eq!((env.cash(), env.shares(), env.n_trades()), (1000.0, 0.0, 0));
        assert_eq!(env.wealth(), &[1000.0]);
    }

    #[test]
    fn flat_earns_nothing_and_redundant_trades_are_free() {
        let mut env = env(&[100.0, 150.0, 50.0, 80.0], 1e-2, 1e6);
        // Sell while flat and hold while flat: no trade, no cost, zero reward.
        for action in [0, 1, 1] {
            let s = env.step(action).unwrap();
            assert_eq!(s.reward, 0.0);
            assert_eq!((s.info.cost, s.info.traded_value), (0.0, 0.0));
            assert_eq!(s.info.wealth, 1e6);
        }
        assert_eq!(env.n_trades(), 0);
        // Buying twice trades once.
        env.reset();
        env.step(2).unwrap();
        let s = env.step(2).unwrap();
        assert!(!s.info.traded);
        assert_close!(s.reward, 50.0 / 150.0 - 1.0);
        assert_eq!(env.n_trades(), 1);
    }

    #[test]
    fn window_uses_its_days() {
        let series = Arc::new(PriceSeries::new(vec![1.0, 2.0, 4.0, 8.0], vec![0.0; 4], 1).unwrap());
        let mut env = TradingEnv::window(series.clone(), EnvConfig::default(), 1, 2).unwrap();
        assert_eq!(env.n_steps(), 1);
        let s = env.step(2).unwrap();
        assert!(
            s.done && !s.terminal,
            "day 2 ends the window, not the series"
        );
        assert_eq!(s.info.day, 1);
        // Doubles from 2 to 4, less the 1 bp buy cost.
        assert_close!(s.reward, 2.0 / (1.0 + DEFAULT_COST_RATE) - 1.0);
        assert_eq!(env.reset_to(2, 3).unwrap(), vec![0.0, 0.0]);
        assert_eq!(env.days(), (2, 3));
        let s = env.step(1).unwrap();
        assert!(s.done && s.terminal && s.info.day == 2);
        assert!(env.reset_to(3, 3).is_err());
        assert!(TradingEnv::window(series.clone(), EnvConfig::default(), 2, 2).is_err());
        assert!(TradingEnv::window(series, EnvConfig::default(), 1, 4).is_err());
    }

    #[test]
    fn invalid_inputs_are_errors() {
        assert!(PriceSeries::new(vec![1.0, 2.0], vec![0.0; 3], 2).is_err());
        assert!(PriceSeries::new(vec![1.0, 0.0], vec![0.0; 2], 1).is_err());
        assert!(PriceSeries::new(vec![1.0, -3.0], vec![0.0; 2], 1).is_err());
        assert!(PriceSeries::new(vec![1.0, f64::NAN], vec![0.0; 2], 1).is_err());
        assert!(PriceSeries::new(vec![1.0, 2.0], vec![0.0, f32::INFINITY], 1).is_err());
        assert!(PriceSeries::new(vec![1.0], vec![0.0], 1).is_err());
        let series = Arc::new(PriceSeries::new(vec![1.0, 2.0], vec![0.0; 2], 1).unwrap());
        for config in [
            EnvConfig {
                cost_rate: -0.1,
                ..EnvConfig::default()
            },
            EnvConfig {
                initial_cash: 0.0,
                ..EnvConfig::default()
            },
        ] {
            assert!(TradingEnv::new(series.clone(), config).is_err());
        }
        let mut env = TradingEnv::new(series, EnvConfig::default()).unwrap();
        assert!(env.step(3).is_err());
        assert!(env.step(1).is_ok());
    }
}
