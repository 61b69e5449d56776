//! Scheduling as a pure state machine (no actors, no I/O): which pending job goes to which idle worker,
//! what a failure means (retry or give up), and what happens to the job of a worker that disappeared.
//! The coordinator actor drives it and records each decision in the ledger.
//!
//! Rules: jobs start in plan order; a retried job prefers an idle worker it has not failed on, but does not
//! wait for one; each session gives a job `1 + max_retries` attempts (attempt numbers keep counting across
//! `--resume` sessions so logs never clash). A cancelled attempt (its worker was shut down or its host
//! interrupted) is not charged, up to [`FREE_CANCELLATIONS`] per job and session; later ones count as failed
//! attempts, so a host that keeps coming and going cannot cycle a job forever.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ledger::{JobRecord, JobState};

/// Cancelled attempts per job and session that are not charged as failures.
pub const FREE_CANCELLATIONS: u32 = 3;

#[derive(Debug, Clone, PartialEq)]
pub enum SchedState {
    Pending,
    Running { worker: String, attempt: u32 },
    Done,
    Failed(String),
}

#[derive(Debug, Clone)]
pub struct SchedJob {
    pub id: String,
    pub state: SchedState,
    /// Attempts started in all sessions.
    pub attempts: u32,
    /// Attempts started in this session.
    session_attempts: u32,
    /// Attempts cancelled in this session.
    cancellations: u32,
    failed_on: BTreeSet<String>,
    pub last_error: Option<String>,
}

/// A decision to start `attempt` of `job` on `worker`.
#[derive(Debug, Clone, PartialEq)]
pub struct Assignment {
    pub job: String,
    pub worker: String,
    pub attempt: u32,
}

/// What a failed attempt leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Retry,
    Failed,
}

pub struct Scheduler {
    jobs: Vec<SchedJob>,
    index: BTreeMap<String, usize>,
    queue: VecDeque<usize>,
    idle: BTreeSet<String>,
    busy: BTreeMap<String, usize>,
    max_attempts: u32,
}

impl Scheduler {
    /// `ids` in plan order; `prior` from the ledger; `finished(id)` says whether a job marked done really
    /// has its result (a done job without one is run again).
    pub fn new(
        ids: &[String],
        prior: &BTreeMap<String, JobRecord>,
        finished: impl Fn(&str) -> bool,
        max_retries: u32,
    ) -> Scheduler {
        let mut s = Scheduler {
            jobs: Vec::new(),
            index: BTreeMap::new(),
            queue: VecDeque::new(),
            idle: BTreeSet::new(),
            busy: BTreeMap::new(),
            max_attempts: max_retries + 1,
        };
        for id in ids {
            let rec = prior.get(id);
            let done = matches!(rec.map(|r| &r.state), Some(JobState::Done)) && finished(id);
            let i = s.jobs.len();
            s.jobs.push(SchedJob {
                id: id.clone(),
                state: if done {
                    SchedState::Done
                } else {
                    SchedState::Pending
                },
                attempts: rec.map_or(0, |r| r.attempts),
                session_attempts: 0,
                cancellations: 0,
                failed_on: BTreeSet::new(),
                last_error: rec.and_then(|r| r.last_error.clone()),
            });
            s.index.insert(id.clone(), i);
            if !done {
                s.queue.push_back(i);
            }
        }
        s
    }

    pub fn add_worker(&mut self, worker: &str) {
        self.idle.insert(worker.to_string());
    }

    /// Pairs queued jobs with idle workers (see the module rules) and marks them running.
    pub fn assign(&mut self) -> Vec<Assignment> {
        let mut out = Vec::new();
        // first pass: every job on a worker it has not failed on
        for worker in self.idle.clone() {
            let pick = self
                .queue
                .iter()
                .position(|&j| !self.jobs[j].failed_on.contains(&worker));
            if let Some(pos) = pick {
                let j = self.queue.remove(pos).expect("position is in range");
                out.push(self.start(j, &worker));
            }
        }
        // second pass: what is left runs wherever a worker is idle
        for worker in self.idle.clone() {
            let Some(j) = self.queue.pop_front() else {
                break;
            };
            out.push(self.start(j, &worker));
        }
        out
    }

    fn start(&mut self, j: usize, worker: &str) -> Assignment {
        self.idle.remove(worker);
        self.busy.insert(worker.to_string(), j);
        let job = &mut self.jobs[j];
        job.attempts += 1;
        job.session_attempts += 1;
        job.state = SchedState::Running {
            worker: worker.to_string(),
            attempt: job.attempts,
        };
        Assignment {
            job: job.id.clone(),
            worker: worker.to_string(),
            attempt: job.attempts,
        }
    }

