#!/usr/bin/env bash
# Issue 19's fit experiment: trains each variant below on the bundled DJ30 data for each seed, then evaluates the
# last and the best-on-valid checkpoint on train, valid and test. One CSV row per (variant, seed, checkpoint, split)
# goes to <out>/fit.csv; rerunning skips finished runs (a killed run is resumed).
#   bash launch/experiments/storm-fit.sh --out runs/fit [--epochs 20] [--seeds "7 8 9"] [--only NAME,...] [--storm PATH]
#     [--set KEY=VALUE ...]   (overrides for every run, after the variant's own)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CACHE=${STORM_CACHE:-$HOME/.cache/storm}
STORM=${CARGO_TARGET_DIR:-$CACHE/target}/release/storm
out="" epochs=20 seeds="7" only="" extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out=$2; shift ;;
    --epochs) epochs=$2; shift ;;
    --seeds) seeds=$2; shift ;;
    --only) only=$2; shift ;;
    --storm) STORM=$2; shift ;;
    --set) extra+=(--set "$2"); shift ;;
    *) echo "usage: $0 --out DIR [--epochs N] [--seeds \"S ...\"] [--only NAME,...] [--storm PATH] [--set KEY=VALUE ...]" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$out" ] || { echo "--out is required" >&2; exit 2; }
[ -x "$STORM" ] || { echo "no storm binary at $STORM (bash launch/run.sh build)" >&2; exit 2; }
mkdir -p "$out"
C=$ROOT/configs
# name | config | --set overrides (space-separated)
variants=(
  # dj30-small as shipped before issue 19 (mean pooling, mean reconstruction, H = 32)
  "storm-mean|$C/experiments/storm-small-mean.toml|"
  # dj30-small as shipped now (attention pooling, squared-norm reconstruction, H = 256)
  "storm-small|$C/dj30-small.toml|"
  "factorvae|$C/factorvae.toml|"
  "storm-attention|$C/experiments/storm-stock.toml|model.reconstruction=mean"
  "gru|$C/gru.toml|"
  "storm-attention-noid|$C/experiments/storm-stock.toml|model.reconstruction=mean model.stock_embedding=none"
  "storm-attention-sqnorm|$C/experiments/storm-stock.toml|"
  # ablations of the in-sample fit: only the factor losses (NLL + KL) train the encoders; a wider factor
  # head (FactorVAE's 128, and 256); a 3x larger learning rate; a wider encoder with the wider head
  "storm-nll-only|$C/experiments/storm-stock.toml|train.loss_weight_clip=0 train.loss_weight_recon_ts=0 train.loss_weight_recon_cs=0 train.loss_weight_commit=0 train.loss_weight_orthogonal=0 train.loss_weight_diversity=0"
  "storm-head128|$C/experiments/storm-stock.toml|model.factor_hidden=128"
  "storm-lr3e-3|$C/experiments/storm-stock.toml|train.lr=3e-3"
  "storm-head256|$C/experiments/storm-stock.toml|model.factor_hidden=256"
  "storm-head128-embed128|$C/experiments/storm-stock.toml|model.factor_hidden=128 model.embed_dim=128"
  # the wide head with FactorVAE's KL weight (γ = 0.01 instead of the small config's 0.1)
  "storm-head256-kl0.01|$C/experiments/storm-stock.toml|model.factor_hidden=256 train.loss_weight_kl=0.01"
  # the wide head without stock identity (TS tokens carry no per-stock position)
  "storm-head256-noid|$C/experiments/storm-stock.toml|model.factor_hidden=256 model.stock_embedding=none"
  # the zero-training reference factors (nothing is trained: seconds)
  "reversal-1d|$C/dj30-small.toml|model.kind=reference model.reference=reversal_1d"
  "momentum-20d|$C/dj30-small.toml|model.kind=reference model.reference=momentum_20d"
)
data=$out/data
if [ ! -f "$data/manifest.json" ]; then
  "$STORM" data prepare --config "$C/dj30-small.toml" --out "$data" >"$out/data.log" 2>&1 \
    || { cat "$out/data.log" >&2; exit 1; }
fi
csv=$out/fit.csv
[ -f "$csv" ] || echo "variant,seed,epochs,checkpoint,checkpoint_step,split,rank_ic,rank_icir,ic,n_days" >"$csv"
for v in "${variants[@]}"; do
  IFS='|' read -r name config sets <<<"$v"
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then continue; fi
  for seed in $seeds; do
    run=$out/$name-s$seed
    if grep -q "^$name,$seed,$epochs," "$csv"; then echo "done: $run"; continue; fi
    args=(--config "$config" --out "$run" --data "$data" --seed "$seed" --set "train.epochs=$epochs")
    for s in $sets; do args+=(--set "$s"); done
    args+=("${extra[@]}")
    [ -d "$run/checkpoints" ] && args+=(--resume)
    echo "$(date +%T) train $name seed $seed ($epochs epochs)"
    "$STORM" pretrain "${args[@]}" >"$run.train.log" 2>&1 || { tail -5 "$run.train.log" >&2; continue; }
    for ck in last best; do
      for split in train valid test; do
        "$STORM" eval --run "$run" --split "$split" --checkpoint "$ck" >>"$run.eval.log" 2>&1
        python3 - "$run/eval_$split.json" "$name,$seed,$epochs,$ck" >>"$csv" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]},{r['checkpoint_step']},{r['split']},{r['rank_ic']},{r['rank_icir']},{r['ic']},{r['n_days']}")
PY
      done
    done
    echo "$(date +%T) $(grep "^$name,$seed,$epochs,last,.*,train," "$csv")"
  done
done
# the table for docs/RESULTS.md: RankIC by split for the last and the best-on-valid checkpoint
python3 - "$csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
cell = lambda v: f"{float(v):+.4f}" if v not in ("", "NaN", "nan") else "n/a"
print("| variant | seed | epochs | checkpoint (step) | train RankIC | valid RankIC | test RankIC |")
print("|---|---|---|---|---|---|---|")
runs = {}
for r in rows:
    runs.setdefault((r["variant"], r["seed"], r["epochs"], r["checkpoint"]), {})[r["split"]] = r
for (v, s, e, ck), by in runs.items():
    step = next(iter(by.values()))["checkpoint_step"]
    print(f"| {v} | {s} | {e} | {ck} ({step}) | " + " | ".join(cell(by[x]["rank_ic"]) if x in by else "n/a" for x in ("train", "valid", "test")) + " |")
PY
