//! The 152 per stock-day input features: 5 prices, 9 K-bar shapes, 27 windowed families × {5,10,20,30,60}
//! and 3 calendar fields. Formulas follow the STORM reference (docs/DATA.md lists each one and every place we
//! deviate). Everything is a polars expression over one ticker's rows sorted by date, so each value at day t
//! depends on rows up to t only.

use polars::prelude::*;

use super::ingest::{ADJ_CLOSE, CLOSE, DATE, HIGH, LOW, OPEN, TICKER, VOLUME};
use super::kernels::{rolling_argmax, rolling_argmin};
use crate::error::Result;

pub const WINDOWS: [usize; 5] = [5, 10, 20, 30, 60];

/// Rows of history before the first row on which every feature is defined (the longest look-back,
/// `roc_60`, reads the close 60 rows earlier).
pub const FEATURE_HISTORY: usize = 60;

pub const PRICE_FEATURES: [&str; 5] = [OPEN, HIGH, LOW, CLOSE, ADJ_CLOSE];
pub const KBAR_FEATURES: [&str; 9] = [
    "kmid", "kmid2", "klen", "kup", "kup2", "klow", "klow2", "ksft", "ksft2",
];
pub const WINDOWED_FAMILIES: [&str; 27] = [
    "roc", "ma", "std", "beta", "max", "min", "qtlu", "qtld", "rank", "imax", "imin", "imxd",
    "rsv", "cntp", "cntn", "cntd", "corr", "cord", "sump", "sumn", "sumd", "vma", "vstd", "wvma",
    "vsump", "vsumn", "vsumd",
];
pub const CALENDAR_FEATURES: [&str; 3] = ["day", "weekday", "month"];

/// Name of the next-day return label column.
pub const LABEL: &str = "label";
/// Name of the raw adjusted price column (adj_close, or close when absent) used for labels and P&L.
pub const PRICE: &str = "price";

/// Small constant guarding ratios against a zero denominator, as in the reference.
const EPS: f64 = 1e-12;

/// All 152 feature names in model-input order.
pub fn feature_names() -> Vec<String> {
    let mut names: Vec<String> = PRICE_FEATURES.iter().map(|s| s.to_string()).collect();
    names.extend(KBAR_FEATURES.iter().map(|s| s.to_string()));
    for family in WINDOWED_FAMILIES {
        names.extend(WINDOWS.iter().map(|w| format!("{family}_{w}")));
    }
    names.extend(CALENDAR_FEATURES.iter().map(|s| s.to_string()));
    names
}

pub fn n_features() -> usize {
    PRICE_FEATURES.len() + KBAR_FEATURES.len() + WINDOWED_FAMILIES.len() * WINDOWS.len() + 3
}

fn fixed(w: usize) -> RollingOptionsFixedWindow {
    RollingOptionsFixedWindow {
        window_size: w,
        min_periods: w,
        ..Default::default()
    }
}

/// Rolling standard deviation options with an explicit ddof (1 = sample, as pandas; 0 = population).
pub(crate) fn fixed_std(w: usize, ddof: u8) -> RollingOptionsFixedWindow {
    RollingOptionsFixedWindow {
        fn_params: Some(RollingFnParams::Var(RollingVarParams { ddof })),
        ..fixed(w)
    }
}

fn fixed_rank(w: usize) -> RollingOptionsFixedWindow {
    RollingOptionsFixedWindow {
        fn_params: Some(RollingFnParams::Rank {
            method: RollingRankMethod::Average,
            seed: None,
        }),
        ..fixed(w)
    }
}

fn corr(x: Expr, y: Expr, w: usize) -> Expr {
    rolling_corr(
        x,
        y,
        RollingCovOptions {
            window_size: w as IdxSize,
            min_periods: w as IdxSize,
            ddof: 1,
        },
    )
}

fn positive_part(e: Expr) -> Expr {
    when(e.clone().gt(lit(0.0))).then(e).otherwise(lit(0.0))
}

