//! Each feature family checked against an independent brute-force implementation on a small fixture, plus
//! a few values worked out by hand.

use super::*;
use chrono::NaiveDate;

struct Fixture {
    o: Vec<f64>,
    h: Vec<f64>,
    l: Vec<f64>,
    c: Vec<f64>,
    v: Vec<f64>,
    dates: Vec<NaiveDate>,
}

fn fixture(n: usize) -> Fixture {
    let mut f = Fixture {
        o: vec![],
        h: vec![],
        l: vec![],
        c: vec![],
        v: vec![],
        dates: vec![],
    };
    let start = NaiveDate::from_ymd_opt(2021, 1, 4).unwrap();
    for t in 0..n {
        let tf = t as f64;
        let c = 100.0 + 10.0 * (tf / 3.0).sin() + 0.1 * tf + if t % 11 == 0 { 2.0 } else { 0.0 };
        let o = if t == 0 {
            c
        } else {
            f.c[t - 1] * (1.0 + 0.003 * (tf * 1.7).cos())
        };
        // a flat close every 13 rows makes ties in rank and max/min
        let c = if t % 13 == 5 && t > 0 { f.c[t - 1] } else { c };
        f.h.push(o.max(c) + 1.0 + 0.5 * (tf * 0.7).sin().abs());
        f.l.push(o.min(c) - 1.0 - 0.3 * (tf * 0.9).cos().abs());
        f.o.push(o);
        f.c.push(c);
        f.v.push(1000.0 + 100.0 * ((t * 7) % 5) as f64 + if t % 17 == 0 { 0.0 } else { 50.0 });
        f.dates.push(start + chrono::Duration::days(t as i64));
    }
    f
}

fn frame(f: &Fixture) -> DataFrame {
    DataFrame::new_infer_height(vec![
        Column::new(DATE.into(), f.dates.clone()),
        Column::new(TICKER.into(), vec!["T"; f.c.len()]),
        Column::new(OPEN.into(), f.o.clone()),
        Column::new(HIGH.into(), f.h.clone()),
        Column::new(LOW.into(), f.l.clone()),
        Column::new(CLOSE.into(), f.c.clone()),
        Column::new(
            ADJ_CLOSE.into(),
            f.c.iter().map(|x| x * 0.5).collect::<Vec<_>>(),
        ),
        Column::new(VOLUME.into(), f.v.clone()),
    ])
    .unwrap()
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}
fn sample_std(x: &[f64]) -> f64 {
    let m = mean(x);
    (x.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (x.len() as f64 - 1.0)).sqrt()
}
fn corr(a: &[f64], b: &[f64]) -> f64 {
    crate::stats::rank_ic::pearson(a, b).unwrap_or(0.0)
}
fn quantile(x: &[f64], q: f64) -> f64 {
    let mut s = x.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() as f64 - 1.0);
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}
fn first_arg(x: &[f64], better: impl Fn(f64, f64) -> bool) -> f64 {
    let mut best = 0;
    for (j, &v) in x.iter().enumerate() {
        if better(v, x[best]) {
            best = j;
        }
    }
    best as f64
}
fn up_share(x: &[f64]) -> f64 {
    x.iter().map(|v| v.max(0.0)).sum::<f64>() / (x.iter().map(|v| v.abs()).sum::<f64>() + 1e-12)
}

