//! Evaluation of a model over the windows of a split (predictions per day and their RankIC summary).

pub mod predictions;
pub mod run_eval;