/// Stage 1: per-row series that several features share (polars is built without common-subexpression
/// elimination, so shared pieces are materialised once as `_`-prefixed helper columns).
fn base_series() -> Vec<Expr> {
    let (o, h, l, c, v) = (col(OPEN), col(HIGH), col(LOW), col(CLOSE), col(VOLUME));
    let ln = |e: Expr| e.log(lit(std::f64::consts::E));
    let ret = c.clone() / c.clone().shift(lit(1)) - lit(1.0);
    let dv = v.clone() - v.clone().shift(lit(1));
    vec![
        ret.clone().alias("_ret"),
        positive_part(ret.clone()).alias("_ret_pos"),
        ret.clone().abs().alias("_ret_abs"),
        ret.clone()
            .gt(lit(0.0))
            .cast(DataType::Float64)
            .alias("_up"),
        ret.clone()
            .lt(lit(0.0))
            .cast(DataType::Float64)
            .alias("_down"),
        (ret.abs() * v.clone()).alias("_abs_ret_volume"),
        positive_part(dv.clone()).alias("_dv_pos"),
        dv.abs().alias("_dv_abs"),
        ln(v.clone() + lit(1.0)).alias("_log_volume"),
        (c.clone() / c.clone().shift(lit(1))).alias("_price_ratio"),
        ln(v.clone() / v.clone().shift(lit(1)) + lit(1.0)).alias("_volume_ratio_log"),
        (h.clone() - l.clone() + lit(EPS)).alias("_range"),
        when(o.clone().gt(c.clone()))
            .then(o.clone())
            .otherwise(c.clone())
            .alias("_top"),
        when(o.lt(c.clone()))
            .then(col(OPEN))
            .otherwise(c)
            .alias("_bottom"),
    ]
}

/// Stage 2: K-bar shapes, calendar fields, and every windowed statistic (plus the rolling pieces that
/// stage 3 combines).
fn windowed_series() -> Vec<Expr> {
    let (o, h, l, c, v) = (col(OPEN), col(HIGH), col(LOW), col(CLOSE), col(VOLUME));
    let range = col("_range");
    let mut out = vec![
        ((c.clone() - o.clone()) / c.clone()).alias("kmid"),
        ((c.clone() - o.clone()) / range.clone()).alias("kmid2"),
        ((h.clone() - l.clone()) / o.clone()).alias("klen"),
        ((h.clone() - col("_top")) / o.clone()).alias("kup"),
        ((h.clone() - col("_top")) / range.clone()).alias("kup2"),
        ((col("_bottom") - l.clone()) / o.clone()).alias("klow"),
        ((col("_bottom") - l.clone()) / range.clone()).alias("klow2"),
        ((lit(2.0) * c.clone() - h.clone() - l.clone()) / o.clone()).alias("ksft"),
        ((lit(2.0) * c.clone() - h.clone() - l.clone()) / range).alias("ksft2"),
        col(DATE).dt().day().cast(DataType::Float64).alias("day"),
        (col(DATE).dt().weekday().cast(DataType::Float64) - lit(1.0)).alias("weekday"),
        col(DATE)
            .dt()
            .month()
            .cast(DataType::Float64)
            .alias("month"),
    ];
    let share = |pos: &str, abs: &str, w: usize| {
        col(pos).rolling_sum(fixed(w)) / (col(abs).rolling_sum(fixed(w)) + lit(EPS))
    };
    for w in WINDOWS {
        let n = |family: &str| format!("{family}_{w}");
        let wf = w as f64;
        let past = c.clone().shift(lit(w as i64));
        let quantile = |q| {
            c.clone()
                .rolling_quantile(QuantileMethod::Linear, q, fixed(w))
                / c.clone()
        };
        out.extend([
            (past.clone() / c.clone()).alias(n("roc")),
            (c.clone().rolling_mean(fixed(w)) / c.clone()).alias(n("ma")),
            (c.clone().rolling_std(fixed_std(w, 1)) / c.clone()).alias(n("std")),
            ((past - c.clone()) / (lit(wf) * c.clone())).alias(n("beta")),
            (c.clone().rolling_max(fixed(w)) / c.clone()).alias(n("max")),
            (c.clone().rolling_min(fixed(w)) / c.clone()).alias(n("min")),
            quantile(0.8).alias(n("qtlu")),
            quantile(0.2).alias(n("qtld")),
            (c.clone()
                .rolling_rank(fixed_rank(w))
                .cast(DataType::Float64)
                / lit(wf))
            .alias(n("rank")),
            l.clone().rolling_min(fixed(w)).alias(n("_low_min")),
            h.clone().rolling_max(fixed(w)).alias(n("_high_max")),
            col("_up").rolling_mean(fixed(w)).alias(n("cntp")),
            col("_down").rolling_mean(fixed(w)).alias(n("cntn")),
            corr(c.clone(), col("_log_volume"), w).alias(n("corr")),
            corr(col("_price_ratio"), col("_volume_ratio_log"), w).alias(n("cord")),
            share("_ret_pos", "_ret_abs", w).alias(n("sump")),
            (v.clone().rolling_mean(fixed(w)) / (v.clone() + lit(EPS))).alias(n("vma")),
            (v.clone().rolling_std(fixed_std(w, 1)) / (v.clone() + lit(EPS))).alias(n("vstd")),
            (col("_abs_ret_volume").rolling_std(fixed_std(w, 1))
                / (col("_abs_ret_volume").rolling_mean(fixed(w)) + lit(EPS)))
            .alias(n("wvma")),
            share("_dv_pos", "_dv_abs", w).alias(n("vsump")),
        ]);
    }
    out
}

