//! The rolling kernels of the feature pipeline: plain O(n)–O(n·w) passes over one ticker's series, each
//! value at row t reading rows t+1−w..=t only. Every output is NaN until the window is full.
//!
//! Sums slide (recomputed from scratch every `w` rows and whenever a non-finite value leaves, so round-off
//! cannot drift and an infinity cannot linger); spreads and correlations are computed in two passes over
//! each window, relative to the window's first value, so a constant window gives exactly zero spread.

use std::collections::VecDeque;

/// The trailing window of row `t`.
fn window(x: &[f64], w: usize, t: usize) -> &[f64] {
    &x[t + 1 - w..=t]
}

/// Sum of each full window.
pub fn rolling_sum(x: &[f64], w: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    if w == 0 || x.len() < w {
        return out;
    }
    let mut sum = 0.0;
    for t in w - 1..x.len() {
        let start = t + 1 - w;
        if start.is_multiple_of(w) || !x[start - 1].is_finite() {
            sum = window(x, w, t).iter().sum();
        } else {
            sum += x[t];
            sum -= x[start - 1];
        }
        out[t] = sum;
    }
    out
}

/// Mean of each full window.
pub fn rolling_mean(x: &[f64], w: usize) -> Vec<f64> {
    let mut out = rolling_sum(x, w);
    let n = w as f64;
    out.iter_mut().for_each(|s| *s /= n);
    out
}

/// Sample standard deviation (ddof 1, as pandas) of each full window.
pub fn rolling_std(x: &[f64], w: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    if w < 2 {
        return out;
    }
    for (t, slot) in out.iter_mut().enumerate().skip(w - 1) {
        let win = window(x, w, t);
        let shift = win[0];
        let mean = win.iter().map(|v| v - shift).sum::<f64>() / w as f64;
        let ss: f64 = win.iter().map(|v| (v - shift - mean).powi(2)).sum();
        *slot = (ss / (w - 1) as f64).sqrt();
    }
    out
}

/// Pearson correlation of `x` and `y` over each full window; NaN when either is constant there.
pub fn rolling_corr(x: &[f64], y: &[f64], w: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    if w < 2 || x.len() != y.len() {
        return out;
    }
    let n = w as f64;
    for (t, slot) in out.iter_mut().enumerate().skip(w - 1) {
        let (wx, wy) = (window(x, w, t), window(y, w, t));
        let (sx, sy) = (wx[0], wy[0]);
        let mx = wx.iter().map(|v| v - sx).sum::<f64>() / n;
        let my = wy.iter().map(|v| v - sy).sum::<f64>() / n;
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (a, b) in wx.iter().zip(wy) {
            let (dx, dy) = (a - sx - mx, b - sy - my);
            sxy += dx * dy;
            sxx += dx * dx;
            syy += dy * dy;
        }
        *slot = sxy / (sxx * syy).sqrt();
    }
    out
}

/// Maximum of each full window.
pub fn rolling_max(x: &[f64], w: usize) -> Vec<f64> {
    extreme_values(x, w, |newer, older| newer > older)
}

/// Minimum of each full window.
pub fn rolling_min(x: &[f64], w: usize) -> Vec<f64> {
    extreme_values(x, w, |newer, older| newer < older)
}

/// For each row t with a full window, the position (0 = oldest row of the window) of the first maximum of
/// `x[t+1-w..=t]`; NaN before the window is full.
pub fn rolling_argmax(x: &[f64], w: usize) -> Vec<f64> {
    extreme_positions(x, w, |newer, older| newer > older)
}

/// As [`rolling_argmax`], for the first minimum.
pub fn rolling_argmin(x: &[f64], w: usize) -> Vec<f64> {
    extreme_positions(x, w, |newer, older| newer < older)
}

fn extreme_values(x: &[f64], w: usize, beats: impl Fn(f64, f64) -> bool) -> Vec<f64> {
    extreme_indices(x, w, beats)
        .into_iter()
        .map(|i| i.map_or(f64::NAN, |i| x[i]))
        .collect()
}

fn extreme_positions(x: &[f64], w: usize, beats: impl Fn(f64, f64) -> bool) -> Vec<f64> {
    extreme_indices(x, w, beats)
        .into_iter()
        .enumerate()
        .map(|(t, i)| i.map_or(f64::NAN, |i| (i + w - 1 - t) as f64))
        .collect()
}

