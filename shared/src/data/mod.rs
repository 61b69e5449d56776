//! The data pipeline: ingest (CSV/Parquet, validated) → causal features → causal scaling → feature store
//! (Parquet + manifest) → dense panel → windows and batches; plus the synthetic market.

pub mod dates;
pub mod embedded;
pub mod features;
pub mod ingest;
pub mod kernels;
pub mod manifest;
pub mod panel;
pub mod prepare;
pub mod scaling;
pub mod synth;
pub mod windows;

pub use ingest::Source;
pub use manifest::Manifest;
pub use panel::Panel;
pub use prepare::prepare;
