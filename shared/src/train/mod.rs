//! Training on one device: a saveable AdamW, the learning-rate schedule, checkpoints, and the trainer loop
//! shared by every model.

pub mod checkpoint;
pub mod optimizer;
pub mod progress;
pub mod schedule;
pub mod trainer;
