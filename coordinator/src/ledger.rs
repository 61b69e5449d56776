//! The sweep's durable record: `ledger.jsonl`, one JSON event per job state change, appended, flushed and
//! fsync'd before the coordinator acts on it. Folding the events gives each job's last state; `--resume`
//! skips `done` jobs and reruns everything else (`running` at crash time means the attempt was lost; its
//! run directory resumes from the last checkpoint).
//!
//! A crash can tear the last line (even inside a multi-byte character); it is dropped (and cut off the
//! file, fsync'd) when the ledger is reopened, or kept if it is a whole event that only lacks its newline.
//! A malformed line anywhere else is an error naming the line.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use storm_shared::error::{Error, Result};

pub const LEDGER_FILE: &str = "ledger.jsonl";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 wall-clock time.
    pub time: String,
    pub job: String,
    #[serde(flatten)]
    pub change: Change,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Change {
    /// An attempt was handed to a worker.
    Running {
        attempt: u32,
        worker: String,
        device: String,
    },
    /// The attempt finished and `result.json` is written.
    Done { attempt: u32, seconds: f64 },
    /// The attempt failed and the job will be tried again.
    Retry { attempt: u32, error: String },
    /// The attempt failed and no attempts are left.
    Failed { attempt: u32, error: String },
}

/// A job's state after folding its events.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    Pending,
    Running,
    Done,
    Failed(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub state: JobState,
    /// Attempts started so far (across sessions).
    pub attempts: u32,
    /// The last failure, also after a successful retry.
    pub last_error: Option<String>,
}

pub struct Ledger {
    path: PathBuf,
    file: File,
}

impl Ledger {
    /// Opens (creating if needed) the ledger in `dir` and returns it with the events already in it.
    pub fn open(dir: &Path) -> Result<(Ledger, Vec<Event>)> {
        let path = dir.join(LEDGER_FILE);
        let events = if path.exists() {
            read_events(&path)?
        } else {
            Vec::new()
        };
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        // a new ledger's directory entry must survive a crash too
        storm_shared::atomic::sync_dir(dir)?;
        Ok((Ledger { path, file }, events))
    }

    /// Appends one event and waits until it is on disk.
    /// The sweep directory the ledger lives in.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    pub fn append(&mut self, job: &str, change: Change) -> Result<()> {
        let event = Event {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            job: job.to_string(),
            change,
        };
        let mut line = serde_json::to_string(&event)?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .and_then(|()| self.file.flush())
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))
    }
}

/// Reads every event. The last line, if it lacks its newline, was torn by a crash (its bytes may end inside
/// a multi-byte character): a complete event there is kept and given its newline, anything else is cut
/// off the file. Either repair is fsync'd before the ledger is used; no line before it is touched.
fn read_events(path: &Path) -> Result<Vec<Event>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let complete_len = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let (complete, torn) = bytes.split_at(complete_len);
    let text = std::str::from_utf8(complete).map_err(|e| {
        Error::input(
            path,
            format!(
                "not UTF-8 at byte {}; the sweep directory is damaged",
                e.valid_up_to()
            ),
        )
    })?;
    let mut events = parse_lines(text, path)?;
    if torn.is_empty() {
        return Ok(events);
    }
    let mut f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    match serde_json::from_slice::<Event>(torn) {
        Ok(event) => {
            // a complete event that only lacks its newline: keep it and add the newline
            f.seek(SeekFrom::End(0))
                .and_then(|_| f.write_all(b"\n"))
                .map_err(|e| Error::io(path, e))?;
            events.push(event);
        }
        Err(_) => {
            tracing::warn!(
                "{}: dropping a torn last line left by a crash: {:?}",
                path.display(),
                String::from_utf8_lossy(torn)
            );
            f.set_len(complete_len as u64)
                .map_err(|e| Error::io(path, e))?;
        }
    }
    f.sync_all().map_err(|e| Error::io(path, e))?;
    Ok(events)
}

fn parse_lines(text: &str, path: &Path) -> Result<Vec<Event>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| {
                Error::input(
                    path,
                    format!(
                        "line {}: not a ledger event ({e}); the sweep directory is damaged",
                        i + 1
                    ),
                )
            })
        })
        .collect()
}

