//! The zero-training reference factors (`model.kind = "reference"`, issue 14): one-line price signals that
//! any claimed edge must beat. Each is computed at a day's close from that day's and earlier adjusted
//! prices only, so it predicts the next day's return with the same information as a model's window.

use crate::config::ReferenceFactor;
use crate::data::Panel;
use crate::stats::rank_ic::mean_std;

/// The factor on one stock's prices p_{t−h} .. p_t (oldest first, h = `factor.lookback()`); NaN when a
/// price is missing or not positive, or the history is shorter than h + 1 days.
pub fn score(factor: ReferenceFactor, prices: &[f64]) -> f64 {
    if prices.len() != factor.lookback() + 1 || prices.iter().any(|p| !(p.is_finite() && *p > 0.0))
    {
        return f64::NAN;
    }
    let (first, last) = (prices[0], prices[prices.len() - 1]);
    match factor {
        ReferenceFactor::Reversal1d | ReferenceFactor::Reversal5d => -(last / first - 1.0),
        ReferenceFactor::Momentum20d | ReferenceFactor::Momentum60d => last / first - 1.0,
        ReferenceFactor::LowVolatility20d => {
            let returns: Vec<f64> = prices.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
            -mean_std(&returns).1
        }
    }
}

/// Every stock's score at the close of `day` (NaN where the factor's history is incomplete).
pub fn reference_scores(factor: ReferenceFactor, panel: &Panel, day: usize) -> Vec<f64> {
    let (n, h) = (panel.n_tickers(), factor.lookback());
    (0..n)
        .map(|stock| {
            if day < h {
                return f64::NAN;
            }
            let history: Vec<f64> = (day - h..=day)
                .map(|d| panel.prices[d * n + stock])
                .collect();
            score(factor, &history)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn scores_match_hand_computation() {
        let p = [100.0, 110.0];
        assert!(close(score(ReferenceFactor::Reversal1d, &p), -0.1));
        let p6 = [50.0, 51.0, 49.0, 52.0, 53.0, 40.0];
        assert!(close(score(ReferenceFactor::Reversal5d, &p6), 0.2));
        let mut p21: Vec<f64> = (0..21).map(|i| 100.0 + i as f64).collect();
        assert!(close(score(ReferenceFactor::Momentum20d, &p21), 0.2));
        // alternating +10 % / −10 %-ish returns: the std of [0.1, −1/11, 0.1, …]
        p21 = (0..21)
            .map(|i| if i % 2 == 0 { 100.0 } else { 110.0 })
            .collect();
        let returns: Vec<f64> = p21.windows(2).map(|w| w[1] / w[0] - 1.0).collect();
        let m = returns.iter().sum::<f64>() / 20.0;
        let var = returns.iter().map(|r| (r - m).powi(2)).sum::<f64>() / 19.0;
        assert!(close(
            score(ReferenceFactor::LowVolatility20d, &p21),
            -var.sqrt()
        ));
        let p61: Vec<f64> = (0..61)
            .map(|i| if i == 60 { 90.0 } else { 100.0 })
            .collect();
        assert!(close(score(ReferenceFactor::Momentum60d, &p61), -0.1));
    }

    #[test]
    fn missing_or_short_history_gives_nan() {
        assert!(score(ReferenceFactor::Reversal1d, &[100.0, f64::NAN]).is_nan());
        assert!(score(ReferenceFactor::Reversal1d, &[0.0, 1.0]).is_nan());
        assert!(score(ReferenceFactor::Reversal5d, &[1.0, 2.0]).is_nan());
    }

    #[test]
    fn a_day_score_never_reads_a_later_price() {
        let (t_len, n) = (80, 2);
        let prices: Vec<f64> = (0..t_len * n).map(|i| 50.0 + (i * 7 % 13) as f64).collect();
        let panel = |prices: Vec<f64>| Panel {
            dates: vec![chrono::NaiveDate::default(); t_len],
            tickers: vec!["A".into(), "B".into()],
            feature_names: vec![],
            features: vec![],
            present: vec![true; t_len * n],
            labels: vec![0.0; t_len * n],
            prices,
        };
        let day = 70;
        let mut later = prices.clone();
        for v in &mut later[(day + 1) * n..] {
            *v *= 3.0;
        }
        for factor in ReferenceFactor::ALL {
            let a = reference_scores(factor, &panel(prices.clone()), day);
            let b = reference_scores(factor, &panel(later.clone()), day);
            assert_eq!(a, b, "{factor:?}");
            assert!(a.iter().all(|v| v.is_finite()), "{factor:?}: {a:?}");
        }
        // before the factor has its history, nothing is scored
        assert!(
            reference_scores(ReferenceFactor::Momentum20d, &panel(prices), 19)
                .iter()
                .all(|v| v.is_nan())
        );
    }
}
