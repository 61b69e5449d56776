//! What a training process shows while it runs: the progress bar on stderr (`TrainOptions::progress`) and,
//! when asked (`TrainOptions::progress_lines`), one JSON [`TrainProgress`] line per optimizer step on
//! stdout for a parent process. It also keeps the run's clock and throughput.

use std::io::Write;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use super::progress::TrainProgress;

pub struct Console {
    bar: ProgressBar,
    lines: bool,
    /// Steps this process will reach.
    total: u64,
    started: Instant,
    start_samples: u64,
}

impl Console {
    /// Starts the clock at `step` of `total` with `samples` seen before.
    pub fn start(bar: bool, lines: bool, step: u64, samples: u64, total: u64) -> Console {
        let bar = if bar {
            let b = ProgressBar::new(total);
            b.set_style(
                ProgressStyle::with_template(
                    "train {bar:30} {pos}/{len} steps [{elapsed}<{eta}] {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_position(step);
            b
        } else {
            ProgressBar::hidden()
        };
        Console {
            bar,
            lines,
            total,
            started: Instant::now(),
            start_samples: samples,
        }
    }

    /// Shows that `step` steps are done (`samples` seen in the run) with this step's loss; returns the
    /// throughput since the start in samples per second.
    pub fn step_done(&self, step: u64, samples: u64, loss: f64) -> f64 {
        let rate = self.samples_per_second(samples);
        self.bar.set_position(step);
        self.bar
            .set_message(format!("loss {loss:.4} | {rate:.0} samples/s"));
        if self.lines {
            let mut out = std::io::stdout().lock();
            // a parent that stopped reading is no reason to stop training
            let _ = writeln!(out, "{}", progress_line(step, self.total, loss).to_line());
            let _ = out.flush();
        }
        rate
    }

    pub fn seconds(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    /// Samples trained by this process (`samples`: seen in the run).
    pub fn samples_since_start(&self, samples: u64) -> f64 {
        samples.saturating_sub(self.start_samples) as f64
    }

    pub fn samples_per_second(&self, samples: u64) -> f64 {
        self.samples_since_start(samples) / self.seconds().max(1e-9)
    }

    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

fn progress_line(step: u64, total: u64, loss: f64) -> TrainProgress {
    TrainProgress {
        storm_train_step: step,
        total,
        loss: loss.is_finite().then_some(loss),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_non_finite_loss_is_reported_as_null() {
        assert_eq!(
            progress_line(3, 12, 0.5).to_line(),
            r#"{"storm_train_step":3,"total":12,"loss":0.5}"#
        );
        assert_eq!(progress_line(4, 12, f64::NAN).loss, None);
        assert_eq!(progress_line(4, 12, f64::INFINITY).loss, None);
    }
}
