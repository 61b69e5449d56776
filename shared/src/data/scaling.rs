//! Causal per-ticker z-scoring: each row is scaled with the mean and population standard deviation of the
//! previous `window` rows of the same ticker, never its own row or any later one. The rule is the same for
//! every split, so no statistic crosses from a later period into an earlier one. A sliding-window kernel
//! (one O(n) pass per column): it is the hot loop of `prepare`.

/// Below this relative spread a feature is treated as constant over the look-back and scaled to 0.
const MIN_RELATIVE_STD: f64 = 1e-6;
/// Scaled values are clipped to ±CLIP so that one jump after a flat stretch cannot dominate a window.
pub const CLIP: f64 = 10.0;

/// Causal z-scores of one series: row t uses the mean and population std of rows t−window..t−1.
/// Rows without a full look-back are NaN. The window sums are kept relative to a shift value and
/// recomputed from scratch every `window` rows, so round-off cannot drift; every value depends on rows
/// up to t only, in a fixed order, so appending rows never changes an earlier result.
pub fn causal_zscore(x: &[f64], window: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; x.len()];
    if window == 0 || x.len() <= window {
        return out;
    }
    let n = window as f64;
    let shift = x[0];
    let (mut sum, mut sum_sq) = (0.0f64, 0.0f64);
    for t in window..x.len() {
        // the look-back of row t is x[t-window..t]
        if (t - window).is_multiple_of(window) {
            sum = 0.0;
            sum_sq = 0.0;
            for &v in &x[t - window..t] {
                sum += v - shift;
                sum_sq += (v - shift) * (v - shift);
            }
        } else {
            let (add, drop) = (x[t - 1] - shift, x[t - 1 - window] - shift);
            sum += add - drop;
            sum_sq += add * add - drop * drop;
        }
        let mean_shifted = sum / n;
        let var = (sum_sq / n - mean_shifted * mean_shifted).max(0.0);
        let (mean, std) = (mean_shifted + shift, var.sqrt());
        out[t] = if std > MIN_RELATIVE_STD * (mean.abs() + MIN_RELATIVE_STD) {
            ((x[t] - mean) / std).clamp(-CLIP, CLIP) as f32
        } else {
            0.0
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled(values: &[f64], window: usize) -> Vec<Option<f32>> {
        causal_zscore(values, window)
            .into_iter()
            .map(|v| Some(v).filter(|x| !x.is_nan()))
            .collect()
    }

    #[test]
    fn uses_only_previous_rows_with_population_std() {
        // previous 4 rows of row 4 are [1,2,3,4]: mean 2.5, population std sqrt(1.25)
        let got = scaled(&[1.0, 2.0, 3.0, 4.0, 10.0, 0.0], 4);
        let expect = ((10.0 - 2.5) / 1.25f64.sqrt()) as f32;
        assert!((got[4].unwrap() - expect).abs() < 1e-6, "{got:?}");
        // row 5 sees [2,3,4,10]: mean 4.75
        let m = 4.75;
        let var = [2.0, 3.0, 4.0, 10.0]
            .iter()
            .map(|v: &f64| (v - m).powi(2))
            .sum::<f64>()
            / 4.0;
        let expect5 = ((0.0 - m) / var.sqrt()) as f32;
        assert!((got[5].unwrap() - expect5).abs() < 1e-6);
    }

    #[test]
    fn constant_history_scales_to_zero_not_infinity() {
        let got = scaled(&[5.0, 5.0, 5.0, 5.0, 7.0], 4);
        assert_eq!(got[4], Some(0.0));
    }

    #[test]
    fn long_series_match_direct_computation() {
        let x: Vec<f64> = (0..500)
            .map(|i| 1000.0 + (i as f64 * 0.37).sin() * 5.0 + (i % 7) as f64)
            .collect();
        let got = causal_zscore(&x, 64);
        for t in 64..x.len() {
            let past = &x[t - 64..t];
            let m = past.iter().sum::<f64>() / 64.0;
            let s = (past.iter().map(|v| (v - m).powi(2)).sum::<f64>() / 64.0).sqrt();
            let want = ((x[t] - m) / s).clamp(-CLIP, CLIP);
            assert!(
                (got[t] as f64 - want).abs() < 1e-4,
                "row {t}: {} vs {want}",
                got[t]
            );
        }
        assert!(got[63].is_nan());
    }

    #[test]
    fn outliers_are_clipped() {
        let got = scaled(&[1.0, 1.0, 1.0, 1.1, 1e9], 4);
        assert_eq!(got[4], Some(CLIP as f32));
    }
}
