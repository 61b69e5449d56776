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
