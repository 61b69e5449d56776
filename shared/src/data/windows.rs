//! Training windows: which days can end a (W days × N stocks) window in each split, seeded batch order,
//! and batches as tch tensors gathered from one device-resident panel (no per-batch copy of the data set).

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tch::{Device, Kind, Tensor};

use super::panel::Panel;
use crate::config::{Split, SplitsConfig};
use crate::error::{Error, Result};

/// Whether a window must have next-day labels for every stock (training does; prediction does not).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Labels {
    Required,
    Optional,
}

/// Day indices that end a complete window of `window` days inside `split`. A window belongs to the split
/// containing its last day; its history may reach back before the split starts (features are causal).
/// A window needs every ticker on every one of its days: windows before a late-listed ticker has
/// history are skipped. Errors if none remain, naming the tickers that start late.
pub fn split_window_ends(
    panel: &Panel,
    splits: &SplitsConfig,
    split: Split,
    window: usize,
    labels: Labels,
) -> Result<Vec<usize>> {
    let range = splits.range(split);
    let complete = panel.complete_days();
    let labelled = panel.labelled_days();
    let mut run = 0usize;
    let mut ends = Vec::new();
    for (t, date) in panel.dates.iter().enumerate() {
        run = if complete[t] { run + 1 } else { 0 };
        let label_ok = labels == Labels::Optional || labelled[t];
        if run >= window && range.contains(*date) && label_ok {
            ends.push(t);
        }
    }
    if ends.is_empty() {
        return Err(Error::Data(format!(
            "split {} ({} .. {}) has no complete {window}-day window of all {} tickers{}",
            split.name(),
            range.start,
            range.end,
            panel.n_tickers(),
            late_ticker_hint(panel, range.end)
        )));
    }
    Ok(ends)
}

fn late_ticker_hint(panel: &Panel, end: chrono::NaiveDate) -> String {
    let n = panel.n_tickers();
    let late: Vec<&str> = (0..n)
        .filter(|&j| {
            !panel
                .dates
                .iter()
                .enumerate()
                .any(|(t, d)| *d <= end && panel.present[t * n + j])
        })
        .map(|j| panel.tickers[j].as_str())
        .collect();
    if late.is_empty() {
        String::new()
    } else {
        format!(
            "; tickers without data by then: {} (drop them via data.tickers or move the split)",
            late.join(", ")
        )
    }
}

/// Seeded batch order over window ends. The order of epoch e depends only on (seed, e), so a resumed run
/// sees the same batches as an uninterrupted one.
pub struct BatchSampler {
    pub ends: Vec<usize>,
    pub batch_size: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub seed: u64,
}

impl BatchSampler {
    pub fn epoch(&self, epoch: u64) -> Vec<Vec<usize>> {
        let mut order = self.ends.clone();
        if self.shuffle {
            let mut rng =
                ChaCha8Rng::seed_from_u64(self.seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            order.shuffle(&mut rng);
        }
        let mut batches: Vec<Vec<usize>> = order
            .chunks(self.batch_size.max(1))
            .map(<[usize]>::to_vec)
            .collect();
        if self.drop_last && batches.last().is_some_and(|b| b.len() < self.batch_size) {
            batches.pop();
        }
        batches
    }

    pub fn batches_per_epoch(&self) -> usize {
        let full = self.ends.len() / self.batch_size.max(1);
        let partial = !self.drop_last && !self.ends.len().is_multiple_of(self.batch_size.max(1));
        full + usize::from(partial)
    }
}

/// A batch of windows: x (B, W, N, D) float32, y (B, N) next-day returns at each window's last day.
pub struct Batch {
    pub x: Tensor,
    pub y: Tensor,
    pub ends: Vec<usize>,
}

/// The panel's features and labels resident on one device; batches are gathered with `index_select`.
pub struct WindowTensors {
    features: Tensor,
    labels: Tensor,
    window: usize,
    device: Device,
}

impl WindowTensors {
    pub fn new(panel: &Panel, window: usize, device: Device) -> Result<Self> {
        let (t, n, d) = (
            panel.n_days() as i64,
            panel.n_tickers() as i64,
            panel.n_features() as i64,
        );
        let features = Tensor::f_from_slice(&panel.features)?
            .f_view([t, n, d])?
            .f_to_device(device)?;
        let labels = Tensor::f_from_slice(&panel.labels)?
            .f_view([t, n])?
            .f_to_device(device)?;
        Ok(WindowTensors {
            features,
            labels,
            window,
            device,
        })
    }

    pub fn batch(&self, ends: &[usize]) -> Result<Batch> {
        let w = self.window as i64;
        let mut days: Vec<i64> = Vec::with_capacity(ends.len() * self.window);
        for &e in ends {
            let e = e as i64;
            if e + 1 < w {
                return Err(Error::Data(format!(
                    "window ending at day {e} starts before day 0"
                )));
            }
            days.extend(e + 1 - w..=e);
        }
        let index = Tensor::f_from_slice(&days)?.f_to_device(self.device)?;
        let size = self.features.size();
        let x = self.features.f_index_select(0, &index)?.f_view([
            ends.len() as i64,
            w,
            size[1],
            size[2],
        ])?;
        let end_index = Tensor::f_from_slice(&ends.iter().map(|&e| e as i64).collect::<Vec<_>>())?
            .f_to_device(self.device)?;
        let y = self
            .labels
            .f_index_select(0, &end_index)?
            .f_to_kind(Kind::Float)?;
        Ok(Batch {
            x,
            y,
            ends: ends.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests;
