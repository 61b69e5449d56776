//! Hand-computed backtests: a 4-stock, 6-date TopK-Drop case worked out line by line, the equal-weight and
//! index benchmarks on the same market, and the daily CSV.

use chrono::NaiveDate;

use super::benchmarks::{equal_weight, index_wealth, IndexPrices};
use super::report::{daily_csv, simulate, BacktestParams};
use super::topk_drop::{rank_day, run_topk_drop, TopkDropParams};
use super::Market;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * b.abs().max(1.0)
}

macro_rules! assert_close {
    ($a:expr, $b:expr) => {
        assert!(close($a, $b), "{} = {} ≠ {}", stringify!($a), $a, $b)
    };
}

const DATES: [&str; 6] = [
    "2024-01-02",
    "2024-01-03",
    "2024-01-04",
    "2024-01-05",
    "2024-01-08",
    "2024-01-09",
];

fn date(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// Four stocks A, B, C, D over six dates (scores, then labels = return to the next date's close):
///
/// | day | scores A B C D | ranking  | labels A      B      C      D     |
/// |-----|----------------|----------|-----------------------------------|
/// | 0   | 4 3 2 1        | A B C D  | +0.10  −0.05  +0.02   0.00        |
/// | 1   | 3 2 4 1        | C A B D  | +0.05  +0.03  −0.10  +0.04        |
/// | 2   | 2 3 1 4        | D B A C  | −0.02  +0.01  +0.05  +0.10        |
/// | 3   | 1 4 3 2        | B C D A  | +0.03  null   +0.20  null         |
/// | 4   | 2 1 4 3        | C D A B  |  0.00   0.00  −0.05  +0.02        |
/// | 5   | 1 2 3 4        |          | null   null   null   null (valuation date only) |
fn hand_market() -> Market {
    let scores = [
        [4.0, 3.0, 2.0, 1.0],
        [3.0, 2.0, 4.0, 1.0],
        [2.0, 3.0, 1.0, 4.0],
        [1.0, 4.0, 3.0, 2.0],
        [2.0, 1.0, 4.0, 3.0],
        [1.0, 2.0, 3.0, 4.0],
    ];
    let labels = [
        [Some(0.10), Some(-0.05), Some(0.02), Some(0.0)],
        [Some(0.05), Some(0.03), Some(-0.10), Some(0.04)],
        [Some(-0.02), Some(0.01), Some(0.05), Some(0.10)],
        [Some(0.03), None, Some(0.20), None],
        [Some(0.0), Some(0.0), Some(-0.05), Some(0.02)],
        [None, None, None, None],
    ];
    let mut rows = Vec::new();
    for (t, d) in DATES.iter().enumerate() {
        for (j, name) in ["A", "B", "C", "D"].iter().enumerate() {
            rows.push((date(d), name.to_string(), Some(scores[t][j]), labels[t][j]));
        }
    }
    // Row order must not matter.
    rows.reverse();
    Market::from_rows(rows).unwrap()
}

const PARAMS: TopkDropParams = TopkDropParams {
    k: 2,
    drop: 1,
    cost_rate: 1e-3,
    cash: 1000.0,
};

// Worked by hand (exact fractions, rounded here to 12 significant digits), k = 2, drop = 1, rate 0.001:
//
// Day 0 (V_0 = 1000, empty book). Top 2 = {A, B}; buy both with all cash:
//   each = 1000 / (2 · 1.001) = 499.500499500…; traded 999.000999001; cost 0.999000999001
//   next close: A = 499.5005 · 1.10 = 549.450549451 (= 50000/91), B = 499.5005 · 0.95 = 474.525474525
//   V_1 = 1023.976023976
// Day 1: ranking C A B D, top 2 = {C, A}. Held {A, B}: B is outside → sell B (1 ≤ drop); A stays.
//   sell B 474.525474525, cost 0.474525474525, cash 474.525474525 · 0.999 = 474.050949051
//   buy C (best not held) = 474.050949051 / 1.001 = 473.577371679, cost 0.473577371679
//   traded 948.102846205; cost 0.948102846205
//   next close: A = 549.450549451 · 1.05 = 576.923076923, C = 473.577371679 · 0.90 = 426.219634511
//   V_2 = 1003.142711434
// Day 2: ranking D B A C, top 2 = {D, B} — both names change. Held {A, C} are both outside, but drop = 1
//   binds: sell only the worst, C (rank 4); A (rank 3) is kept although outside the top 2.
//   sell C 426.219634511, cost 0.426219634511, cash 425.793414877
//   buy D (best not held) = 425.793414877 / 1.001 = 425.368046830, cost 0.425368046830
//   traded 851.587681341; cost 0.851587681341
//   next close: A = 576.923076923 · 0.98 = 565.384615385, D = 425.368046830 · 1.10 = 467.904851513
//   V_3 = 1033.289466898
// Day 3: ranking B C D A, top 2 = {B, C}. Held {A, D} both outside; drop = 1 → sell the worst, A.
//   B is the best name not held but has no label today, so it cannot be bought: buy C instead.
//   sell A 565.384615385, cost 0.565384615385, cash 564.819230769
//   buy C = 564.819230769 / 1.001 = 564.254975793, cost 0.564254975793
//   traded 1129.639591178; cost 1.129639591178
//   next close: D has a null label → earns 0: 467.904851513; C = 564.254975793 · 1.20 = 677.105970952
//   V_4 = 1145.010822465
// Day 4: ranking C D A B, top 2 = {C, D} = held: no trade (traded 0, cost 0).
//   next close: D = 467.904851513 · 1.02 = 477.262948543, C = 677.105970952 · 0.95 = 643.250672405
//   V_5 = 1120.513620948
// Day 5 is the last date: valuation only (T = 5 trading days, 6 wealth values).
//
// Metrics (T = 5):
//   CW = 1120.513620948 / 1000 = 1.120513620948
//   APY = CW^(252/5) − 1 = 1.120513620948^50.4 − 1 = 308.473783964
//   r = [0.023976023976, −0.020345508150, 0.030052309726, 0.108122030802, −0.021394733601]
//   mean r = 0.024082024550; sample std = 0.052773855710 → AVO = std · √252 = 0.837758987603
//   ASR = APY / AVO = 368.213040419
//   MDD: peak 1145.010822465 (V_4), trough V_5 → 1 − 1120.513620948/1145.010822465 = 0.021394733601
//     (the day-1 fall 1023.976 → 1003.143 is only 0.020345508150)
//   CR = APY / MDD = 14418.211028534
//   turnover = mean(999.000999001/1000, 948.102846205/1023.976023976, 851.587681341/1003.142711434,
//                   1129.639591178/1033.289466898, 0/1145.010822465)
//            = mean(0.999000999, 0.925903365, 0.848919771, 1.093246014, 0) = 0.773414029915
//   total cost = 0.999000999001 + 0.948102846205 + 0.851587681341 + 1.129639591178 + 0 = 3.928331117725
#[test]
fn topk_drop_by_hand() {
    let market = hand_market();
    let run = run_topk_drop(&market, &PARAMS).unwrap();
    let holdings: Vec<Vec<&str>> = run
        .days
        .iter()
        .map(|d| d.holdings.iter().map(String::as_str).collect())
        .collect();
    assert_eq!(
        holdings,
        vec![
            vec!["A", "B"],
            vec!["A", "C"],
            vec!["A", "D"],
            vec!["C", "D"],
            vec!["C", "D"]
        ]
    );
    let trades: Vec<(Vec<&str>, Vec<&str>)> = run
        .days
        .iter()
        .map(|d| {
            (
                d.sells.iter().map(String::as_str).collect(),
                d.buys.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        trades,
        vec![
            (vec![], vec!["A", "B"]),
            (vec!["B"], vec!["C"]),
            (vec!["C"], vec!["D"]),
            (vec!["A"], vec!["C"]),
            (vec![], vec![]),
        ]
    );
    assert_eq!(run.final_holdings, vec!["C", "D"]);
    let expected_wealth = [
        1000.0,
        1023.976023976024,
        1003.1427114344198,
        1033.2894668976169,
        1145.0108224651265,
        1120.5136209477803,
    ];
    assert_eq!(run.series.wealth.len(), 6);
    for (got, want) in run.series.wealth.iter().zip(expected_wealth) {
        assert_close!(*got, want);
    }
    let expected_traded = [
        999.000999000999,
        948.1028462047443,
        851.5876813413443,
        1129.6395911780528,
        0.0,
    ];
    let expected_cost = [
        0.999000999000999,
        0.9481028462047443,
        0.8515876813413442,
        1.1296395911780528,
        0.0,
    ];
    for (t, day) in run.days.iter().enumerate() {
        assert_eq!(day.date, date(DATES[t]));
        assert_close!(day.traded_value, expected_traded[t]);
        assert_close!(day.cost, expected_cost[t]);
        assert_close!(day.wealth_before, expected_wealth[t]);
        assert_close!(day.wealth_after, expected_wealth[t + 1]);
    }

    let m = run.series.metrics(0.0).unwrap();
    assert_eq!(m.n_days, 5);
    assert_close!(m.cw, 1.1205136209477802);
    assert_close!(m.apy, 308.47378396406896);
    assert_close!(m.avo, 0.8377589876034276);
    assert_close!(m.asr, 368.2130404193194);
    assert_close!(m.mdd, 0.021394733601386808);
    assert_close!(m.cr, 14418.211028534315);
    assert_close!(m.turnover, 0.7734140299151034);
    assert_close!(m.total_cost, 3.9283311177251403);
}

#[test]
fn ranking_breaks_score_ties_by_ticker_name() {
    let d = date("2024-01-02");
    let e = date("2024-01-03");
    let rows = ["B", "A", "C"]
        .iter()
        .flat_map(|t| {
            [
                (d, t.to_string(), Some(1.0), Some(0.0)),
                (e, t.to_string(), Some(1.0), None),
            ]
        })
        .chain([(d, "D".to_string(), None, Some(0.0))]);
    let market = Market::from_rows(rows).unwrap();
    // D has no score: not ranked. A, B, C tie: name order.
    assert_eq!(rank_day(&market, 0), vec![0, 1, 2]);
    let p = TopkDropParams { k: 2, ..PARAMS };
    let run = run_topk_drop(&market, &p).unwrap();
    assert_eq!(run.days[0].buys, vec!["A", "B"]);
}

#[test]
fn drop_zero_holds_the_first_top_k_forever() {
    let p = TopkDropParams { drop: 0, ..PARAMS };
    let run = run_topk_drop(&hand_market(), &p).unwrap();
    assert!(run.days.iter().all(|d| d.holdings == vec!["A", "B"]));
    assert!(run.days[1..].iter().all(|d| d.traded_value == 0.0));
}

#[test]
fn invalid_parameters_are_errors() {
    let market = hand_market();
    for (p, what) in [
        (TopkDropParams { k: 0, ..PARAMS }, "k must be"),
        (TopkDropParams { drop: 3, ..PARAMS }, "drop must be"),
        (
            TopkDropParams {
                cost_rate: -1e-4,
                ..PARAMS
            },
            "cost must be",
        ),
        (
            TopkDropParams {
                cash: 0.0,
                ..PARAMS
            },
            "cash must be",
        ),
    ] {
        let err = run_topk_drop(&market, &p).unwrap_err().to_string();
        assert!(err.contains(what), "{err}");
    }
}

// Equal weight on the hand market: at the day-0 close buy each of the 4 stocks for
// 1000 / (4 · 1.001) = 249.750249750; traded 999.000999001, cost 0.999000999001 (once).
//   V_1 = 249.75025 · (1.10 + 0.95 + 1.02 + 1.00) = 249.75025 · 4.07 = 1016.483516484
//   V_2: A 274.725274725·1.05 + B 237.262737263·1.03 + C 254.745254745·0.90 + D 249.750249750·1.04
//        = 288.461538462 + 244.380619381 + 229.270729271 + 259.740259740 = 1021.853146853
//   V_3: ·0.98, ·1.01, ·1.05, ·1.10 → 282.692307692 + 246.824425574 + 240.734265734 + 285.714285714
//        = 1055.965284715
//   V_4: A·1.03, B null (0), C·1.20, D null (0) → 291.173076923 + 246.824425574 + 288.881118881
//        + 285.714285714 = 1112.592907093
//   V_5: ·1, ·1, ·0.95, ·1.02 → 291.173076923 + 246.824425574 + 274.437062937 + 291.428571429
//        = 1103.863136863
//   CW 1.103863136863; APY = CW^50.4 − 1 = 144.521651753; AVO 0.381817727847; ASR 378.509537962;
//   MDD = 1 − V_5/V_4 = 0.007846329214; CR 18419.014524965; turnover = (999.000999/1000)/5 = 0.199800199800
#[test]
fn equal_weight_by_hand() {
    let series = equal_weight(&hand_market(), 1e-3, 1000.0).unwrap();
    let expected = [
        1000.0,
        1016.4835164835165,
        1021.8531468531469,
        1055.9652847152848,
        1112.5929070929071,
        1103.8631368631369,
    ];
    for (got, want) in series.wealth.iter().zip(expected) {
        assert_close!(*got, want);
    }
    assert_close!(series.traded_value[0], 999.000999000999);
    assert_close!(series.cost[0], 0.999000999000999);
    assert!(series.cost[1..].iter().all(|&c| c == 0.0));
    let m = series.metrics(0.0).unwrap();
    assert_close!(m.cw, 1.1038631368631369);
    assert_close!(m.apy, 144.52165175301);
    assert_close!(m.avo, 0.3818177278472937);
    assert_close!(m.asr, 378.5095379615553);
    assert_close!(m.mdd, 0.007846329213602796);
    assert_close!(m.cr, 18419.01452496537);
    assert_close!(m.turnover, 0.19980019980019978);
    assert_close!(m.total_cost, 0.999000999000999);
}

fn index_prices() -> IndexPrices {
    // Closes on the six dates plus extra days before and after that must be ignored.
    let closes = [
        ("2023-12-29", 90.0),
        ("2024-01-02", 100.0),
        ("2024-01-03", 102.0),
        ("2024-01-04", 99.96),
        ("2024-01-05", 101.0),
        ("2024-01-08", 105.0),
        ("2024-01-09", 104.0),
        ("2024-01-10", 120.0),
    ];
    IndexPrices {
        name: "hand".into(),
        closes: closes.iter().map(|(d, c)| (date(d), *c)).collect(),
    }
}

// Index wealth = cash · close_t / close_0: 1000 · [100, 102, 99.96, 101, 105, 104] / 100
//   = [1000, 1020, 999.6, 1010, 1050, 1040]: returns +2%, −2%, +1.0404…%, +3.9604…%, −0.9524…%;
//   no trades, no costs; MDD = 1 − 999.6/1020 = 0.02.
#[test]
fn index_wealth_by_hand() {
    let dates: Vec<NaiveDate> = DATES.iter().map(|d| date(d)).collect();
    let series = index_wealth(&index_prices(), &dates, 1000.0).unwrap();
    let expected = [1000.0, 1020.0, 999.6, 1010.0, 1050.0, 1040.0];
    for (got, want) in series.wealth.iter().zip(expected) {
        assert_close!(*got, want);
    }
    let r = series.returns();
    assert_close!(r[0], 0.02);
    assert_close!(r[1], -0.02);
    let m = series.metrics(0.0).unwrap();
    assert_close!(m.cw, 1.04);
    assert_close!(m.mdd, 0.02);
    assert_eq!((m.turnover, m.total_cost), (0.0, 0.0));
}

#[test]
fn index_missing_dates_are_named() {
    let mut prices = index_prices();
    prices
        .closes
        .retain(|(d, _)| *d != date("2024-01-03") && *d != date("2024-01-08"));
    let dates: Vec<NaiveDate> = DATES.iter().map(|d| date(d)).collect();
    let err = index_wealth(&prices, &dates, 1000.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 of the 6") && err.contains("2024-01-03, 2024-01-08"),
        "{err}"
    );
}

/// TopK-Drop k = 2, drop = 1 at 10 bp on 1000 of cash, no index.
fn hand_params(delay: usize) -> BacktestParams {
    BacktestParams {
        k: 2,
        drop: 1,
        cost: 1e-3,
        cash: 1000.0,
        risk_free: 0.0,
        index: None,
        risk_aversion: 0.0,
        delay,
    }
}

#[test]
fn daily_csv_has_one_row_per_date() {
    let market = hand_market();
    let params = hand_params(0);
    let bt = simulate(&market, &params, Some(&index_prices())).unwrap();
    let csv = daily_csv(&market, &bt);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "date,wealth,equal_weight_wealth,index_wealth,daily_return,traded_value,cost,n_holdings,\
         holdings,buys,sells"
    );
    assert_eq!(lines.len(), 1 + 6);
    assert!(
        lines[1].starts_with("2024-01-02,1000,1000,1000,,"),
        "{}",
        lines[1]
    );
    let traded: f64 = lines[1].split(',').nth(5).unwrap().parse().unwrap();
    assert_close!(traded, 999.000999000999);
    assert!(lines[1].ends_with(",2,A;B,A;B,"), "{}", lines[1]);
    assert!(lines[3].ends_with(",2,A;D,D,C"), "{}", lines[3]);
    assert!(lines[6].starts_with("2024-01-09,"));
    assert!(lines[6].ends_with(",0,0,2,C;D,,"), "{}", lines[6]);
}

#[test]
fn a_delayed_backtest_trades_each_days_scores_one_close_later() {
    let market = hand_market();
    let params = hand_params;
    let delayed = market.delayed(1);
    assert_eq!(delayed.score(0, 0), None);
    for day in 1..market.dates.len() {
        for j in 0..market.n_tickers() {
            assert_eq!(delayed.score(day, j), market.score(day - 1, j));
            assert_eq!(delayed.label(day, j), market.label(day, j));
        }
    }
    let now = simulate(&market, &params(0), None).unwrap();
    let late = simulate(&market, &params(1), None).unwrap();
    let csv = daily_csv(&market, &late);
    let lines: Vec<&str> = csv.lines().collect();
    // Day 0 has no score yet: nothing is bought. Day 1 buys day 0's top two, A and B.
    assert!(lines[1].ends_with(",0,,,"), "{}", lines[1]);
    assert!(lines[2].ends_with(",2,A;B,A;B,"), "{}", lines[2]);
    // Day 1's wealth path starts a day later: A and B earn day 1's +5% and +3% on the cash after costs.
    let invested = 1000.0 / (1.0 + 1e-3);
    assert_close!(
        late.strategy.series.wealth[2],
        invested * (0.5 * 1.05 + 0.5 * 1.03)
    );
    assert_eq!(now.equal_weight.wealth, late.equal_weight.wealth);
    let too_late = simulate(&market, &params(99), None).err().unwrap();
    assert!(too_late.to_string().contains("--delay"), "{too_late}");
}
