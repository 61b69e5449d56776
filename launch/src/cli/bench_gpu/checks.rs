//! The checks of `storm bench gpu`, in order: device facts; training in fp32 and bf16 next to a CPU run of
//! the same seed; eval on the device against eval on the CPU for one checkpoint; `storm launch` at world size
//! 1 with the NCCL backend (TCP on the CPU) and the all-reduce time of the paper gradient; a 2-job sweep.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use storm_shared::portfolio::market::Market;
use storm_shared::stats::rank_ic::spearman;

use super::report::{Check, Report};
use super::Harness;

/// fp32 losses on the device must match the CPU's to this relative difference.
const FP32_TOLERANCE: f64 = 1e-3;
/// Per-day rank correlation of device and CPU predictions must reach this.
const EVAL_MIN_RANK_CORR: f64 = 0.999;
/// Steps compared with the CPU run (each is slow on the CPU at the paper's shapes).
const CPU_STEPS: u64 = 3;

pub fn device_facts() -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    f.insert(
        "cuda_available".into(),
        tch::Cuda::is_available().to_string(),
    );
    f.insert("cuda_devices".into(), tch::Cuda::device_count().to_string());
    f.insert(
        "cudnn_available".into(),
        tch::Cuda::cudnn_is_available().to_string(),
    );
    let torch = std::env::var("STORM_TORCH_VERSION")
        .unwrap_or_else(|_| "unknown (not started by the bundle's bin/storm)".into());
    f.insert("torch".into(), torch);
    let nccl = storm_shared::distributed::nccl::library_version();
    f.insert("nccl".into(), nccl.unwrap_or_else(|| "not found".into()));
    if let Some(smi) = nvidia_smi() {
        f.extend(smi);
    }
    f
}

fn nvidia_smi() -> Option<BTreeMap<String, String>> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=name,memory.total,driver_version",
            "--format=csv,noheader",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?;
    let parts: Vec<&str> = first.split(',').map(str::trim).collect();
    let [name, memory, driver] = parts.as_slice() else {
        return None;
    };
    Some(BTreeMap::from([
        ("gpu".to_string(), name.to_string()),
        ("gpu_memory".to_string(), memory.to_string()),
        ("driver".to_string(), driver.to_string()),
    ]))
}

pub fn device_check(facts: &BTreeMap<String, String>, cuda: bool) -> Check {
    let values = facts.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let detail = if cuda {
        format!(
            "{} CUDA device(s), NCCL {}",
            facts["cuda_devices"], facts["nccl"]
        )
    } else {
        "CPU harness run (--device cpu): the same checks without a GPU".to_string()
    };
    Check::passed("device", detail, values, 0.0)
}

/// Runs every check after the device facts; a check that fails is recorded and the next one still runs
/// (eval needs the fp32 run of the training check and is failed with it).
pub fn run_all(h: &Harness, report: &mut Report) {
    let trained = timed(report, "train", || train(h));
    if trained {
        timed(report, "eval", || eval(h));
    } else {
        report.push(Check::failed(
            "eval",
            "skipped: needs the fp32 run of the train check",
        ));
    }
    timed(report, "launch", || launch(h));
    timed(report, "sweep", || sweep(h));
}

/// Runs `f` as check `name`; returns whether it passed.
fn timed(
    report: &mut Report,
    name: &'static str,
    f: impl FnOnce() -> Result<(String, BTreeMap<String, Value>)>,
) -> bool {
    let start = Instant::now();
    let check = match f() {
        Ok((detail, values)) => Check::passed(name, detail, values, start.elapsed().as_secs_f64()),
        Err(e) => Check::failed(name, &format!("{e:#}")),
    };
    let passed = check.is_passed();
    eprintln!("[bench gpu] {name}: {}", check.status_word());
    report.push(check);
    passed
}

fn s(v: impl ToString) -> String {
    v.to_string()
}

fn pretrain_args(h: &Harness, out: &str, device: &str, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        s("pretrain"),
        s("--config"),
        s(h.config.display()),
        s("--data"),
        s(h.work.join("data").display()),
        s("--out"),
        s(h.work.join(out).display()),
        s("--device"),
        s(device),
        s("--seed"),
        s(0),
        s("--max-steps"),
        s(steps),
        s("--set"),
        s("train.log_every=1"),
    ];
    args.extend(extra.iter().map(s));
    args
}

