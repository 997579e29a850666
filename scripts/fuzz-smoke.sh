#!/usr/bin/env bash
# Bounded fuzzing of the parsers of untrusted bytes (SPDY frames, SPDY header blocks, WebSocket channel
# frames) on the stable toolchain, as CI runs it: the fuzz crate's deterministic bounded run over
# generated and mutated inputs (FUZZ_ITERATIONS per target, default 100000).
#
# FUZZ_LIBFUZZER=1 also runs each libFuzzer target, coverage-instrumented with the stable rustc flags
# cargo-fuzz passes (no sanitizer), for FUZZ_SECONDS seconds each (default 20). With nightly and
# cargo-fuzz: cd vk-runtime/fuzz && cargo fuzz run spdy_frames -- -max_total_time=300.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/vk-runtime/fuzz"

# Shares the workspace's target directory, so the already built dependencies are reused.
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}" cargo test --locked

if [ "${FUZZ_LIBFUZZER:-0}" = 1 ]; then
  seconds="${FUZZ_SECONDS:-20}"
  export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
  export CARGO_TARGET_DIR="$PWD/target/instrumented"
  cargo build --release --locked --bins
  for target in spdy_frames spdy_header_block ws_frames; do
    corpus="$(mktemp -d)"
    echo "fuzzing $target for ${seconds}s"
    "$CARGO_TARGET_DIR/release/$target" "$corpus" -max_total_time="$seconds" -max_len=65536 2>&1 | tail -n 3
    rm -rf "$corpus"
  done
fi
