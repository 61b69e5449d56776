//! `storm bench train`: time of one optimizer step (forward, backward, clipping, AdamW) of the shipped model
//! configs, or of any config and batch, on random windows.

use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;

use super::home::shipped_config;

#[derive(Args)]
pub struct TrainBenchArgs {
    /// Timed optimizer steps per case (after one warm-up step).
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also time bf16 autocast (CUDA only).
    #[arg(long)]
    pub bf16: bool,
    /// Time only this config (any shape) instead of the shipped ones.
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
    /// Override a value of --config, e.g. --set model.ts_patch=4 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE", requires = "config")]
    pub overrides: Vec<String>,
    /// Batch size (default: each config's train.batch_size).
    #[arg(long)]
    pub batch: Option<usize>,
}

/// (name, config, bf16) of every shipped model config `storm bench train` times by default.
fn shipped_train_cases() -> Result<Vec<(String, std::path::PathBuf, bool)>> {
    let named = [
        ("paper", "dj30.toml"),
        ("small", "dj30-small.toml"),
        ("FactorVAE", "factorvae.toml"),
        ("HireVAE", "hirevae.toml"),
        ("LSTM", "lstm.toml"),
        ("GRU", "gru.toml"),
        ("Transformer", "transformer.toml"),
        ("CAFactor", "cafactor.toml"),
    ];
    named
        .iter()
        .map(|(name, file)| {
            Ok((
                format!("{name} (configs/{file})"),
                shipped_config(file)?,
                false,
            ))
        })
        .collect()
}

pub fn run(a: TrainBenchArgs) -> Result<()> {
    use storm_shared::model::{build_model, parameter_count};
    use storm_shared::train::optimizer::{AdamW, AdamWConfig};
    use tch::{nn, Kind, Tensor};

    let device = super::train::parse_device(&a.device)?;
    let mut cases = match &a.config {
        Some(path) => vec![(path.display().to_string(), path.clone(), false)],
        None => shipped_train_cases()?,
    };
    if a.bf16 {
        let paper = a
            .config
            .clone()
            .map_or_else(|| shipped_config("dj30.toml"), Ok)?;
        cases.push((format!("{}, bf16 autocast", paper.display()), paper, true));
    }
    if a.batch == Some(0) {
        bail!("--batch must be at least 1");
    }
    println!("| config | params | batch | ms/step | samples/s | peak GPU memory |");
    println!("|---|---|---|---|---|---|");
    for (name, path, bf16) in cases {
        let overrides = if a.config.is_some() {
            &a.overrides[..]
        } else {
            &[]
        };
        let cfg = super::data::load_config(Some(&path), overrides)?;
        let (b, w, n, d) = (
            a.batch.unwrap_or(cfg.train.batch_size) as i64,
            cfg.data.window as i64,
            29i64,
            152i64,
        );
        tch::manual_seed(0);
        let vs = nn::VarStore::new(device);
        let model = build_model(&vs.root(), &cfg, n, d, w)?;
        let mut opt = AdamW::new(
            &vs,
            AdamWConfig {
                beta1: 0.9,
                beta2: 0.95,
                eps: 1e-8,
                weight_decay: 0.05,
            },
        );
        let x = Tensor::randn([b, w, n, d], (Kind::Float, device));
        let y = Tensor::randn([b, n], (Kind::Float, device));
        let mut step = || {
            let out = tch::autocast(bf16, || model.forward_loss(&x, &y, &cfg.train));
            let loss = out.loss;
            opt.zero_grad();
            loss.backward();
            opt.clip_grad_norm(1.0);
            opt.step(1e-4);
            let _ = loss.double_value(&[]);
        };
        step();
        if let tch::Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        let start = Instant::now();
        for _ in 0..a.steps.max(1) {
            step();
        }
        if let tch::Device::Cuda(_) = device {
            tch::Cuda::synchronize(0);
        }
        let ms = start.elapsed().as_secs_f64() * 1e3 / a.steps.max(1) as f64;
        let memory = match device {
            tch::Device::Cuda(_) => {
                gpu_memory_of(std::process::id()).map_or("n/a".into(), |m| format!("{m:.0} MiB"))
            }
            _ => "-".to_string(),
        };
        println!(
            "| {name} | {:.2} M | {b} | {ms:.1} | {:.1} | {memory} |",
            parameter_count(&vs) as f64 / 1e6,
            b as f64 * 1e3 / ms
        );
    }
    Ok(())
}

/// GPU memory (MiB) of process `pid` from nvidia-smi (telemetry's reading); torch's caching allocator keeps
/// what the peak needed, so after the timed steps this is the peak reserved.
pub fn gpu_memory_of(pid: u32) -> Option<f64> {
    storm_shared::telemetry::process_gpu_memory(pid).map(|bytes| bytes / (1024.0 * 1024.0))
}