fn train(h: &Harness) -> Result<(String, BTreeMap<String, Value>)> {
    let data = h.work.join("data");
    let prepare = [
        s("data"),
        s("prepare"),
        s("--config"),
        s(h.config.display()),
        s("--out"),
        s(data.display()),
    ];
    h.storm("prepare", &prepare, &[])?;
    // losses: the first steps of real training, on the CPU and on the device, from the same seed
    let steps = CPU_STEPS.min(h.steps);
    h.storm(
        "train-cpu",
        &pretrain_args(h, "train-cpu", "cpu", steps, &[]),
        &[],
    )?;
    let reference = losses(&h.work.join("train-cpu"))?;
    let mut values = BTreeMap::from([("cpu_first_losses".to_string(), json!(reference))]);
    let mut precisions = vec![("fp32", vec![])];
    if h.cuda {
        precisions.push(("bf16", vec!["--set", "train.bf16=true"]));
    }
    let mut detail = Vec::new();
    for (precision, extra) in &precisions {
        let out = format!("train-{precision}");
        h.storm(&out, &pretrain_args(h, &out, &h.device, steps, extra), &[])?;
        let run = h.work.join(&out);
        let losses = losses(&run)?;
        if let Some(bad) = losses.iter().find(|l| !l.is_finite()) {
            bail!(
                "{precision}: a non-finite loss ({bad}) in {}",
                run.join("losses.csv").display()
            );
        }
        let diff = max_relative_difference(&losses, &reference);
        values.insert(format!("{precision}_first_losses"), json!(losses));
        values.insert(format!("{precision}_max_rel_diff_vs_cpu"), json!(diff));
        if *precision == "fp32" && diff > FP32_TOLERANCE {
            bail!("fp32 losses differ from the CPU's by {diff:.2e} relative (tolerance {FP32_TOLERANCE:.0e}): {losses:?} vs {reference:?}");
        }
        detail.push(format!("{precision} rel. diff vs CPU {diff:.1e}"));
    }
    // speed: `storm bench train` times the optimizer step alone (no data loading, no validation)
    let mut bench = vec![
        s("bench"),
        s("train"),
        s("--config"),
        s(h.config.display()),
        s("--steps"),
        s(h.steps),
        s("--device"),
        s(&h.device),
    ];
    if h.cuda {
        bench.push(s("--bf16"));
    }
    let timed = h.storm("bench-train", &bench, &[])?;
    values.insert(
        "bench_train_peak_gpu_mib_sampled".into(),
        json!(timed.peak_mib),
    );
    let text = std::fs::read_to_string(&timed.log)?;
    let rows = bench_train_rows(&text);
    if rows.len() != precisions.len() {
        bail!(
            "storm bench train printed {} timing row(s), expected {} (see {})",
            rows.len(),
            precisions.len(),
            timed.log.display()
        );
    }
    for ((precision, _), (ms, samples, memory)) in precisions.iter().zip(rows) {
        values.insert(format!("{precision}_ms_per_step"), json!(ms));
        values.insert(format!("{precision}_samples_per_s"), json!(samples));
        values.insert(format!("{precision}_peak_gpu_memory"), json!(memory));
        detail.push(format!(
            "{precision} {ms:.1} ms/step, {samples:.1} samples/s, {memory}"
        ));
    }
    Ok((detail.join("; "), values))
}

/// (ms/step, samples/s, peak memory) of each table row `storm bench train` printed.
fn bench_train_rows(text: &str) -> Vec<(f64, f64, String)> {
    text.lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| config"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            Some((
                cells.get(4)?.parse().ok()?,
                cells.get(5)?.parse().ok()?,
                cells.get(6)?.to_string(),
            ))
        })
        .collect()
}

