//! Which binary runs a command line: `storm data …` runs in `storm` itself (no libtorch); everything else
//! in `storm-core`, found beside the running binary.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use anyhow::{Context, Result};

/// The full binary's file name.
pub const CORE_BINARY: &str = "storm-core";

/// Global options that take a value as the next argument (`--log-format json`).
const VALUED_GLOBALS: [&str; 3] = ["--log-format", "--metrics-addr", "--metrics-linger"];
/// Global options that `storm data` does not have: a line with one runs in `storm-core`.
const CORE_GLOBALS: [&str; 2] = ["--metrics-addr", "--metrics-linger"];

/// Whether `args` (with argv[0]) is a `storm data …` command line that this binary runs itself.
pub fn runs_here(args: &[OsString]) -> bool {
    let args: Vec<_> = args.iter().skip(1).map(|a| a.to_string_lossy()).collect();
    // a metrics option anywhere (it is global: `storm data prepare --metrics-addr :9000`) needs storm-core
    if args
        .iter()
        .any(|a| CORE_GLOBALS.contains(&a.split('=').next().unwrap_or_default()))
    {
        return false;
    }
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg.starts_with('-') {
            if VALUED_GLOBALS.contains(&arg.as_ref()) {
                rest.next();
            }
            continue;
        }
        return arg == "data";
    }
    false
}

/// `storm-core` beside the running binary.
pub fn core_path() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the storm binary")?;
    Ok(exe.with_file_name(CORE_BINARY))
}

/// Replaces this process with `storm-core` and the same arguments; returns only on failure.
pub fn become_core(args: &[OsString]) -> anyhow::Error {
    use std::os::unix::process::CommandExt;
    let core = match core_path() {
        Ok(core) => core,
        Err(e) => return e,
    };
    if !core.is_file() {
        return anyhow::anyhow!(
            "{} is missing: `storm` runs every command but `storm data` in {CORE_BINARY}, which must sit \
             beside it (cargo build --release --workspace --bins builds both; the bundle ships both)",
            core.display()
        );
    }
    let arg0 = args.first().map_or(OsStr::new("storm"), |a| a.as_os_str());
    let err = std::process::Command::new(&core)
        .arg0(arg0)
        .args(args.iter().skip(1))
        .exec();
    anyhow::Error::new(err).context(format!("starting {}", core.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Vec<OsString> {
        s.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn data_commands_run_here_and_the_rest_in_core() {
        assert!(runs_here(&line("storm data prepare --out x")));
        assert!(runs_here(&line(
            "storm -vv --log-format json data describe --data x"
        )));
        assert!(runs_here(&line(
            "storm --log-format=json data synth --out x"
        )));
        assert!(runs_here(&line("storm data --help")));
        assert!(!runs_here(&line(
            "storm pretrain --config c --data d --out o"
        )));
        assert!(!runs_here(&line("storm --version")));
        assert!(!runs_here(&line("storm")));
        assert!(!runs_here(&line("storm --log-format data pretrain")));
        assert!(!runs_here(&line(
            "storm --metrics-addr :9000 data prepare --out x"
        )));
        assert!(!runs_here(&line(
            "storm --metrics-addr=:9000 data prepare --out x"
        )));
    }
}
