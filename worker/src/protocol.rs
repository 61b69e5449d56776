//! The messages between the coordinator and its workers, and the job description a worker hands to the
//! `storm job` child. Everything here is plain serde data: in-process actors pass the enums as they are,
//! and ractor_cluster carries the same enums as JSON between nodes ([`crate::wire`]), so the coordinator's
//! logic does not depend on where a worker runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storm_shared::trading::dqn::DqnConfig;
use storm_shared::trading::learner::Algorithm;
use storm_shared::trading::ppo::PpoConfig;
use storm_shared::trading::sac::SacConfig;
use storm_shared::trading::task::{trade_stem, FeatureSource};

/// File names inside a job directory.
pub const SPEC_FILE: &str = "job.json";
pub const RESULT_FILE: &str = "result.json";
pub const CONFIG_FILE: &str = "config.toml";
pub const RUN_DIR: &str = "run";
pub const DONE_DIR: &str = "done";

/// Everything a `storm job` child needs: which resolved config to train, on which prepared data, and the
/// steps to run after (or instead of) pretraining. Written by the worker as `<job_dir>/job.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Stable, file-name-safe id (e.g. `codebook_size=256_seed=0`).
    pub id: String,
    /// 1 for the first attempt; counts across `--resume` sessions.
    pub attempt: u32,
    /// Filled in by the worker that runs it: `cpu`, `cuda:N`.
    pub device: String,
    /// torch intra-op threads for the child (None: torch's default).
    pub threads: Option<usize>,
    /// Absolute job directory: holds `config.toml`, `run/`, `done/`, logs and `result.json`.
    pub job_dir: PathBuf,
    /// Prepared feature store shared by the sweep (`storm pretrain --data`).
    pub data: PathBuf,
    /// Stop pretraining after this many optimizer steps (smoke runs and tests).
    pub max_steps: Option<u64>,
    /// Training batch size, so that progress can be shown in samples/s.
    pub batch_size: usize,
    pub steps: Vec<Step>,
}

impl JobSpec {
    pub fn config_path(&self) -> PathBuf {
        self.job_dir.join(CONFIG_FILE)
    }
    pub fn run_dir(&self) -> PathBuf {
        self.job_dir.join(RUN_DIR)
    }
    pub fn result_path(&self) -> PathBuf {
        self.job_dir.join(RESULT_FILE)
    }
    pub fn stdout_path(&self) -> PathBuf {
        self.job_dir.join(format!("attempt-{}.out", self.attempt))
    }
    pub fn stderr_path(&self) -> PathBuf {
        self.job_dir.join(format!("attempt-{}.err", self.attempt))
    }
    /// Marker written after a step completes, so that a retry skips it.
    pub fn done_marker(&self, step: &Step) -> PathBuf {
        self.job_dir.join(DONE_DIR).join(step.key())
    }
}

/// Which states the trading policy observes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TradeFeatures {
    Factors,
    Raw,
    /// The model's predicted returns (the signal rule's).
    Predictions,
}

impl TradeFeatures {
    pub fn source(self) -> FeatureSource {
        match self {
            TradeFeatures::Factors => FeatureSource::Factors,
            TradeFeatures::Raw => FeatureSource::Raw,
            TradeFeatures::Predictions => FeatureSource::Predictions,
        }
    }
}

/// One idempotent step of a job, run in order by `storm job`.
// A job has a handful of steps, built once and sent as JSON: the trade step's size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Step {
    /// `storm pretrain --resume` (a retry continues from the last checkpoint).
    Pretrain,
    /// `storm eval --split <split>`.
    Eval { split: String },
    /// `storm backtest` (TopK-Drop) on a split's predictions.
    Backtest {
        split: String,
        k: usize,
        drop: usize,
        cost: f64,
        index: String,
        /// Execution delay in days (0 when absent).
        #[serde(default)]
        delay: usize,
    },
    /// `storm export` (factor embeddings for trading).
    Export,
    /// `storm trade` on one ticker.
    Trade {
        ticker: String,
        features: TradeFeatures,
        seed: u64,
        updates: usize,
        envs: usize,
        window: usize,
        eval_every: usize,
        cost: f64,
        /// The algorithm (PPO when absent).
        #[serde(default)]
        algorithm: Algorithm,
        /// Hyper-parameters of each algorithm (the defaults when absent); only the chosen one's are used.
        #[serde(default)]
        ppo: PpoConfig,
        #[serde(default)]
        dqn: DqnConfig,
        #[serde(default)]
        sac: SacConfig,
        /// Execution delay in days (0 when absent).
        #[serde(default)]
        delay: usize,
    },
}

