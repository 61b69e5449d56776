//! Financial metrics of a daily wealth series (portfolio-management task): cumulative wealth, annualised
//! return, volatility, Sharpe and Calmar ratios, maximum drawdown, turnover and costs.
//!
//! Conventions: `wealth` is V_0..V_T, V_0 the starting cash and T the number of trading days (so T + 1
//! values); a year has 252 trading days. Ratios whose denominator is zero (ASR when AVO = 0, CR when
//! MDD = 0) and statistics that need more data than given (AVO with fewer than 2 returns) are NaN, which
//! JSON writes as `null` and reads back as NaN.

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// Trading days per year used to annualise.
pub const TRADING_DAYS: f64 = 252.0;

/// The metrics of one strategy over one period.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FinancialMetrics {
    /// Annual percentage yield, CW^(252/T) − 1.
    #[serde(deserialize_with = "null_as_nan")]
    pub apy: f64,
    /// Cumulative wealth V_T / V_0.
    #[serde(deserialize_with = "null_as_nan")]
    pub cw: f64,
    /// Calmar ratio APY / MDD (NaN when MDD = 0).
    #[serde(deserialize_with = "null_as_nan")]
    pub cr: f64,
    /// Annualised Sharpe ratio (APY − r_f) / AVO (NaN when AVO = 0 or undefined).
    #[serde(deserialize_with = "null_as_nan")]
    pub asr: f64,
    /// Maximum drawdown as a positive fraction of the running peak (which starts at V_0).
    #[serde(deserialize_with = "null_as_nan")]
    pub mdd: f64,
    /// Annualised volatility: sample std of the daily returns × √252 (NaN with fewer than 2 days).
    #[serde(deserialize_with = "null_as_nan")]
    pub avo: f64,
    /// Mean over trading days of traded value (buys + sells) / wealth before the trade.
    #[serde(deserialize_with = "null_as_nan")]
    pub turnover: f64,
    /// Sum of all transaction costs, in currency units.
    #[serde(deserialize_with = "null_as_nan")]
    pub total_cost: f64,
    /// T, the number of trading days (daily returns).
    pub n_days: usize,
}

/// Reads `null` (how JSON writes NaN) back as NaN.
pub fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl FinancialMetrics {
    /// Metrics of `wealth` (V_0..V_T) with the traded value and cost of each trading day (T values each,
    /// day t's trade made at wealth V_t) and an annual risk-free rate.
    pub fn compute(
        wealth: &[f64],
        traded_value: &[f64],
        cost: &[f64],
        risk_free: f64,
    ) -> Result<Self> {
        check_series(wealth, traded_value, cost)?;
        let returns = daily_returns(wealth);
        let apy = annual_yield(wealth);
        let avo = annual_volatility(&returns);
        let mdd = max_drawdown(wealth);
        Ok(FinancialMetrics {
            apy,
            cw: cumulative_wealth(wealth),
            cr: calmar_ratio(apy, mdd),
            asr: sharpe_ratio(apy, avo, risk_free),
            mdd,
            avo,
            turnover: turnover(wealth, traded_value),
            total_cost: cost.iter().sum(),
            n_days: returns.len(),
        })
    }
}

fn check_series(wealth: &[f64], traded_value: &[f64], cost: &[f64]) -> Result<()> {
    if wealth.len() < 2 {
        return Err(Error::Metrics(format!(
            "financial metrics need at least one trading day (2 wealth values), got {}",
            wealth.len()
        )));
    }
    let days = wealth.len() - 1;
    if traded_value.len() != days || cost.len() != days {
        return Err(Error::Metrics(format!(
            "{} wealth values need {days} traded values and costs, got {} and {}",
            wealth.len(),
            traded_value.len(),
            cost.len()
        )));
    }
    if let Some(i) = wealth.iter().position(|v| !(v.is_finite() && *v > 0.0)) {
        return Err(Error::Metrics(format!(
            "wealth must be finite and positive; day {i} has {}",
            wealth[i]
        )));
    }
    Ok(())
}

