//! Test support: run one test of this binary in a process of its own.
//!
//! libtorch's random generator is process-global and the test harness runs tests on parallel threads, so a test
//! that asserts two seeded runs agree bit for bit can see another test draw from the generator between its runs.
//! Such a test is marked `#[ignore]` and rerun alone by a companion test through [`run_alone`].

use std::process::Command;

/// Runs the ignored test `name` (its full path, e.g. `trading::task::tests::x`) in a fresh child process of the
/// current test binary, single-threaded, and panics with the child's output unless exactly that test passed.
pub fn run_alone(name: &str) {
    let exe = std::env::current_exe().expect("the test binary knows its own path");
    let out = Command::new(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .output()
        .expect("the test binary can rerun itself");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "`{name}` run alone failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
