//! Worker actor: binds one device (`cpu` or `cuda:N`) and runs jobs (pretrain, eval, backtest, export,
//! trade) one at a time, each as a `storm job` child process started from the worker's own OS thread;
//! streams progress and a final outcome back to the coordinator as [`WorkerEvent`]s and reports failures as
//! messages, never by going down.
//!
//! - [`protocol`]: the serde message types ([`WorkerMsg`] in, [`WorkerEvent`] out) and the [`JobSpec`] a
//!   child reads — the only contract between coordinator and workers, so a remote transport can carry it.
//! - [`actor`]: the ractor actor and its job thread.
//! - [`runner`]: how an attempt is executed ([`ProcessRunner`]: a child process with parent-death signal and
//!   its own process group); tests plug in in-process runners.
//! - [`host`]: a remote worker host (`storm worker --connect`) joining a coordinator over ractor_cluster,
//!   with the heartbeat watchdog; [`wire`]: how messages are serialized between nodes; [`tls`]: encrypted
//!   cluster links.
//! - [`tail`]: following files a child appends to. [`fault`]: the `STORM_FAULT` test hook.

pub mod actor;
pub mod child;
pub mod confine;
pub mod fault;
pub mod host;
pub mod protocol;
pub mod runner;
pub mod tail;
pub mod tls;
pub mod wire;

pub use actor::{Worker, WorkerArgs};
pub use host::{run_host, HostEnd, HostOptions};
pub use protocol::{
    JobOutcome, JobResult, JobSpec, JoinRequest, Progress, RemoteWorker, Step, StepAnnouncement,
    ToCoordinator, TradeFeatures, WorkerEvent, WorkerId, WorkerMsg,
};
pub use runner::{headline, FnRunner, JobRunner, ProcessRunner, RunContext};
