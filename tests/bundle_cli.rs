//! End-to-end test of the relocatable bundle (`launch/bundle.sh`): unpacked elsewhere, its `bin/storm` runs
//! against a copy of the torch libraries in another directory, with no path into the build machine's venv;
//! the wrapper's errors; and `storm bench gpu` from the bundle (the skip path without a GPU, and the whole
//! harness on the CPU).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::s;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{cmd:?} did not start: {e}"))
}

fn check(out: &Output, what: &str) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{text}",
        out.status
    );
    text
}

/// The torch package directory of the `python3` on PATH (the build venv's in CI).
fn torch_site_packages() -> PathBuf {
    let out = run(Command::new("python3").args([
        "-c",
        "import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))",
    ]));
    check(&out, "python3 -c 'import torch'");
    // stdout only: torch may warn on stderr (no numpy in the venv)
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// A copy of torch/lib and nvidia/ under `dir` (hard links, or symbolic links across file systems), laid out
/// as in site-packages so libtorch's $ORIGIN-relative paths resolve inside the copy.
fn copy_torch(dir: &Path) -> PathBuf {
    let site = torch_site_packages();
    let copy = dir.join("site-packages");
    std::fs::create_dir_all(copy.join("torch")).unwrap();
    for (from, to) in [
        (site.join("torch/lib"), copy.join("torch/lib")),
        (site.join("nvidia"), copy.join("nvidia")),
    ] {
        let hard = run(Command::new("cp").arg("-al").arg(&from).arg(&to));
        if !hard.status.success() {
            let _ = std::fs::remove_dir_all(&to);
            check(
                &run(Command::new("cp").arg("-as").arg(&from).arg(&to)),
                "cp -as",
            );
        }
    }
    copy.join("torch/lib")
}

/// Packs the built binary with launch/bundle.sh (fast zstd level) into `dir`/dist; returns that directory.
fn pack_bundle(dir: &Path) -> PathBuf {
    let dist = dir.join("dist");
    let out = run(Command::new("bash")
        .arg(root().join("launch/bundle.sh"))
        .args([
            "--binary",
            env!("CARGO_BIN_EXE_storm"),
            "--out",
            &s(&dist),
            "--level",
            "1",
        ]));
    check(&out, "launch/bundle.sh");
    dist
}

fn unpack_bundle(dir: &Path) -> PathBuf {
    let dist = pack_bundle(dir);
    let archive = std::fs::read_dir(&dist)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with(".tar.zst"))
        .expect("bundle.sh wrote a .tar.zst");
    let unpacked = dir.join("unpacked");
    std::fs::create_dir_all(&unpacked).unwrap();
    check(
        &run(Command::new("tar")
            .arg("--zstd")
            .arg("-xf")
            .arg(&archive)
            .arg("-C")
            .arg(&unpacked)),
        "tar --zstd -xf",
    );
    let name = archive
        .file_name()
        .unwrap()
        .to_string_lossy()
        .trim_end_matches(".tar.zst")
        .to_string();
    unpacked.join(name)
}

