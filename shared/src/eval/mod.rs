//! Evaluation of a model over the windows of a split (predictions per day and their RankIC summary) and the
//! predictions table they are written as. Evaluating a trained run is `crate::run::evaluate`.

pub mod frame;
pub mod predictions;
