//! The data pipeline: ingest (CSV/Parquet, validated) → missing-value policy → causal features → causal
//! scaling → feature store (Parquet + manifest) → dense panel → windows and batches; plus the synthetic
//! market.

pub mod csv_text;
pub mod dates;
pub mod embedded;
pub mod features;
pub mod ingest;
pub mod kernels;
pub mod manifest;
pub mod missing;
pub mod panel;
pub mod prepare;
pub mod scaling;
pub mod store;
pub mod synth;
pub mod validate;
pub mod windows;

pub use ingest::Source;
pub use manifest::Manifest;
pub use panel::Panel;
pub use prepare::{prepare, prepare_with, PrepareOptions};
