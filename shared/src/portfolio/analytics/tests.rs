//! Hand-computed analytics: a 4-date, two-year wealth series against equal weight, and a 10-stock market
//! whose rankings are worked out by hand.

use chrono::NaiveDate;

use super::*;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {
        assert!(close($a, $b), "{} = {} ≠ {}", stringify!($a), $a, $b)
    };
}

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// 10 stocks (index j = name order), 3 dates, 2 trading days:
/// day 0 scores j, labels 0.01·j; day 1 scores −j, labels 0.02·j; the last date is valuation only.
fn ten_stocks() -> Market {
    let n = 10;
    let mut scores = Vec::new();
    let mut labels = Vec::new();
    for t in 0..3 {
        for j in 0..n {
            let j = j as f64;
            scores.push(Some(if t == 0 { j } else { -j }));
            labels.push(match t {
                0 => Some(0.01 * j),
                1 => Some(0.02 * j),
                _ => None,
            });
        }
    }
    Market {
        dates: ["2024-01-02", "2024-01-03", "2024-01-04"]
            .map(date)
            .to_vec(),
        tickers: (0..n).map(|j| format!("S{j:02}")).collect(),
        scores,
        labels,
    }
}

fn series(wealth: &[f64]) -> WealthSeries {
    WealthSeries::untraded(wealth.to_vec())
}

#[test]
fn relative_metrics_hit_rate_sortino_and_years_by_hand() {
    // strategy r = [0.1, −0.1, 0.12], equal weight b = [0.05, 0, 0.05]
    let strategy = series(&[100.0, 110.0, 99.0, 110.88]);
    let ew = series(&[100.0, 105.0, 105.0, 110.25]);
    let market = Market {
        dates: ["2023-12-28", "2023-12-29", "2024-01-02", "2024-01-03"]
            .map(date)
            .to_vec(),
        tickers: vec!["A".into()],
        scores: vec![None; 4],
        labels: vec![None; 4],
    };
    let a = analyse(&AnalyticsInput {
        traded: &market,
        strategy: &strategy,
        equal_weight: &ew,
        index: Some(&ew),
        k: 1,
        risk_free: 0.0,
    });
    let excess = [0.05f64, -0.1, 0.07];
    let m = 0.02 / 3.0;
    let sd = (excess.iter().map(|e| (e - m).powi(2)).sum::<f64>() / 2.0).sqrt();
    let rel = &a.vs_equal_weight;
    assert_close!(rel.excess_return, m * 252.0);
    assert_close!(rel.tracking_error, sd * 252f64.sqrt());
    assert_close!(rel.information_ratio, m * 252.0 / (sd * 252f64.sqrt()));
    assert_close!(rel.win_rate, 2.0 / 3.0);
    assert_eq!(a.vs_index.as_ref(), Some(rel));
    assert_close!(a.hit_rate, 2.0 / 3.0);
    // only −0.1 is below the (zero) target: downside = √(0.01 / 3) · √252
    let downside = (0.01f64 / 3.0).sqrt() * 252f64.sqrt();
    assert_close!(a.sortino, (1.1088f64.powf(84.0) - 1.0) / downside);

    assert_eq!(a.years.len(), 2);
    let (y23, y24) = (&a.years[0], &a.years[1]);
    assert_eq!((y23.year, y23.days, y24.year, y24.days), (2023, 1, 2024, 2));
    assert_close!(y23.strategy, 0.1);
    assert_close!(y23.equal_weight, 0.05);
    assert_close!(y23.strategy_mdd, 0.0);
    assert_close!(y24.strategy, 110.88 / 110.0 - 1.0);
    assert_close!(y24.equal_weight, 110.25 / 105.0 - 1.0);
    assert_close!(y24.index.unwrap(), 110.25 / 105.0 - 1.0);
    assert_close!(y24.strategy_mdd, 0.1);

    // a positive risk-free rate lowers the target and the numerator
    let with_rf = analyse(&AnalyticsInput {
        traded: &market,
        strategy: &strategy,
        equal_weight: &ew,
        index: None,
        k: 1,
        risk_free: 0.0252,
    });
    let target = 0.0001;
    let down = ((0.1f64 + target).powi(2) / 3.0).sqrt() * 252f64.sqrt();
    assert_close!(
        with_rf.sortino,
        (1.1088f64.powf(84.0) - 1.0 - 0.0252) / down
    );
    assert!(with_rf.vs_index.is_none());
}