/// The `loss` column of a run's losses.csv, one value per logged step.
fn losses(run: &Path) -> Result<Vec<f64>> {
    let path = run.join("losses.csv");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    let col = header
        .iter()
        .position(|c| *c == "loss")
        .with_context(|| format!("{} has no loss column", path.display()))?;
    lines
        .map(|line| {
            let cell = line.split(',').nth(col).unwrap_or_default();
            cell.parse::<f64>()
                .with_context(|| format!("{}: bad loss `{cell}`", path.display()))
        })
        .collect()
}

/// max |a − b| / |b| over the common prefix.
fn max_relative_difference(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / y.abs().max(1e-12))
        .fold(0.0, f64::max)
}

fn eval(h: &Harness) -> Result<(String, BTreeMap<String, Value>)> {
    let run = h.work.join("train-fp32");
    let eval_on = |device: &str| -> Result<Market> {
        let args = [
            s("eval"),
            s("--run"),
            s(run.display()),
            s("--checkpoint"),
            s("last"),
            s("--device"),
            s(device),
        ];
        h.storm(&format!("eval-{}", device.replace(':', "")), &args, &[])?;
        let path = run.join("predictions_test.parquet");
        Ok(Market::load_predictions(&path, 0.0)?)
    };
    let on_device = eval_on(&h.device)?;
    let on_cpu = eval_on("cpu")?;
    let corr = daily_rank_correlations(&on_device, &on_cpu)?;
    let min = corr.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = corr.iter().sum::<f64>() / corr.len() as f64;
    let values = BTreeMap::from([
        ("days".to_string(), json!(corr.len())),
        ("min_daily_rank_corr".to_string(), json!(min)),
        ("mean_daily_rank_corr".to_string(), json!(mean)),
    ]);
    if min < EVAL_MIN_RANK_CORR {
        bail!("device and CPU predictions rank-correlate only {min:.5} on the worst of {} days (need ≥ {EVAL_MIN_RANK_CORR})", corr.len());
    }
    Ok((
        format!(
            "{} test days, worst daily rank correlation {min:.5}",
            corr.len()
        ),
        values,
    ))
}

/// Spearman correlation of the two markets' scores, day by day (days with fewer than 2 common scores
/// skipped); an error when the files cover different days or stocks.
fn daily_rank_correlations(a: &Market, b: &Market) -> Result<Vec<f64>> {
    if a.dates != b.dates || a.tickers != b.tickers {
        bail!("device and CPU predictions cover different days or stocks");
    }
    let n = a.n_tickers();
    let mut out = Vec::new();
    for day in 0..a.dates.len() {
        let (x, y): (Vec<f64>, Vec<f64>) = (day * n..(day + 1) * n)
            .filter_map(|i| Some((a.scores[i]?, b.scores[i]?)))
            .unzip();
        if x.len() >= 2 {
            out.push(spearman(&x, &y).unwrap_or(f64::NAN));
        }
    }
    if out.is_empty() {
        bail!("no day has two scored stocks in both prediction files");
    }
    Ok(out)
}

fn launch(h: &Harness) -> Result<(String, BTreeMap<String, Value>)> {
    let backend = if h.cuda { "nccl" } else { "tcp" };
    let env = [("STORM_DIST_BACKEND", backend)];
    let launch = [s("launch"), s("--nproc-per-node"), s(1), s("--")];
    let mut train = launch.to_vec();
    train.extend(pretrain_args(
        h,
        "launch-train",
        &h.device,
        h.steps.min(5),
        &[],
    ));
    let trained = h.storm("launch-pretrain", &train, &env)?;
    let mut bench = launch.to_vec();
    bench.extend([
        s("bench"),
        s("allreduce"),
        s("--iters"),
        s(10),
        s("--device"),
        s(&h.device),
    ]);
    let reduced = h.storm("launch-allreduce", &bench, &env)?;
    let text = std::fs::read_to_string(&reduced.log)?;
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with(&format!("| {backend} |")))
        .collect();
    if rows.is_empty() {
        bail!(
            "the all-reduce benchmark printed no `{backend}` row (see {})",
            reduced.log.display()
        );
    }
    let ms: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.split('|').nth(6)?.trim().parse().ok())
        .collect();
    let values = BTreeMap::from([
        ("backend".to_string(), json!(backend)),
        ("pretrain_seconds".to_string(), json!(trained.seconds)),
        ("allreduce_ms_flat_and_bucketed".to_string(), json!(ms)),
        ("allreduce_table".to_string(), json!(rows.join("\n"))),
    ]);
    Ok((
        format!(
            "world size 1 over {backend}: pretrain ran; all-reduce of the paper gradient {ms:?} ms"
        ),
        values,
    ))
}

