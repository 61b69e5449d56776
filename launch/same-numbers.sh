#!/usr/bin/env bash
# Same seeds, same numbers: runs the seconds-long paper protocol of configs/paper/same-numbers.toml (every model
# kind on the bundled DJ30 data) and compares every job's metrics in results.csv with
# tests/golden/same-numbers.csv, timing columns excepted. A refactor that changes no behaviour passes.
#   bash launch/same-numbers.sh [--record] [--storm PATH]
# CPU kernels differ between processor models, so the golden file is valid for the machine kind that wrote it;
# record it from the code before a change, then compare after.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STORM_CACHE:-$HOME/.cache/storm}
STORM=${CARGO_TARGET_DIR:-$CACHE/target}/release/storm
GOLDEN=$ROOT/tests/golden/same-numbers.csv
record=0
while [ $# -gt 0 ]; do
  case "$1" in
    --record) record=1 ;;
    --storm) STORM=$2; shift ;;
    *) echo "usage: $0 [--record] [--storm PATH]" >&2; exit 2 ;;
  esac
  shift
done
[ -x "$STORM" ] || { echo "no storm binary at $STORM (bash launch/run.sh build)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$STORM" paper --config "$ROOT/configs/paper/same-numbers.toml" --data dj30 --out "$out/paper" \
  --workers cpu:2 >"$out/log" 2>&1 || { cat "$out/log" >&2; exit 1; }
# drop timing rows (train_seconds, train_samples_per_s) and sort, so only the numbers a model produced remain
python3 - "$out/paper/results.csv" "$out/numbers.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
timing = lambda m: m.endswith("_seconds") or m.endswith("_per_s")
rows = [r for r in rows if not timing(r["metric"])]
cols = sorted(rows[0])
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f, lineterminator="\n")
    w.writerow(cols)
    for r in sorted(rows, key=lambda r: (r["config"], r["metric"])):
        w.writerow([r[c] for c in cols])
PY
if [ $record = 1 ]; then
  mkdir -p "$(dirname "$GOLDEN")"
  cp "$out/numbers.csv" "$GOLDEN"
  echo "recorded $(($(wc -l <"$GOLDEN") - 1)) jobs into $GOLDEN"
  exit 0
fi
if diff -u "$GOLDEN" "$out/numbers.csv"; then
  echo "same numbers: every job's metrics equal $GOLDEN"
else
  echo "numbers differ from $GOLDEN (lines above)" >&2
  exit 1
fi
