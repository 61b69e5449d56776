//! `storm export`: a trained run's factor embeddings and codebook indices per (date, stock), as Parquet
//! (`factors.parquet` by default): the state for the trading task and material for inspecting what the
//! codebooks learned.

use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use super::trained::TrainedRun;
use crate::atomic;
use crate::config::Split;
use crate::data::windows::{split_window_ends, Labels};
use crate::data::Panel;
use crate::error::{Error, Result};
use crate::model::Embeddings;

/// What was exported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportSummary {
    pub rows: usize,
    pub days: usize,
    pub embedding_dim: usize,
}

fn to_vec<T: tch::kind::Element>(t: &Tensor) -> Result<Vec<T>> {
    let flat = t.to_device(Device::Cpu).flatten(0, -1).contiguous();
    let len = flat.numel();
    let mut out = vec![T::ZERO; len];
    flat.f_copy_data(&mut out, len)?;
    Ok(out)
}

/// Writes one row per (window-end day, stock) for every split to `out`: `date`, `ticker`, `split`,
/// `factor_0..H-1` (the stock's factor embedding), `state_0..S-1` (paper 003's trading state: the stock's
/// TS and the day's CS factor embeddings; only for models that have them), `ts_code_0..P-1` (the TS code of
/// each of the stock's patches, oldest first; absent without the TS branch) and `cs_code` (the CS code of
/// the day itself; absent without CS).
pub fn export(run: &TrainedRun, out: &Path) -> Result<ExportSummary> {
    let (cfg, panel) = (&run.config, &run.panel);
    let w = cfg.data.window;
    let model = run.require_model("and no factor embeddings to export")?;
    let tensors = run.tensors()?;
    let mut columns = Columns::new(panel.n_tickers());
    for split in Split::ALL {
        let Ok(ends) = split_window_ends(panel, &cfg.splits, split, w, Labels::Optional) else {
            continue;
        };
        for chunk in ends.chunks(64) {
            let batch = tensors.batch(chunk)?;
            let emb = tch::no_grad(|| model.embeddings(&batch.x));
            columns.push(panel, split, chunk, &emb)?;
        }
    }
    let (days, embedding_dim) = (columns.days, columns.hidden);
    let mut frame = columns.finish()?;
    let rows = frame.height();
    let mut bytes = Vec::new();
    ParquetWriter::new(&mut bytes).finish(&mut frame)?;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    atomic::write_file(out, &bytes)?;
    Ok(ExportSummary {
        rows,
        days,
        embedding_dim,
    })
}

struct Columns {
    n: usize,
    patches: usize,
    hidden: usize,
    days: usize,
    dates: Vec<chrono::NaiveDate>,
    tickers: Vec<String>,
    splits: Vec<&'static str>,
    factors: Vec<Vec<f32>>,
    state: Vec<Vec<f32>>,
    ts_codes: Vec<Vec<i64>>,
    cs_codes: Vec<i64>,
    has_ts: bool,
    has_cs: bool,
}

impl Columns {
    /// Column widths (embedding size, TS patches, which codebooks) are taken from the first batch.
    fn new(n: usize) -> Self {
        Columns {
            n,
            patches: 0,
            hidden: 0,
            days: 0,
            dates: Vec::new(),
            tickers: Vec::new(),
            splits: Vec::new(),
            factors: Vec::new(),
            state: Vec::new(),
            ts_codes: Vec::new(),
            cs_codes: Vec::new(),
            has_ts: false,
            has_cs: false,
        }
    }

    fn size_from(
        &mut self,
        e: &Tensor,
        state: Option<&Tensor>,
        ts: Option<&Tensor>,
        cs: Option<&Tensor>,
    ) {
        if self.days > 0 {
            return;
        }
        self.hidden = e.size()[2] as usize;
        self.factors = vec![Vec::new(); self.hidden];
        self.state = vec![Vec::new(); state.map_or(0, |s| s.size()[2] as usize)];
        self.has_ts = ts.is_some();
        self.has_cs = cs.is_some();
        self.patches = ts.map_or(0, |t| t.size()[1] as usize / self.n.max(1));
        self.ts_codes = vec![Vec::new(); self.patches];
    }

    fn push(
        &mut self,
        panel: &Panel,
        split: Split,
        ends: &[usize],
        emb: &Embeddings,
    ) -> Result<()> {
        let (e, state) = (&emb.factors, emb.state.as_ref());
        let (ts, cs) = (emb.ts_codes.as_ref(), emb.cs_codes.as_ref());
        self.size_from(e, state, ts, cs);
        let e: Vec<f32> = to_vec(&e.to_kind(Kind::Float))?;
        let state: Vec<f32> = state
            .map(|s| to_vec(&s.to_kind(Kind::Float)))
            .transpose()?
            .unwrap_or_default();
        let s_dim = self.state.len();
        let ts: Option<Vec<i64>> = ts.map(|t| to_vec(&t.to_kind(Kind::Int64))).transpose()?;
        let cs: Option<Vec<i64>> = cs.map(|t| to_vec(&t.to_kind(Kind::Int64))).transpose()?;
        let (n, h, p) = (self.n, self.hidden, self.patches);
        let w = cs.as_ref().map_or(0, |c| c.len() / ends.len().max(1));
        for (b, &day) in ends.iter().enumerate() {
            self.days += 1;
            for j in 0..n {
                self.dates.push(panel.dates[day]);
                self.tickers.push(panel.tickers[j].clone());
                self.splits.push(split.name());
                let base = (b * n + j) * h;
                for (k, col) in self.factors.iter_mut().enumerate() {
                    col.push(e[base + k]);
                }
                let at = (b * n + j) * s_dim;
                for (k, col) in self.state.iter_mut().enumerate() {
                    col.push(state[at + k]);
                }
                if let Some(ts) = &ts {
                    // TS tokens are time-major: patch t of stock j is token t·N + j
                    for (t, col) in self.ts_codes.iter_mut().enumerate() {
                        col.push(ts[b * p * n + t * n + j]);
                    }
                }
                if let Some(cs) = &cs {
                    self.cs_codes.push(cs[b * w + w - 1]);
                }
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<DataFrame> {
        let mut cols = vec![
            Column::new("date".into(), self.dates),
            Column::new("ticker".into(), self.tickers),
            Column::new("split".into(), self.splits),
        ];
        for (k, values) in self.factors.into_iter().enumerate() {
            cols.push(Column::new(format!("factor_{k}").into(), values));
        }
        for (k, values) in self.state.into_iter().enumerate() {
            cols.push(Column::new(format!("state_{k}").into(), values));
        }
        if self.has_ts {
            for (t, values) in self.ts_codes.into_iter().enumerate() {
                cols.push(Column::new(format!("ts_code_{t}").into(), values));
            }
        }
        if self.has_cs {
            cols.push(Column::new("cs_code".into(), self.cs_codes));
        }
        Ok(DataFrame::new_infer_height(cols)?)
    }
}