/// Brute-force value of `{family}_{w}` at row t.
fn expected(f: &Fixture, family: &str, w: usize, t: usize) -> f64 {
    let (c, h, l, v) = (&f.c, &f.h, &f.l, &f.v);
    let win = |x: &Vec<f64>| x[t + 1 - w..=t].to_vec();
    let ret: Vec<f64> = (t + 1 - w..=t).map(|k| c[k] / c[k - 1] - 1.0).collect();
    let ct = c[t];
    let wf = w as f64;
    match family {
        "roc" => c[t - w] / ct,
        "ma" => mean(&win(c)) / ct,
        "std" => sample_std(&win(c)) / ct,
        "beta" => (c[t - w] - ct) / (wf * ct),
        "max" => win(c).iter().cloned().fold(f64::MIN, f64::max) / ct,
        "min" => win(c).iter().cloned().fold(f64::MAX, f64::min) / ct,
        "qtlu" => quantile(&win(c), 0.8) / ct,
        "qtld" => quantile(&win(c), 0.2) / ct,
        "rank" => {
            let x = win(c);
            let less = x.iter().filter(|&&y| y < ct).count() as f64;
            let equal = x.iter().filter(|&&y| y == ct).count() as f64;
            (less + (equal + 1.0) / 2.0) / wf
        }
        "imax" => first_arg(&win(h), |a, b| a > b) / wf,
        "imin" => first_arg(&win(l), |a, b| a < b) / wf,
        "imxd" => (first_arg(&win(h), |a, b| a > b) - first_arg(&win(l), |a, b| a < b)) / wf,
        "rsv" => {
            let lo = win(l).iter().cloned().fold(f64::MAX, f64::min);
            let hi = win(h).iter().cloned().fold(f64::MIN, f64::max);
            (ct - lo) / (hi - lo + 1e-12)
        }
        "cntp" => ret.iter().filter(|&&r| r > 0.0).count() as f64 / wf,
        "cntn" => ret.iter().filter(|&&r| r < 0.0).count() as f64 / wf,
        "cntd" => expected(f, "cntp", w, t) - expected(f, "cntn", w, t),
        "corr" => corr(
            &win(c),
            &win(v).iter().map(|x| (x + 1.0).ln()).collect::<Vec<_>>(),
        ),
        "cord" => {
            let pr: Vec<f64> = (t + 1 - w..=t).map(|k| c[k] / c[k - 1]).collect();
            let vr: Vec<f64> = (t + 1 - w..=t)
                .map(|k| (v[k] / v[k - 1] + 1.0).ln())
                .collect();
            corr(&pr, &vr)
        }
        "sump" => up_share(&ret),
        "sumn" => 1.0 - up_share(&ret),
        "sumd" => 2.0 * up_share(&ret) - 1.0,
        "vma" => mean(&win(v)) / (v[t] + 1e-12),
        "vstd" => sample_std(&win(v)) / (v[t] + 1e-12),
        "wvma" => {
            let x: Vec<f64> = (t + 1 - w..=t)
                .zip(&ret)
                .map(|(k, r)| r.abs() * v[k])
                .collect();
            sample_std(&x) / (mean(&x) + 1e-12)
        }
        "vsump" | "vsumn" | "vsumd" => {
            let dv: Vec<f64> = (t + 1 - w..=t).map(|k| v[k] - v[k - 1]).collect();
            let s = up_share(&dv);
            match family {
                "vsump" => s,
                "vsumn" => 1.0 - s,
                _ => 2.0 * s - 1.0,
            }
        }
        other => panic!("no reference for {other}"),
    }
}

fn column(df: &DataFrame, name: &str) -> Vec<f64> {
    df.column(name)
        .unwrap()
        .f64()
        .unwrap()
        .into_no_null_iter()
        .collect()
}

#[test]
fn names_and_count_match_the_reference_layout() {
    let names = feature_names();
    assert_eq!(names.len(), 152);
    assert_eq!(n_features(), 152);
    assert_eq!(&names[..5], &["open", "high", "low", "close", "adj_close"]);
    assert_eq!(names[14], "roc_5");
    assert_eq!(names[148], "vsumd_60");
    assert_eq!(&names[149..], &["day", "weekday", "month"]);
}

