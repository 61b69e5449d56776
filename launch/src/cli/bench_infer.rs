//! `storm bench infer`: latency of one prediction (no gradient) of a model config on random windows — the
//! serving path (one day's cross-section, B = 1, by default).

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use storm_shared::model::{build_model, parameter_count};
use tch::{nn, Kind, Tensor};

use super::home::shipped_config;

#[derive(Args)]
pub struct InferBenchArgs {
    /// Model config (default: the shipped paper config, configs/dj30.toml).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Override a config value, e.g. --set model.ts_patch=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Windows per call.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Timed calls (after 3 warm-up calls); the median is reported.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub fn run(a: InferBenchArgs) -> Result<()> {
    if a.batch == 0 || a.calls == 0 {
        bail!("--batch and --calls must be at least 1");
    }
    let device = super::train::parse_device(&a.device)?;
    let path = a
        .config
        .clone()
        .map_or_else(|| shipped_config("dj30.toml"), Ok)?;
    let cfg = super::data::load_config(Some(&path), &a.overrides)?;
    let (b, w, n, d) = (a.batch as i64, cfg.data.window as i64, 29i64, 152i64);
    tch::manual_seed(0);
    let vs = nn::VarStore::new(device);
    let model = build_model(&vs.root(), &cfg, n, d, w)?;
    let x = Tensor::randn([b, w, n, d], (Kind::Float, device));
    let call = || {
        let scores = tch::no_grad(|| model.predict(&x));
        // reading the result back is part of serving one prediction (and synchronises CUDA)
        let _ = scores.sum(Kind::Float).double_value(&[]);
    };
    for _ in 0..3 {
        call();
    }
    let mut ms: Vec<f64> = (0..a.calls)
        .map(|_| {
            let start = Instant::now();
            call();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    println!("| config | params | batch | device | threads | median ms/call | min ms |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| {} | {:.2} M | {b} | {} | {} | {:.1} | {:.1} |",
        path.display(),
        parameter_count(&vs) as f64 / 1e6,
        a.device,
        tch::get_num_threads(),
        ms[ms.len() / 2],
        ms[0]
    );
    Ok(())
}
