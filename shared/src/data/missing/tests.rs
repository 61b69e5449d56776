use super::*;
use crate::data::dates::days_from_date;

/// One input row: ticker, day of January 2020, open, high, low, close, volume (None = empty field).
type Row = (&'static str, u32, [Option<f64>; 5]);

/// A (ticker, date)-sorted frame without adj_close in the file (so adj_close is a copy of close), with
/// file lines 2, 3, … in row order.
fn frame(rows: &[Row]) -> DataFrame {
    let field = |k: usize| -> Vec<Option<f64>> { rows.iter().map(|r| r.2[k]).collect() };
    let days: Vec<i32> = rows
        .iter()
        .map(|r| days_from_date(chrono::NaiveDate::from_ymd_opt(2020, 1, r.1).unwrap()))
        .collect();
    let lines: Vec<u32> = (0..rows.len() as u32).map(|i| i + 2).collect();
    DataFrame::new_infer_height(vec![
        Int32Chunked::from_vec(DATE.into(), days)
            .into_date()
            .into_series()
            .into(),
        Column::new(TICKER.into(), rows.iter().map(|r| r.0).collect::<Vec<_>>()),
        Column::new(OPEN.into(), field(0)),
        Column::new(HIGH.into(), field(1)),
        Column::new(LOW.into(), field(2)),
        Column::new(CLOSE.into(), field(3)),
        Column::new(ADJ_CLOSE.into(), field(3)),
        Column::new(VOLUME.into(), field(4)),
        Column::new(LINE.into(), lines),
    ])
    .unwrap()
}

fn run(rows: &[Row], policy: MissingPolicy) -> Result<Repaired> {
    apply(
        frame(rows),
        policy,
        false,
        Path::new("p.csv"),
        RowUnit::Line,
    )
}

fn column(f: &DataFrame, name: &str) -> Vec<Option<f64>> {
    f.column(name).unwrap().f64().unwrap().iter().collect()
}

fn bar(o: f64, c: f64, v: f64) -> [Option<f64>; 5] {
    [
        Some(o),
        Some(o.max(c) + 1.0),
        Some(o.min(c) - 1.0),
        Some(c),
        Some(v),
    ]
}

fn with(mut b: [Option<f64>; 5], k: usize) -> [Option<f64>; 5] {
    b[k] = None;
    b
}

/// A: complete, then close missing on day 3, volume missing on its last day (6).
/// B: its first two rows miss a price (open on day 2, close on day 3), then a missing close on day 5.
fn fixture() -> Vec<Row> {
    vec![
        ("A", 2, bar(10.0, 11.0, 100.0)),
        ("A", 3, with(bar(11.0, 12.0, 200.0), 3)),
        ("A", 6, with(bar(12.0, 13.0, 300.0), 4)),
        ("B", 2, with(bar(50.0, 51.0, 10.0), 0)),
        ("B", 3, with(bar(51.0, 52.0, 20.0), 3)),
        ("B", 4, bar(52.0, 53.0, 30.0)),
        ("B", 5, with(bar(53.0, 54.0, 40.0), 3)),
    ]
}

fn actions(r: &Repaired) -> Vec<(&str, &str, &str, RepairAction)> {
    r.repairs
        .iter()
        .map(|x| {
            (
                x.ticker.as_str(),
                x.date.as_str(),
                x.field.as_str(),
                x.action,
            )
        })
        .collect()
}

#[test]
fn a_table_without_holes_comes_back_unchanged() {
    let rows = vec![("A", 2, bar(1.0, 2.0, 5.0)), ("A", 3, bar(2.0, 3.0, 6.0))];
    for policy in MissingPolicy::ALL {
        let out = run(&rows, policy).unwrap();
        assert!(out.frame.equals_missing(&frame(&rows)));
        assert!(out.repairs.is_empty());
    }
}

#[test]
fn error_names_the_first_five_lines_in_file_order_and_the_totals() {
    let mut rows = fixture();
    rows.push(("C", 2, with(with(bar(5.0, 6.0, 1.0), 1), 2)));
    let err = run(&rows, MissingPolicy::Error).err().unwrap().to_string();
    assert!(
        err.starts_with("p.csv: 7 missing value(s) in 6 line(s): "),
        "{err}"
    );
    assert!(
        err.contains("line 3 (`close`), line 4 (`volume`), line 5 (`open`), line 6 (`close`), line 8 (`close`), …"),
        "{err}"
    );
    assert!(!err.contains("line 9"), "only five lines: {err}");
    assert!(
        err.contains("--missing drop") && err.contains("--missing ffill"),
        "{err}"
    );
}

#[test]
fn error_lists_several_fields_of_one_line_together() {
    let rows = vec![("C", 2, with(with(bar(5.0, 6.0, 1.0), 1), 2))];
    let err = run(&rows, MissingPolicy::Error).err().unwrap().to_string();
    assert!(
        err.contains("2 missing value(s) in 1 line(s): line 2 (`high`, `low`);"),
        "{err}"
    );
}

#[test]
fn drop_removes_every_incomplete_row_and_records_each_cell() {
    let out = run(&fixture(), MissingPolicy::Drop).unwrap();
    assert_eq!(column(&out.frame, CLOSE), vec![Some(11.0), Some(53.0)]);
    let lines: Vec<u32> = out
        .frame
        .column(LINE)
        .unwrap()
        .u32()
        .unwrap()
        .into_no_null_iter()
        .collect();
    assert_eq!(lines, vec![2, 7]);
    use RepairAction::Dropped;
    assert_eq!(
        actions(&out),
        vec![
            ("A", "2020-01-03", "close", Dropped),
            ("A", "2020-01-06", "volume", Dropped),
            ("B", "2020-01-02", "open", Dropped),
            ("B", "2020-01-03", "close", Dropped),
            ("B", "2020-01-05", "close", Dropped),
        ]
    );
}

#[test]
fn ffill_carries_within_the_ticker_zeroes_volume_and_drops_leading_rows() {
    let out = run(&fixture(), MissingPolicy::Ffill).unwrap();
    let tickers: Vec<&str> = out
        .frame
        .column(TICKER)
        .unwrap()
        .str()
        .unwrap()
        .iter()
        .flatten()
        .collect();
    assert_eq!(tickers, vec!["A", "A", "A", "B", "B"]);
    // A's day-3 close is day 2's 11; B's day-5 close is day 4's 53, never A's last close
    assert_eq!(
        column(&out.frame, CLOSE),
        vec![Some(11.0), Some(11.0), Some(13.0), Some(53.0), Some(53.0)]
    );
    assert_eq!(column(&out.frame, ADJ_CLOSE), column(&out.frame, CLOSE));
    // A's last-day volume is not carried: it becomes 0
    assert_eq!(
        column(&out.frame, VOLUME),
        vec![Some(100.0), Some(200.0), Some(0.0), Some(30.0), Some(40.0)]
    );
    use RepairAction::*;
    assert_eq!(
        actions(&out),
        vec![
            ("A", "2020-01-03", "close", Filled),
            ("A", "2020-01-06", "volume", VolumeZeroed),
            ("B", "2020-01-02", "open", LeadingDropped),
            ("B", "2020-01-03", "close", LeadingDropped),
            ("B", "2020-01-05", "close", Filled),
        ]
    );
}

#[test]
fn ffill_never_carries_across_tickers_or_backwards() {
    // B's first row misses its close: A's last close must not reach it, nor B's own later close
    let rows = vec![
        ("A", 2, bar(10.0, 11.0, 1.0)),
        ("B", 2, with(bar(50.0, 51.0, 1.0), 3)),
        ("B", 3, bar(60.0, 61.0, 1.0)),
    ];
    let out = run(&rows, MissingPolicy::Ffill).unwrap();
    assert_eq!(column(&out.frame, CLOSE), vec![Some(11.0), Some(61.0)]);
    assert_eq!(
        actions(&out),
        vec![("B", "2020-01-02", "close", RepairAction::LeadingDropped)]
    );
}

#[test]
fn ffill_chains_over_consecutive_gaps_and_fills_adj_close_when_the_file_has_one() {
    let rows = vec![
        ("A", 2, bar(10.0, 11.0, 1.0)),
        ("A", 3, with(bar(11.0, 12.0, 1.0), 3)),
        ("A", 6, with(bar(12.0, 13.0, 1.0), 3)),
    ];
    let mut f = frame(&rows);
    f.with_column(Column::new(ADJ_CLOSE.into(), [Some(5.5), None, Some(6.5)]))
        .unwrap();
    let out = apply(
        f,
        MissingPolicy::Ffill,
        true,
        Path::new("p.csv"),
        RowUnit::Line,
    )
    .unwrap();
    assert_eq!(
        column(&out.frame, CLOSE),
        vec![Some(11.0), Some(11.0), Some(11.0)]
    );
    assert_eq!(
        column(&out.frame, ADJ_CLOSE),
        vec![Some(5.5), Some(5.5), Some(6.5)]
    );
    let fields: Vec<&str> = out.repairs.iter().map(|r| r.field.as_str()).collect();
    assert_eq!(fields, vec!["close", "adj_close", "close"]);
}
