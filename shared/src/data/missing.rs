//! The missing-value policy (`data.missing`): what happens to the empty price and volume fields of a price
//! table, and the record of every cell it touched (kept in `manifest.json`).

use std::path::Path;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::dates::day_string;
use super::ingest::{RowUnit, ADJ_CLOSE, CLOSE, DATE, HIGH, LINE, LOW, OPEN, TICKER, VOLUME};
use super::validate::ticker_names;
use crate::config::MissingPolicy;
use crate::error::{Error, Result};

/// How many offending lines an `error` message names.
const SHOWN: usize = 5;

/// What the policy did with one missing cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RepairAction {
    /// `drop`: the row was removed.
    Dropped,
    /// `ffill`: the previous day's value of the field was carried forward.
    Filled,
    /// `ffill`: the row came before the ticker's first row with every price, so nothing could be carried
    /// into it; it was removed.
    LeadingDropped,
    /// `ffill`: a missing volume became 0 (volume is not carried forward).
    VolumeZeroed,
}

impl RepairAction {
    pub const ALL: [RepairAction; 4] = [
        RepairAction::Dropped,
        RepairAction::Filled,
        RepairAction::LeadingDropped,
        RepairAction::VolumeZeroed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RepairAction::Dropped => "dropped",
            RepairAction::Filled => "filled",
            RepairAction::LeadingDropped => "leading_dropped",
            RepairAction::VolumeZeroed => "volume_zeroed",
        }
    }
}

/// One missing cell and what was done with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repair {
    pub ticker: String,
    /// YYYY-MM-DD.
    pub date: String,
    pub field: String,
    pub action: RepairAction,
}

/// The table after the policy, and the record of what it did (ticker, then date, then field order).
pub struct Repaired {
    pub frame: DataFrame,
    pub repairs: Vec<Repair>,
}

/// A missing cell: its row in the (ticker, date)-sorted frame and its field.
#[derive(Clone, Copy)]
struct Cell {
    row: usize,
    field: &'static str,
}

/// Applies `policy` to the nulls in the price and volume columns of `frame`, which must be sorted by
/// ticker then date and carry [`LINE`]. A frame without nulls comes back unchanged. Without an
/// `adj_close` column in the file (`has_adj_close` false) `adj_close` is re-copied from the repaired close.
pub fn apply(
    frame: DataFrame,
    policy: MissingPolicy,
    has_adj_close: bool,
    path: &Path,
    unit: RowUnit,
) -> Result<Repaired> {
    let fields: Vec<&'static str> = [OPEN, HIGH, LOW, CLOSE]
        .into_iter()
        .chain(has_adj_close.then_some(ADJ_CLOSE))
        .chain([VOLUME])
        .collect();
    let cells = missing_cells(&frame, &fields)?;
    if cells.is_empty() {
        return Ok(Repaired {
            frame,
            repairs: Vec::new(),
        });
    }
    let (frame, repairs) = match policy {
        MissingPolicy::Error => return Err(refusal(&frame, &cells, path, unit)?),
        MissingPolicy::Drop => drop_rows(frame, &cells)?,
        MissingPolicy::Ffill => forward_fill(frame, &cells, &fields)?,
    };
    let mut frame = frame;
    if !has_adj_close {
        let close = frame.column(CLOSE)?.clone().with_name(ADJ_CLOSE.into());
        frame.with_column(close)?;
    }
    Ok(Repaired { frame, repairs })
}

