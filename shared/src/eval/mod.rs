//! Evaluation metrics shared by every model and task.

pub mod financial;
pub mod predictions;
pub mod rank_ic;
pub mod run_eval;
