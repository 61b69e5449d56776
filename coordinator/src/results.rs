//! A sweep's tables and charts: `results.csv` (every metric of every configuration: n, mean, std, min,
//! max, range), `jobs.csv` (every job's state, attempts, time, error), `results.md` (headline metrics as
//! mean ± range, failed jobs with their errors) and, when `model.codebook_size` is a grid key,
//! `codebook_size.png` (the paper's Figure 3b: test RankIC and RankICIR vs codebook size).

use std::fmt::Write;
use std::path::{Path, PathBuf};

use storm_shared::config::Split;
use storm_shared::error::Result;
use storm_shared::run::metrics::{EvalMetric, Financial, MetricKey, Scope};

use crate::aggregate::{jobs_frame, results_frame, write_csv, JobRow, Stat, Stats};
use crate::chart::{lines_with_ranges, Band, Line};
use crate::plan::{short_key, Plan};

pub const RESULTS_CSV: &str = "results.csv";
pub const RESULTS_MD: &str = "results.md";
pub const JOBS_CSV: &str = "jobs.csv";
pub const CODEBOOK_PNG: &str = "codebook_size.png";
pub const CODEBOOK_KEY: &str = "model.codebook_size";

/// Metrics shown in Markdown tables, with their column titles.
pub fn headline() -> Vec<(MetricKey, &'static str)> {
    let mut out = vec![
        (
            MetricKey::Eval(Split::Test, EvalMetric::RankIc),
            "test RankIC",
        ),
        (
            MetricKey::Eval(Split::Test, EvalMetric::RankIcir),
            "test RankICIR",
        ),
        (
            MetricKey::Eval(Split::Valid, EvalMetric::RankIc),
            "valid RankIC",
        ),
        (
            MetricKey::Eval(Split::Valid, EvalMetric::RankIcir),
            "valid RankICIR",
        ),
    ];
    let portfolio = [
        (Financial::Apy, "APY"),
        (Financial::Cw, "CW"),
        (Financial::Cr, "CR"),
        (Financial::Asr, "ASR"),
        (Financial::Mdd, "MDD"),
        (Financial::Avo, "AVO"),
    ];
    out.extend(portfolio.map(|(f, title)| (MetricKey::financial(Scope::Pm, f), title)));
    out
}

/// The test RankIC and RankICIR, with their titles (the codebook and paper charts).
pub fn test_rank_ic() -> [(MetricKey, &'static str); 2] {
    [
        (
            MetricKey::Eval(Split::Test, EvalMetric::RankIc),
            "test RankIC",
        ),
        (
            MetricKey::Eval(Split::Test, EvalMetric::RankIcir),
            "test RankICIR",
        ),
    ]
}

/// `mean ± range`, or `–` without a value.
pub fn pm(stat: Option<&Stat>) -> String {
    match stat {
        Some(s) if s.mean.is_finite() => format!("{:.4} ± {:.4}", s.mean, s.range),
        _ => "–".into(),
    }
}

/// `mean ± range (σ std)`.
fn pm_std(stat: Option<&Stat>) -> String {
    match stat {
        Some(s) if s.mean.is_finite() && s.std.is_finite() => {
            format!("{} (σ {:.4})", pm(Some(s)), s.std)
        }
        other => pm(other),
    }
}

/// Text safe inside a Markdown table cell (one line, no pipes).
pub fn cell_text(s: &str) -> String {
    s.replace('|', "\\|")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ⏎ ")
}

/// (configuration label, plan-key values) in plan order.
pub fn configs(plan: &Plan) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for j in &plan.jobs {
        let label = j.config_label(&plan.keys);
        if !out.iter().any(|(l, _)| *l == label) {
            out.push((label, j.labels.clone()));
        }
    }
    out
}

/// The failed-jobs section (empty string when none failed).
pub fn failed_section(rows: &[JobRow]) -> String {
    let failed: Vec<&JobRow> = rows.iter().filter(|r| r.state == "failed").collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut md = format!(
        "\n## Failed jobs ({})\n\n| job | attempts | error |\n|---|---|---|\n",
        failed.len()
    );
    for r in failed {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            r.id,
            r.attempts,
            cell_text(r.error.as_deref().unwrap_or(""))
        );
    }
    md
}

