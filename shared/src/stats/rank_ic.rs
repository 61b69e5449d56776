//! Cross-sectional correlation of predictions with realised returns: Pearson IC and Spearman RankIC
//! (average ranks for ties), and their day-level aggregates.

/// Ranks (1-based) with ties given the average of the ranks they span.
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            ranks[k] = avg;
        }
        i = j + 1;
    }
    ranks
}

/// Pearson correlation; None when either side is constant or fewer than 2 points.
pub fn pearson(a: &[f64], b: &[f64]) -> Option<f64> {
    let n = a.len();
    if n < 2 || n != b.len() {
        return None;
    }
    let (ma, mb) = (
        a.iter().sum::<f64>() / n as f64,
        b.iter().sum::<f64>() / n as f64,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (x, y) in a.iter().zip(b) {
        sab += (x - ma) * (y - mb);
        saa += (x - ma) * (x - ma);
        sbb += (y - mb) * (y - mb);
    }
    if saa <= 0.0 || sbb <= 0.0 {
        return None;
    }
    Some(sab / (saa * sbb).sqrt())
}

/// Spearman rank correlation with average ranks for ties.
pub fn spearman(a: &[f64], b: &[f64]) -> Option<f64> {
    pearson(&average_ranks(a), &average_ranks(b))
}

/// Mean and sample standard deviation of a series of daily values.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    if values.len() < 2 {
        return (mean, f64::NAN);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt())
}

/// Day-level correlation summary of a prediction series.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IcSummary {
    /// Mean over days of the daily Spearman correlation.
    pub rank_ic: f64,
    /// rank_ic / sample std of the daily values.
    pub rank_icir: f64,
    pub ic: f64,
    pub icir: f64,
    /// Days with a defined correlation (at least 2 stocks with labels, neither side constant).
    pub n_days: usize,
}

/// The pairs of `a` and `b` where both are finite.
pub fn finite_pairs(a: &[f64], b: &[f64]) -> (Vec<f64>, Vec<f64>) {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .map(|(x, y)| (*x, *y))
        .unzip()
}

/// One day's RankIC: Spearman of scores and returns over the stocks where both are finite.
pub fn daily_rank_ic(scores: &[f64], returns: &[f64]) -> Option<f64> {
    let (s, r) = finite_pairs(scores, returns);
    spearman(&s, &r)
}

/// Summarises days of (scores, realised returns); entries whose return is not finite are ignored.
pub fn summarize<'a>(days: impl IntoIterator<Item = (&'a [f64], &'a [f64])>) -> IcSummary {
    let (mut rank, mut plain) = (Vec::new(), Vec::new());
    for (scores, returns) in days {
        let (s, r) = finite_pairs(scores, returns);
        if let (Some(ri), Some(pi)) = (spearman(&s, &r), pearson(&s, &r)) {
            rank.push(ri);
            plain.push(pi);
        }
    }
    let (rank_ic, rank_std) = mean_std(&rank);
    let (ic, ic_std) = mean_std(&plain);
    IcSummary {
        rank_ic,
        rank_icir: rank_ic / rank_std,
        ic,
        icir: ic / ic_std,
        n_days: rank.len(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ties_get_average_ranks() {
        assert_eq!(
            average_ranks(&[10.0, 20.0, 10.0, 5.0]),
            vec![2.5, 4.0, 2.5, 1.0]
        );
    }

    #[test]
    fn spearman_hand_computed() {
        // ranks a = [1,2,3,4], b = [1,3,2,4]: d^2 sum = 2, rho = 1 - 6*2/(4*15) = 0.8
        let r = spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 30.0, 20.0, 40.0]).unwrap();
        assert!((r - 0.8).abs() < 1e-12);
        let r = spearman(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0]).unwrap();
        assert!((r + 1.0).abs() < 1e-12);
    }

    #[test]
    fn constant_side_has_no_correlation() {
        assert_eq!(spearman(&[1.0, 1.0, 1.0], &[1.0, 2.0, 3.0]), None);
    }

    #[test]
    fn summary_by_hand() {
        // day 1: perfect order (1.0); day 2: reversed (-1.0); day 3: spearman 0.8 (see above)
        let d1 = ([1.0, 2.0, 3.0], [0.1, 0.2, 0.3]);
        let d2 = ([1.0, 2.0, 3.0], [0.3, 0.2, 0.1]);
        let d3 = ([1.0, 2.0, 3.0, 4.0], [10.0, 30.0, 20.0, 40.0]);
        let days: Vec<(&[f64], &[f64])> = vec![(&d1.0, &d1.1), (&d2.0, &d2.1), (&d3.0, &d3.1)];
        let s = summarize(days);
        assert_eq!(s.n_days, 3);
        let mean = 0.8 / 3.0;
        assert!((s.rank_ic - mean).abs() < 1e-12);
        let var = ((1.0 - mean).powi(2) + (-1.0 - mean).powi(2) + (0.8 - mean).powi(2)) / 2.0;
        assert!((s.rank_icir - mean / var.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn missing_labels_are_skipped_and_constant_days_dropped() {
        let a = ([1.0, 2.0, 3.0], [0.1, f64::NAN, 0.3]);
        let b = ([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]);
        let s = summarize(vec![(&a.0[..], &a.1[..]), (&b.0[..], &b.1[..])]);
        assert_eq!(s.n_days, 1);
        assert_eq!(s.rank_ic, 1.0);
    }

    #[test]
    fn mean_std_uses_sample_std() {
        let (m, s) = mean_std(&[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(m, 2.5);
        assert!((s - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
    }
}
