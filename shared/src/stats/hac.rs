//! Heteroskedasticity- and autocorrelation-consistent (Newey–West) inference on the mean of a daily series,
//! e.g. daily RankIC: consecutive days' ICs are correlated (overlapping information, persistent rankings), so
//! the plain t-statistic mean / (std / √T) overstates significance.

/// Newey–West's automatic lag, ⌊4 (T / 100)^(2/9)⌋ (at least 0).
pub fn newey_west_lag(n: usize) -> usize {
    (4.0 * (n as f64 / 100.0).powf(2.0 / 9.0)).floor() as usize
}

/// The mean of `values` (non-finite entries dropped), its Newey–West standard error with Bartlett weights
/// at `lag`, and their ratio. NaN when fewer than 2 values remain or the long-run variance is not positive.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanTest {
    pub mean: f64,
    pub std_error: f64,
    pub t_stat: f64,
    pub n: usize,
    pub lag: usize,
}

pub fn hac_mean_test(values: &[f64], lag: Option<usize>) -> MeanTest {
    let x: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = x.len();
    let lag = lag
        .unwrap_or_else(|| newey_west_lag(n))
        .min(n.saturating_sub(1));
    if n < 2 {
        let mean = x.first().copied().unwrap_or(f64::NAN);
        return MeanTest {
            mean,
            std_error: f64::NAN,
            t_stat: f64::NAN,
            n,
            lag,
        };
    }
    let mean = x.iter().sum::<f64>() / n as f64;
    let d: Vec<f64> = x.iter().map(|v| v - mean).collect();
    let autocov = |k: usize| d[k..].iter().zip(&d).map(|(a, b)| a * b).sum::<f64>() / n as f64;
    let mut long_run = autocov(0);
    for k in 1..=lag {
        long_run += 2.0 * (1.0 - k as f64 / (lag as f64 + 1.0)) * autocov(k);
    }
    let std_error = if long_run > 0.0 {
        (long_run / n as f64).sqrt()
    } else {
        f64::NAN
    };
    MeanTest {
        mean,
        std_error,
        t_stat: mean / std_error,
        n,
        lag,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_computed_lag_one() {
        // demeaned (-1.5, -0.5, 0.5, 1.5): γ0 = 1.25, γ1 = 1.25 / 4 = 0.3125, weight ½ →
        // long-run variance 1.5625, se = √(1.5625 / 4) = 0.625, t = 2.5 / 0.625 = 4
        let t = hac_mean_test(&[1.0, 2.0, f64::NAN, 3.0, 4.0], Some(1));
        assert_eq!((t.n, t.lag), (4, 1));
        assert!((t.mean - 2.5).abs() < 1e-12);
        assert!((t.std_error - 0.625).abs() < 1e-12);
        assert!((t.t_stat - 4.0).abs() < 1e-12);
    }

    #[test]
    fn lag_zero_is_the_plain_t_with_the_population_variance_and_degenerate_input_is_nan() {
        let t = hac_mean_test(&[1.0, 3.0], Some(0));
        assert!((t.std_error - (1.0f64 / 2.0).sqrt()).abs() < 1e-12);
        assert!(hac_mean_test(&[1.0], None).t_stat.is_nan());
        assert!(hac_mean_test(&[2.0, 2.0, 2.0], None).t_stat.is_nan());
        assert_eq!(newey_west_lag(314), 5);
        assert_eq!(newey_west_lag(2900), 8);
    }
}
