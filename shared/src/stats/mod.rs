//! Statistics with no dependency inside the library (a leaf every other module may use): cross-sectional
//! correlations (Spearman RankIC, Pearson IC) and their day-level summaries, and the financial metrics of a
//! wealth series.

pub mod financial;
pub mod rank_ic;