/// The index of each full window's first extreme, by a monotonic deque. `beats(newer, older)` says when
/// a newer value displaces an older one; equal values never do, so the oldest of tied extremes is
/// reported (numpy's argmax convention).
fn extreme_indices(x: &[f64], w: usize, beats: impl Fn(f64, f64) -> bool) -> Vec<Option<usize>> {
    let mut out = vec![None; x.len()];
    if w == 0 {
        return out;
    }
    let mut deque: VecDeque<usize> = VecDeque::with_capacity(w + 1);
    for (i, &value) in x.iter().enumerate() {
        while deque.back().is_some_and(|&back| beats(value, x[back])) {
            deque.pop_back();
        }
        deque.push_back(i);
        if deque.front().is_some_and(|&front| front + w <= i) {
            deque.pop_front();
        }
        if i + 1 >= w {
            out[i] = deque.front().copied();
        }
    }
    out
}

/// Order statistics of each full window from one sorted copy of the window, kept sorted as it slides
/// (one binary search and one shift per row).
pub struct WindowOrder {
    /// Linear-interpolation quantiles (pandas' and polars' `linear`), one vector per requested level.
    pub quantiles: Vec<Vec<f64>>,
    /// The average rank (1 = smallest, ties share their mean rank) of row t within its own window.
    pub rank: Vec<f64>,
}

