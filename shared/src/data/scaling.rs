//! Causal per-ticker z-scoring: each row is scaled with the mean and population standard deviation of the
//! previous `window` rows of the same ticker, never its own row or any later one. The rule is the same for
//! every split, so no statistic crosses from a later period into an earlier one.

use polars::prelude::*;

use super::features::fixed_std;
use crate::error::Result;

/// Below this relative spread a feature is treated as constant over the look-back and scaled to 0.
const MIN_RELATIVE_STD: f64 = 1e-8;
/// Scaled values are clipped to ±CLIP so that one jump after a flat stretch cannot dominate a window.
pub const CLIP: f64 = 10.0;

/// Expression scaling column `name` with the statistics of the previous `window` rows (Float32 output).
pub fn causal_zscore(name: &str, window: usize) -> Expr {
    let x = col(name);
    let opts = RollingOptionsFixedWindow {
        window_size: window,
        min_periods: window,
        ..Default::default()
    };
    let mean = x.clone().rolling_mean(opts).shift(lit(1));
    let std = x.clone().rolling_std(fixed_std(window, 0)).shift(lit(1));
    let threshold = lit(MIN_RELATIVE_STD) * (mean.clone().abs() + lit(MIN_RELATIVE_STD));
    when(std.clone().gt(threshold))
        .then(((x - mean) / std).clip(lit(-CLIP), lit(CLIP)))
        .otherwise(lit(0.0))
        .cast(DataType::Float32)
        .alias(name)
}

/// Scales every column in `features` of one ticker's raw feature frame (sorted by date).
pub fn scale_ticker(raw: DataFrame, features: &[String], window: usize) -> Result<DataFrame> {
    let exprs: Vec<Expr> = features.iter().map(|f| causal_zscore(f, window)).collect();
    Ok(raw.lazy().with_columns(exprs).collect()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaled(values: &[f64], window: usize) -> Vec<Option<f32>> {
        let df = DataFrame::new_infer_height(vec![Column::new("x".into(), values.to_vec())]).unwrap();
        let out = scale_ticker(df, &["x".to_string()], window).unwrap();
        out.column("x").unwrap().f32().unwrap().into_iter().collect()
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
    fn outliers_are_clipped() {
        let got = scaled(&[1.0, 1.0, 1.0, 1.000001, 1e9], 4);
        assert_eq!(got[4], Some(CLIP as f32));
    }
}