/// Each job's state after `events`, in order.
pub fn fold(events: &[Event]) -> BTreeMap<String, JobRecord> {
    let mut jobs: BTreeMap<String, JobRecord> = BTreeMap::new();
    for e in events {
        let r = jobs.entry(e.job.clone()).or_insert(JobRecord {
            state: JobState::Pending,
            attempts: 0,
            last_error: None,
        });
        match &e.change {
            Change::Running { attempt, .. } => {
                r.state = JobState::Running;
                r.attempts = r.attempts.max(*attempt);
            }
            Change::Done { .. } => r.state = JobState::Done,
            Change::Retry { error, .. } => {
                r.state = JobState::Pending;
                r.last_error = Some(error.clone());
            }
            Change::Failed { error, .. } => {
                r.state = JobState::Failed(error.clone());
                r.last_error = Some(error.clone());
            }
        }
    }
    jobs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(attempt: u32) -> Change {
        Change::Running {
            attempt,
            worker: "w0".into(),
            device: "cpu".into(),
        }
    }

    #[test]
    fn events_fold_into_the_last_state_of_each_job() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut l, old) = Ledger::open(dir.path()).unwrap();
            assert!(old.is_empty());
            l.append("a", running(1)).unwrap();
            l.append(
                "a",
                Change::Done {
                    attempt: 1,
                    seconds: 1.0,
                },
            )
            .unwrap();
            l.append("b", running(1)).unwrap();
            l.append(
                "b",
                Change::Retry {
                    attempt: 1,
                    error: "boom".into(),
                },
            )
            .unwrap();
            l.append("b", running(2)).unwrap();
            l.append("c", running(1)).unwrap();
            l.append(
                "c",
                Change::Failed {
                    attempt: 1,
                    error: "bad".into(),
                },
            )
            .unwrap();
        }
        let (_l, events) = Ledger::open(dir.path()).unwrap();
        assert_eq!(events.len(), 7);
        let jobs = fold(&events);
        assert_eq!(jobs["a"].state, JobState::Done);
        assert_eq!(jobs["b"].state, JobState::Running, "running at crash time");
        assert_eq!(jobs["b"].attempts, 2);
        assert_eq!(jobs["b"].last_error.as_deref(), Some("boom"));
        assert_eq!(jobs["c"].state, JobState::Failed("bad".into()));
        let text = std::fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap();
        assert!(
            text.lines()
                .next()
                .unwrap()
                .contains(r#""state":"running""#),
            "{text}"
        );
    }

    #[test]
    fn a_torn_last_line_is_dropped_and_appends_continue_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut l, _) = Ledger::open(dir.path()).unwrap();
            l.append("a", running(1)).unwrap();
        }
        let path = dir.path().join(LEDGER_FILE);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(br#"{"time":"x","job":"a","sta"#).unwrap();
        drop(f);
        let (mut l, events) = Ledger::open(dir.path()).unwrap();
        assert_eq!(events.len(), 1);
        l.append(
            "a",
            Change::Done {
                attempt: 1,
                seconds: 2.0,
            },
        )
        .unwrap();
        let (_, events) = Ledger::open(dir.path()).unwrap();
        assert_eq!(fold(&events)["a"].state, JobState::Done);
    }

    /// A ledger holding one `running` and one `retry` event whose error has multi-byte characters, as text.
    fn two_events(dir: &Path) -> String {
        {
            let (mut l, _) = Ledger::open(dir).unwrap();
            l.append("a", running(1)).unwrap();
            l.append(
                "a",
                Change::Retry {
                    attempt: 1,
                    error: "données → échec".into(),
                },
            )
            .unwrap();
        }
        std::fs::read_to_string(dir.join(LEDGER_FILE)).unwrap()
    }

    #[test]
    fn a_tail_torn_inside_a_multibyte_character_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        let text = two_events(dir.path());
        let first_line_len = text.find('\n').unwrap() + 1;
        // the crash hit the second event in the middle of `→` (3 bytes in UTF-8)
        let cut = text.find('→').unwrap() + 1;
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(&path, &text.as_bytes()[..cut]).unwrap();
        let (mut l, events) = Ledger::open(dir.path()).unwrap();
        assert_eq!(events.len(), 1, "the event before the torn line is kept");
        assert_eq!(fold(&events)["a"].state, JobState::Running);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            text.as_bytes()[..first_line_len],
            "the file is cut back to its last whole line"
        );
        l.append("a", running(2)).unwrap();
        let (_, events) = Ledger::open(dir.path()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(fold(&events)["a"].attempts, 2);
    }

    #[test]
    fn a_whole_last_event_without_its_newline_is_kept_and_terminated() {
        let dir = tempfile::tempdir().unwrap();
        let text = two_events(dir.path());
        let path = dir.path().join(LEDGER_FILE);
        std::fs::write(&path, text.trim_end_matches('\n')).unwrap();
        let (mut l, events) = Ledger::open(dir.path()).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(
            fold(&events)["a"].last_error.as_deref(),
            Some("données → échec")
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            text,
            "repaired in place"
        );
        l.append("a", running(2)).unwrap();
        let (_, events) = Ledger::open(dir.path()).unwrap();
        assert_eq!(events.len(), 3, "the next append starts on its own line");
    }

    #[test]
    fn a_damaged_middle_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LEDGER_FILE), "garbage\n{}\n").unwrap();
        let err = Ledger::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("line 1"), "{err}");
    }
}
