//! A plan: the jobs of a sweep, each one (configuration, seed) with its resolved experiment config and the
//! steps to run. Sweep configs and paper configs both expand into a plan; everything downstream (sweep
//! directory, scheduling, aggregation) only sees plans.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use storm_shared::config::ExperimentConfig;
use storm_shared::error::{Error, Result};
use storm_worker::Step;

#[derive(Debug, Clone)]
pub struct Plan {
    pub name: String,
    /// The keys that tell configurations apart (grid keys, or `model` for a paper run); seeds excluded.
    pub keys: Vec<String>,
    pub max_retries: u32,
    /// Not part of the [`PlanRecord`]: a limit on attempts may change between sessions.
    pub max_attempt_seconds: Option<u64>,
    pub max_steps: Option<u64>,
    pub jobs: Vec<PlannedJob>,
}

#[derive(Debug, Clone)]
pub struct PlannedJob {
    pub id: String,
    /// One display value per plan key.
    pub labels: Vec<String>,
    pub seed: u64,
    /// Fully resolved and validated (overrides and seed applied, data source absolute).
    pub config: ExperimentConfig,
    pub steps: Vec<Step>,
}

impl PlannedJob {
    /// The configuration this job is a seed of, e.g. `codebook_size=256` (`base` without grid keys).
    pub fn config_label(&self, keys: &[String]) -> String {
        if keys.is_empty() {
            return "base".into();
        }
        keys.iter()
            .zip(&self.labels)
            .map(|(k, v)| format!("{}={v}", short_key(k, keys)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl Plan {
    /// Refuses two jobs whose configurations differ but whose ids (directory names) are the same, such as
    /// models named `STORM w/o TS` and `STORM_w/o_TS`: they would share one job directory.
    pub fn check_unique_ids(&self, origin: &str, field: &str) -> Result<()> {
        let mut seen: BTreeMap<&str, &PlannedJob> = BTreeMap::new();
        for job in &self.jobs {
            if let Some(first) = seen.insert(&job.id, job) {
                return Err(Error::config(
                    origin,
                    field,
                    format!(
                        "`{}` (seed {}) and `{}` (seed {}) map to the same job id `{}`: rename one \
                         (characters outside [A-Za-z0-9._=+-] become `_` in job ids)",
                        first.config_label(&self.keys),
                        first.seed,
                        job.config_label(&self.keys),
                        job.seed,
                        job.id
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// What a sweep directory records about its plan, compared on `--resume`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanRecord {
    pub name: String,
    pub keys: Vec<String>,
    pub max_retries: u32,
    pub max_steps: Option<u64>,
    pub jobs: Vec<JobRecordEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecordEntry {
    pub id: String,
    pub labels: Vec<String>,
    pub seed: u64,
    pub config_hash: String,
    pub steps: Vec<Step>,
}

impl Plan {
    pub fn record(&self) -> PlanRecord {
        PlanRecord {
            name: self.name.clone(),
            keys: self.keys.clone(),
            max_retries: self.max_retries,
            max_steps: self.max_steps,
            jobs: self
                .jobs
                .iter()
                .map(|j| JobRecordEntry {
                    id: j.id.clone(),
                    labels: j.labels.clone(),
                    seed: j.seed,
                    config_hash: j.config.hash(),
                    steps: j.steps.clone(),
                })
                .collect(),
        }
    }

    /// Configuration labels in plan order, each once.
    pub fn config_labels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for j in &self.jobs {
            let l = j.config_label(&self.keys);
            if !out.contains(&l) {
                out.push(l);
            }
        }
        out
    }
}

impl PlanRecord {
    /// Why `self` (stored) and `other` (from the current config) are not the same sweep, if they differ.
    pub fn difference(&self, other: &PlanRecord) -> Option<String> {
        if self == other {
            return None;
        }
        if self.keys != other.keys {
            return Some(format!("grid keys {:?} vs {:?}", self.keys, other.keys));
        }
        for (field, a, b) in [
            (
                "max_retries",
                self.max_retries.to_string(),
                other.max_retries.to_string(),
            ),
            (
                "max_steps",
                format!("{:?}", self.max_steps),
                format!("{:?}", other.max_steps),
            ),
            ("name", self.name.clone(), other.name.clone()),
        ] {
            if a != b {
                return Some(format!("{field} {a} vs {b}"));
            }
        }
        let ours: BTreeMap<&str, &JobRecordEntry> =
            self.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        let theirs: BTreeMap<&str, &JobRecordEntry> =
            other.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
        if let Some(id) = theirs.keys().find(|id| !ours.contains_key(*id)) {
            return Some(format!("job {id} is new"));
        }
        if let Some(id) = ours.keys().find(|id| !theirs.contains_key(*id)) {
            return Some(format!("job {id} is gone"));
        }
        for (id, a) in &ours {
            let b = theirs[id];
            if a.config_hash != b.config_hash {
                return Some(format!(
                    "job {id}: experiment config hash {} vs {}",
                    a.config_hash, b.config_hash
                ));
            }
            if a.steps != b.steps {
                return Some(format!("job {id}: its steps differ"));
            }
        }
        Some("the job order differs".into())
    }
}

/// The last segment of a dotted key, or the whole key where two keys share a last segment.
pub fn short_key<'a>(key: &'a str, keys: &[String]) -> &'a str {
    let last = key.rsplit('.').next().unwrap_or(key);
    let clashes = keys
        .iter()
        .filter(|k| k.rsplit('.').next() == Some(last))
        .count();
    if clashes > 1 {
        key
    } else {
        last
    }
}

/// A file-name-safe job id such as `codebook_size=256_seed=0` (anything outside `[A-Za-z0-9._=+-]`
/// becomes `_`).
pub fn job_id(keys: &[String], labels: &[String], seed: u64) -> String {
    let mut parts: Vec<String> = keys
        .iter()
        .zip(labels)
        .map(|(k, v)| format!("{}={v}", short_key(k, keys)))
        .collect();
    parts.push(format!("seed={seed}"));
    parts
        .join("_")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._=+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Display form of a grid value: strings bare, everything else as TOML.
pub fn label(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_readable_and_safe() {
        let keys = vec!["model.codebook_size".to_string(), "train.lr".to_string()];
        assert_eq!(
            job_id(&keys, &["256".into(), "0.001".into()], 3),
            "codebook_size=256_lr=0.001_seed=3"
        );
        assert_eq!(
            job_id(&["model".into()], &["STORM-w/o-TS".into()], 0),
            "model=STORM-w_o-TS_seed=0"
        );
        let clash = vec!["model.x".to_string(), "train.x".to_string()];
        assert_eq!(
            job_id(&clash, &["1".into(), "2".into()], 0),
            "model.x=1_train.x=2_seed=0"
        );
        assert_eq!(job_id(&[], &[], 7), "seed=7");
    }

    #[test]
    fn plan_differences_are_named() {
        let entry = |id: &str, hash: &str| JobRecordEntry {
            id: id.into(),
            labels: vec![],
            seed: 0,
            config_hash: hash.into(),
            steps: vec![Step::Pretrain],
        };
        let a = PlanRecord {
            name: "s".into(),
            keys: vec![],
            max_retries: 2,
            max_steps: None,
            jobs: vec![entry("j1", "aa"), entry("j2", "bb")],
        };
        assert_eq!(a.difference(&a.clone()), None);
        let mut b = a.clone();
        b.jobs[1].config_hash = "cc".into();
        assert!(a
            .difference(&b)
            .unwrap()
            .contains("job j2: experiment config hash bb vs cc"));
        let mut c = a.clone();
        c.jobs.push(entry("j3", "dd"));
        assert_eq!(a.difference(&c).unwrap(), "job j3 is new");
        let mut d = a.clone();
        d.max_retries = 5;
        assert_eq!(a.difference(&d).unwrap(), "max_retries 2 vs 5");
    }
}
