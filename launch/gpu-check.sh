#!/usr/bin/env bash
# The GPU acceptance check on a machine without Rust: unpack the bundle that `bash launch/run.sh bundle` wrote
# into dist/, run `bin/storm bench gpu`, and leave the report (and the logs, packed) in one directory.
#   bash launch/gpu-check.sh [--report DIR] [ARGS for storm bench gpu]   (default: --require-gpu)
#   STORM_DIST=DIR takes the bundle from DIR instead of dist/.
# On the project's device machine, with dist/ carried: bash launch/gpu-check.sh --report "$OUT"
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
report=${OUT:-$ROOT/runs/gpu-check}
if [ "${1:-}" = --report ]; then report=$2; shift 2; fi
[ $# -gt 0 ] || set -- --require-gpu
dist=${STORM_DIST:-$ROOT/dist}
archive=$(ls -t "$dist"/storm-*-linux-*.tar.zst 2>/dev/null | head -1)
[ -n "$archive" ] || { echo "gpu-check: no bundle in $dist (run: bash launch/run.sh bundle)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
tar --zstd -xf "$archive" -C "$work"
bundle=$(ls -d "$work"/storm-*/ | head -1)
mkdir -p "$report"
command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >"$report/nvidia-smi.txt" 2>&1 || true
status=0
"$bundle/bin/storm" bench gpu --out "$work/check" "$@" 2>&1 | tee "$report/gpu-check.log" || status=$?
# the report and the logs only: the runs (checkpoints, data) stay behind
cp "$work/check/gpu-report.md" "$work/check/gpu-report.json" "$report/" 2>/dev/null || true
[ -d "$work/check/logs" ] && tar -C "$work/check" -czf "$report/gpu-logs.tar.gz" logs
echo "gpu-check: report in $report (exit $status)" >&2
exit "$status"
