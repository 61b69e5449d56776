//! What a sweep shows while it runs: on a terminal, an indicatif MultiProgress with one line for the
//! whole sweep and one per worker (job, phase, step, loss, samples/s); otherwise one plain stderr line per
//! job state change. Either way state changes are also logged through `tracing`.

use std::collections::BTreeMap;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use storm_worker::Progress;

/// How a session shows itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Display {
    /// Progress bars (stderr is a terminal).
    Bars,
    /// One stderr line per job state change.
    Lines,
    /// Logs only (benchmarks).
    Quiet,
}

pub struct ProgressUi {
    multi: MultiProgress,
    overall: ProgressBar,
    workers: BTreeMap<String, ProgressBar>,
    display: Display,
}

impl ProgressUi {
    /// `total` jobs of which `done` are already finished.
    pub fn new(display: Display, total: usize, done: usize) -> ProgressUi {
        let visible = display == Display::Bars;
        let multi = if visible {
            MultiProgress::new()
        } else {
            MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
        };
        let overall = multi.add(ProgressBar::new(total as u64));
        overall.set_style(
            ProgressStyle::with_template("sweep {bar:30} {pos}/{len} jobs [{elapsed}<{eta}] {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        overall.set_position(done as u64);
        ProgressUi {
            multi,
            overall,
            workers: BTreeMap::new(),
            display,
        }
    }

    pub fn add_worker(&mut self, worker: &str, device: &str) {
        let bar = self.multi.add(ProgressBar::new_spinner());
        bar.set_style(
            ProgressStyle::with_template("  {prefix:>4} {spinner} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_prefix(worker.to_string());
        bar.set_message(format!("{device}: idle"));
        if self.display == Display::Bars {
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        self.workers.insert(worker.to_string(), bar);
    }

    pub fn remove_worker(&mut self, worker: &str) {
        if let Some(bar) = self.workers.remove(worker) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }

    /// A job state change: a line above the bars (terminal) or on stderr, and a log event.
    pub fn line(&self, msg: &str) {
        tracing::info!("{msg}");
        match self.display {
            Display::Bars => {
                let _ = self.multi.println(msg);
            }
            Display::Lines => eprintln!("[sweep] {msg}"),
            Display::Quiet => {}
        }
    }

    pub fn started(&self, worker: &str, job: &str, attempt: u32) {
        if let Some(bar) = self.workers.get(worker) {
            bar.set_message(format!("{job} (attempt {attempt}): starting"));
        }
    }

    pub fn progress(&self, worker: &str, job: &str, p: &Progress) {
        let Some(bar) = self.workers.get(worker) else {
            return;
        };
        let step = match p.total {
            Some(t) => format!("step {}/{t}", p.step),
            None => format!("step {}", p.step),
        };
        let loss = if p.loss.is_finite() {
            format!("loss {:.4}", p.loss)
        } else {
            "loss -".into()
        };
        bar.set_message(format!(
            "{job}: {} | {step} | {loss} | {:.0} samples/s",
            p.phase, p.samples_per_s
        ));
    }

    pub fn idle(&self, worker: &str) {
        if let Some(bar) = self.workers.get(worker) {
            bar.set_message("idle");
        }
    }

    /// A job left the sweep's to-do list (done or failed for good).
    pub fn job_finished(&self, counts: (usize, usize, usize, usize)) {
        self.overall.inc(1);
        self.overall
            .set_message(format!("{} done, {} failed", counts.2, counts.3));
    }

    pub fn finish(&mut self) {
        for bar in self.workers.values() {
            bar.finish_and_clear();
        }
        self.overall.finish_and_clear();
    }
}