/// CW = V_T / V_0.
pub fn cumulative_wealth(wealth: &[f64]) -> f64 {
    match (wealth.first(), wealth.last()) {
        (Some(first), Some(last)) => last / first,
        _ => f64::NAN,
    }
}

/// APY = CW^(252/T) − 1 with T = number of daily returns.
pub fn annual_yield(wealth: &[f64]) -> f64 {
    let days = wealth.len().saturating_sub(1);
    if days == 0 {
        return f64::NAN;
    }
    cumulative_wealth(wealth).powf(TRADING_DAYS / days as f64) - 1.0
}

/// r_t = V_t / V_{t−1} − 1, t = 1..T.
pub fn daily_returns(wealth: &[f64]) -> Vec<f64> {
    wealth.windows(2).map(|w| w[1] / w[0] - 1.0).collect()
}

/// Sample standard deviation (n − 1 in the denominator); NaN with fewer than 2 values.
pub fn sample_std(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return f64::NAN;
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean).powi(2)).sum();
    (ss / (n - 1.0)).sqrt()
}

/// AVO = sample std of the daily returns × √252.
pub fn annual_volatility(returns: &[f64]) -> f64 {
    sample_std(returns) * TRADING_DAYS.sqrt()
}

/// ASR = (APY − r_f) / AVO; NaN when AVO is 0 or undefined.
pub fn sharpe_ratio(apy: f64, avo: f64, risk_free: f64) -> f64 {
    if avo > 0.0 {
        (apy - risk_free) / avo
    } else {
        f64::NAN
    }
}

/// MDD = max_t (peak_t − V_t) / peak_t with peak_t = max(V_0..V_t); 0 when wealth never falls.
pub fn max_drawdown(wealth: &[f64]) -> f64 {
    let mut peak = f64::NEG_INFINITY;
    let mut mdd = 0.0f64;
    for &v in wealth {
        peak = peak.max(v);
        mdd = mdd.max((peak - v) / peak);
    }
    mdd
}

/// CR = APY / MDD; NaN when MDD = 0 (no drawdown: the ratio is undefined, written `null` in JSON).
pub fn calmar_ratio(apy: f64, mdd: f64) -> f64 {
    if mdd > 0.0 {
        apy / mdd
    } else {
        f64::NAN
    }
}

