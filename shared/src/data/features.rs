//! The 152 per stock-day input features: 5 prices, 9 K-bar shapes, 27 windowed families × {5,10,20,30,60}
//! and 3 calendar fields. Formulas follow the STORM reference (docs/DATA.md lists each one and every place we
//! deviate). Each is a plain pass over one ticker's rows sorted by date (`kernels`), so each value at day t
//! depends on rows up to t only.

use chrono::Datelike;
use polars::prelude::*;

use super::dates::date_from_days;
use super::ingest::{ADJ_CLOSE, CLOSE, DATE, HIGH, LOW, OPEN, TICKER, VOLUME};
use super::kernels::{
    rolling_argmax, rolling_argmin, rolling_corr, rolling_max, rolling_mean, rolling_min,
    rolling_order, rolling_std, rolling_sum,
};
use crate::error::{Error, Result};

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

/// One ticker's bars, sorted by date.
pub struct Bars {
    /// Days since 1970-01-01.
    pub dates: Vec<i32>,
    pub open: Vec<f64>,
    pub high: Vec<f64>,
    pub low: Vec<f64>,
    pub close: Vec<f64>,
    pub adj_close: Vec<f64>,
    pub volume: Vec<f64>,
}

impl Bars {
    /// Reads the price columns of one ticker's frame (nulls, which the missing-value policy has removed
    /// before this point, would read as NaN).
    pub fn from_frame(prices: &DataFrame) -> Result<Bars> {
        let floats = |name: &str| -> Result<Vec<f64>> {
            let column = prices.column(name)?.cast(&DataType::Float64)?;
            Ok(column
                .f64()?
                .iter()
                .map(|v| v.unwrap_or(f64::NAN))
                .collect())
        };
        let dates = prices.column(DATE)?.date()?.physical().clone();
        if dates.null_count() > 0 {
            return Err(Error::Data(
                "a row without a date reached the features".into(),
            ));
        }
        Ok(Bars {
            dates: dates.into_no_null_iter().collect(),
            open: floats(OPEN)?,
            high: floats(HIGH)?,
            low: floats(LOW)?,
            close: floats(CLOSE)?,
            adj_close: floats(ADJ_CLOSE)?,
            volume: floats(VOLUME)?,
        })
    }

    pub fn len(&self) -> usize {
        self.close.len()
    }

    pub fn is_empty(&self) -> bool {
        self.close.is_empty()
    }
}

/// One ticker's raw features: the 152 columns in [`feature_names`] order (non-finite values set to 0, as
/// the reference does, e.g. a correlation over a constant window), the adjusted price and the next-day
/// label (`None` on the last day).
pub struct TickerFeatures {
    pub columns: Vec<Vec<f64>>,
    pub price: Vec<f64>,
    pub label: Vec<Option<f64>>,
}

/// `x[t - lag]` at row t: NaN for the first `lag` rows.
fn lagged(x: &[f64], lag: usize) -> Vec<f64> {
    (0..x.len())
        .map(|t| if t >= lag { x[t - lag] } else { f64::NAN })
        .collect()
}

fn map2(a: &[f64], b: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect()
}

/// Per-row series that several windowed families share.
struct Shared {
    ret_pos: Vec<f64>,
    ret_abs: Vec<f64>,
    up: Vec<f64>,
    down: Vec<f64>,
    abs_ret_volume: Vec<f64>,
    dv_pos: Vec<f64>,
    dv_abs: Vec<f64>,
    log_volume: Vec<f64>,
    price_ratio: Vec<f64>,
    volume_ratio_log: Vec<f64>,
    volume_eps: Vec<f64>,
}

