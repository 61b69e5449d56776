//! The paper report (`report.md` + PNGs) of a `storm paper` run, in the paper's table layouts, every value
//! mean ± range over seeds: Table 1 (model × RankIC, RankICIR on test), Table 2 (model × APY, CW, CR, ASR,
//! MDD, AVO of TopK-Drop, with equal weight and the index as benchmarks), Table 3 (per ticker: Buy&Hold,
//! the RL baselines on raw features, PPO on each model's factors, the signal rule on each model's
//! predictions). Ablations are rows of the same tables.

use std::fmt::Write;
use std::path::{Path, PathBuf};

use storm_shared::config::Split;
use storm_shared::error::Result;
use storm_shared::run::metrics::{EvalMetric, Financial, MetricKey, Scope};
use storm_shared::run::{PortfolioVariant, RunDir};
use storm_shared::trading::learner::Algorithm;
use storm_shared::trading::task::{FeatureSource, MAX_TRADE_DELAY};
use storm_worker::protocol::RUN_DIR;

use crate::aggregate::{Stat, Stats};
use crate::chart::{bars_with_ranges, wealth_lines, Band};
use crate::plan::Plan;
use crate::results::{cell_text, configs, counts_line, failed_section, pm, test_rank_ic};
use crate::run::{job_dir, SweepOutcome};
use crate::significance::{self, seed_interval};

pub const REPORT_MD: &str = "report.md";
pub const RANK_IC_PNG: &str = "rank_ic.png";
pub const WEALTH_PNG: &str = "wealth_test.png";

/// The financial columns of Tables 2 and 3, with their titles.
const FINANCIAL: [(Financial, &str); 6] = [
    (Financial::Apy, "APY ↑"),
    (Financial::Cw, "CW ↑"),
    (Financial::Cr, "CR ↑"),
    (Financial::Asr, "ASR ↑"),
    (Financial::Mdd, "MDD ↓"),
    (Financial::Avo, "AVO ↓"),
];

/// What the report says about how it was made.
pub struct PaperMeta {
    pub data: String,
    pub config: String,
    pub seeds: u64,
    pub trade_seeds: u64,
    pub tickers: Vec<String>,
    pub k: usize,
    pub drop: usize,
    pub index: String,
}

/// The first configuration that has `metric` (benchmarks are the same in every job).
fn any_config<'a>(
    stats: &'a Stats,
    models: &[(String, Vec<String>)],
    metric: &MetricKey,
) -> Option<&'a Stat> {
    models.iter().find_map(|(c, _)| stats.metric(c, metric))
}

/// A financial metric of a scope.
fn fin(scope: &Scope, f: Financial) -> MetricKey {
    MetricKey::financial(scope.clone(), f)
}

/// One row of Tables 2 and 3: `stat` gives each financial metric's statistics.
fn financial_row(name: &str, stat: impl Fn(Financial) -> Option<Stat>) -> String {
    let mut row = format!("| {} |", cell_text(name));
    for (f, _) in FINANCIAL {
        let _ = write!(row, " {} |", pm(stat(f).as_ref()));
    }
    row
}

/// A row of a scope that every job shares (a benchmark), when some configuration has it.
fn shared_row(
    md: &mut String,
    stats: &Stats,
    models: &[(String, Vec<String>)],
    scope: &Scope,
    label: &str,
) {
    if any_config(stats, models, &fin(scope, Financial::Apy)).is_some() {
        let row = financial_row(label, |f| {
            any_config(stats, models, &fin(scope, f)).cloned()
        });
        let _ = writeln!(md, "{row}");
    }
}

/// `mean ± range` of a t-statistic (two decimals), or `–`.
fn pm_t(stat: Option<&Stat>) -> String {
    match stat {
        Some(s) if s.mean.is_finite() => format!("{:.2} ± {:.2}", s.mean, s.range),
        _ => "–".into(),
    }
}

fn financial_header(first: &str) -> String {
    let mut h = format!("| {first} |");
    let mut rule = String::from("|---|");
    for (_, t) in FINANCIAL {
        let _ = write!(h, " {t} |");
        rule.push_str("---|");
    }
    format!("{h}\n{rule}")
}