    /// Whether `job` is currently running `attempt` on `worker` (events for anything else are stale).
    pub fn is_current(&self, job: &str, worker: &str, attempt: u32) -> bool {
        self.index.get(job).is_some_and(|&j| {
            self.jobs[j].state
                == SchedState::Running {
                    worker: worker.to_string(),
                    attempt,
                }
        })
    }

    fn release(&mut self, worker: &str) -> Option<usize> {
        let j = self.busy.remove(worker)?;
        self.idle.insert(worker.to_string());
        Some(j)
    }

    pub fn succeeded(&mut self, worker: &str) {
        if let Some(j) = self.release(worker) {
            self.jobs[j].state = SchedState::Done;
        }
    }

    /// The running attempt on `worker` failed with `error`.
    pub fn failed(&mut self, worker: &str, error: &str) -> Option<Verdict> {
        let j = self.release(worker)?;
        Some(self.fail(j, worker, error))
    }

    /// The running attempt on `worker` was cancelled (shutdown): back to pending with no attempt charged,
    /// unless the job was cancelled more than [`FREE_CANCELLATIONS`] times this session; then it counts
    /// as failed, and the verdict and error are returned.
    pub fn cancelled(&mut self, worker: &str) -> Option<(Verdict, String)> {
        let j = self.release(worker)?;
        let job = &mut self.jobs[j];
        job.cancellations += 1;
        if job.cancellations > FREE_CANCELLATIONS {
            let error = format!(
                "cancelled {} times in this session (its workers keep going away); counted as a failed attempt",
                job.cancellations
            );
            let verdict = self.fail(j, worker, &error);
            return Some((verdict, error));
        }
        job.session_attempts = job.session_attempts.saturating_sub(1);
        job.state = SchedState::Pending;
        self.queue.push_front(j);
        None
    }

    /// The worker running `job`'s current attempt, if it is running.
    pub fn running(&self, job: &str) -> Option<(&str, u32)> {
        let &j = self.index.get(job)?;
        match &self.jobs[j].state {
            SchedState::Running { worker, attempt } => Some((worker, *attempt)),
            _ => None,
        }
    }

    fn fail(&mut self, j: usize, worker: &str, error: &str) -> Verdict {
        let max = self.max_attempts;
        let job = &mut self.jobs[j];
        job.failed_on.insert(worker.to_string());
        job.last_error = Some(error.to_string());
        if job.session_attempts >= max {
            job.state = SchedState::Failed(error.to_string());
            Verdict::Failed
        } else {
            job.state = SchedState::Pending;
            self.queue.push_back(j);
            Verdict::Retry
        }
    }

    /// A worker is gone: its running attempt (if any) counts as failed. Returns (job, attempt, verdict).
    pub fn remove_worker(&mut self, worker: &str, error: &str) -> Option<(String, u32, Verdict)> {
        self.idle.remove(worker);
        let j = self.busy.remove(worker)?;
        let attempt = self.jobs[j].attempts;
        let verdict = self.fail(j, worker, error);
        Some((self.jobs[j].id.clone(), attempt, verdict))
    }

    pub fn job(&self, id: &str) -> Option<&SchedJob> {
        self.index.get(id).map(|&j| &self.jobs[j])
    }

    pub fn jobs(&self) -> &[SchedJob] {
        &self.jobs
    }

    pub fn workers(&self) -> usize {
        self.idle.len() + self.busy.len()
    }

    /// Nothing pending or running.
    pub fn is_complete(&self) -> bool {
        self.queue.is_empty() && self.busy.is_empty()
    }

    /// (pending, running, done, failed)
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for j in &self.jobs {
            match j.state {
                SchedState::Pending => c.0 += 1,
                SchedState::Running { .. } => c.1 += 1,
                SchedState::Done => c.2 += 1,
                SchedState::Failed(_) => c.3 += 1,
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("j{i}")).collect()
    }

    fn sched(n: usize, workers: &[&str], retries: u32) -> Scheduler {
        let mut s = Scheduler::new(&ids(n), &BTreeMap::new(), |_| true, retries);
        for w in workers {
            s.add_worker(w);
        }
        s
    }

