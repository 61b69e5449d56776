//! Codebook usage statistics from per-code use counts.

/// Shannon entropy (nats) of the distribution that the positive counts define; 0 when no code was used.
/// Its exponential is the codebook's perplexity (the number of equally used codes with the same entropy).
pub fn count_entropy(counts: &[i64]) -> f64 {
    let total: i64 = counts.iter().filter(|&&c| c > 0).sum();
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_of_counts_matches_hand_computed_values() {
        assert_eq!(count_entropy(&[0, 0]), 0.0);
        assert!((count_entropy(&[3, 0, 3]) - 2f64.ln()).abs() < 1e-12);
        // p = (1/4, 3/4): −(¼ ln ¼ + ¾ ln ¾)
        let h = -(0.25f64 * 0.25f64.ln() + 0.75 * 0.75f64.ln());
        assert!((count_entropy(&[1, 3]) - h).abs() < 1e-12);
    }
}
