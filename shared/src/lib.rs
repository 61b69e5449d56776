//! storm's device-agnostic core: experiment config, the data pipeline (ingest → causal features → windows),
//! and everything the coordinator and workers share.

pub mod atomic;
pub mod config;
pub mod data;
pub mod distributed;
pub mod error;
pub mod eval;
pub mod model;
pub mod plot;
pub mod portfolio;
pub mod run;
pub mod stats;
pub mod telemetry;
#[cfg(test)]
mod testing;
pub mod trading;
pub mod train;

pub use error::{Error, Result};