    #[test]
    fn jobs_go_to_idle_workers_in_plan_order() {
        let mut s = sched(3, &["w0", "w1"], 2);
        let a = s.assign();
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].job.as_str(), a[0].worker.as_str(), a[0].attempt),
            ("j0", "w0", 1)
        );
        assert_eq!((a[1].job.as_str(), a[1].worker.as_str()), ("j1", "w1"));
        assert!(s.assign().is_empty(), "no idle worker");
        s.succeeded("w1");
        let a = s.assign();
        assert_eq!((a[0].job.as_str(), a[0].worker.as_str()), ("j2", "w1"));
        s.succeeded("w0");
        s.succeeded("w1");
        assert!(s.is_complete());
        assert_eq!(s.counts(), (0, 0, 3, 0));
    }

    #[test]
    fn a_retry_prefers_another_idle_worker_and_gives_up_after_the_budget() {
        let mut s = sched(1, &["w0", "w1"], 1);
        let a = s.assign();
        assert_eq!(a[0].worker, "w0");
        assert_eq!(s.failed("w0", "boom"), Some(Verdict::Retry));
        let a = s.assign();
        assert_eq!(
            (a[0].worker.as_str(), a[0].attempt),
            ("w1", 2),
            "moved to the other worker"
        );
        assert_eq!(s.failed("w1", "boom again"), Some(Verdict::Failed));
        assert!(s.is_complete());
        assert_eq!(
            s.job("j0").unwrap().state,
            SchedState::Failed("boom again".into())
        );
    }

    #[test]
    fn a_retry_does_not_wait_when_only_its_old_worker_is_idle() {
        let mut s = sched(2, &["w0", "w1"], 2);
        s.assign(); // j0 on w0, j1 on w1
        assert_eq!(s.failed("w0", "x"), Some(Verdict::Retry));
        let a = s.assign();
        assert_eq!((a[0].job.as_str(), a[0].worker.as_str()), ("j0", "w0"));
    }

    #[test]
    fn fresh_jobs_take_the_worker_a_retry_failed_on() {
        let mut s = sched(3, &["w0", "w1"], 2);
        s.assign(); // j0 w0, j1 w1; j2 queued
        s.failed("w0", "x"); // queue: j2, j0(failed on w0)
        let a = s.assign();
        assert_eq!(a[0].job, "j2", "w0 takes the fresh job");
        s.succeeded("w1");
        let a = s.assign();
        assert_eq!((a[0].job.as_str(), a[0].worker.as_str()), ("j0", "w1"));
    }

    #[test]
    fn a_lost_worker_fails_its_attempt_and_stale_events_are_recognised() {
        let mut s = sched(1, &["w0", "w1"], 2);
        s.assign();
        assert!(s.is_current("j0", "w0", 1));
        let lost = s.remove_worker("w0", "worker died");
        assert_eq!(lost, Some(("j0".into(), 1, Verdict::Retry)));
        assert!(!s.is_current("j0", "w0", 1));
        assert_eq!(s.workers(), 1);
        let a = s.assign();
        assert_eq!((a[0].worker.as_str(), a[0].attempt), ("w1", 2));
    }

    #[test]
    fn resume_skips_done_jobs_with_results_and_continues_attempt_numbers() {
        let prior: BTreeMap<String, JobRecord> = [
            ("j0", JobState::Done, 1),
            ("j1", JobState::Running, 2),
            ("j2", JobState::Failed("x".into()), 3),
            ("j3", JobState::Done, 1),
        ]
        .into_iter()
        .map(|(id, state, attempts)| {
            (
                id.to_string(),
                JobRecord {
                    state,
                    attempts,
                    last_error: None,
                },
            )
        })
        .collect();
        let mut s = Scheduler::new(&ids(4), &prior, |id| id != "j3", 0);
        s.add_worker("w0");
        s.add_worker("w1");
        s.add_worker("w2");
        let a = s.assign();
        let got: Vec<(&str, u32)> = a.iter().map(|a| (a.job.as_str(), a.attempt)).collect();
        assert_eq!(got, [("j1", 3), ("j2", 4), ("j3", 2)], "j3 lost its result");
        assert_eq!(s.cancelled("w0"), None);
        assert_eq!(s.job("j1").unwrap().state, SchedState::Pending);
    }

    /// Before, cancellations were never charged: a host that kept joining and leaving could cycle a job
    /// forever. Now the first few are free and the rest count against the retry budget.
    #[test]
    fn a_job_cancelled_again_and_again_runs_out_of_attempts() {
        let mut s = sched(1, &["w0"], 1);
        for round in 1..=FREE_CANCELLATIONS {
            let a = s.assign();
            assert_eq!(a[0].attempt, round);
            assert_eq!(s.running("j0"), Some(("w0", round)));
            assert_eq!(s.cancelled("w0"), None, "cancellation {round} is free");
        }
        s.assign();
        let (verdict, error) = s.cancelled("w0").unwrap();
        assert_eq!(verdict, Verdict::Retry);
        assert!(error.contains("cancelled 4 times"), "{error}");
        s.assign();
        assert_eq!(s.cancelled("w0").map(|v| v.0), Some(Verdict::Failed));
        assert!(matches!(s.job("j0").unwrap().state, SchedState::Failed(_)));
        assert!(s.assign().is_empty());
        assert_eq!(s.running("j0"), None);
    }
}