impl Step {
    /// Unique name of the step within a job (done marker, metric prefix).
    pub fn key(&self) -> String {
        match self {
            Step::Pretrain => "pretrain".into(),
            Step::Eval { split } => format!("eval_{split}"),
            Step::Backtest {
                split, delay: 0, ..
            } => format!("backtest_{split}"),
            Step::Backtest { split, delay, .. } => format!("backtest_{split}_delay{delay}"),
            Step::Export => "export".into(),
            Step::Trade {
                ticker,
                features,
                algorithm,
                delay,
                ..
            } => format!(
                "trade_{}",
                trade_stem(ticker, features.source(), *algorithm, *delay)
            ),
        }
    }
}

/// What `storm job` writes as `result.json` when every step succeeded: flat metric names (e.g.
/// `test_rank_ic`, `pm_apy`, `trade_AAPL_cw`) to values (`None` where a metric is undefined).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobResult {
    pub job: String,
    pub attempt: u32,
    pub seconds: f64,
    pub metrics: BTreeMap<String, Option<f64>>,
}

impl JobResult {
    pub fn load(path: &Path) -> Result<JobResult, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Progress of a running job, from the JSON lines on the child's stdout (step announcements and the
/// trainer's `storm_shared::train::progress::TrainProgress`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    pub step: u64,
    /// Total optimizer steps of this run (from the trainer's progress line or the step announcement), when
    /// known.
    pub total: Option<u64>,
    /// NaN before the first finite loss (JSON carries it as null).
    #[serde(deserialize_with = "null_as_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "null_as_nan")]
    pub samples_per_s: f64,
    /// The step the child is in (`pretrain`, `eval_test`, `trade_AAPL`, ...).
    pub phase: String,
}

/// serde_json writes a non-finite f64 as `null`; read it back as NaN.
fn null_as_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// A line `storm job` prints on stdout when a step begins; the worker reads it to label progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepAnnouncement {
    /// The step's key (`pretrain`, `eval_test`, ...).
    pub storm_job_step: String,
    /// Total optimizer steps of the run (pretrain only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_steps: Option<u64>,
    /// The checkpoint step pretraining resumes from (pretrain only, when one exists).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_from: Option<u64>,
    /// The step was already done by an earlier attempt and is skipped.
    #[serde(default)]
    pub skipped: bool,
}