/// Counts line: "12 jobs: 11 done, 1 failed, 0 unfinished".
pub fn counts_line(rows: &[JobRow]) -> String {
    let n = |s: &str| rows.iter().filter(|r| r.state == s).count();
    format!(
        "{} jobs: {} done, {} failed, {} unfinished",
        rows.len(),
        n("done"),
        n("failed"),
        n("pending")
    )
}

fn markdown(plan: &Plan, rows: &[JobRow], stats: &Stats) -> String {
    let configs = configs(plan);
    let seeds: std::collections::BTreeSet<u64> = plan.jobs.iter().map(|j| j.seed).collect();
    let mut md = format!("# Sweep `{}`\n\n", plan.name);
    let _ = writeln!(
        md,
        "{} ({} configurations × {} seeds). Cells are mean ± range over seeds, range = (max − min)/2, \
         with the sample std σ; n = seeds with a result. Every metric: `{RESULTS_CSV}`; every job: \
         `{JOBS_CSV}`.\n",
        counts_line(rows),
        configs.len(),
        seeds.len()
    );
    let shown: Vec<(MetricKey, &str)> = headline()
        .into_iter()
        .filter(|(m, _)| configs.iter().any(|(c, _)| stats.metric(c, m).is_some()))
        .collect();
    let mut header = String::from("|");
    let mut rule = String::from("|");
    for k in &plan.keys {
        let _ = write!(header, " {} |", short_key(k, &plan.keys));
        rule.push_str("---|");
    }
    if plan.keys.is_empty() {
        header.push_str(" config |");
        rule.push_str("---|");
    }
    header.push_str(" n |");
    rule.push_str("---|");
    for (_, title) in &shown {
        let _ = write!(header, " {title} |");
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    for (config, labels) in &configs {
        let mut line = String::from("|");
        for l in labels {
            let _ = write!(line, " {} |", cell_text(l));
        }
        if plan.keys.is_empty() {
            line.push_str(" base |");
        }
        let n = shown
            .iter()
            .filter_map(|(m, _)| stats.metric(config, m).map(|s| s.n))
            .max()
            .unwrap_or(0);
        let _ = write!(line, " {n} |");
        for (m, _) in &shown {
            let _ = write!(line, " {} |", pm_std(stats.metric(config, m)));
        }
        let _ = writeln!(md, "{line}");
    }
    md.push_str(&failed_section(rows));
    let unfinished: Vec<&str> = rows
        .iter()
        .filter(|r| r.state == "pending")
        .map(|r| r.id.as_str())
        .collect();
    if !unfinished.is_empty() {
        let _ = writeln!(
            md,
            "\n## Unfinished jobs ({})\n\nInterrupted; `storm sweep --resume` runs them: {}",
            unfinished.len(),
            unfinished.join(", ")
        );
    }
    if plan.keys.iter().any(|k| k == CODEBOOK_KEY) {
        let _ = writeln!(
            md,
            "\n![test RankIC and RankICIR vs codebook size]({CODEBOOK_PNG})"
        );
    }
    md
}

fn band(s: Option<&Stat>) -> Option<Band> {
    s.filter(|s| s.mean.is_finite()).map(|s| Band {
        mean: s.mean,
        min: s.min,
        max: s.max,
    })
}

/// Figure 3b: test RankIC and RankICIR against codebook size, one line per combination of the other keys.
fn codebook_chart(plan: &Plan, stats: &Stats, path: &Path) -> Result<()> {
    let k = plan
        .keys
        .iter()
        .position(|key| key == CODEBOOK_KEY)
        .unwrap_or(0);
    let configs = configs(plan);
    let mut sizes: Vec<String> = configs.iter().map(|(_, l)| l[k].clone()).collect();
    sizes.sort_by_key(|s| s.parse::<u64>().unwrap_or(u64::MAX));
    sizes.dedup();
    let others = |labels: &[String]| -> String {
        let rest: Vec<String> = plan
            .keys
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, (key, v))| format!("{}={v}", short_key(key, &plan.keys)))
            .collect();
        if rest.is_empty() {
            "mean over seeds".into()
        } else {
            rest.join(", ")
        }
    };
    let mut panels = Vec::new();
    for (metric, title) in test_rank_ic() {
        let mut lines: Vec<Line> = Vec::new();
        for (config, labels) in &configs {
            let name = others(labels);
            let x = sizes.iter().position(|s| *s == labels[k]).unwrap_or(0);
            let i = match lines.iter().position(|(n, _)| *n == name) {
                Some(i) => i,
                None => {
                    lines.push((name, vec![None; sizes.len()]));
                    lines.len() - 1
                }
            };
            lines[i].1[x] = band(stats.metric(config, &metric));
        }
        panels.push((title.to_string(), lines));
    }
    lines_with_ranges(
        path,
        &format!(
            "{}: metric vs codebook size (mean, min–max over seeds)",
            plan.name
        ),
        "codebook size",
        &sizes,
        &panels,
    )
}