fn markdown(plan: &Plan, out: &SweepOutcome, meta: &PaperMeta, charts: &[(&str, &str)]) -> String {
    let models = configs(plan);
    let stats = &out.stats;
    let name = |labels: &[String]| labels.first().cloned().unwrap_or_default();
    let mut md = format!("# STORM paper protocol — `{}`\n\n", plan.name);
    let _ = writeln!(
        md,
        "Data `{}`, config `{}`; {} seeds per model (trading: the first {}); {}. Every cell is mean ± range \
         over seeds, range = (max − min)/2 (the paper does not define it; we read it as the half-width); \
         std, min and max are in `results.csv`.\n",
        meta.data,
        meta.config,
        meta.seeds,
        meta.trade_seeds.min(meta.seeds),
        counts_line(&out.rows)
    );

    let _ = writeln!(md, "## Table 1: factor quality (test split)\n");
    let _ = writeln!(
        md,
        "| Model | RankIC ↑ | 95 % interval over seeds | t (HAC) | RankICIR ↑ | seeds |\n\
         |---|---|---|---|---|---|"
    );
    let [(rank_ic, _), (rank_icir, _)] = test_rank_ic();
    let rank_ic_t = MetricKey::Eval(Split::Test, EvalMetric::RankIcT);
    for (c, labels) in &models {
        let ic = stats.metric(c, &rank_ic);
        let interval = ic
            .and_then(seed_interval)
            .map_or("–".into(), |(lo, hi)| format!("[{lo:+.4}, {hi:+.4}]"));
        let _ = writeln!(
            md,
            "| {} | {} | {interval} | {} | {} | {} |",
            cell_text(&name(labels)),
            pm(ic),
            pm_t(stats.metric(c, &rank_ic_t)),
            pm(stats.metric(c, &rank_icir)),
            ic.map_or(0, |s| s.n)
        );
    }
    let _ = writeln!(
        md,
        "\nt (HAC): each seed's Newey–West t-statistic of its mean daily RankIC (|t| > 2 ≈ 5 %), mean ± range \
         over seeds. The interval is Student's t over the seeds' RankICs: it says how much the seed matters, \
         not whether the RankIC differs from zero (see Significance)."
    );

    let _ = writeln!(
        md,
        "\n## Table 2: portfolio management (TopK-Drop, k = {}, d = {}, test split)\n",
        meta.k, meta.drop
    );
    let _ = writeln!(md, "{}", financial_header("Model"));
    shared_row(
        &mut md,
        stats,
        &models,
        &Scope::Ew,
        "Equal weight (buy and hold)",
    );
    shared_row(
        &mut md,
        stats,
        &models,
        &Scope::Index,
        &format!("Index ({})", meta.index),
    );
    for (c, labels) in &models {
        let row = financial_row(&name(labels), |f| {
            stats.metric(c, &fin(&Scope::Pm, f)).cloned()
        });
        let _ = writeln!(md, "{row}");
    }
    delayed_table(&mut md, stats, &models);
    md.push_str(&significance::section(plan, out));
    trading_tables(&mut md, stats, &models, meta);
    if !charts.is_empty() {
        let _ = writeln!(md, "\n## Figures\n");
        for (file, alt) in charts {
            let _ = writeln!(md, "![{alt}]({file})\n");
        }
    }
    md.push_str(&failed_section(&out.rows));
    md
}

/// Table 2 again at execution delay 1 (`[backtest] delays` lists 1): each day's scores traded at the next close.
fn delayed_table(md: &mut String, stats: &Stats, models: &[(String, Vec<String>)]) {
    let delayed = Scope::PmDelayed(1);
    if !models
        .iter()
        .any(|(c, _)| stats.metric(c, &fin(&delayed, Financial::Cw)).is_some())
    {
        return;
    }
    let _ = writeln!(
        md,
        "\nThe same portfolios traded one day late (delay 1: day t's scores at day t+1's close; the paper \
         trades at day t's own close):\n"
    );
    let _ = writeln!(md, "{}", financial_header("Model"));
    for (c, labels) in models {
        let name = labels.first().cloned().unwrap_or_default();
        let row = financial_row(&name, |f| stats.metric(c, &fin(&delayed, f)).cloned());
        let _ = writeln!(md, "{row}");
    }
}

