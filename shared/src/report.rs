//! `report.md` of a run directory: what the run is (run info, resolved config), its metrics as Markdown
//! tables (training, validation, evaluation, backtest, trading) and every PNG chart in the directory, with
//! `loss_curves.png` drawn from `losses.csv`. It describes only what exists, so it is rebuilt from the files
//! at the end of `storm pretrain`, `eval`, `backtest` and `trade`, and by `storm report`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::config::Split;
use crate::error::{Error, Result};
use crate::train::run_dir::{load_run, CONFIG_FILE};
use crate::train::trainer::{LOSS_LOG, VALID_LOG};

pub const REPORT_FILE: &str = "report.md";
pub const LOSS_CURVES_PNG: &str = "loss_curves.png";
const TRAIN_SUMMARY: &str = "train.json";
/// Validation rows listed in full; longer logs show the best and the last ones.
const VALID_ROWS: usize = 12;

/// A numeric CSV log with a header row (`losses.csv`, `valid.csv`).
#[derive(Debug, Clone, PartialEq)]
pub struct CsvLog {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

impl CsvLog {
    /// Reads `path`; Ok(None) when it does not exist. Values that do not parse are NaN (the trainer writes
    /// `NaN` for a skipped step's gradient norm); a row with the wrong number of fields is an error.
    pub fn read(path: &Path) -> Result<Option<Self>> {
        let text = match fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        let Some(header) = lines.next() else {
            return Ok(None);
        };
        let columns: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
        let mut rows = Vec::new();
        for (i, line) in lines.enumerate() {
            let row: Vec<f64> = line
                .split(',')
                .map(|v| v.trim().parse::<f64>().unwrap_or(f64::NAN))
                .collect();
            if row.len() != columns.len() {
                return Err(Error::input(
                    path,
                    format!(
                        "line {}: {} fields, the header has {}",
                        i + 2,
                        row.len(),
                        columns.len()
                    ),
                ));
            }
            rows.push(row);
        }
        Ok(Some(CsvLog { columns, rows }))
    }

    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let i = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|r| r[i]).collect())
    }
}

/// Draws `loss_curves.png` from `losses.csv`: the total loss, learning rate, gradient norm and each term.
pub fn draw_loss_curves(log: &CsvLog, png: &Path) -> Result<()> {
    let steps = log
        .column("step")
        .ok_or_else(|| Error::Data(format!("{LOSS_LOG} has no step column")))?;
    let skip = ["step", "epoch", "skipped"];
    let series: Vec<(String, Vec<f64>)> = log
        .columns
        .iter()
        .filter(|c| !skip.contains(&c.as_str()))
        .filter_map(|c| {
            let title = match c.as_str() {
                "loss" => "loss (weighted total)".to_string(),
                "lr" => "learning rate".to_string(),
                "grad_norm" => "gradient norm".to_string(),
                other => other.to_string(),
            };
            log.column(c).map(|v| (title, v))
        })
        .collect();
    let panels: Vec<(&str, &[f64])> = series
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let dir = png.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{LOSS_CURVES_PNG}.{}.png", std::process::id()));
    let drawn = crate::plot::loss_curves(&tmp, &steps, &panels)
        .and_then(|()| fs::rename(&tmp, png).map_err(|e| Error::io(png, e)));
    if drawn.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    drawn
}

/// A metric for a table: 4 decimals (scientific below 1e-3, e.g. learning rates), `n/a` when missing or
/// undefined.
fn cell(v: Option<f64>) -> String {
    match v {
        Some(v) if v != 0.0 && v.abs() < 1e-3 => format!("{v:.3e}"),
        Some(v) if v.is_finite() => format!("{v:.4}"),
        _ => "n/a".into(),
    }
}

fn num(v: &Value, key: &str) -> Option<f64> {
    v.get(key)?.as_f64()
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "n/a".into(),
        Some(other) => other.to_string(),
    }
}

