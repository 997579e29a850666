#!/usr/bin/env bash
# Smoke run of every fleetlet-bench scenario at small N against the in-process test apiserver, with the
# debug binaries the suite already built. Checks that each run succeeds and that its last output line is
# a JSON object with the scenario's keys; it enforces no performance target (figures from a debug build
# on a shared CI machine mean nothing; see docs/benchmarks.md for the real ones).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/debug/fleetlet-bench"
[ -x "$bin" ] || { echo "$bin not built (cargo build --workspace --all-targets)" >&2; exit 1; }
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

smoke() {
  local name=$1 keys=$2; shift 2
  local started=$SECONDS
  if ! timeout 120 "$bin" --test-apiserver "$@" >"$out/$name.out" 2>"$out/$name.err"; then
    echo "fleetlet-bench $* failed:" >&2; tail -50 "$out/$name.err" >&2; exit 1
  fi
  tail -n 1 "$out/$name.out" | python3 -c '
import json, sys
obj = json.loads(sys.stdin.read())
missing = [k for k in sys.argv[1].split(",") if obj.get(k) is None]
if not isinstance(obj, dict) or missing:
    sys.exit(f"missing keys {missing} in {obj}")
' "$keys"
  echo "fleetlet-bench $*: ok ($((SECONDS - started)) s)"
}

smoke bring-up bring_up_seconds,floor_seconds,ratio,settled_seconds,settled_api_writes_per_node bring-up --nodes 5
smoke bring-up-sharded bring_up_seconds,floor_seconds,ratio,replicas,shards bring-up --nodes 6 --replicas 2 --shards 4
smoke idle rss_kb_per_node,rss_anon_kb_per_node,cpu_millicores_per_node,writes_per_node_minute,gets_per_node_minute,not_ready_transitions \
  idle --nodes 5 --minutes 0.1 --baseline-seconds 1 --settle-seconds 1
# Economy mode (the operator inherits FLEETLET_ECONOMY): 20 s node Lease renewals.
FLEETLET_ECONOMY=true smoke idle-economy rss_kb_per_node,writes_per_node_minute,not_ready_transitions \
  idle --nodes 5 --minutes 0.1 --baseline-seconds 1 --settle-seconds 1
smoke pods p50_ms,p99_ms,writes_per_pod pods --nodes 5 --pods 10 --rate 20
smoke logs mb_per_s logs --bytes 4M
smoke exec p50_ms,p99_ms exec --samples 20
