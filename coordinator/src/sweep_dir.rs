//! The sweep directory:
//!
//! ```text
//! <out>/plan.json          what the sweep runs (job ids, config hashes, steps): compared on --resume
//! <out>/<config>.toml      a copy of the sweep or paper config file it came from
//! <out>/ledger.jsonl       job state changes (see ledger.rs)
//! <out>/sweep.lock         locked by the running coordinator, its pid inside ([`SweepLock`])
//! <out>/data/<hash>/       prepared feature stores, one per distinct [data] table, shared by the jobs
//! <out>/jobs/<id>/         config.toml (resolved), job.json, attempt-N.{out,err}, done/, run/, result.json
//! <out>/results.{csv,md}, jobs.csv, *.png   tables and charts (rewritten at the end of every session)
//! ```
//!
//! Without `--resume` the directory must be new or empty; with it, the plan must be the one recorded.
//! Either way only one coordinator works in it at a time.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use storm_shared::atomic;
use storm_shared::data::{self, Manifest, Source};
use storm_shared::error::{Error, Result};
use storm_worker::{JobSpec, Step};

use crate::plan::{Plan, PlanRecord};

pub const PLAN_FILE: &str = "plan.json";
pub const JOBS_DIR: &str = "jobs";
pub const DATA_DIR: &str = "data";
pub const LOCK_FILE: &str = "sweep.lock";

/// A coordinator's exclusive hold on a sweep directory: an advisory `flock` on `<out>/sweep.lock`, which
/// the kernel releases when the process ends however it ends (SIGKILL included), so a crashed sweep can
/// be resumed at once. The file holds the holder's pid for the error a second coordinator gets.
#[derive(Debug)]
pub struct SweepLock {
    _file: File,
}

impl SweepLock {
    /// Takes the lock on `dir` (which must exist), or fails at once naming the lock file and its holder.
    pub fn acquire(dir: &Path) -> Result<SweepLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // SAFETY: flock on a file descriptor this function owns; it is closed (and unlocked) with `file`.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(Error::io(&path, err));
            }
            let holder = std::fs::read_to_string(&path)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
                .map_or(
                    "a process that has not yet written its pid".to_string(),
                    |pid| format!("pid {pid}"),
                );
            return Err(Error::Sweep(format!(
                "{} is in use by another storm sweep ({holder} holds the lock {}); wait for it to end \
                 or stop it, then pass --resume",
                dir.display(),
                path.display()
            )));
        }
        file.set_len(0)
            .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(SweepLock { _file: file })
    }
}

/// Creates `out` for a new sweep, or checks that it holds this plan when resuming; records the plan and
/// a copy of the config file (`source` = (file name, text)). The returned lock keeps any other
/// coordinator out of the directory until it is dropped (or the process ends, however it ends).
pub fn open(
    out: &Path,
    plan: &Plan,
    resume: bool,
    source: Option<(&str, &str)>,
) -> Result<(PathBuf, SweepLock)> {
    let record = plan.record();
    let plan_path = out.join(PLAN_FILE);
    let lock = if resume {
        check_resumable(out, &plan_path, &record)?;
        SweepLock::acquire(out)?
    } else {
        // a sweep running here is named before anything else is said about the directory
        let held = match out.join(LOCK_FILE).exists() {
            true => Some(SweepLock::acquire(out)?),
            false => None,
        };
        ensure_empty(out)?;
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        let lock = match held {
            Some(lock) => lock,
            None => SweepLock::acquire(out)?,
        };
        // another sweep may have started here between the first check and the lock
        ensure_empty(out)?;
        if let Some((name, text)) = source {
            atomic::write_file(&out.join(name), text.as_bytes())?;
        }
        atomic::write_file(&plan_path, &serde_json::to_vec_pretty(&record)?)?;
        lock
    };
    Ok((
        std::path::absolute(out).map_err(|e| Error::io(out, e))?,
        lock,
    ))
}

fn check_resumable(out: &Path, plan_path: &Path, record: &PlanRecord) -> Result<()> {
    let text = std::fs::read_to_string(plan_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Sweep(format!(
                "{} holds no sweep to resume (no {PLAN_FILE}); run without --resume to start one",
                out.display()
            ))
        } else {
            Error::io(plan_path, e)
        }
    })?;
    let stored: PlanRecord = serde_json::from_str(&text)
        .map_err(|e| Error::input(plan_path, format!("invalid plan record: {e}")))?;
    match stored.difference(record) {
        Some(diff) => Err(Error::Sweep(format!(
            "{} was started with a different config ({diff}); resume it with the config it was \
             started with, or pick a new --out",
            out.display()
        ))),
        None => Ok(()),
    }
}

/// A new sweep needs a new or empty directory (a lock file left by a finished sweep does not count).
fn ensure_empty(out: &Path) -> Result<()> {
    let non_empty =
        std::fs::read_dir(out).is_ok_and(|d| d.flatten().any(|e| e.file_name() != LOCK_FILE));
    if non_empty {
        return Err(Error::Sweep(format!(
            "{} already exists and is not empty; pass --resume to continue the sweep in it, or pick \
             a new --out",
            out.display()
        )));
    }
    Ok(())
}