impl StepAnnouncement {
    const PREFIX: &'static str = "{\"storm_job_step\"";

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stdout line if it is an announcement.
    pub fn parse(line: &str) -> Option<StepAnnouncement> {
        let line = line.trim();
        if !line.starts_with(Self::PREFIX) {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum JobOutcome {
    Done(JobResult),
    /// The child failed (error, panic, crash, missing result); `error` carries the last lines of its stderr.
    Failed {
        error: String,
    },
    /// Stopped on request (Ctrl-C, shutdown); not a failure of the job.
    Cancelled,
}

/// Identifies a worker within one sweep (`w0`, `w1`, ...).
pub type WorkerId = String;

/// A random secret a worker host makes for its session and announces in its [`JoinRequest`]. Every
/// message between the coordinator and that host's workers carries it ([`WorkerMsg::Keyed`],
/// [`ToCoordinator::Worker`]), so another node of the cluster (anyone holding the cookie) can neither run a
/// job on a worker nor speak for one: without the key its messages are refused.
pub type LinkKey = String;

/// Coordinator → worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerMsg {
    /// Run one attempt of a job (the worker fills in `device` and `threads`). A busy worker answers with a
    /// failed outcome rather than queueing.
    Run(JobSpec),
    /// Kill the running child, if any; its attempt ends as `Cancelled`.
    Cancel,
    /// Heartbeat to a remote worker, answered with [`WorkerEvent::Alive`]. A worker that hears none for
    /// `timeout_ms / 2` assumes the coordinator lost it and cancels its job before the coordinator's own
    /// timeout reschedules that job elsewhere, so two attempts never share a job directory.
    Ping { timeout_ms: u64 },
    /// The session is over (or the worker was refused); a remote worker host exits when all its workers got
    /// this. `reason` is set when the worker was refused.
    Shutdown { reason: Option<String> },
    /// How a message for a remote host's worker travels: with that host's key. Decoding a message from
    /// another node gives only this or [`WorkerMsg::Undecodable`].
    Keyed { key: LinkKey, msg: Box<WorkerMsg> },
    /// A message from another node that is not storm's wire format, does not parse, or carries no key;
    /// the worker refuses it and tells the coordinator ([`WorkerEvent::ProtocolError`]).
    Undecodable { why: String },
}

impl WorkerMsg {
    fn name(&self) -> &'static str {
        match self {
            WorkerMsg::Run(_) => "Run",
            WorkerMsg::Cancel => "Cancel",
            WorkerMsg::Ping { .. } => "Ping",
            WorkerMsg::Shutdown { .. } => "Shutdown",
            WorkerMsg::Keyed { .. } => "Keyed",
            WorkerMsg::Undecodable { .. } => "Undecodable",
        }
    }

    /// A [`WorkerMsg::Keyed`] or [`WorkerMsg::Undecodable`], which only wrap or replace a message.
    pub fn is_envelope(&self) -> bool {
        matches!(
            self,
            WorkerMsg::Keyed { .. } | WorkerMsg::Undecodable { .. }
        )
    }

    /// What a message from another node means: a keyed message as it is, anything else
    /// [`WorkerMsg::Undecodable`].
    pub fn from_network(decoded: Result<WorkerMsg, String>) -> WorkerMsg {
        match decoded {
            Ok(keyed @ WorkerMsg::Keyed { .. }) => keyed,
            Ok(other) => WorkerMsg::Undecodable {
                why: format!(
                    "a {} message from another node without a host key",
                    other.name()
                ),
            },
            Err(why) => WorkerMsg::Undecodable { why },
        }
    }
}

impl ractor::Message for WorkerMsg {
    fn serializable() -> bool {
        true
    }
    fn serialize(
        self,
    ) -> Result<ractor::message::SerializedMessage, ractor::message::BoxedDowncastErr> {
        crate::wire::to_wire(&self)
    }
    fn deserialize(
        msg: ractor::message::SerializedMessage,
    ) -> Result<Self, ractor::message::BoxedDowncastErr> {
        Ok(WorkerMsg::from_network(crate::wire::decode(msg)))
    }
}

/// Worker → coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerEvent {
    Started {
        worker: WorkerId,
        job: String,
        attempt: u32,
    },
    Progress {
        worker: WorkerId,
        job: String,
        attempt: u32,
        progress: Progress,
    },
    Finished {
        worker: WorkerId,
        job: String,
        attempt: u32,
        outcome: JobOutcome,
    },
    /// Answer to [`WorkerMsg::Ping`].
    Alive { worker: WorkerId },
    /// The worker refused a message it could not decode or that was not from its coordinator.
    ProtocolError { worker: WorkerId, why: String },
}

impl WorkerEvent {
    pub fn worker(&self) -> &str {
        match self {
            WorkerEvent::Started { worker, .. }
            | WorkerEvent::Progress { worker, .. }
            | WorkerEvent::Finished { worker, .. }
            | WorkerEvent::Alive { worker }
            | WorkerEvent::ProtocolError { worker, .. } => worker,
        }
    }
}

/// Protocol version a remote worker host announces; the coordinator refuses other versions (the job
/// specs and results must mean the same on both sides).
pub const PROTOCOL_VERSION: u32 = 2;

/// A worker actor a remote host offers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RemoteWorker {
    pub id: WorkerId,
    pub device: String,
    /// The process group the worker actor joined, through which the coordinator finds it.
    pub group: String,
}