impl Shared {
    fn new(bars: &Bars) -> Shared {
        let (c, v) = (&bars.close, &bars.volume);
        let (c_prev, v_prev) = (lagged(c, 1), lagged(v, 1));
        let ret = map2(c, &c_prev, |a, b| a / b - 1.0);
        let ret_abs: Vec<f64> = ret.iter().map(|r| r.abs()).collect();
        let dv = map2(v, &v_prev, |a, b| a - b);
        Shared {
            ret_pos: ret.iter().map(|r| r.max(0.0)).collect(),
            up: ret.iter().map(|&r| f64::from(u8::from(r > 0.0))).collect(),
            down: ret.iter().map(|&r| f64::from(u8::from(r < 0.0))).collect(),
            abs_ret_volume: map2(&ret_abs, v, |a, b| a * b),
            ret_abs,
            dv_pos: dv.iter().map(|d| d.max(0.0)).collect(),
            dv_abs: dv.iter().map(|d| d.abs()).collect(),
            log_volume: v.iter().map(|x| (x + 1.0).ln()).collect(),
            price_ratio: map2(c, &c_prev, |a, b| a / b),
            volume_ratio_log: map2(v, &v_prev, |a, b| (a / b + 1.0).ln()),
            volume_eps: v.iter().map(|x| x + EPS).collect(),
        }
    }
}

/// Computes every feature of one ticker.
pub fn compute(bars: &Bars) -> TickerFeatures {
    let n = bars.len();
    let mut named: std::collections::HashMap<String, Vec<f64>> = Default::default();
    let mut put = |name: String, values: Vec<f64>| {
        named.insert(name, values);
    };
    let series = [
        &bars.open,
        &bars.high,
        &bars.low,
        &bars.close,
        &bars.adj_close,
    ];
    for (name, x) in PRICE_FEATURES.into_iter().zip(series) {
        put(name.to_string(), x.clone());
    }
    kbar_features(bars, &mut put);
    calendar_features(&bars.dates, &mut put);
    let shared = Shared::new(bars);
    for w in WINDOWS {
        windowed_features(bars, &shared, w, &mut put);
    }

    let columns = feature_names()
        .iter()
        .map(|name| {
            let mut values = named.remove(name).unwrap_or_else(|| vec![f64::NAN; n]);
            values
                .iter_mut()
                .filter(|x| !x.is_finite())
                .for_each(|x| *x = 0.0);
            values
        })
        .collect();
    let a = &bars.adj_close;
    let label = (0..n)
        .map(|t| (t + 1 < n).then(|| a[t + 1] / a[t] - 1.0))
        .collect();
    TickerFeatures {
        columns,
        price: a.clone(),
        label,
    }
}

/// The 27 windowed families at window `w`.
fn windowed_features(bars: &Bars, s: &Shared, w: usize, put: &mut impl FnMut(String, Vec<f64>)) {
    let (h, l, c, v) = (&bars.high, &bars.low, &bars.close, &bars.volume);
    let ratio = |a: &[f64], b: &[f64]| map2(a, b, |x, y| x / y);
    let share = |pos: &[f64], abs: &[f64]| {
        map2(&rolling_sum(pos, w), &rolling_sum(abs, w), |p, a| {
            p / (a + EPS)
        })
    };
    let name = |family: &str| format!("{family}_{w}");
    let wf = w as f64;
    let past = lagged(c, w);
    put(name("roc"), ratio(&past, c));
    put(name("ma"), ratio(&rolling_mean(c, w), c));
    put(name("std"), ratio(&rolling_std(c, w), c));
    put(name("beta"), map2(&past, c, |p, x| (p - x) / (wf * x)));
    put(name("max"), ratio(&rolling_max(c, w), c));
    put(name("min"), ratio(&rolling_min(c, w), c));
    let order = rolling_order(c, w, &[0.8, 0.2]);
    put(name("qtlu"), ratio(&order.quantiles[0], c));
    put(name("qtld"), ratio(&order.quantiles[1], c));
    put(name("rank"), order.rank.iter().map(|r| r / wf).collect());
    let imax: Vec<f64> = rolling_argmax(h, w).iter().map(|p| p / wf).collect();
    let imin: Vec<f64> = rolling_argmin(l, w).iter().map(|p| p / wf).collect();
    put(name("imxd"), map2(&imax, &imin, |a, b| a - b));
    put(name("imax"), imax);
    put(name("imin"), imin);
    let (low_min, high_max) = (rolling_min(l, w), rolling_max(h, w));
    let rsv = (0..c.len())
        .map(|t| (c[t] - low_min[t]) / (high_max[t] - low_min[t] + EPS))
        .collect();
    put(name("rsv"), rsv);
    let (cntp, cntn) = (rolling_mean(&s.up, w), rolling_mean(&s.down, w));
    put(name("cntd"), map2(&cntp, &cntn, |a, b| a - b));
    put(name("cntp"), cntp);
    put(name("cntn"), cntn);
    put(name("corr"), rolling_corr(c, &s.log_volume, w));
    put(
        name("cord"),
        rolling_corr(&s.price_ratio, &s.volume_ratio_log, w),
    );
    let sump = share(&s.ret_pos, &s.ret_abs);
    put(name("sumn"), sump.iter().map(|x| 1.0 - x).collect());
    put(name("sumd"), sump.iter().map(|x| 2.0 * x - 1.0).collect());
    put(name("sump"), sump);
    put(name("vma"), ratio(&rolling_mean(v, w), &s.volume_eps));
    put(name("vstd"), ratio(&rolling_std(v, w), &s.volume_eps));
    let arv_mean: Vec<f64> = rolling_mean(&s.abs_ret_volume, w)
        .iter()
        .map(|m| m + EPS)
        .collect();
    put(
        name("wvma"),
        ratio(&rolling_std(&s.abs_ret_volume, w), &arv_mean),
    );
    let vsump = share(&s.dv_pos, &s.dv_abs);
    put(name("vsumn"), vsump.iter().map(|x| 1.0 - x).collect());
    put(name("vsumd"), vsump.iter().map(|x| 2.0 * x - 1.0).collect());
    put(name("vsump"), vsump);
}

