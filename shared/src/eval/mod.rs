//! Evaluation metrics shared by every model and task.

pub mod rank_ic;
