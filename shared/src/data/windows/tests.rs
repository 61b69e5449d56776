use super::*;
use crate::config::DateRange;
use chrono::NaiveDate;

fn day(i: usize) -> NaiveDate {
    NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::Duration::days(i as i64)
}

/// 12 days, 2 tickers, 1 feature whose value encodes (day, ticker) as 10·t + j; ticker 1 is missing on day 3.
fn panel() -> Panel {
    let (t_len, n) = (12, 2);
    let mut features = vec![0f32; t_len * n];
    let mut present = vec![true; t_len * n];
    let mut labels = vec![0f32; t_len * n];
    for t in 0..t_len {
        for j in 0..n {
            features[t * n + j] = (10 * t + j) as f32;
            labels[t * n + j] = (t * 100 + j) as f32;
        }
    }
    present[3 * n + 1] = false;
    labels[(t_len - 1) * n] = f32::NAN;
    Panel {
        dates: (0..t_len).map(day).collect(),
        tickers: vec!["A".into(), "B".into()],
        feature_names: vec!["f".into()],
        features,
        present,
        labels,
        prices: vec![1.0; t_len * n],
    }
}

fn splits() -> SplitsConfig {
    SplitsConfig {
        train: DateRange {
            start: day(0),
            end: day(6),
        },
        valid: DateRange {
            start: day(7),
            end: day(8),
        },
        test: DateRange {
            start: day(9),
            end: day(11),
        },
    }
}

#[test]
fn windows_skip_incomplete_days_and_respect_split_boundaries() {
    let p = panel();
    // window 3: day 3 is incomplete, so complete runs restart at day 4; first end is day 6
    let train = split_window_ends(&p, &splits(), Split::Train, 3, Labels::Required).unwrap();
    assert_eq!(train, vec![2, 6]);
    let valid = split_window_ends(&p, &splits(), Split::Valid, 3, Labels::Required).unwrap();
    assert_eq!(valid, vec![7, 8]);
    // the last day has no label: dropped for training, kept for prediction
    let test = split_window_ends(&p, &splits(), Split::Test, 3, Labels::Required).unwrap();
    assert_eq!(test, vec![9, 10]);
    let test_all = split_window_ends(&p, &splits(), Split::Test, 3, Labels::Optional).unwrap();
    assert_eq!(test_all, vec![9, 10, 11]);
}

#[test]
fn a_split_without_windows_is_a_clear_error() {
    let p = panel();
    let err = split_window_ends(&p, &splits(), Split::Valid, 8, Labels::Required).unwrap_err();
    assert!(
        err.to_string().contains("no complete 8-day window"),
        "{err}"
    );
}

#[test]
fn batches_hold_the_right_days_and_labels() {
    let p = panel();
    let wt = WindowTensors::new(&p, 3, Device::Cpu).unwrap();
    let b = wt.batch(&[6, 9]).unwrap();
    assert_eq!(b.x.size(), vec![2, 3, 2, 1]);
    let x: Vec<f32> = Vec::<f32>::try_from(b.x.flatten(0, -1)).unwrap();
    assert_eq!(
        x,
        vec![40., 41., 50., 51., 60., 61., 70., 71., 80., 81., 90., 91.]
    );
    let y: Vec<f32> = Vec::<f32>::try_from(b.y.flatten(0, -1)).unwrap();
    assert_eq!(y, vec![600., 601., 900., 901.]);
}

#[test]
fn sampler_is_seeded_and_drops_the_last_partial_batch() {
    let sampler = BatchSampler {
        ends: (0..10).collect(),
        batch_size: 3,
        shuffle: true,
        drop_last: true,
        seed: 7,
    };
    let e0 = sampler.epoch(0);
    assert_eq!(e0.len(), 3);
    assert_eq!(sampler.batches_per_epoch(), 3);
    assert_eq!(e0, sampler.epoch(0));
    assert_ne!(e0, sampler.epoch(1));
    let mut seen: Vec<usize> = e0.concat();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 9);
    let other = BatchSampler { seed: 8, ..sampler };
    assert_ne!(other.epoch(0), e0);
}
