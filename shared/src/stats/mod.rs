//! Statistics with no dependency inside the library (a leaf every other module may use): cross-sectional
//! correlations (Spearman RankIC, Pearson IC) and their day-level summaries, the financial metrics of a
//! wealth series, Newey–West (HAC) tests on a daily series' mean, and codebook usage from code counts.

pub mod codes;
pub mod financial;
pub mod hac;
pub mod rank_ic;