/// Mean over trading days t of traded_value[t] / wealth[t] (the initial purchase included).
pub fn turnover(wealth: &[f64], traded_value: &[f64]) -> f64 {
    if traded_value.is_empty() {
        return f64::NAN;
    }
    let sum: f64 = traded_value
        .iter()
        .zip(wealth)
        .map(|(traded, v)| traded / v)
        .sum();
    sum / traded_value.len() as f64
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

    // Wealth [100, 110, 99, 121], T = 3:
    //   CW  = 121/100 = 1.21
    //   r   = [0.1, −0.1, 22/99 = 0.2222…]
    //   mean r = (0.1 − 0.1 + 0.2222…)/3 = 0.0740740…
    //   deviations: 0.0259259…, −0.1740740…, 0.1481481…; squares 6.7215e-4, 3.030178e-2, 2.194787e-2
    //   sample var = 0.0529218107/2 = 0.0264609053…, std = 0.1626680834…, AVO = std·√252 = 2.5822757691…
    //   APY = 1.21^(252/3) − 1 = 1.21^84 − 1 = 8994376.4034772…
    //   MDD: peak 110 at day 1, trough 99 → 11/110 = 0.1
    //   ASR = APY / AVO = 3483120.0101827…; CR = APY / 0.1 = 89943764.034772…
    const W: [f64; 4] = [100.0, 110.0, 99.0, 121.0];

    #[test]
    fn cumulative_wealth_and_returns_of_a_small_series() {
        assert_close!(cumulative_wealth(&W), 1.21);
        let r = daily_returns(&W);
        assert_eq!(r.len(), 3);
        assert_close!(r[0], 0.1);
        assert_close!(r[1], -0.1);
        assert_close!(r[2], 22.0 / 99.0);
    }

    #[test]
    fn apy_annualises_over_t_days() {
        assert_close!(annual_yield(&W), 1.21f64.powi(84) - 1.0);
        assert_close!(annual_yield(&W), 8994376.4034772);
        // One year of days at 10% in total gives 10% a year.
        let mut year = vec![1.0; 253];
        year[252] = 1.1;
        assert_close!(annual_yield(&year), 0.1);
    }

    #[test]
    fn avo_uses_the_sample_std() {
        let r = daily_returns(&W);
        assert_close!(sample_std(&r), 0.1626680833777611);
        assert_close!(annual_volatility(&r), 2.582275769190454);
        assert!(sample_std(&[0.1]).is_nan());
    }

    #[test]
    fn mdd_is_the_largest_fall_from_the_running_peak() {
        assert_close!(max_drawdown(&W), 0.1);
        // The peak starts at V_0: an immediate fall counts.
        assert_close!(max_drawdown(&[100.0, 80.0, 90.0, 60.0, 200.0]), 0.4);
        assert_eq!(max_drawdown(&[1.0, 1.0, 2.0, 3.0]), 0.0);
    }

    #[test]
    fn sharpe_and_calmar_ratios() {
        let m = FinancialMetrics::compute(&W, &[0.0; 3], &[0.0; 3], 0.0).unwrap();
        assert_close!(m.cw, 1.21);
        assert_close!(m.mdd, 0.1);
        assert_close!(m.asr, 3483120.010182702);
        assert_close!(m.cr, 89943764.034772);
        assert_eq!(m.n_days, 3);
        let with_rf = FinancialMetrics::compute(&W, &[0.0; 3], &[0.0; 3], 0.5).unwrap();
        assert_close!(with_rf.asr, (m.apy - 0.5) / m.avo);
    }

    #[test]
    fn calmar_is_nan_without_drawdown_and_json_writes_null() {
        let m = FinancialMetrics::compute(&[1.0, 1.1, 1.2], &[0.0; 2], &[0.0; 2], 0.0).unwrap();
        assert_eq!(m.mdd, 0.0);
        assert!(m.cr.is_nan());
        let json = serde_json::to_value(m).unwrap();
        assert!(json["cr"].is_null());
        let back: FinancialMetrics = serde_json::from_value(json).unwrap();
        assert!(back.cr.is_nan());
        assert_close!(back.apy, m.apy);
        // Flat wealth: no volatility, so the Sharpe ratio is undefined too.
        let flat = FinancialMetrics::compute(&[5.0; 4], &[0.0; 3], &[0.0; 3], 0.0).unwrap();
        assert!(flat.asr.is_nan() && flat.cr.is_nan());
        assert_eq!(flat.apy, 0.0);
    }

    #[test]
    fn turnover_and_costs() {
        // Day 0 trades 100 of 100, day 1 trades 55 of 110, day 2 nothing: (1 + 0.5 + 0)/3.
        let m =
            FinancialMetrics::compute(&W, &[100.0, 55.0, 0.0], &[0.1, 0.055, 0.0], 0.0).unwrap();
        assert_close!(m.turnover, 0.5);
        assert_close!(m.total_cost, 0.155);
    }

    #[test]
    fn malformed_series_are_errors() {
        assert!(FinancialMetrics::compute(&[1.0], &[], &[], 0.0).is_err());
        assert!(FinancialMetrics::compute(&[1.0, 2.0], &[0.0, 0.0], &[0.0], 0.0).is_err());
        assert!(FinancialMetrics::compute(&[1.0, 0.0], &[0.0], &[0.0], 0.0).is_err());
    }
}
