//! Significance for the paper report (issue 14), so that a reader can tell an edge from noise:
//! - a 95 % interval of each model's mean test RankIC over seeds (Student t with n − 1 degrees of freedom);
//! - paired comparisons on the test days: a model's daily RankIC (mean over its seeds) minus a comparator's,
//!   with a Newey–West t-statistic, against the best baseline and every reference factor;
//! - each model's TopK-Drop daily return in excess of equal weight (mean over seeds), with its HAC t.
//!
//! Daily series are read from the jobs' run directories (`predictions_test.parquet`,
//! `portfolio_test_daily.csv`); a job whose files are missing is left out of its model's mean.

use std::collections::BTreeMap;
use std::fmt::Write;

use storm_shared::config::{ModelKind, Split};
use storm_shared::portfolio::Market;
use storm_shared::run::{PortfolioVariant, RunDir};
use storm_shared::stats::hac::{hac_mean_test, MeanTest};
use storm_shared::stats::rank_ic::daily_rank_ic;
use storm_worker::protocol::RUN_DIR;

use crate::aggregate::Stat;
use crate::plan::Plan;
use crate::report::read_daily;
use crate::results::{cell_text, configs};
use crate::run::{job_dir, SweepOutcome};

/// |t| above which a difference is called significant at 5 % (two-sided, normal approximation).
pub const T_CRITICAL: f64 = 1.96;

/// A daily series keyed by date (ISO text sorts by date).
pub type Daily = BTreeMap<String, f64>;

/// 97.5 % quantile of Student's t with `df` degrees of freedom (table to 30, then 1.96 + 2.4 / df, which is
/// within 0.002 of the exact value).
pub fn t_quantile_975(df: u32) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        1..=30 => TABLE[df as usize - 1],
        _ => 1.96 + 2.4 / df as f64,
    }
}

/// The 95 % interval of the mean over seeds, `[lo, hi]`; None with fewer than 2 seeds.
pub fn seed_interval(stat: &Stat) -> Option<(f64, f64)> {
    if stat.n < 2 || !stat.std.is_finite() {
        return None;
    }
    let half = t_quantile_975(stat.n - 1) * stat.std / (stat.n as f64).sqrt();
    Some((stat.mean - half, stat.mean + half))
}