fn read_json(path: &Path) -> Result<Option<Value>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| Error::input(path, format!("invalid JSON: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Rebuilds `loss_curves.png` and `report.md` in `run_dir`; returns the report's path. A chart that cannot
/// be drawn (no font) is left out with a warning; an unreadable metrics file is an error naming it.
pub fn write_report(run_dir: &Path) -> Result<PathBuf> {
    let (_, info) = load_run(run_dir)?;
    let name = run_dir.file_name().map_or_else(
        || run_dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut md = String::new();
    let mut embedded: Vec<String> = Vec::new();
    let _ = writeln!(md, "# Run `{name}`\n");
    let _ = writeln!(
        md,
        "Generated by `storm report` from the files in this directory; rebuilt by `storm pretrain`, \
         `eval`, `backtest` and `trade`.\n"
    );
    md.push_str("| | |\n|---|---|\n");
    let _ = writeln!(md, "| seed | {} |", info.seed);
    let _ = writeln!(md, "| config hash | `{}` |", info.config_hash);
    let _ = writeln!(md, "| device | {} |", info.device);
    let _ = writeln!(md, "| data | `{}` |", info.data_dir.display());
    let _ = writeln!(md, "| storm version | {} |\n", info.storm_version);

    training_section(run_dir, &mut md, &mut embedded)?;
    eval_section(run_dir, &mut md, &mut embedded)?;
    backtest_section(run_dir, &mut md, &mut embedded)?;
    trading_section(run_dir, &mut md, &mut embedded)?;

    let mut others: Vec<String> = fs::read_dir(run_dir)
        .map_err(|e| Error::io(run_dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".png") && !n.starts_with('.') && !embedded.contains(n))
        .collect();
    if !others.is_empty() {
        others.sort();
        md.push_str("## Other charts\n\n");
        for png in &others {
            let _ = writeln!(md, "![{png}]({png})\n");
        }
    }

    let config_path = run_dir.join(CONFIG_FILE);
    let config = fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let _ = writeln!(
        md,
        "## Config\n\nThe resolved `{CONFIG_FILE}` (defaults and overrides applied):\n\n```toml\n{}\n```",
        config.trim_end()
    );
    let path = run_dir.join(REPORT_FILE);
    crate::atomic::write_file(&path, md.as_bytes())?;
    Ok(path)
}

/// Embeds `png` when it exists and remembers it.
fn image(run_dir: &Path, md: &mut String, embedded: &mut Vec<String>, png: &str, alt: &str) {
    if run_dir.join(png).is_file() {
        let _ = writeln!(md, "![{alt}]({png})\n");
        embedded.push(png.to_string());
    }
}

fn training_section(run_dir: &Path, md: &mut String, embedded: &mut Vec<String>) -> Result<()> {
    let summary = read_json(&run_dir.join(TRAIN_SUMMARY))?;
    let losses = CsvLog::read(&run_dir.join(LOSS_LOG))?;
    if summary.is_none() && losses.is_none() {
        return Ok(());
    }
    md.push_str("## Training\n\n");
    if let Some(s) = &summary {
        md.push_str(
            "| steps | of | epochs | skipped steps | final loss | best valid RankIC | at step | seconds | \
             samples/s |\n|---|---|---|---|---|---|---|---|---|\n",
        );
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            text(s, "steps"),
            text(s, "total_steps"),
            text(s, "epochs_completed"),
            text(s, "skipped_steps"),
            cell(num(s, "final_loss")),
            cell(num(s, "best_valid_rank_ic")),
            text(s, "best_step"),
            num(s, "seconds").map_or("n/a".into(), |v| format!("{v:.1}")),
            num(s, "samples_per_second").map_or("n/a".into(), |v| format!("{v:.1}")),
        );
    }
    if let Some(log) = losses.as_ref().filter(|l| !l.rows.is_empty()) {
        let _ = writeln!(
            md,
            "Loss log `{LOSS_LOG}`: {} steps. First, last and lowest value of each column:\n",
            log.rows.len()
        );
        md.push_str("| column | first | last | min |\n|---|---|---|---|\n");
        for name in log
            .columns
            .iter()
            .filter(|c| !["step", "epoch"].contains(&c.as_str()))
        {
            let Some(v) = log.column(name) else { continue };
            let finite = || v.iter().copied().filter(|x| x.is_finite());
            let _ = writeln!(
                md,
                "| {name} | {} | {} | {} |",
                cell(finite().next()),
                cell(finite().next_back()),
                cell(finite().reduce(f64::min)),
            );
        }
        md.push('\n');
        let png = run_dir.join(LOSS_CURVES_PNG);
        if let Err(e) = draw_loss_curves(log, &png) {
            tracing::warn!("{} not written: {e}", png.display());
            if png.exists() {
                let _ = fs::remove_file(&png);
            }
        }
        image(run_dir, md, embedded, LOSS_CURVES_PNG, "loss curves");
    }
    if let Some(valid) = CsvLog::read(&run_dir.join(VALID_LOG))?.filter(|l| !l.rows.is_empty()) {
        validation_table(&valid, md);
    }
    Ok(())
}

fn validation_table(valid: &CsvLog, md: &mut String) {
    let ic_col = valid.columns.iter().position(|c| c == "rank_ic");
    let best = ic_col.and_then(|i| {
        (0..valid.rows.len())
            .filter(|&r| valid.rows[r][i].is_finite())
            .max_by(|&a, &b| valid.rows[a][i].total_cmp(&valid.rows[b][i]))
    });
    let n = valid.rows.len();
    let mut shown: Vec<usize> = if n <= VALID_ROWS {
        (0..n).collect()
    } else {
        (n - VALID_ROWS..n).collect()
    };
    if let Some(b) = best.filter(|b| !shown.contains(b)) {
        shown.insert(0, b);
    }
    let _ = writeln!(
        md,
        "Validation (`{VALID_LOG}`; evaluations: {n}{}; best RankIC in bold):\n",
        if n > VALID_ROWS {
            ", the best and the last ones"
        } else {
            ""
        }
    );
    let _ = writeln!(md, "| {} |", valid.columns.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(valid.columns.len()));
    for r in shown {
        let cells: Vec<String> = valid.rows[r]
            .iter()
            .zip(&valid.columns)
            .map(|(v, c)| match c.as_str() {
                "step" | "epoch" | "n_days" if v.is_finite() => format!("{v:.0}"),
                _ if Some(r) == best && c == "rank_ic" => format!("**{}**", cell(Some(*v))),
                _ => cell(Some(*v)),
            })
            .collect();
        let _ = writeln!(md, "| {} |", cells.join(" | "));
    }
    md.push('\n');
}

fn eval_section(run_dir: &Path, md: &mut String, embedded: &mut Vec<String>) -> Result<()> {
    let mut rows = Vec::new();
    for split in Split::ALL {
        if let Some(v) = read_json(&run_dir.join(crate::eval::run_eval::eval_file(split)))? {
            rows.push((split, v));
        }
    }
    if rows.is_empty() {
        return Ok(());
    }
    md.push_str("## Evaluation\n\n");
    md.push_str(
        "| split | period | days | checkpoint step | RankIC | RankICIR | IC | ICIR | perplexity TS | \
         perplexity CS | codes used TS | codes used CS |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for (split, v) in &rows {
        let _ = writeln!(
            md,
            "| {} | {} .. {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            split.name(),
            text(v, "first_date"),
            text(v, "last_date"),
            text(v, "n_days"),
            text(v, "checkpoint_step"),
            cell(num(v, "rank_ic")),
            cell(num(v, "rank_icir")),
            cell(num(v, "ic")),
            cell(num(v, "icir")),
            cell(num(v, "codebook_perplexity_ts")),
            cell(num(v, "codebook_perplexity_cs")),
            cell(num(v, "codebook_usage_ts")),
            cell(num(v, "codebook_usage_cs")),
        );
    }
    md.push('\n');
    for (split, _) in &rows {
        let png = format!("codebook_usage_{}.png", split.name());
        image(
            run_dir,
            md,
            embedded,
            &png,
            &format!("codebook usage, {} split", split.name()),
        );
    }
    Ok(())
}

/// One row of financial metrics; `last` is the last column (turnover or trades).
fn metrics_row(md: &mut String, name: &str, m: &Value, last: &str) {
    let _ = writeln!(
        md,
        "| {name} | {} | {} | {} | {} | {} | {} | {last} |",
        cell(num(m, "apy")),
        cell(num(m, "cw")),
        cell(num(m, "cr")),
        cell(num(m, "asr")),
        cell(num(m, "mdd")),
        cell(num(m, "avo")),
    );
}

fn backtest_section(run_dir: &Path, md: &mut String, embedded: &mut Vec<String>) -> Result<()> {
    use crate::portfolio::report::{report_file, wealth_png_file};
    let mut first = true;
    let variants = Split::ALL
        .into_iter()
        .flat_map(|split| [(split, false), (split, true)]);
    for (split, risk_aware) in variants {
        let Some(v) = read_json(&run_dir.join(report_file(split, risk_aware)))? else {
            continue;
        };
        let strategy = if risk_aware {
            format!("TDrisk (η = {})", text(&v["params"], "risk_aversion"))
        } else {
            "TopK-Drop".to_string()
        };
        if first {
            md.push_str("## Portfolio backtest\n\n");
            first = false;
        }
        let p = v.get("params").cloned().unwrap_or(Value::Null);
        let period = v.get("period").cloned().unwrap_or(Value::Null);
        let _ = writeln!(
            md,
            "{} split, {} .. {} ({} trading days): {strategy} k={}, drop={}, cost {}, index {}.\n",
            split.name(),
            text(&period, "first_date"),
            text(&period, "last_date"),
            text(&period, "n_trading_days"),
            text(&p, "k"),
            text(&p, "drop"),
            text(&p, "cost"),
            text(&p, "index"),
        );
        md.push_str("| series | APY | CW | CR | ASR | MDD | AVO | turnover |\n|---|---|---|---|---|---|---|---|\n");
        for (key, name) in [
            ("strategy", strategy.as_str()),
            ("equal_weight", "Equal weight"),
            ("index", "Index"),
        ] {
            if let Some(m) = v.get(key) {
                metrics_row(md, name, m, &cell(num(m, "turnover")));
            }
        }
        md.push('\n');
        let png = wealth_png_file(split, risk_aware);
        image(
            run_dir,
            md,
            embedded,
            &png,
            &format!("wealth, {} split", split.name()),
        );
    }
    Ok(())
}

fn trading_section(run_dir: &Path, md: &mut String, embedded: &mut Vec<String>) -> Result<()> {
    let mut files: Vec<String> = fs::read_dir(run_dir)
        .map_err(|e| Error::io(run_dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("trading_") && n.ends_with(".json"))
        .collect();
    if files.is_empty() {
        return Ok(());
    }
    files.sort();
    md.push_str("## Single-stock trading (PPO)\n\n");
    for file in files {
        let Some(v) = read_json(&run_dir.join(&file))? else {
            continue;
        };
        let days = v.get("days").cloned().unwrap_or(Value::Null);
        let _ = writeln!(
            md,
            "`{file}`: {} on {} states, test {} .. {}, best valid CW {} at update {}.\n",
            text(&v, "ticker"),
            text(&v, "features"),
            text(&days, "test_first_date"),
            text(&days, "test_last_date"),
            cell(num(&v, "best_valid_cw")),
            text(&v, "best_update"),
        );
        md.push_str("| policy | APY | CW | CR | ASR | MDD | AVO | trades |\n|---|---|---|---|---|---|---|---|\n");
        if let Some(ppo) = v.get("ppo") {
            metrics_row(md, "PPO", ppo, &text(ppo, "trades"));
        }
        if let Some(bh) = v.get("buy_and_hold") {
            metrics_row(md, "Buy&Hold", bh, "1");
        }
        md.push('\n');
        let png = format!("{}.png", file.trim_end_matches(".json"));
        image(
            run_dir,
            md,
            embedded,
            &png,
            &format!("wealth, {}", text(&v, "ticker")),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_logs_parse_nan_and_reject_ragged_rows() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.csv");
        fs::write(&p, "step,loss,grad_norm\n1,0.5,NaN\n2,0.4,1.2\n").unwrap();
        let log = CsvLog::read(&p).unwrap().unwrap();
        assert_eq!(log.column("loss").unwrap(), vec![0.5, 0.4]);
        assert!(log.column("grad_norm").unwrap()[0].is_nan());
        assert!(log.column("nope").is_none());
        fs::write(&p, "step,loss\n1,0.5\n2\n").unwrap();
        let err = CsvLog::read(&p).unwrap_err().to_string();
        assert!(err.contains("line 3: 1 fields, the header has 2"), "{err}");
        assert!(CsvLog::read(&dir.path().join("missing.csv"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn validation_table_marks_the_best_row_and_keeps_it_when_truncating() {
        let rows: Vec<Vec<f64>> = (0..20)
            .map(|i| vec![i as f64, if i == 3 { 0.9 } else { 0.1 }])
            .collect();
        let log = CsvLog {
            columns: vec!["step".into(), "rank_ic".into()],
            rows,
        };
        let mut md = String::new();
        validation_table(&log, &mut md);
        assert!(md.contains("| 3 | **0.9000** |"), "{md}");
        assert!(md.contains("| 19 | 0.1000 |"), "{md}");
        assert!(!md.contains("| 5 | 0.1000 |"), "{md}");
    }
}