/// A remote worker host introducing its workers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JoinRequest {
    pub version: u32,
    /// `hostname:pid` of the worker host.
    pub node: String,
    pub workers: Vec<RemoteWorker>,
    /// This host's [`LinkKey`] (absent from a host of protocol 1, which is refused by version).
    #[serde(default)]
    pub key: LinkKey,
}

/// What a remote worker host sends the coordinator (the coordinator's own message type decodes the same
/// JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ToCoordinator {
    Join(JoinRequest),
    /// An event of one of the host's workers, with the host's key.
    Worker {
        key: LinkKey,
        event: WorkerEvent,
    },
}
crate::remote_message!(ToCoordinator);

/// The process group the coordinator's actor joins; remote worker hosts look it up after connecting.
pub const COORDINATOR_GROUP: &str = "storm.coordinator";

/// The process group of one remote worker actor.
pub fn worker_group(id: &str) -> String {
    format!("storm.worker.{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_round_trip_and_have_unique_keys() {
        let steps = vec![
            Step::Pretrain,
            Step::Eval {
                split: "test".into(),
            },
            Step::Backtest {
                split: "test".into(),
                k: 5,
                drop: 3,
                cost: 1e-4,
                index: "none".into(),
                delay: 0,
            },
            Step::Backtest {
                split: "test".into(),
                k: 5,
                drop: 3,
                cost: 1e-4,
                index: "none".into(),
                delay: 1,
            },
            Step::Export,
            Step::Trade {
                ticker: "AAPL".into(),
                features: TradeFeatures::Factors,
                seed: 0,
                updates: 2,
                envs: 2,
                window: 16,
                eval_every: 1,
                cost: 1e-4,
                algorithm: Algorithm::Ppo,
                ppo: PpoConfig::default(),
                dqn: DqnConfig::default(),
                sac: SacConfig::default(),
                delay: 0,
            },
            Step::Trade {
                ticker: "AAPL".into(),
                features: TradeFeatures::Raw,
                seed: 0,
                updates: 2,
                envs: 2,
                window: 16,
                eval_every: 1,
                cost: 1e-4,
                algorithm: Algorithm::Ppo,
                ppo: PpoConfig::default(),
                dqn: DqnConfig::default(),
                sac: SacConfig::default(),
                delay: 0,
            },
            Step::Trade {
                ticker: "AAPL".into(),
                features: TradeFeatures::Raw,
                seed: 0,
                updates: 2,
                envs: 2,
                window: 16,
                eval_every: 1,
                cost: 1e-4,
                algorithm: Algorithm::Sac,
                ppo: PpoConfig::default(),
                dqn: DqnConfig::default(),
                sac: SacConfig::default(),
                delay: 1,
            },
        ];
        let json = serde_json::to_string(&steps).unwrap();
        let back: Vec<Step> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, steps);
        let mut keys: Vec<String> = steps.iter().map(Step::key).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), steps.len());
        assert!(
            keys.contains(&"trade_AAPL_raw_sac_delay1".to_string()),
            "{keys:?}"
        );
        assert!(json.contains(r#"{"kind":"pretrain"}"#), "{json}");
    }

    #[test]
    fn progress_with_a_nan_loss_crosses_the_wire() {
        let p = Progress {
            step: 3,
            total: None,
            loss: f64::NAN,
            samples_per_s: 12.5,
            phase: "pretrain".into(),
        };
        let back: Progress = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert!(back.loss.is_nan());
        assert_eq!(back.samples_per_s, 12.5);
    }

    #[test]
    fn an_unknown_step_field_is_rejected() {
        let err =
            serde_json::from_str::<Step>(r#"{"kind":"eval","split":"test","x":1}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn announcements_are_recognised_among_other_output() {
        let a = StepAnnouncement {
            storm_job_step: "pretrain".into(),
            total_steps: Some(36),
            resume_from: Some(8),
            skipped: false,
        };
        assert_eq!(StepAnnouncement::parse(&a.to_line()), Some(a));
        assert_eq!(StepAnnouncement::parse("trained 36 / 36 steps"), None);
        assert_eq!(StepAnnouncement::parse("{\"other\":1}"), None);
    }
}
