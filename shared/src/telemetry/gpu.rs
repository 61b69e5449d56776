//! GPU memory of this process. tch exposes no CUDA allocator statistics, so the number comes from
//! `nvidia-smi --query-compute-apps` (memory held by the process, CUDA context and torch's cache included),
//! sampled by a background thread. Where nvidia-smi is missing or does not list the process, the gauge is
//! never set — no value is made up.

use std::process::Command;
use std::time::Duration;

/// Memory (bytes) nvidia-smi reports for process `pid`, summed over its GPUs; None when unavailable.
pub fn process_gpu_memory(pid: u32) -> Option<f64> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-compute-apps=pid,used_memory",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_compute_apps(&String::from_utf8_lossy(&out.stdout), pid)
}

/// Sums the MiB column of `pid`'s rows of `nvidia-smi --query-compute-apps=pid,used_memory` output.
fn parse_compute_apps(text: &str, pid: u32) -> Option<f64> {
    let me = pid.to_string();
    let mib: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(',').map(str::trim);
            (parts.next()? == me).then(|| parts.next()?.parse::<f64>().ok())?
        })
        .collect();
    (!mib.is_empty()).then(|| mib.iter().sum::<f64>() * 1024.0 * 1024.0)
}

/// Samples every `period` and passes each reading to `set`, for the life of the process.
pub fn spawn_sampler(period: Duration, set: impl Fn(f64) + Send + 'static) {
    let pid = std::process::id();
    let spawned = std::thread::Builder::new()
        .name("storm-gpu-memory".into())
        .spawn(move || loop {
            if let Some(bytes) = process_gpu_memory(pid) {
                set(bytes);
            }
            std::thread::sleep(period);
        });
    if let Err(e) = spawned {
        tracing::warn!("GPU memory sampling not started: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_rows_of_this_process_only() {
        let text = "123, 500\n4567, 1024\n123, 12\n";
        assert_eq!(parse_compute_apps(text, 123), Some(512.0 * 1024.0 * 1024.0));
        assert_eq!(
            parse_compute_apps(text, 4567),
            Some(1024.0 * 1024.0 * 1024.0)
        );
        assert_eq!(parse_compute_apps(text, 9), None);
        assert_eq!(parse_compute_apps("", 9), None);
    }
}
