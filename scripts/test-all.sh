#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, generated files, unit/integration/e2e tests.
# Needs: the Rust toolchain (with rustfmt + clippy) and kubectl on PATH. `.ci/run` installs the rest.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "rustfmt"
cargo fmt --all --check

step "clippy (-D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (the e2e scenarios run the real fleetlet binary)"
cargo build --workspace --all-targets --locked

step "generated CRDs are fresh"
diff -u crds/fleetlet.dev_crds.yaml <(target/debug/fleetlet crds)
if [ -d charts/fleetlet/crds ]; then
  diff -u crds/fleetlet.dev_crds.yaml charts/fleetlet/crds/fleetlet.dev_crds.yaml
fi

step "tests"
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked

step "benchmark smoke (every fleetlet-bench scenario at small N; keys only, no targets)"
scripts/bench-smoke.sh

if [ -x scripts/fuzz-smoke.sh ]; then
  step "fuzz smoke (bounded)"
  scripts/fuzz-smoke.sh
fi
echo "all checks passed"
