//! The run's training logs: `losses.csv` (one row per optimizer step: step, epoch, lr, loss, gradient norm,
//! skipped steps so far, then each loss term) and `valid.csv` (one row per validation). [`LossLog`] owns
//! their format: the header, the truncation of rows past a resumed step (a killed run's rows after its last
//! checkpoint are redone) and the appends. Only rank 0 writes; on the other ranks every call is a no-op.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::trainer::{GRAD_NORM_LOG, LOSS_LOG, VALID_LOG};
use crate::error::{Error, Result};
use crate::stats::rank_ic::IcSummary;

const VALID_HEADER: &str = "step,epoch,rank_ic,rank_icir,ic,icir,n_days";

/// One `losses.csv` row.
#[derive(Debug, Clone, PartialEq)]
pub struct LossRow {
    /// Optimizer steps done after this one (1 for the first step).
    pub step: u64,
    pub epoch: u64,
    pub lr: f64,
    /// Loss (mean over ranks); NaN or infinite on a skipped step.
    pub loss: f64,
    /// Gradient norm before clipping; NaN when the loss was not finite.
    pub grad_norm: f64,
    /// Steps skipped so far in the run.
    pub skipped: u64,
    /// Unweighted loss terms (means over ranks) by name.
    pub terms: Vec<(&'static str, f64)>,
}

impl LossRow {
    fn header(&self) -> String {
        let mut h = String::from("step,epoch,lr,loss,grad_norm,skipped");
        for (name, _) in &self.terms {
            h.push(',');
            h.push_str(name);
        }
        h
    }

    fn to_csv(&self) -> String {
        let (lr, loss, grad_norm) = (self.lr, self.loss, self.grad_norm);
        let mut row = format!(
            "{},{},{lr:.6e},{loss:.6},{grad_norm:.4},{}",
            self.step, self.epoch, self.skipped
        );
        for (_, term) in &self.terms {
            row.push_str(&format!(",{term:.6}"));
        }
        row
    }
}

pub struct LossLog {
    losses: PathBuf,
    valid: PathBuf,
    grad_norms: PathBuf,
    /// Rank 0 writes; the other ranks keep nothing.
    writes: bool,
}

impl LossLog {
    /// The logs of `run_dir`, keeping only rows up to `resumed_step` (0 for a fresh run).
    pub fn open(run_dir: &Path, resumed_step: u64, writes: bool) -> Result<LossLog> {
        let log = LossLog {
            losses: run_dir.join(LOSS_LOG),
            valid: run_dir.join(VALID_LOG),
            grad_norms: run_dir.join(GRAD_NORM_LOG),
            writes,
        };
        if writes {
            truncate_log(&log.losses, resumed_step)?;
            truncate_log(&log.valid, resumed_step)?;
            truncate_log(&log.grad_norms, resumed_step)?;
        }
        Ok(log)
    }

    /// Appends rows in the given (step) order; the header goes before the first step's row.
    pub fn append_steps(&self, rows: &[LossRow]) -> Result<()> {
        if !self.writes || rows.is_empty() {
            return Ok(());
        }
        let mut text = String::new();
        for row in rows {
            if row.step == 1 {
                text.push_str(&row.header());
                text.push('\n');
            }
            text.push_str(&row.to_csv());
            text.push('\n');
        }
        append(&self.losses, &text)
    }

    /// Appends a validation row (the header first when the file is new).
    pub fn append_valid(&self, step: u64, epoch: u64, s: &IcSummary) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        let mut text = String::new();
        if !self.valid.exists() {
            text.push_str(VALID_HEADER);
            text.push('\n');
        }
        text.push_str(&format!(
            "{step},{epoch},{},{},{},{},{}\n",
            s.rank_ic, s.rank_icir, s.ic, s.icir, s.n_days
        ));
        append(&self.valid, &text)
    }
}