/// Stage 3: features that are simple combinations of stage-2 columns.
fn derived_series() -> Vec<Expr> {
    let mut out = Vec::new();
    for w in WINDOWS {
        let n = |family: &str| format!("{family}_{w}");
        let (low_min, sump, vsump) = (col(n("_low_min")), col(n("sump")), col(n("vsump")));
        out.extend([
            ((col(CLOSE) - low_min.clone()) / (col(n("_high_max")) - low_min + lit(EPS)))
                .alias(n("rsv")),
            (col(n("cntp")) - col(n("cntn"))).alias(n("cntd")),
            (lit(1.0) - sump.clone()).alias(n("sumn")),
            (lit(2.0) * sump - lit(1.0)).alias(n("sumd")),
            (lit(1.0) - vsump.clone()).alias(n("vsumn")),
            (lit(2.0) * vsump - lit(1.0)).alias(n("vsumd")),
        ]);
    }
    out
}

fn arg_extreme_columns(prices: &DataFrame) -> Result<Vec<Column>> {
    let high: Vec<f64> = prices.column(HIGH)?.f64()?.into_no_null_iter().collect();
    let low: Vec<f64> = prices.column(LOW)?.f64()?.into_no_null_iter().collect();
    let mut cols = Vec::with_capacity(3 * WINDOWS.len());
    for w in WINDOWS {
        let wf = w as f64;
        let imax: Vec<f64> = rolling_argmax(&high, w).iter().map(|p| p / wf).collect();
        let imin: Vec<f64> = rolling_argmin(&low, w).iter().map(|p| p / wf).collect();
        let imxd: Vec<f64> = imax.iter().zip(&imin).map(|(a, b)| a - b).collect();
        for (family, values) in [("imax", imax), ("imin", imin), ("imxd", imxd)] {
            cols.push(Column::new(format!("{family}_{w}").into(), values));
        }
    }
    Ok(cols)
}

/// Raw (unscaled) features of one ticker, rows sorted by date. Returns date, ticker, the 152 features in
/// [`feature_names`] order, `price` and the next-day `label`. Rows before [`FEATURE_HISTORY`] hold
/// meaningless values and must be dropped by the caller; non-finite values elsewhere are set to 0, as the
/// reference does (e.g. a correlation over a constant window).
pub fn ticker_features(prices: &DataFrame) -> Result<DataFrame> {
    let extra = arg_extreme_columns(prices)?;
    let mut base = prices.clone();
    for c in extra {
        base.with_column(c)?;
    }
    let names = feature_names();
    let computed = base
        .lazy()
        .with_columns(base_series())
        .with_columns(windowed_series())
        .with_columns(derived_series())
        .with_columns([
            col(ADJ_CLOSE).alias(PRICE),
            (col(ADJ_CLOSE).shift(lit(-1)) / col(ADJ_CLOSE) - lit(1.0)).alias(LABEL),
        ])
        .collect()?;
    let mut select: Vec<Expr> = vec![col(DATE), col(TICKER)];
    select.extend(names.iter().map(|n| {
        let e = col(n.as_str()).cast(DataType::Float64);
        when(e.clone().is_finite())
            .then(e)
            .otherwise(lit(0.0))
            .alias(n.as_str())
    }));
    select.extend([col(PRICE), col(LABEL)]);
    Ok(computed.lazy().select(select).collect()?)
}

#[cfg(test)]
mod tests;
