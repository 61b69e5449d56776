//! What trading costs do to a backtest: TopK-Drop re-run at 0, 1, 5 and 10 basis points per side beside equal
//! weight at the same rate, and the break-even cost, the per-side rate at which the strategy's final wealth
//! falls to equal weight's.

use serde::{Deserialize, Serialize};

use super::benchmarks::equal_weight;
use super::topk_drop::{run_topk_drop, TopkDropParams};
use super::Market;
use crate::error::Result;

/// The rates of the sweep, in basis points per side.
pub const SWEEP_BPS: [f64; 4] = [0.0, 1.0, 5.0, 10.0];
/// The break-even search stops at 1 % per side.
pub const MAX_BREAK_EVEN: f64 = 0.01;
/// Bisection steps: 2^-30 of the 1 % interval is far below a hundredth of a basis point.
const BISECTION_STEPS: usize = 30;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostPoint {
    pub cost_bps: f64,
    pub cw: f64,
    pub apy: f64,
    pub asr: f64,
    pub equal_weight_cw: f64,
}

/// Where the strategy's edge over equal weight (in final wealth) is used up by costs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BreakEven {
    /// Final wealth equals equal weight's at this rate per side.
    At { cost: f64 },
    /// No edge to lose: the strategy ends at or below equal weight even without costs.
    NoEdge,
    /// Still ahead at [`MAX_BREAK_EVEN`].
    Beyond { cost: f64 },
}

impl BreakEven {
    /// One line for the command's output.
    pub fn describe(&self) -> String {
        match self {
            BreakEven::At { cost } => format!(
                "{:.2} bp per side (final wealth falls to equal weight's)",
                cost * 1e4
            ),
            BreakEven::NoEdge => "none: no edge over equal weight even at zero cost".into(),
            BreakEven::Beyond { cost } => format!("above {:.0} bp per side", cost * 1e4),
        }
    }
}

/// Final wealth of the strategy minus equal weight's, both paying `cost` per side.
fn edge(market: &Market, p: &TopkDropParams, cost: f64) -> Result<f64> {
    let at = TopkDropParams {
        cost_rate: cost,
        ..*p
    };
    let strategy = run_topk_drop(market, &at)?.series;
    let ew = equal_weight(market, cost, p.cash)?;
    Ok(last(&strategy.wealth) - last(&ew.wealth))
}

fn last(wealth: &[f64]) -> f64 {
    wealth.last().copied().unwrap_or(f64::NAN)
}

/// The strategy and equal weight at each rate of [`SWEEP_BPS`] (`market` as traded, delay applied).
pub fn cost_sweep(market: &Market, p: &TopkDropParams, risk_free: f64) -> Result<Vec<CostPoint>> {
    SWEEP_BPS
        .iter()
        .map(|&bps| {
            let at = TopkDropParams {
                cost_rate: bps * 1e-4,
                ..*p
            };
            let m = run_topk_drop(market, &at)?.series.metrics(risk_free)?;
            let ew = equal_weight(market, at.cost_rate, p.cash)?;
            Ok(CostPoint {
                cost_bps: bps,
                cw: m.cw,
                apy: m.apy,
                asr: m.asr,
                equal_weight_cw: last(&ew.wealth) / p.cash,
            })
        })
        .collect()
}

/// The per-side rate at which the strategy's edge over equal weight is used up, by bisection (the edge falls
/// as the rate rises: the strategy trades every day, equal weight once).
pub fn break_even(market: &Market, p: &TopkDropParams) -> Result<BreakEven> {
    if edge(market, p, 0.0)? <= 0.0 {
        return Ok(BreakEven::NoEdge);
    }
    if edge(market, p, MAX_BREAK_EVEN)? > 0.0 {
        return Ok(BreakEven::Beyond {
            cost: MAX_BREAK_EVEN,
        });
    }
    let (mut lo, mut hi) = (0.0, MAX_BREAK_EVEN);
    for _ in 0..BISECTION_STEPS {
        let mid = 0.5 * (lo + hi);
        if edge(market, p, mid)? > 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(BreakEven::At {
        cost: 0.5 * (lo + hi),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    /// Two stocks over `days` dates; the score foretells the label, so TopK-Drop with k = 1 holds the winner.
    fn foresight(days: usize, swing: f64) -> Market {
        let start = NaiveDate::from_ymd_opt(2024, 1, 1).unwrap();
        let mut rows = Vec::new();
        for t in 0..days {
            let date = start + chrono::Days::new(t as u64);
            let up = if t % 2 == 0 { swing } else { -swing };
            for (name, r) in [("A", up), ("B", -up)] {
                let label = (t + 1 < days).then_some(r);
                rows.push((date, name.to_string(), label, label));
            }
        }
        Market::from_rows(rows).unwrap()
    }

    fn params() -> TopkDropParams {
        TopkDropParams {
            k: 1,
            drop: 1,
            cost_rate: 1e-4,
            cash: 1000.0,
        }
    }

    #[test]
    fn the_break_even_rate_is_where_the_edge_is_used_up() {
        // The strategy earns +0.2 % on each of the 39 return days and switches names on 38 of them, each
        // switch keeping (1 − c)/(1 + c) of its wealth; equal weight holds half in each name, A ending at
        // 1.002^20 · 0.998^19 and B at 1.002^19 · 0.998^20. Both pay the first day's purchase alike.
        // Break-even: 1.002^39 · q^38 = the mean of the two, with q = (1 − c)/(1 + c).
        let market = foresight(40, 0.002);
        let name = |first: f64| -> f64 {
            (0..39)
                .map(|t| if t % 2 == 0 { first } else { 2.0 - first })
                .product()
        };
        let held = 0.5 * (name(1.002) + name(0.998));
        let q = (held.ln() - 39.0 * 1.002f64.ln()) / 38.0;
        let expected = (1.0 - q.exp()) / (1.0 + q.exp());
        let BreakEven::At { cost } = break_even(&market, &params()).unwrap() else {
            panic!("expected a break-even rate")
        };
        assert!((cost - expected).abs() < 1e-8, "{cost} vs {expected}");
        assert!(edge(&market, &params(), cost * 0.99).unwrap() > 0.0);
        assert!(edge(&market, &params(), cost * 1.01).unwrap() < 0.0);
        let sweep = cost_sweep(&market, &params(), 0.0).unwrap();
        assert_eq!(
            sweep.iter().map(|c| c.cost_bps).collect::<Vec<_>>(),
            SWEEP_BPS
        );
        assert!(sweep.windows(2).all(|w| w[1].cw < w[0].cw), "{sweep:?}");
        assert!((sweep[0].equal_weight_cw - held).abs() < 1e-12);
    }

    #[test]
    fn no_edge_and_an_edge_beyond_the_search() {
        let market = foresight(40, 0.002);
        // Ranking by the negated score buys the loser every day.
        let inverted = Market {
            scores: market.scores.iter().map(|s| s.map(|v| -v)).collect(),
            ..market
        };
        assert_eq!(break_even(&inverted, &params()).unwrap(), BreakEven::NoEdge);
        let huge = foresight(40, 0.2);
        assert_eq!(
            break_even(&huge, &params()).unwrap(),
            BreakEven::Beyond {
                cost: MAX_BREAK_EVEN
            }
        );
    }
}