impl LossLog {
    /// Appends a `grad_norms.csv` row (`step,grad_norm_<term>,…`; the header first when the file is new).
    pub fn append_grad_norms(&self, step: u64, norms: &[(&'static str, f64)]) -> Result<()> {
        if !self.writes {
            return Ok(());
        }
        let mut text = String::new();
        if !self.grad_norms.exists() {
            text.push_str("step");
            for (name, _) in norms {
                text.push_str(&format!(",{}{name}", super::grad_probe::COLUMN_PREFIX));
            }
            text.push('\n');
        }
        text.push_str(&step.to_string());
        for (_, v) in norms {
            text.push_str(&format!(",{v:.6e}"));
        }
        text.push('\n');
        append(&self.grad_norms, &text)
    }
}

/// Keeps the header and the rows up to `step` of a log, if it exists.
fn truncate_log(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, line)| {
            *i == 0
                || line
                    .split(',')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                    .is_some_and(|s| s <= step)
        })
        .map(|(_, l)| l)
        .collect();
    let mut body = kept.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    crate::atomic::write_file(path, body.as_bytes())
}

fn append(path: &Path, text: &str) -> Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    f.write_all(text.as_bytes()).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(step: u64, loss: f64) -> LossRow {
        LossRow {
            step,
            epoch: 0,
            lr: 1e-3,
            loss,
            grad_norm: 0.25,
            skipped: 0,
            terms: vec![("nll", loss / 2.0), ("kl", 0.125)],
        }
    }

    fn summary() -> IcSummary {
        IcSummary {
            rank_ic: 0.5,
            rank_icir: 1.0,
            ic: 0.25,
            icir: 2.0,
            n_days: 3,
        }
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).unwrap()
    }

    #[test]
    fn rows_carry_the_header_once_and_the_fixed_formatting() {
        let dir = tempfile::tempdir().unwrap();
        let log = LossLog::open(dir.path(), 0, true).unwrap();
        log.append_steps(&[row(1, 2.0), row(2, 1.5)]).unwrap();
        log.append_steps(&[row(3, f64::NAN)]).unwrap();
        assert_eq!(
            read(&dir.path().join(LOSS_LOG)),
            "step,epoch,lr,loss,grad_norm,skipped,nll,kl\n\
             1,0,1.000000e-3,2.000000,0.2500,0,1.000000,0.125000\n\
             2,0,1.000000e-3,1.500000,0.2500,0,0.750000,0.125000\n\
             3,0,1.000000e-3,NaN,0.2500,0,NaN,0.125000\n"
        );
    }

    #[test]
    fn a_resume_drops_rows_past_its_step_then_appends() {
        let dir = tempfile::tempdir().unwrap();
        let log = LossLog::open(dir.path(), 0, true).unwrap();
        log.append_steps(&(1..=5).map(|s| row(s, s as f64)).collect::<Vec<_>>())
            .unwrap();
        for step in [2, 4] {
            log.append_valid(step, 0, &summary()).unwrap();
        }
        let resumed = LossLog::open(dir.path(), 3, true).unwrap();
        let losses = read(&dir.path().join(LOSS_LOG));
        let steps: Vec<&str> = losses.lines().map(|l| &l[..l.find(',').unwrap()]).collect();
        assert_eq!(steps, ["step", "1", "2", "3"]);
        let valid = read(&dir.path().join(VALID_LOG));
        assert_eq!(valid, format!("{VALID_HEADER}\n2,0,0.5,1,0.25,2,3\n"));
        resumed.append_steps(&[row(4, 9.0)]).unwrap();
        let last = read(&dir.path().join(LOSS_LOG));
        assert!(last.ends_with("3,0,1.000000e-3,3.000000,0.2500,0,1.500000,0.125000\n4,0,1.000000e-3,9.000000,0.2500,0,4.500000,0.125000\n"), "{last}");
    }

    #[test]
    fn other_ranks_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let log = LossLog::open(dir.path(), 0, false).unwrap();
        log.append_steps(&[row(1, 2.0)]).unwrap();
        log.append_valid(1, 0, &summary()).unwrap();
        assert!(fs::read_dir(dir.path()).unwrap().next().is_none());
    }
}