/// Writes results.csv, jobs.csv, results.md and (if the grid has codebook sizes) codebook_size.png.
pub fn write_sweep_results(
    plan: &Plan,
    rows: &[JobRow],
    stats: &Stats,
    dir: &Path,
) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    let mut results = results_frame(&plan.keys, &configs(plan), stats)?;
    write_csv(&mut results, &dir.join(RESULTS_CSV))?;
    files.push(dir.join(RESULTS_CSV));
    let mut jobs = jobs_frame(&plan.keys, rows)?;
    write_csv(&mut jobs, &dir.join(JOBS_CSV))?;
    files.push(dir.join(JOBS_CSV));
    storm_shared::atomic::write_file(
        &dir.join(RESULTS_MD),
        markdown(plan, rows, stats).as_bytes(),
    )?;
    files.push(dir.join(RESULTS_MD));
    if plan.keys.iter().any(|k| k == CODEBOOK_KEY) {
        let png = dir.join(CODEBOOK_PNG);
        match codebook_chart(plan, stats, &png) {
            Ok(()) => files.push(png),
            Err(e) => tracing::warn!("{} not written: {e}", png.display()),
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::aggregate;
    use crate::plan::PlannedJob;
    use storm_shared::config::ExperimentConfig;
    use storm_worker::Step;

    #[test]
    fn markdown_lists_configurations_and_failures() {
        let keys = vec![CODEBOOK_KEY.to_string()];
        let mut jobs = Vec::new();
        let mut rows = Vec::new();
        for (k, size) in ["8", "16"].iter().enumerate() {
            for seed in 0..2u64 {
                let labels = vec![size.to_string()];
                let id = crate::plan::job_id(&keys, &labels, seed);
                let job = PlannedJob {
                    id: id.clone(),
                    labels: labels.clone(),
                    seed,
                    config: ExperimentConfig::from_toml_str("", "t", &[]).unwrap(),
                    steps: vec![Step::Pretrain],
                };
                let failed = k == 1 && seed == 1;
                rows.push(JobRow {
                    id,
                    config: job.config_label(&keys),
                    labels,
                    seed,
                    state: if failed { "failed" } else { "done" }.into(),
                    attempts: if failed { 3 } else { 1 },
                    seconds: Some(1.0),
                    error: failed
                        .then(|| "job process exited with status 1:\nError: bad | thing".into()),
                    metrics: [("test_rank_ic".to_string(), Some(0.01 * (seed + 1) as f64))]
                        .into_iter()
                        .collect(),
                });
                jobs.push(job);
            }
        }
        let plan = Plan {
            name: "cb".into(),
            keys,
            max_retries: 2,
            max_attempt_seconds: None,
            max_steps: None,
            jobs,
        };
        let stats = aggregate(&rows).unwrap();
        let md = markdown(&plan, &rows, &stats);
        assert!(md.contains("| codebook_size | n | test RankIC |"), "{md}");
        assert!(
            md.contains("| 8 | 2 | 0.0150 ± 0.0050 (σ 0.0071) |"),
            "{md}"
        );
        assert!(md.contains("| 16 | 1 | 0.0100 ± 0.0000 |"), "{md}");
        assert!(
            md.contains("4 jobs: 3 done, 1 failed, 0 unfinished"),
            "{md}"
        );
        assert!(
            md.contains("| codebook_size=16_seed=1 | 3 | job process exited with status 1: ⏎ Error: bad \\| thing |"),
            "{md}"
        );
        let dir = tempfile::tempdir().unwrap();
        let files = write_sweep_results(&plan, &rows, &stats, dir.path()).unwrap();
        assert!(files.iter().any(|f| f.ends_with(RESULTS_CSV)));
    }
}