#[test]
fn long_short_quintiles_and_ic_decay_by_hand() {
    let market = ten_stocks();
    let flat = series(&[1.0, 1.0, 1.0]);
    let a = analyse(&AnalyticsInput {
        traded: &market,
        strategy: &flat,
        equal_weight: &flat,
        index: None,
        k: 2,
        risk_free: 0.0,
    });
    // day 0: top 2 by score are S08, S09 (0.085), bottom S00, S01 (0.005) → +0.08
    // day 1: top 2 are S00, S01 (0.01), bottom S08, S09 (0.17) → −0.16
    assert_eq!(a.long_short.n_days, 2);
    assert_close!(a.long_short.annual_return, -0.04 * 252.0);
    let sd = (2.0f64 * 0.12f64.powi(2)).sqrt();
    assert_close!(a.long_short.annual_volatility, sd * 252f64.sqrt());
    // quintile 1 holds the lowest scores: day 0 S00, S01 (0.005); day 1 S08, S09 (0.17)
    assert_eq!(a.quantiles.len(), 5);
    assert_close!(a.quantiles[0].annual_return, (0.005 + 0.17) / 2.0 * 252.0);
    assert_close!(a.quantiles[4].annual_return, (0.085 + 0.01) / 2.0 * 252.0);
    assert_close!(a.quantiles[2].annual_return, (0.045 + 0.09) / 2.0 * 252.0);
    // h = 1: RankIC +1 then −1; h = 2: only day 0, forward (1 + 0.01j)(1 + 0.02j) − 1 is increasing in j
    let h: Vec<(usize, usize)> = a.ic_decay.iter().map(|i| (i.horizon, i.n_days)).collect();
    assert_eq!(h, [(1, 2), (5, 0), (10, 0), (20, 0)]);
    assert_close!(a.ic_decay[0].rank_ic, 0.0);
    assert_eq!(ic_at_horizon(&market, 2).n_days, 1);
    assert_close!(ic_at_horizon(&market, 2).rank_ic, 1.0);
    assert!(a.ic_decay[1].rank_ic.is_nan());

    // NaN survives the JSON round trip as null
    let json = serde_json::to_string(&a).unwrap();
    let back: Analytics = serde_json::from_str(&json).unwrap();
    assert!(back.ic_decay[1].rank_ic.is_nan());
    assert_eq!(back.long_short, a.long_short);
}

#[test]
fn ties_break_by_name_and_thin_days_are_skipped() {
    // four names with equal scores: the top by name is S00, the bottom S03
    let mut market = ten_stocks();
    market.tickers.truncate(4);
    market.scores = vec![Some(0.0); 12];
    market.labels = (0..12).map(|c| Some(0.01 * (c % 4) as f64)).collect();
    assert_close!(long_short(&market, 1).annual_return, -0.03 * 252.0);
    // fewer than 2k names on every day: no spread days; fewer than 5: no quintile days
    assert_eq!(long_short(&market, 3).n_days, 0);
    assert!(quantile_returns(&market).iter().all(|q| q.n_days == 0));
}

#[test]
fn quintile_groups_follow_array_split() {
    assert_eq!(split_points(10, 5), [0, 2, 4, 6, 8, 10]);
    assert_eq!(split_points(7, 5), [0, 2, 4, 5, 6, 7]);
    assert_eq!(split_points(12, 5), [0, 3, 6, 8, 10, 12]);
}
