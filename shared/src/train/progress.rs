//! The trainer's progress as JSON lines on stdout, for a parent process (a sweep worker) that shows or
//! forwards it: one line per optimizer step, `{"storm_train_step":S,"total":T,"loss":L}`. This is the
//! only channel by which a worker learns how far a job's training is; it never reads the run's files.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainProgress {
    /// Optimizer steps done so far in the run (resumed runs count from their checkpoint).
    pub storm_train_step: u64,
    /// Steps this process will reach (the schedule's total, capped by `--max-steps`).
    pub total: u64,
    /// The step's loss; `None` (JSON null) when it was not finite.
    pub loss: Option<f64>,
}

impl TrainProgress {
    const PREFIX: &'static str = "{\"storm_train_step\"";

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses a stdout line if it is a progress line.
    pub fn parse(line: &str) -> Option<TrainProgress> {
        let line = line.trim();
        if !line.starts_with(Self::PREFIX) {
            return None;
        }
        serde_json::from_str(line).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_other_lines_are_ignored() {
        let p = TrainProgress {
            storm_train_step: 12,
            total: 40,
            loss: Some(0.5),
        };
        assert_eq!(
            p.to_line(),
            r#"{"storm_train_step":12,"total":40,"loss":0.5}"#
        );
        assert_eq!(TrainProgress::parse(&p.to_line()), Some(p));
        let nan = TrainProgress {
            storm_train_step: 1,
            total: 2,
            loss: None,
        };
        assert_eq!(TrainProgress::parse(&nan.to_line()), Some(nan));
        assert_eq!(
            TrainProgress::parse("{\"storm_job_step\":\"eval_test\"}"),
            None
        );
        assert_eq!(TrainProgress::parse("trained 3 steps"), None);
    }
}