/// Table 3: per ticker, Buy&Hold, the RL baselines (PPO, DQN, SAC) on raw features, PPO on each model's
/// factors and the signal rule on each model's predictions (long when the predicted return is positive);
/// then the same rows traded later where the plan had `[trade] delays` beyond 0.
fn trading_tables(
    md: &mut String,
    stats: &Stats,
    models: &[(String, Vec<String>)],
    meta: &PaperMeta,
) {
    let bh = |t: &str, delay| Scope::BuyHold {
        ticker: t.into(),
        delay,
    };
    let traded: Vec<&String> = meta
        .tickers
        .iter()
        .filter(|t| any_config(stats, models, &fin(&bh(t, 0), Financial::Apy)).is_some())
        .collect();
    if traded.is_empty() {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Table 3: algorithmic trading (test split, first {} seeds)\n",
        meta.trade_seeds.min(meta.seeds)
    );
    for t in traded {
        let _ = writeln!(md, "### {t}\n\n{}", financial_header("Model"));
        let delays = (0..=MAX_TRADE_DELAY)
            .filter(|&d| any_config(stats, models, &fin(&bh(t, d), Financial::Apy)).is_some());
        for delay in delays {
            trading_rows(md, stats, models, t, delay);
        }
        md.push('\n');
    }
}

/// One ticker's Table 3 rows at one execution delay (named "… , delay d" beyond 0).
fn trading_rows(
    md: &mut String,
    stats: &Stats,
    models: &[(String, Vec<String>)],
    ticker: &str,
    delay: usize,
) {
    let late = match delay {
        0 => String::new(),
        d => format!(", delay {d}"),
    };
    let policy = |source, algorithm| Scope::Trade {
        ticker: ticker.into(),
        source,
        algorithm,
        delay,
    };
    let bh = Scope::BuyHold {
        ticker: ticker.into(),
        delay,
    };
    let bh_name = match delay {
        0 => "Buy&Hold".to_string(),
        d => format!("Buy&Hold (delay {d})"),
    };
    shared_row(md, stats, models, &bh, &bh_name);
    for algorithm in Algorithm::LEARNED {
        let name = format!("{} (raw features{late})", algorithm.label());
        shared_row(
            md,
            stats,
            models,
            &policy(FeatureSource::Raw, algorithm),
            &name,
        );
    }
    let factors = policy(FeatureSource::Factors, Algorithm::Ppo);
    let signal = policy(FeatureSource::Predictions, Algorithm::Signal);
    for (scope, rule, states) in [
        (&factors, "PPO", "factors"),
        (&signal, "Signal", "predictions"),
    ] {
        for (c, labels) in models {
            if stats.metric(c, &fin(scope, Financial::Apy)).is_some() {
                let name = labels.first().cloned().unwrap_or_default();
                let label = format!("{rule} ({name} {states}{late})");
                let row = financial_row(&label, |f| stats.metric(c, &fin(scope, f)).cloned());
                let _ = writeln!(md, "{row}");
            }
        }
    }
}

/// A named wealth series.
type Curve = (String, Vec<f64>);

/// Per-date mean of the strategy's wealth over a model's finished jobs, and the benchmarks of the first.
fn wealth_series(plan: &Plan, out: &SweepOutcome) -> Option<(Vec<String>, Vec<Curve>)> {
    let mut dates: Option<Vec<String>> = None;
    let mut series: Vec<Curve> = Vec::new();
    let mut benchmarks: Vec<Curve> = Vec::new();
    for (config, labels) in configs(plan) {
        let mut sum: Option<Vec<f64>> = None;
        let mut n = 0.0;
        for row in out
            .rows
            .iter()
            .filter(|r| r.config == config && r.state == "done")
        {
            let run = RunDir::new(job_dir(&out.dir, &row.id).join(RUN_DIR));
            let path = run.portfolio_daily_csv(Split::Test, PortfolioVariant::PLAIN);
            let Some(table) = read_daily(&path) else {
                continue;
            };
            if dates.is_none() {
                dates = Some(table.dates.clone());
            } else if dates.as_ref() != Some(&table.dates) {
                continue;
            }
            if benchmarks.is_empty() {
                benchmarks = table.benchmarks.clone();
            }
            let s = sum.get_or_insert_with(|| vec![0.0; table.wealth.len()]);
            s.iter_mut().zip(&table.wealth).for_each(|(a, b)| *a += b);
            n += 1.0;
        }
        if let Some(s) = sum {
            let name = labels.first().cloned().unwrap_or(config);
            series.push((name, s.iter().map(|v| v / n).collect()));
        }
    }
    series.extend(benchmarks);
    Some((dates?, series))
}

