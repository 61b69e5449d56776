//! Coordinator: expands sweep and paper configs into jobs, schedules them on worker actors, supervises and
//! retries them, records every state change durably so that `--resume` loses nothing, and aggregates the
//! results (polars) into tables, Markdown and charts.
//!
//! - [`sweep_config`], [`paper_config`], [`tasks`]: config files → [`plan::Plan`] (one job per
//!   configuration × seed, each with its resolved experiment config and steps).
//! - [`sweep_dir`]: the sweep directory (plan record, shared prepared data, job directories).
//! - [`ledger`]: append-only, fsync'd `ledger.jsonl`, folded on resume.
//! - [`scheduler`]: the pure scheduling state machine; [`actor`]: the ractor coordinator that drives it and
//!   supervises workers; [`cluster`]: the node remote worker hosts join and the heartbeat settings;
//!   [`progress`]: the terminal view; [`run`]: one blocking session.
//! - [`aggregate`], [`results`], [`report`], [`chart`]: statistics over seeds and their tables/figures;
//!   [`significance`]: HAC t-statistics, seed intervals and paired comparisons for the paper report.

pub mod actor;
pub mod aggregate;
pub mod chart;
pub mod cluster;
pub mod handshake;
pub mod ledger;
pub mod listener;
pub mod paper_config;
pub mod plan;
pub mod progress;
pub mod report;
pub mod results;
pub mod run;
pub mod scheduler;
pub mod significance;
pub mod sweep_config;
pub mod sweep_dir;
pub mod tasks;

pub use cluster::ClusterOptions;
pub use plan::Plan;
pub use progress::Display;
pub use run::{run_sweep, SweepOptions, SweepOutcome};