#[test]
fn every_windowed_family_matches_brute_force() {
    let f = fixture(90);
    let out = ticker_features(&frame(&f)).unwrap();
    for family in WINDOWED_FAMILIES {
        for w in WINDOWS {
            let got = column(&out, &format!("{family}_{w}"));
            for (t, got_t) in got.iter().enumerate().skip(FEATURE_HISTORY) {
                let want = expected(&f, family, w, t);
                let tol = 1e-9 * want.abs().max(1.0);
                assert!(
                    (got_t - want).abs() <= tol,
                    "{family}_{w} at row {t}: got {got_t} want {want}"
                );
            }
        }
    }
}

#[test]
fn kbar_prices_and_calendar_by_hand() {
    // O=10, H=12, L=9, C=11 on Wednesday 2021-03-17
    let df = DataFrame::new_infer_height(vec![
        Column::new(
            DATE.into(),
            vec![NaiveDate::from_ymd_opt(2021, 3, 17).unwrap()],
        ),
        Column::new(TICKER.into(), vec!["T"]),
        Column::new(OPEN.into(), vec![10.0]),
        Column::new(HIGH.into(), vec![12.0]),
        Column::new(LOW.into(), vec![9.0]),
        Column::new(CLOSE.into(), vec![11.0]),
        Column::new(ADJ_CLOSE.into(), vec![10.5]),
        Column::new(VOLUME.into(), vec![100.0]),
    ])
    .unwrap();
    let out = ticker_features(&df).unwrap();
    let at = |n: &str| column(&out, n)[0];
    let third = 1.0 / (3.0 + 1e-12);
    for (name, want) in [
        ("kmid", 1.0 / 11.0),
        ("kmid2", third),
        ("klen", 0.3),
        ("kup", 0.1),
        ("kup2", third),
        ("klow", 0.1),
        ("klow2", third),
        ("ksft", 0.1),
        ("ksft2", third),
        ("close", 11.0),
        ("adj_close", 10.5),
        ("day", 17.0),
        ("weekday", 2.0),
        ("month", 3.0),
    ] {
        assert!(
            (at(name) - want).abs() < 1e-12,
            "{name}: {} vs {want}",
            at(name)
        );
    }
    assert!(out.column(LABEL).unwrap().f64().unwrap().get(0).is_none());
}

#[test]
fn rank_and_argmax_by_hand() {
    // closes 3,1,4,1,5 then 1: rank_5 at row 4 = 5/5; at row 5 window [1,4,1,5,1] has three 1s -> avg rank 2
    let mut f = fixture(6);
    f.c = vec![3.0, 1.0, 4.0, 1.0, 5.0, 1.0];
    f.o = f.c.clone();
    f.h = vec![3.0, 2.0, 4.0, 4.0, 5.0, 2.0];
    f.l = f.c.iter().map(|x| x - 0.5).collect();
    let out = ticker_features(&frame(&f)).unwrap();
    let rank = column(&out, "rank_5");
    assert!((rank[4] - 1.0).abs() < 1e-12);
    assert!((rank[5] - 0.4).abs() < 1e-12, "{}", rank[5]);
    let imax = column(&out, "imax_5");
    // highs window at row 5: [2,4,4,5,2] -> max 5 at position 3
    assert!((imax[5] - 3.0 / 5.0).abs() < 1e-12);
    // lows window at row 4: [2.5,0.5,3.5,0.5,4.5] -> first min at position 1
    let imin = column(&out, "imin_5");
    assert!((imin[4] - 1.0 / 5.0).abs() < 1e-12);
}

#[test]
fn label_is_next_day_adjusted_return() {
    let f = fixture(10);
    let out = ticker_features(&frame(&f)).unwrap();
    let label: Vec<Option<f64>> = out.column(LABEL).unwrap().f64().unwrap().iter().collect();
    for (t, pair) in f.c.windows(2).enumerate() {
        let want = pair[1] / pair[0] - 1.0; // adj = 0.5·close, the ratio is the same
        assert!((label[t].unwrap() - want).abs() < 1e-12);
    }
    assert_eq!(label[9], None);
}
