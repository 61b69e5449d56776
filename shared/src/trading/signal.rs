//! Table 3's signal strategies: a model's predicted next-day return of one stock traded by a fixed rule —
//! long when the prediction is positive, flat otherwise — on the same environment, costs, delay and test
//! days as the learned policies, so a row of the trading table can say how much an RL agent adds to the
//! forecast it is given. Nothing is trained; the valid days are traded too, so the report can say whether
//! the rule beat Buy&Hold where a learned policy would have been selected.

use super::env::Action;
use super::learner::Algorithm;
use super::task::{
    buy_and_hold, cumulative_wealth, greedy_episode, FeatureSource, SplitSeries, StateKind,
    TradeOutcome, TradeParams, Traded,
};
use crate::error::{Error, Result};

/// One ticker's predicted returns (the single state value) and prices on the valid and test days.
#[derive(Debug, Clone)]
pub struct SignalData {
    pub ticker: String,
    pub valid: SplitSeries,
    pub test: SplitSeries,
}

/// The rule on a state `[predicted return, position]`: buy when flat and the prediction is positive, sell
/// when long and it is not, hold otherwise (a zero prediction is no reason to be long).
pub fn signal_action(obs: &[f32]) -> Result<usize> {
    let [score, position] = obs else {
        return Err(Error::Trading(format!(
            "the signal rule reads [predicted return, position], got {} values",
            obs.len()
        )));
    };
    let long = *position > 0.5;
    let action = match (*score > 0.0, long) {
        (true, false) => Action::Buy,
        (false, true) => Action::Sell,
        _ => Action::Hold,
    };
    Ok(action as usize)
}