#[test]
fn the_bundle_runs_on_a_copy_of_torch_and_its_gpu_check_skips_or_runs_on_the_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = unpack_bundle(dir.path());
    let torch_lib = copy_torch(dir.path());
    for part in [
        "bin/storm",
        "libexec/storm",
        "libexec/storm-core",
        "configs/dj30.toml",
        "monitoring",
        "README.md",
    ] {
        assert!(bundle.join(part).exists(), "the bundle has no {part}");
    }
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let storm = |args: &[&str]| -> Output {
        run(Command::new(bundle.join("bin/storm"))
            .args(args)
            .current_dir(&work)
            .env("STORM_LIBTORCH", &torch_lib)
            .env("STORM_PYTHON", "/nonexistent/python3")
            .env_remove("STORM_HOME")
            .env_remove("LD_LIBRARY_PATH"))
    };

    // the bare binaries carry no RUNPATH: without the wrapper storm-core cannot find libtorch at all
    let bare = run(Command::new(bundle.join("libexec/storm"))
        .arg("--version")
        .env_remove("LD_LIBRARY_PATH"));
    assert!(
        !bare.status.success(),
        "the bundled binary found libtorch without the wrapper"
    );
    // ... while `storm data` needs no libtorch: it runs in the front binary, which does not link it
    let synth = dir.path().join("bare-synth.csv");
    check(
        &run(Command::new(bundle.join("libexec/storm"))
            .args(["data", "synth", "--tickers", "2", "--days", "200", "--out"])
            .arg(&synth)
            .env_remove("LD_LIBRARY_PATH")),
        "bare storm data synth",
    );
    // with the wrapper's path every torch library resolves inside the copy
    let ldd = check(
        &run(Command::new("ldd")
            .arg(bundle.join("libexec/storm-core"))
            .env("LD_LIBRARY_PATH", &torch_lib)),
        "ldd",
    );
    for line in ldd
        .lines()
        .filter(|l| l.contains("libtorch") || l.contains("libc10"))
    {
        assert!(
            line.contains(&s(&torch_lib)),
            "resolved outside the copy: {line}"
        );
    }

    assert!(check(&storm(&["--version"]), "storm --version").contains(env!("CARGO_PKG_VERSION")));
    // the bundled DJ30 prices (inside the binary) with a shipped config; then a tiny model on a synthetic
    // market for training, eval and the GPU check's CPU harness, which keeps this test cheap
    let shipped = bundle.join("configs/dj30-small.toml");
    check(
        &storm(&[
            "data",
            "prepare",
            "--config",
            &s(&shipped),
            "--out",
            &s(&work.join("dj30")),
        ]),
        "data prepare",
    );
    let tiny = common::synth_config(&work, 6, 700, common::TINY_MODEL);
    let data = work.join("data");
    let run_dir = work.join("run");
    check(
        &storm(&["data", "prepare", "--config", &s(&tiny), "--out", &s(&data)]),
        "data prepare (synthetic)",
    );
    check(
        &storm(&[
            "pretrain",
            "--config",
            &s(&tiny),
            "--data",
            &s(&data),
            "--out",
            &s(&run_dir),
            "--max-steps",
            "2",
        ]),
        "pretrain",
    );
    check(&storm(&["eval", "--run", &s(&run_dir)]), "eval");
    assert!(run_dir.join("predictions_test.parquet").is_file());

    // no GPU here: the check says so and skips, or fails when a GPU is required
    let skip = check(
        &storm(&["bench", "gpu", "--out", &s(&work.join("skip"))]),
        "bench gpu (skip)",
    );
    assert!(skip.contains("skipped"), "{skip}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(work.join("skip/gpu-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["verdict"], "skipped");
    let required = storm(&[
        "bench",
        "gpu",
        "--require-gpu",
        "--out",
        &s(&work.join("required")),
    ]);
    assert!(!required.status.success());
    assert!(String::from_utf8_lossy(&required.stderr).contains("device"));

    // the whole harness on the CPU, through the bundle as it runs on a GPU machine
    let gpu_dir = work.join("gpu");
    let harness = storm(&[
        "bench",
        "gpu",
        "--device",
        "cpu",
        "--config",
        &s(&tiny),
        "--steps",
        "3",
        "--out",
        &s(&gpu_dir),
    ]);
    let text = check(&harness, "bench gpu --device cpu");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(gpu_dir.join("gpu-report.json")).unwrap())
            .unwrap();
    assert_eq!(report["verdict"], "passed", "{text}");
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["device", "train", "eval", "launch", "sweep"]);
    let train = &report["checks"][1]["values"];
    assert_eq!(
        train["fp32_max_rel_diff_vs_cpu"], 0.0,
        "the same seed on the same device differs: {train}"
    );
    assert_eq!(report["checks"][2]["values"]["min_daily_rank_corr"], 1.0);
    assert_eq!(report["checks"][3]["values"]["backend"], "tcp");
    assert_eq!(report["checks"][4]["values"]["jobs_evaluated"], 2);
    assert!(gpu_dir.join("gpu-report.md").is_file());
}

#[test]
fn gpu_check_sh_unpacks_the_bundle_and_reports_a_missing_gpu_as_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let dist = pack_bundle(dir.path());
    let report = dir.path().join("report");
    let out = run(Command::new("bash")
        .arg(root().join("launch/gpu-check.sh"))
        .args(["--report", &s(&report)])
        .env("STORM_DIST", &dist)
        .env_remove("OUT"));
    // this machine has no GPU and the default is --require-gpu
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("gpu-report.json")).unwrap())
            .unwrap();
    assert_eq!(json["verdict"], "failed");
    assert_eq!(json["checks"][0]["name"], "device");
    assert!(report.join("gpu-report.md").is_file() && report.join("gpu-check.log").is_file());
}

#[test]
fn the_wrapper_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    // the wrapper alone, with its version placeholder filled in as bundle.sh does
    let wrapper = dir.path().join("bin/storm");
    std::fs::create_dir_all(wrapper.parent().unwrap()).unwrap();
    let text = std::fs::read_to_string(root().join("launch/bundle/storm"))
        .unwrap()
        .replace("@TORCH_VERSION@", "2.11.0");
    std::fs::write(&wrapper, text).unwrap();
    let no_lib = run(Command::new("bash")
        .arg(&wrapper)
        .arg("--version")
        .env("STORM_LIBTORCH", "/nonexistent"));
    assert_eq!(no_lib.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&no_lib.stderr)
        .contains("STORM_LIBTORCH=/nonexistent holds no libtorch.so"));

    let fake = dir.path().join("python3");
    std::fs::write(
        &fake,
        "#!/bin/sh\nprintf '2.10.0+cpu\\n/somewhere/torch/lib\\n'\n",
    )
    .unwrap();
    check(&run(Command::new("chmod").arg("+x").arg(&fake)), "chmod");
    let old = run(Command::new("bash")
        .arg(&wrapper)
        .arg("--version")
        .env_remove("STORM_LIBTORCH")
        .env("STORM_PYTHON", &fake));
    assert_eq!(old.status.code(), Some(127));
    let err = String::from_utf8_lossy(&old.stderr);
    assert!(
        err.contains("has torch 2.10.0+cpu; this storm was built for torch 2.11.0"),
        "{err}"
    );

    let none = run(Command::new("bash")
        .arg(&wrapper)
        .arg("--version")
        .env_remove("STORM_LIBTORCH")
        .env("STORM_PYTHON", "/nonexistent/python3"));
    assert_eq!(none.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&none.stderr).contains("no libtorch"));
}