pub fn rolling_order(x: &[f64], w: usize, levels: &[f64]) -> WindowOrder {
    let mut quantiles = vec![vec![f64::NAN; x.len()]; levels.len()];
    let mut rank = vec![f64::NAN; x.len()];
    if w == 0 || x.len() < w {
        return WindowOrder { quantiles, rank };
    }
    let mut sorted: Vec<f64> = x[..w - 1].to_vec();
    sorted.sort_by(f64::total_cmp);
    for t in w - 1..x.len() {
        if t >= w {
            let old = x[t - w];
            if let Ok(at) = sorted.binary_search_by(|v| v.total_cmp(&old)) {
                sorted.remove(at);
            }
        }
        let new = x[t];
        let at = sorted.partition_point(|v| v.total_cmp(&new).is_lt());
        sorted.insert(at, new);
        for (q, out) in levels.iter().zip(&mut quantiles) {
            let pos = q * (w - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            out[t] = sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64);
        }
        let less = at as f64;
        let not_greater = sorted.partition_point(|v| v.total_cmp(&new).is_le()) as f64;
        rank[t] = less + (not_greater - less + 1.0) / 2.0;
    }
    WindowOrder { quantiles, rank }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute_arg(x: &[f64], w: usize, max: bool) -> Vec<f64> {
        (0..x.len())
            .map(|t| {
                if t + 1 < w {
                    return f64::NAN;
                }
                let win = &x[t + 1 - w..=t];
                let mut best = 0;
                for (j, &v) in win.iter().enumerate() {
                    if (max && v > win[best]) || (!max && v < win[best]) {
                        best = j;
                    }
                }
                best as f64
            })
            .collect()
    }

    /// Applies `f` to every full window of `x`.
    fn brute(x: &[f64], w: usize, f: impl Fn(&[f64]) -> f64) -> Vec<f64> {
        (0..x.len())
            .map(|t| {
                if t + 1 < w {
                    f64::NAN
                } else {
                    f(&x[t + 1 - w..=t])
                }
            })
            .collect()
    }

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y)
    }

    fn close(a: &[f64], b: &[f64], tol: f64) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x.is_nan() && y.is_nan()) || (x - y).abs() <= tol * y.abs().max(1.0))
    }

    const SERIES: [f64; 14] = [
        3.0, 1.0, 3.0, 2.0, 5.0, 5.0, 0.0, 1.0, 1.0, 4.0, 2.0, 2.0, 2.0, 2.0,
    ];

    #[test]
    fn arg_extremes_match_brute_force_including_ties() {
        for w in 1..=6 {
            assert!(
                same(&rolling_argmax(&SERIES, w), &brute_arg(&SERIES, w, true)),
                "max w={w}"
            );
            assert!(
                same(&rolling_argmin(&SERIES, w), &brute_arg(&SERIES, w, false)),
                "min w={w}"
            );
        }
    }

    #[test]
    fn hand_computed_window_of_three() {
        let x = [1.0, 4.0, 2.0, 4.0, 0.0];
        let got = rolling_argmax(&x, 3);
        assert!(got[0].is_nan() && got[1].is_nan());
        // windows [1,4,2] -> 1, [4,2,4] -> 0 (oldest tie), [2,4,0] -> 1
        assert_eq!(&got[2..], &[1.0, 0.0, 1.0]);
        assert_eq!(&rolling_max(&x, 3)[2..], &[4.0, 4.0, 4.0]);
        assert_eq!(&rolling_min(&x, 3)[2..], &[1.0, 2.0, 0.0]);
    }

    #[test]
    fn sums_means_and_spreads_match_brute_force() {
        let x: Vec<f64> = (0..200)
            .map(|i| 100.0 + (i as f64 * 0.37).sin() * 5.0 + (i % 7) as f64)
            .collect();
        for w in [2, 5, 20, 60] {
            let sum = |v: &[f64]| v.iter().sum::<f64>();
            let mean = |v: &[f64]| sum(v) / v.len() as f64;
            let std = |v: &[f64]| {
                let m = mean(v);
                (v.iter().map(|a| (a - m).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
            };
            assert!(
                close(&rolling_sum(&x, w), &brute(&x, w, sum), 1e-12),
                "sum w={w}"
            );
            assert!(
                close(&rolling_mean(&x, w), &brute(&x, w, mean), 1e-12),
                "mean w={w}"
            );
            assert!(
                close(&rolling_std(&x, w), &brute(&x, w, std), 1e-9),
                "std w={w}"
            );
            let max = |v: &[f64]| v.iter().cloned().fold(f64::MIN, f64::max);
            assert!(same(&rolling_max(&x, w), &brute(&x, w, max)), "max w={w}");
        }
    }

    #[test]
    fn an_infinity_leaves_the_sum_with_its_window() {
        let x = [1.0, f64::INFINITY, 2.0, 3.0, 4.0, 5.0, 6.0];
        let got = rolling_sum(&x, 3);
        assert!(got[2].is_infinite() && got[3].is_infinite());
        assert_eq!(&got[4..], &[9.0, 12.0, 15.0]);
    }

    #[test]
    fn constant_windows_have_zero_spread_and_no_correlation() {
        let x = [0.1; 8];
        let y = [1.0, 2.0, 4.0, 3.0, 5.0, 7.0, 6.0, 8.0];
        assert!(rolling_std(&x, 4)[3..].iter().all(|&s| s == 0.0));
        assert!(rolling_corr(&x, &y, 4)[3..].iter().all(|c| c.is_nan()));
    }

    #[test]
    fn correlation_matches_pearson() {
        let x: Vec<f64> = (0..50).map(|i| (i as f64 * 0.7).sin() + 100.0).collect();
        let y: Vec<f64> = (0..50)
            .map(|i| (i as f64 * 0.3).cos() * 3.0 + (i % 4) as f64)
            .collect();
        for w in [5, 20] {
            let got = rolling_corr(&x, &y, w);
            for t in w - 1..x.len() {
                let want =
                    crate::stats::rank_ic::pearson(&x[t + 1 - w..=t], &y[t + 1 - w..=t]).unwrap();
                assert!(
                    (got[t] - want).abs() < 1e-9,
                    "w={w} t={t}: {} vs {want}",
                    got[t]
                );
            }
        }
    }

    #[test]
    fn quantiles_and_average_ranks_match_brute_force() {
        for w in 1..=7 {
            let order = rolling_order(&SERIES, w, &[0.2, 0.8]);
            for (q, got) in [0.2, 0.8].iter().zip(&order.quantiles) {
                let want = brute(&SERIES, w, |v| {
                    let mut s = v.to_vec();
                    s.sort_by(f64::total_cmp);
                    let pos = q * (s.len() as f64 - 1.0);
                    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
                    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
                });
                assert!(close(got, &want, 1e-12), "q={q} w={w}");
            }
            let want = brute(&SERIES, w, |v| {
                let last = v[v.len() - 1];
                let less = v.iter().filter(|&&a| a < last).count() as f64;
                let equal = v.iter().filter(|&&a| a == last).count() as f64;
                less + (equal + 1.0) / 2.0
            });
            assert!(same(&order.rank, &want), "rank w={w}");
        }
        // the last window [2,2,2,2] of four ties: every rank is the mean of 1..4
        assert_eq!(rolling_order(&SERIES, 4, &[]).rank[13], 2.5);
    }
}