/// The nine K-bar shapes of each day's own bar.
fn kbar_features(bars: &Bars, put: &mut impl FnMut(String, Vec<f64>)) {
    let n = bars.len();
    let mut columns: Vec<Vec<f64>> = vec![Vec::with_capacity(n); KBAR_FEATURES.len()];
    for t in 0..n {
        let (o, h, l, c) = (bars.open[t], bars.high[t], bars.low[t], bars.close[t]);
        let range = h - l + EPS;
        let (top, bottom) = (if o > c { o } else { c }, if o < c { o } else { c });
        let values = [
            (c - o) / c,
            (c - o) / range,
            (h - l) / o,
            (h - top) / o,
            (h - top) / range,
            (bottom - l) / o,
            (bottom - l) / range,
            (2.0 * c - h - l) / o,
            (2.0 * c - h - l) / range,
        ];
        for (column, value) in columns.iter_mut().zip(values) {
            column.push(value);
        }
    }
    for (name, column) in KBAR_FEATURES.iter().zip(columns) {
        put(name.to_string(), column);
    }
}

/// Day of month, weekday (0 = Monday) and month.
fn calendar_features(dates: &[i32], put: &mut impl FnMut(String, Vec<f64>)) {
    let parts: Vec<Option<chrono::NaiveDate>> = dates.iter().map(|&d| date_from_days(d)).collect();
    let field = |f: fn(&chrono::NaiveDate) -> u32| -> Vec<f64> {
        parts
            .iter()
            .map(|d| d.as_ref().map_or(f64::NAN, |d| f(d) as f64))
            .collect()
    };
    put("day".into(), field(|d| d.day()));
    put(
        "weekday".into(),
        field(|d| d.weekday().num_days_from_monday()),
    );
    put("month".into(), field(|d| d.month()));
}

/// Raw (unscaled) features of one ticker as a frame, rows sorted by date: date, ticker, the 152 features
/// in [`feature_names`] order, `price` and the next-day `label`. Rows before [`FEATURE_HISTORY`] hold
/// meaningless values and must be dropped by the caller.
pub fn ticker_features(prices: &DataFrame) -> Result<DataFrame> {
    let features = compute(&Bars::from_frame(prices)?);
    let mut columns = vec![prices.column(DATE)?.clone(), prices.column(TICKER)?.clone()];
    for (name, values) in feature_names().iter().zip(features.columns) {
        columns.push(Column::new(name.as_str().into(), values));
    }
    columns.push(Column::new(PRICE.into(), features.price));
    columns.push(Column::new(LABEL.into(), features.label));
    Ok(DataFrame::new(prices.height(), columns)?)
}

#[cfg(test)]
mod tests;
