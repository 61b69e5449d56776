//! Helpers shared by the end-to-end tests: run the `storm` binary and inspect what it wrote.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn storm(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_storm"))
        .args(args)
        .output()
        .expect("the storm binary runs")
}

pub fn ok(args: &[&str]) -> String {
    let out = storm(args);
    assert!(
        out.status.success(),
        "storm {} failed:\n{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Runs a command that must fail; returns its stderr.
pub fn fails(args: &[&str]) -> String {
    let out = storm(args);
    assert!(
        !out.status.success(),
        "storm {} unexpectedly succeeded",
        args.join(" ")
    );
    String::from_utf8_lossy(&out.stderr).to_string()
}

pub fn s(p: &Path) -> String {
    p.to_string_lossy().to_string()
}

pub fn path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// Writes a synthetic market `dir/m.csv.gz` (seed 5) and a config `dir/tiny.toml` over it with 16-day
/// windows and splits train 2000–2001, valid 2002-Q1, test 2002-04..2003; `rest` is appended (e.g. [model]
/// and [train] tables).
pub fn synth_config(dir: &Path, tickers: usize, days: usize, rest: &str) -> PathBuf {
    ok(&[
        "data",
        "synth",
        "--out",
        &s(&path(dir, "m.csv.gz")),
        "--tickers",
        &tickers.to_string(),
        "--days",
        &days.to_string(),
        "--seed",
        "5",
    ]);
    let cfg = path(dir, "tiny.toml");
    let head = r#"
name = "tiny"
[data]
source = "m.csv.gz"
window = 16
scaler_window = 32
[splits]
train = { start = "2000-01-01", end = "2001-12-31" }
valid = { start = "2002-01-01", end = "2002-03-31" }
test  = { start = "2002-04-01", end = "2003-12-31" }
"#;
    std::fs::write(&cfg, format!("{head}{rest}")).expect("writing the test config");
    cfg
}

/// The tests' tiny STORM (a few hundred parameters per block) and the start of its `[train]` table; callers
/// append further `[train]` keys.
pub const TINY_MODEL: &str = r#"
[model]
patch_days = 4
embed_dim = 16
encoder_depth = 1
encoder_heads = 2
decoder_depth = 1
decoder_heads = 2
mlp_ratio = 2
codebook_size = 8
cs_stem_dim = 4
factor_hidden = 8
factor_count = 4
portfolio_count = 4
diversity_temperature = 16.0
dead_code_steps = 5
[train]
batch_size = 8
epochs = 3
warmup_epochs = 1
lr = 1e-3
"#;

/// Processes whose command line mentions `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                found.push(format!("{}: {cmd}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}