/// Trades the rule on the valid and test days (each shifted by `params.delay` on its own) and reports the
/// test days against Buy&Hold, with the valid CW of the rule and of Buy&Hold beside them.
pub fn run_signal(data: &SignalData, params: &TradeParams) -> Result<TradeOutcome> {
    if params.algorithm != Algorithm::Signal {
        return Err(Error::Trading(format!(
            "run_signal trades the signal rule, not {}",
            params.algorithm.label()
        )));
    }
    params.validate()?;
    let (valid, test) = match params.delay {
        0 => (data.valid.clone(), data.test.clone()),
        days => (data.valid.delayed(days)?, data.test.delayed(days)?),
    };
    let decide = |obs: &[f32]| signal_action(obs);
    let (valid_env, _) = greedy_episode(&decide, &valid.series, params.env)?;
    let traded = Traded {
        ticker: &data.ticker,
        source: FeatureSource::Predictions,
        state: StateKind::PredictedReturn,
        train_days: 0,
        valid_days: valid.dates.len(),
        test: &test,
    };
    let mut out = traded.outcome(params, &decide)?;
    out.report.best_valid_cw = cumulative_wealth(&valid_env);
    out.report.valid_buy_and_hold_cw =
        Some(cumulative_wealth(&buy_and_hold(&valid.series, params.env)?));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::NaiveDate;

    use super::*;
    use crate::trading::dqn::DqnConfig;
    use crate::trading::ppo::PpoConfig;
    use crate::trading::sac::SacConfig;
    use crate::trading::{EnvConfig, PriceSeries};

    fn split(prices: &[f64], scores: &[f32]) -> SplitSeries {
        let day0 = NaiveDate::from_ymd_opt(2021, 3, 1).unwrap();
        SplitSeries {
            dates: (0..prices.len())
                .map(|i| day0 + chrono::Duration::days(i as i64))
                .collect(),
            series: Arc::new(PriceSeries::new(prices.to_vec(), scores.to_vec(), 1).unwrap()),
        }
    }

    fn params(cost: f64, delay: usize) -> TradeParams {
        TradeParams {
            seed: 0,
            n_envs: 1,
            n_updates: 1,
            eval_every: 1,
            window: 1,
            env: EnvConfig {
                cost_rate: cost,
                initial_cash: 1.0,
            },
            algorithm: Algorithm::Signal,
            ppo: PpoConfig::default(),
            dqn: DqnConfig::default(),
            sac: SacConfig::default(),
            risk_free: 0.0,
            delay,
        }
    }

    /// Up 10 %, down 10 %, up 10 %; the predictions say up, down, up (the last day's is never traded).
    fn data() -> SignalData {
        let prices = [100.0, 110.0, 99.0, 108.9];
        let scores = [0.02, -0.01, 0.03, -5.0];
        SignalData {
            ticker: "X".into(),
            valid: split(&prices, &[0.0, 0.0, 0.0, 0.0]),
            test: split(&prices, &scores),
        }
    }

    #[test]
    fn the_rule_buys_on_positive_and_sells_on_non_positive_predictions() {
        let act = |s: f32, p: f32| signal_action(&[s, p]).unwrap();
        let (sell, hold, buy) = (
            Action::Sell as usize,
            Action::Hold as usize,
            Action::Buy as usize,
        );
        assert_eq!([act(0.1, 0.0), act(0.1, 1.0)], [buy, hold]);
        assert_eq!([act(-0.1, 1.0), act(0.0, 1.0)], [sell, sell]);
        assert_eq!([act(-0.1, 0.0), act(0.0, 0.0)], [hold, hold]);
        assert!(signal_action(&[0.1, 0.2, 1.0]).is_err());
    }

    #[test]
    fn wealth_matches_the_hand_computed_trades() {
        let c = 0.001;
        let out = run_signal(&data(), &params(c, 0)).unwrap();
        let r = &out.report;
        // buy at 100, sell at 110, buy at 99, end at 108.9: 1.1 · 1.1 less a cost on each of 3 trades
        let cw = 1.21 * (1.0 - c) / (1.0 + c).powi(2);
        assert!(
            (r.policy.metrics.cw - cw).abs() < 1e-12,
            "{}",
            r.policy.metrics.cw
        );
        assert_eq!(r.policy.trades, 3);
        assert!((r.buy_and_hold.cw - 1.089 / (1.0 + c)).abs() < 1e-12);
        let positions: Vec<u8> = out.actions.iter().map(|a| a.position).collect();
        assert_eq!(positions, [1, 0, 1, 1]);
        assert_eq!(out.actions[3].action, None);
        // flat predictions on valid never trade: CW 1, below Buy&Hold's 1.089 less one cost
        assert_eq!(r.best_valid_cw, 1.0);
        assert!(r.no_better_than_buy_and_hold_on_valid());
        assert_eq!(
            (r.algorithm, r.features, r.state),
            (
                Algorithm::Signal,
                FeatureSource::Predictions,
                Some(StateKind::PredictedReturn)
            )
        );
        assert_eq!(
            (r.best_update, r.days.train_days, r.days.test_days),
            (0, 0, 4)
        );
        assert!(r.valid_candidates.is_empty());
    }

    #[test]
    fn a_delay_trades_each_prediction_at_a_later_close() {
        let out = run_signal(&data(), &params(0.0, 1)).unwrap();
        let r = &out.report;
        // day 0's "up" buys at day 1's 110 and rides to 99; day 1's "down" sells there; the run ends at
        // day 3: CW 0.9, Buy&Hold from 110 to 108.9
        assert!(
            (r.policy.metrics.cw - 0.9).abs() < 1e-12,
            "{}",
            r.policy.metrics.cw
        );
        assert!((r.buy_and_hold.cw - 0.99).abs() < 1e-12);
        assert_eq!((r.delay, r.days.test_days, r.policy.trades), (1, 3, 2));
        assert_eq!(out.actions[0].date, data().test.dates[1]);
    }

    #[test]
    fn only_the_signal_algorithm_runs_here() {
        let p = TradeParams {
            algorithm: Algorithm::Ppo,
            ..params(0.0, 0)
        };
        assert!(run_signal(&data(), &p).is_err());
    }
}