/// Every null cell, in row order and, within a row, in `fields` order.
fn missing_cells(frame: &DataFrame, fields: &[&'static str]) -> Result<Vec<Cell>> {
    let mut cells = Vec::new();
    for &field in fields {
        let column = frame.column(field)?;
        if column.null_count() == 0 {
            continue;
        }
        let ca = column.f64()?;
        cells.extend(
            ca.iter()
                .enumerate()
                .filter(|(_, v)| v.is_none())
                .map(|(row, _)| Cell { row, field }),
        );
    }
    let order = |f: &str| fields.iter().position(|g| *g == f).unwrap_or(usize::MAX);
    cells.sort_by_key(|c| (c.row, order(c.field)));
    Ok(cells)
}

/// The `error` policy's message: the first offending lines in file order and the totals.
fn refusal(frame: &DataFrame, cells: &[Cell], path: &Path, unit: RowUnit) -> Result<Error> {
    let lines: Vec<u32> = frame.column(LINE)?.u32()?.into_no_null_iter().collect();
    let mut by_line: Vec<(u32, &'static str)> =
        cells.iter().map(|c| (lines[c.row], c.field)).collect();
    by_line.sort_by_key(|(line, _)| *line); // stable: fields stay in column order
    let mut shown: Vec<(u32, Vec<&str>)> = Vec::new();
    for &(line, field) in &by_line {
        match shown.last_mut() {
            Some((l, fields)) if *l == line => fields.push(field),
            _ => {
                if shown.len() == SHOWN {
                    break;
                }
                shown.push((line, vec![field]));
            }
        }
    }
    let mut rows: Vec<u32> = by_line.iter().map(|(l, _)| *l).collect();
    rows.dedup();
    let listed: Vec<String> = shown
        .iter()
        .map(|(line, fields)| {
            let names: Vec<String> = fields.iter().map(|f| format!("`{f}`")).collect();
            format!("{} {line} ({})", unit.name(), names.join(", "))
        })
        .collect();
    Ok(Error::input(
        path,
        format!(
            "{} missing value(s) in {} {}(s): {}{}; pass `--missing drop` to remove incomplete rows or \
             `--missing ffill` to carry each ticker's previous value forward (config data.missing)",
            cells.len(),
            rows.len(),
            unit.name(),
            listed.join(", "),
            if rows.len() > shown.len() { ", …" } else { "" }
        ),
    ))
}

fn repair(frame: &DataFrame, row: usize, field: &str, action: RepairAction) -> Result<Repair> {
    let ticker = frame
        .column(TICKER)?
        .str()?
        .get(row)
        .unwrap_or("")
        .to_string();
    let day = frame.column(DATE)?.date()?.physical().get(row);
    Ok(Repair {
        ticker,
        date: day.map(day_string).unwrap_or_default(),
        field: field.to_string(),
        action,
    })
}

fn drop_rows(frame: DataFrame, cells: &[Cell]) -> Result<(DataFrame, Vec<Repair>)> {
    let mut keep = vec![true; frame.height()];
    let mut repairs = Vec::with_capacity(cells.len());
    for c in cells {
        keep[c.row] = false;
        repairs.push(repair(&frame, c.row, c.field, RepairAction::Dropped)?);
    }
    let mask = BooleanChunked::from_slice("keep".into(), &keep);
    Ok((frame.filter(&mask)?, repairs))
}

/// `ffill`: within each ticker, rows before its first row with every price are removed; after it, a
/// missing price takes the previous row's (already repaired) value and a missing volume becomes 0.
fn forward_fill(
    frame: DataFrame,
    cells: &[Cell],
    fields: &[&'static str],
) -> Result<(DataFrame, Vec<Repair>)> {
    let n = frame.height();
    let tickers = ticker_names(&frame)?;
    let mut price_missing = vec![false; n];
    for c in cells.iter().filter(|c| c.field != VOLUME) {
        price_missing[c.row] = true;
    }
    // a row is kept once its ticker has had a row with every price
    let mut keep = vec![false; n];
    let mut complete_seen = false;
    for row in 0..n {
        if row == 0 || tickers[row] != tickers[row - 1] {
            complete_seen = false;
        }
        complete_seen |= !price_missing[row];
        keep[row] = complete_seen;
    }
    let mut repairs = Vec::with_capacity(cells.len());
    for c in cells {
        let action = match (keep[c.row], c.field) {
            (false, _) => RepairAction::LeadingDropped,
            (true, VOLUME) => RepairAction::VolumeZeroed,
            (true, _) => RepairAction::Filled,
        };
        repairs.push(repair(&frame, c.row, c.field, action)?);
    }
    let mut frame = frame;
    for &field in fields {
        let ca = frame.column(field)?.f64()?.clone();
        if ca.null_count() == 0 {
            continue;
        }
        let mut values: Vec<Option<f64>> = ca.iter().collect();
        for row in 0..n {
            if values[row].is_some() || !keep[row] {
                continue;
            }
            // a kept row with a missing price is never its ticker's first kept row (that one is complete)
            values[row] = if field == VOLUME {
                Some(0.0)
            } else {
                values[row - 1]
            };
        }
        let filled = Float64Chunked::from_iter_options(field.into(), values.into_iter());
        frame.with_column(filled.into_series().into_column())?;
    }
    let mask = BooleanChunked::from_slice("keep".into(), &keep);
    Ok((frame.filter(&mask)?, repairs))
}

#[cfg(test)]
mod tests;
