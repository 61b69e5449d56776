//! Training on one device: a saveable AdamW, the learning-rate schedule, checkpoints, and the trainer loop
//! shared by every torch model, with its loss log, data-parallel replicas and console output; and the
//! boosting trainer of the LightGBM baseline (`boosting`).

pub mod boosting;
pub mod checkpoint;
pub mod console;
pub mod grad_probe;
pub mod loss_log;
pub mod optimizer;
pub mod pending;
pub mod progress;
pub mod replicas;
pub mod schedule;
pub mod trainer;