/// The mean over series of each date's value (dates missing from a series average over the others).
pub fn mean_series(series: &[Daily]) -> Daily {
    let mut sums: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for s in series {
        for (date, v) in s.iter().filter(|(_, v)| v.is_finite()) {
            let e = sums.entry(date.clone()).or_default();
            e.0 += v;
            e.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(d, (sum, n))| (d, sum / n as f64))
        .collect()
}

/// `a − b` on the dates both have, with its HAC test.
pub fn paired_difference(a: &Daily, b: &Daily) -> MeanTest {
    let diff: Vec<f64> = a
        .iter()
        .filter_map(|(d, x)| b.get(d).map(|y| x - y))
        .collect();
    hac_mean_test(&diff, None)
}

/// Each test day's RankIC of one run's predictions.
fn run_rank_ics(run: &RunDir) -> Option<Daily> {
    let market = Market::load_predictions(&run.predictions(Split::Test), 0.0).ok()?;
    let n = market.n_tickers();
    let nan = |v: Option<f64>| v.unwrap_or(f64::NAN);
    Some(
        market
            .dates
            .iter()
            .enumerate()
            .filter_map(|(d, date)| {
                let scores: Vec<f64> = (0..n).map(|j| nan(market.score(d, j))).collect();
                let labels: Vec<f64> = (0..n).map(|j| nan(market.label(d, j))).collect();
                Some((date.to_string(), daily_rank_ic(&scores, &labels)?))
            })
            .collect(),
    )
}

/// Each test day's TopK-Drop return minus equal weight's, from one run's daily backtest table.
fn run_excess_returns(run: &RunDir) -> Option<Daily> {
    let table = read_daily(&run.portfolio_daily_csv(Split::Test, PortfolioVariant::PLAIN))?;
    let ew = &table.benchmarks.first()?.1;
    let ret = |w: &[f64], t: usize| w[t] / w[t - 1] - 1.0;
    Some(
        (1..table.dates.len())
            .map(|t| (table.dates[t].clone(), ret(&table.wealth, t) - ret(ew, t)))
            .collect(),
    )
}

/// One row of the paper's tables with its seed-mean daily series.
struct ModelSeries {
    name: String,
    kind: ModelKind,
    rank_ic: Daily,
    excess: Daily,
}

fn model_series(plan: &Plan, out: &SweepOutcome) -> Vec<ModelSeries> {
    configs(plan)
        .into_iter()
        .filter_map(|(config, labels)| {
            let kind = plan
                .jobs
                .iter()
                .find(|j| j.config_label(&plan.keys) == config)?
                .config
                .model
                .kind;
            let runs: Vec<RunDir> = out
                .rows
                .iter()
                .filter(|r| r.config == config && r.state == "done")
                .map(|r| RunDir::new(job_dir(&out.dir, &r.id).join(RUN_DIR)))
                .collect();
            let rank_ic: Vec<Daily> = runs.iter().filter_map(run_rank_ics).collect();
            let excess: Vec<Daily> = runs.iter().filter_map(run_excess_returns).collect();
            Some(ModelSeries {
                name: labels.first().cloned().unwrap_or(config),
                kind,
                rank_ic: mean_series(&rank_ic),
                excess: mean_series(&excess),
            })
        })
        .collect()
}

fn mean_of(d: &Daily) -> f64 {
    d.values().sum::<f64>() / d.len() as f64
}

fn cell(t: &MeanTest) -> String {
    scaled_cell(t, 1.0, 4)
}

/// `mean · scale (t …)`, starred when significant.
fn scaled_cell(t: &MeanTest, scale: f64, decimals: usize) -> String {
    if !t.mean.is_finite() {
        return "–".into();
    }
    let star = if t.t_stat.abs() > T_CRITICAL {
        " *"
    } else {
        ""
    };
    format!("{:+.*} (t {:.2}){star}", decimals, t.mean * scale, t.t_stat)
}

/// The "Significance" section of the paper report; empty when no model has test predictions.
pub fn section(plan: &Plan, out: &SweepOutcome) -> String {
    let models: Vec<ModelSeries> = model_series(plan, out)
        .into_iter()
        .filter(|m| !m.rank_ic.is_empty())
        .collect();
    if models.is_empty() {
        return String::new();
    }
    let references: Vec<&ModelSeries> = models
        .iter()
        .filter(|m| m.kind == ModelKind::Reference)
        .collect();
    let best_baseline = models
        .iter()
        .filter(|m| !matches!(m.kind, ModelKind::Storm | ModelKind::Reference))
        .max_by(|a, b| mean_of(&a.rank_ic).total_cmp(&mean_of(&b.rank_ic)));
    let mut comparators: Vec<(String, &ModelSeries)> = Vec::new();
    if let Some(b) = best_baseline {
        comparators.push((format!("{} (best baseline)", b.name), b));
    }
    comparators.extend(references.iter().map(|r| (r.name.clone(), *r)));

    let mut md = String::from("\n## Significance (test split)\n\n");
    let _ = writeln!(
        md,
        "Daily series are the mean over a model's seeds of its daily values. t: Newey–West (HAC) \
         t-statistic of the series' mean; * marks |t| > {T_CRITICAL} (5 %, two-sided).\n"
    );
    let _ = writeln!(
        md,
        "| Model | daily RankIC | TopK-Drop daily return − equal weight (bp) |\n|---|---|---|"
    );
    for m in &models {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            cell_text(&m.name),
            cell(&hac_mean_test(
                &m.rank_ic.values().copied().collect::<Vec<_>>(),
                None
            )),
            scaled_cell(
                &hac_mean_test(&m.excess.values().copied().collect::<Vec<_>>(), None),
                1e4,
                2
            ),
        );
    }
    if comparators.is_empty() {
        return md;
    }
    let _ = writeln!(
        md,
        "\nPaired differences of daily RankIC (row − column) on the days both have:\n"
    );
    let mut header = String::from("| Model |");
    let mut rule = String::from("|---|");
    for (title, _) in &comparators {
        let _ = write!(header, " − {} |", cell_text(title));
        rule.push_str("---|");
    }
    let _ = writeln!(md, "{header}\n{rule}");
    let mut significant = Vec::new();
    for m in models.iter().filter(|m| m.kind != ModelKind::Reference) {
        let mut row = format!("| {} |", cell_text(&m.name));
        for (_, c) in &comparators {
            if std::ptr::eq(m, *c) {
                row.push_str(" – |");
                continue;
            }
            let t = paired_difference(&m.rank_ic, &c.rank_ic);
            if t.t_stat.abs() > T_CRITICAL {
                significant.push(format!(
                    "{} {} {} ({:+.4}, t {:.2})",
                    m.name,
                    if t.mean > 0.0 { "beats" } else { "trails" },
                    c.name,
                    t.mean,
                    t.t_stat
                ));
            }
            let _ = write!(row, " {} |", cell(&t));
        }
        let _ = writeln!(md, "{row}");
    }
    let _ = writeln!(
        md,
        "\n{}",
        if significant.is_empty() {
            "No paired difference is significant at 5 %: on these test days no model's RankIC is \
             distinguishable from the best baseline's or a reference factor's."
                .to_string()
        } else {
            format!("Significant at 5 %: {}.", significant.join("; "))
        }
    );
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daily(values: &[f64]) -> Daily {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("2020-01-{:02}", i + 1), *v))
            .collect()
    }

    #[test]
    fn student_quantiles_and_seed_intervals() {
        assert_eq!(t_quantile_975(1), 12.706);
        assert_eq!(t_quantile_975(9), 2.262);
        assert!((t_quantile_975(60) - 2.000).abs() < 0.002);
        assert!((t_quantile_975(120) - 1.980).abs() < 0.002);
        // 3 seeds 0.01, 0.02, 0.03: mean 0.02, std 0.01, half-width 4.303 · 0.01 / √3
        let stat = Stat {
            config: "c".into(),
            metric: "m".into(),
            n: 3,
            mean: 0.02,
            std: 0.01,
            min: 0.01,
            max: 0.03,
            range: 0.01,
        };
        let (lo, hi) = seed_interval(&stat).unwrap();
        let half = 4.303 * 0.01 / 3f64.sqrt();
        assert!((lo - (0.02 - half)).abs() < 1e-12 && (hi - (0.02 + half)).abs() < 1e-12);
        assert!(seed_interval(&Stat { n: 1, ..stat }).is_none());
    }

    #[test]
    fn seed_means_and_paired_differences_align_dates() {
        let a = daily(&[0.1, 0.3]);
        let mut b = daily(&[0.3, 0.1, 0.5]);
        let m = mean_series(&[a.clone(), b.clone()]);
        assert_eq!(m.values().copied().collect::<Vec<_>>(), vec![0.2, 0.2, 0.5]);
        b.remove("2020-01-03");
        let t = paired_difference(&a, &b);
        assert_eq!(t.n, 2);
        assert!(t.mean.abs() < 1e-12);
    }

    /// A planted effect: a model whose daily RankIC is a reference's plus 0.02, with AR(1) noise on both,
    /// is found significantly better; the same model against itself plus pure noise is not.
    #[test]
    fn a_planted_edge_is_significant_and_noise_is_not() {
        let mut state = 12345u64;
        let mut noise = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        };
        let (mut r, mut e) = (0.0, 0.0);
        let (mut reference, mut model, mut twin) = (vec![], vec![], vec![]);
        for _ in 0..700 {
            r = 0.5 * r + 0.2 * noise();
            e = 0.3 * e + 0.1 * noise();
            reference.push(r);
            model.push(r + 0.02 + e);
            twin.push(r + 0.1 * noise());
        }
        let edge = paired_difference(&daily_many(&model), &daily_many(&reference));
        assert!(edge.t_stat > 3.0, "{edge:?}");
        assert!((edge.mean - 0.02).abs() < 0.01, "{edge:?}");
        let none = paired_difference(&daily_many(&twin), &daily_many(&reference));
        assert!(none.t_stat.abs() < T_CRITICAL, "{none:?}");
    }

    fn daily_many(values: &[f64]) -> Daily {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("day-{i:05}"), *v))
            .collect()
    }
}