fn sweep(h: &Harness) -> Result<(String, BTreeMap<String, Value>)> {
    let config = h.work.join("sweep.toml");
    let text = format!(
        "# written by storm bench gpu: two jobs (two seeds) of the checked config\n\
         base = {base:?}\nseeds = [0, 1]\nmax_steps = {steps}\n\
         set = [\"train.epochs=1\", \"train.warmup_epochs=0\"]\ntasks = [\"eval\"]\n",
        base = h.config.display().to_string(),
        steps = h.steps.min(5),
    );
    std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    let out = h.work.join("sweep");
    let args = [
        s("sweep"),
        s("--config"),
        s(config.display()),
        s("--out"),
        s(out.display()),
        s("--devices"),
        s(&h.device),
    ];
    let child = h.storm("sweep", &args, &[])?;
    let evaluated = count_files(&out, "eval_test.json");
    if evaluated < 2 {
        bail!(
            "the sweep finished but only {evaluated} of 2 jobs wrote eval_test.json under {}",
            out.display()
        );
    }
    let values = BTreeMap::from([
        ("jobs_evaluated".to_string(), json!(evaluated)),
        ("seconds".to_string(), json!(child.seconds)),
    ]);
    Ok((
        format!("2 jobs on {} in {:.0} s", h.device, child.seconds),
        values,
    ))
}

fn count_files(dir: &Path, name: &str) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| e.path())
        .map(|p| {
            if p.is_dir() {
                count_files(&p, name)
            } else {
                usize::from(p.file_name().is_some_and(|f| f == name))
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bench_train_rows_are_read_from_its_table() {
        let text = "noise\n| config | params | batch | ms/step | samples/s | peak GPU memory |\n|---|---|---|---|---|---|\n\
                    | a.toml | 1.00 M | 32 | 120 | 266.7 | 900 MiB |\n| a.toml, bf16 autocast | 1.00 M | 32 | 60 | 533.3 | 700 MiB |\n";
        let rows = bench_train_rows(text);
        assert_eq!(
            rows,
            vec![
                (120.0, 266.7, "900 MiB".to_string()),
                (60.0, 533.3, "700 MiB".to_string())
            ]
        );
    }

    #[test]
    fn relative_difference_is_taken_over_the_common_prefix() {
        let d = max_relative_difference(&[1.0, 2.002, 9.0], &[1.0, 2.0]);
        assert!((d - 1e-3).abs() < 1e-12, "{d}");
        assert_eq!(max_relative_difference(&[], &[1.0]), 0.0);
    }

    #[test]
    fn daily_rank_correlation_is_one_for_a_monotone_transform_and_minus_one_reversed() {
        let date = |d| chrono::NaiveDate::from_ymd_opt(2020, 1, d).unwrap();
        let market = |scores: Vec<Option<f64>>| Market {
            dates: vec![date(1), date(2)],
            tickers: vec!["A".into(), "B".into(), "C".into()],
            labels: vec![None; scores.len()],
            scores,
        };
        let a = market(vec![
            Some(1.0),
            Some(2.0),
            Some(3.0),
            Some(0.1),
            None,
            Some(0.2),
        ]);
        let b = market(vec![
            Some(10.0),
            Some(20.0),
            Some(30.0),
            Some(0.2),
            Some(5.0),
            Some(0.1),
        ]);
        let corr = daily_rank_correlations(&a, &b).unwrap();
        assert_eq!(corr.len(), 2);
        assert!((corr[0] - 1.0).abs() < 1e-12);
        assert!((corr[1] + 1.0).abs() < 1e-12);
        let mut other = market(vec![None; 6]);
        other.tickers[2] = "D".into();
        assert!(daily_rank_correlations(&a, &other).is_err());
    }
}