pub(crate) struct Daily {
    pub dates: Vec<String>,
    pub wealth: Vec<f64>,
    pub benchmarks: Vec<Curve>,
}

/// The leading columns of `portfolio_test_daily.csv`: date, wealth, equal_weight_wealth[, index_wealth].
pub(crate) fn read_daily(path: &Path) -> Option<Daily> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split(',').collect();
    let col = |name: &str| header.iter().position(|h| *h == name);
    let (w, ew, ix) = (
        col("wealth")?,
        col("equal_weight_wealth")?,
        col("index_wealth"),
    );
    let mut d = Daily {
        dates: vec![],
        wealth: vec![],
        benchmarks: vec![("Equal weight".into(), vec![])],
    };
    if ix.is_some() {
        d.benchmarks.push(("Index".into(), vec![]));
    }
    for line in lines {
        let f: Vec<&str> = line.split(',').collect();
        d.dates.push(f.first()?.to_string());
        d.wealth.push(f.get(w)?.parse().ok()?);
        d.benchmarks[0].1.push(f.get(ew)?.parse().ok()?);
        if let Some(ix) = ix {
            d.benchmarks[1].1.push(f.get(ix)?.parse().ok()?);
        }
    }
    Some(d)
}

/// Writes `report.md`, `rank_ic.png` and `wealth_test.png` into the sweep directory.
pub fn write_paper_report(plan: &Plan, out: &SweepOutcome, meta: &PaperMeta) -> Result<PathBuf> {
    let mut charts = Vec::new();
    let models = configs(plan);
    let names: Vec<String> = models
        .iter()
        .map(|(c, l)| l.first().cloned().unwrap_or_else(|| c.clone()))
        .collect();
    let band = |c: &str, m: &MetricKey| {
        out.stats.metric(c, m).map(|s| Band {
            mean: s.mean,
            min: s.min,
            max: s.max,
        })
    };
    let panels: Vec<(String, Vec<Option<Band>>)> = test_rank_ic()
        .iter()
        .map(|(m, t)| {
            (
                t.to_string(),
                models.iter().map(|(c, _)| band(c, m)).collect(),
            )
        })
        .collect();
    let png = out.dir.join(RANK_IC_PNG);
    if panels.iter().any(|(_, b)| b.iter().any(Option::is_some)) {
        match bars_with_ranges(
            &png,
            &format!("{}: factor quality (mean, min–max over seeds)", plan.name),
            &names,
            &panels,
        ) {
            Ok(()) => charts.push((RANK_IC_PNG, "RankIC and RankICIR per model")),
            Err(e) => tracing::warn!("{} not written: {e}", png.display()),
        }
    }
    if let Some((dates, series)) = wealth_series(plan, out) {
        let png = out.dir.join(WEALTH_PNG);
        let title = format!("{}: TopK-Drop wealth on test, mean over seeds", plan.name);
        match wealth_lines(&png, &title, &dates, &series) {
            Ok(()) => charts.push((WEALTH_PNG, "mean TopK-Drop wealth per model vs benchmarks")),
            Err(e) => tracing::warn!("{} not written: {e}", png.display()),
        }
    }
    let path = out.dir.join(REPORT_MD);
    storm_shared::atomic::write_file(&path, markdown(plan, out, meta, &charts).as_bytes())?;
    Ok(path)
}
