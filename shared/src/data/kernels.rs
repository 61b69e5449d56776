//! Rolling kernels polars does not provide as expressions: the position of the window's extreme.
//! O(n) monotonic-deque passes over one ticker's series.

use std::collections::VecDeque;

/// For each row t with a full window, the position (0 = oldest row of the window) of the first maximum of
/// `x[t+1-w..=t]`; NaN before the window is full.
pub fn rolling_argmax(x: &[f64], w: usize) -> Vec<f64> {
    rolling_arg_extreme(x, w, |newer, older| newer > older)
}

/// As [`rolling_argmax`], for the first minimum.
pub fn rolling_argmin(x: &[f64], w: usize) -> Vec<f64> {
    rolling_arg_extreme(x, w, |newer, older| newer < older)
}

/// `beats(newer, older)` says when a newer value displaces an older one; equal values never do, so the
/// oldest of tied extremes is reported (numpy's argmax convention).
fn rolling_arg_extreme(x: &[f64], w: usize, beats: impl Fn(f64, f64) -> bool) -> Vec<f64> {
    let mut out = vec![f64::NAN; x.len()];
    if w == 0 {
        return out;
    }
    let mut deque: VecDeque<usize> = VecDeque::with_capacity(w);
    for (i, &value) in x.iter().enumerate() {
        while let Some(&back) = deque.back() {
            if beats(value, x[back]) {
                deque.pop_back();
            } else {
                break;
            }
        }
        deque.push_back(i);
        if let Some(&front) = deque.front() {
            if front + w <= i {
                deque.pop_front();
            }
        }
        if i + 1 >= w {
            let start = i + 1 - w;
            out[i] = (deque[0] - start) as f64;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brute(x: &[f64], w: usize, max: bool) -> Vec<f64> {
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

    fn same(a: &[f64], b: &[f64]) -> bool {
        a.iter()
            .zip(b)
            .all(|(x, y)| (x.is_nan() && y.is_nan()) || x == y)
    }

    #[test]
    fn matches_brute_force_including_ties() {
        let x = [3.0, 1.0, 3.0, 2.0, 5.0, 5.0, 0.0, 1.0, 1.0, 4.0, 2.0, 2.0];
        for w in 1..=6 {
            assert!(
                same(&rolling_argmax(&x, w), &brute(&x, w, true)),
                "max w={w}"
            );
            assert!(
                same(&rolling_argmin(&x, w), &brute(&x, w, false)),
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
    }
}