/// A short stable hash of a job's `[data]` table: jobs with equal tables share one prepared store.
pub fn data_key(cfg: &storm_shared::config::ExperimentConfig) -> String {
    let json = serde_json::to_string(&cfg.data).unwrap_or_default();
    let digest = Sha256::digest(json.as_bytes());
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Prepares every distinct data table once (skipping stores already complete) and returns each job's
/// store. Also checks that every traded ticker exists in its store.
pub fn prepare_data(dir: &Path, plan: &Plan, progress: bool) -> Result<BTreeMap<String, PathBuf>> {
    let mut stores: BTreeMap<String, (PathBuf, Manifest)> = BTreeMap::new();
    let mut by_job = BTreeMap::new();
    for job in &plan.jobs {
        let key = data_key(&job.config);
        if !stores.contains_key(&key) {
            let store = dir.join(DATA_DIR).join(&key);
            let manifest = match Manifest::load(&store) {
                Ok(m) => m,
                Err(_) => {
                    eprintln!(
                        "preparing data {} → {}",
                        job.config.data.source,
                        store.display()
                    );
                    data::prepare(
                        &job.config.data,
                        &Source::parse(&job.config.data.source),
                        &store,
                        progress,
                    )?
                }
            };
            stores.insert(key.clone(), (store, manifest));
        }
        let (store, manifest) = &stores[&key];
        for step in &job.steps {
            if let Step::Trade { ticker, .. } = step {
                if !manifest.tickers.contains(ticker) {
                    return Err(Error::config(
                        plan.name.as_str(),
                        "trade.tickers",
                        format!(
                            "`{ticker}` is not in the data ({} tickers: {})",
                            manifest.n_tickers,
                            manifest.tickers.join(", ")
                        ),
                    ));
                }
            }
        }
        by_job.insert(job.id.clone(), store.clone());
    }
    Ok(by_job)
}

/// Writes each job's resolved config into its directory and returns the job templates by id.
pub fn job_specs(
    dir: &Path,
    plan: &Plan,
    data: &BTreeMap<String, PathBuf>,
) -> Result<BTreeMap<String, JobSpec>> {
    let mut specs = BTreeMap::new();
    for job in &plan.jobs {
        let job_dir = dir.join(JOBS_DIR).join(&job.id);
        std::fs::create_dir_all(&job_dir).map_err(|e| Error::io(&job_dir, e))?;
        let toml = toml::to_string_pretty(&job.config)
            .map_err(|e| Error::Sweep(format!("cannot serialise the config of {}: {e}", job.id)))?;
        let spec = JobSpec {
            id: job.id.clone(),
            attempt: 0,
            device: String::new(),
            threads: None,
            job_dir: job_dir.clone(),
            data: data
                .get(&job.id)
                .cloned()
                .ok_or_else(|| Error::Sweep(format!("no data store for job {}", job.id)))?,
            max_steps: plan.max_steps,
            batch_size: job.config.train.batch_size,
            steps: job.steps.clone(),
        };
        atomic::write_file(&spec.config_path(), toml.as_bytes())?;
        specs.insert(job.id.clone(), spec);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlannedJob;
    use storm_shared::config::ExperimentConfig;

    fn plan(epochs: usize) -> Plan {
        let config = ExperimentConfig::from_toml_str(
            &format!("[train]\nepochs = {epochs}\nwarmup_epochs = 1"),
            "t",
            &[],
        )
        .unwrap();
        Plan {
            name: "t".into(),
            keys: vec![],
            max_retries: 2,
            max_attempt_seconds: None,
            max_steps: None,
            jobs: vec![PlannedJob {
                id: "seed=0".into(),
                labels: vec![],
                seed: 0,
                config,
                steps: vec![Step::Pretrain],
            }],
        }
    }

    #[test]
    fn new_resume_and_changed_configs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sweep");
        let err = open(&out, &plan(2), true, None).unwrap_err().to_string();
        assert!(err.contains("no sweep to resume"), "{err}");
        open(&out, &plan(2), false, Some(("s.toml", "x = 1"))).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("s.toml")).unwrap(),
            "x = 1"
        );
        let err = open(&out, &plan(2), false, None).unwrap_err().to_string();
        assert!(
            err.contains("--resume") && err.contains("new --out"),
            "{err}"
        );
        open(&out, &plan(2), true, None).unwrap();
        let err = open(&out, &plan(3), true, None).unwrap_err().to_string();
        assert!(
            err.contains("different config") && err.contains("seed=0"),
            "{err}"
        );
    }

    #[test]
    fn a_locked_sweep_directory_refuses_a_second_coordinator() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sweep");
        let (_, lock) = open(&out, &plan(2), false, None).unwrap();
        let pid = std::process::id();
        assert_eq!(
            std::fs::read_to_string(out.join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        for resume in [true, false] {
            let err = open(&out, &plan(2), resume, None).unwrap_err().to_string();
            assert!(
                err.contains("in use by another storm sweep")
                    && err.contains(&format!("pid {pid}"))
                    && err.contains(LOCK_FILE),
                "{err}"
            );
        }
        drop(lock);
        let (_, _again) = open(&out, &plan(2), true, None).unwrap();
    }

    #[test]
    fn a_lock_left_by_an_ended_sweep_does_not_make_a_directory_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("sweep");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join(LOCK_FILE), "1\n").unwrap();
        open(&out, &plan(2), false, None).unwrap();
        assert!(out.join(PLAN_FILE).exists());
    }

    #[test]
    fn jobs_get_their_resolved_config_and_spec() {
        let dir = tempfile::tempdir().unwrap();
        let p = plan(2);
        let data = [("seed=0".to_string(), dir.path().join("d"))]
            .into_iter()
            .collect();
        let specs = job_specs(dir.path(), &p, &data).unwrap();
        let spec = &specs["seed=0"];
        assert_eq!(spec.job_dir, dir.path().join("jobs/seed=0"));
        let back = ExperimentConfig::load(&spec.config_path(), &[]).unwrap();
        assert_eq!(
            back.hash(),
            p.jobs[0].config.hash(),
            "the written config round-trips"
        );
        assert_eq!(data_key(&back), data_key(&p.jobs[0].config));
    }
}
