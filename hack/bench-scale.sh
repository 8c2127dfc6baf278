#!/usr/bin/env bash
# The operator at scale and over a long run, on the test control plane (no node), and prints
# markdown for docs/benchmarks.md.
#
#   hack/bench-scale.sh scale   # or: make bench-scale
#   hack/bench-scale.sh soak    # or: make bench-soak
#
# scale: the apiserver alone first (N Secrets, N SigningKeys, N status patches from a concurrent
# client, no operator), then the release operator (one namespace) with BENCH_PUBLICATIONS
# publications: N ES256 SigningKeys created by a concurrent client until every key is Ready and
# its active kid published, then every key's rotate annotation set until every next key is
# pending and published. Reports seconds, operator writes per key by resource (the apiserver's
# apiserver_request_total), operator peak RSS (VmHWM) and CPU seconds.
# soak: BENCH_SOAK_KEYS keys rotating every BENCH_SOAK_INTERVAL for BENCH_SOAK_MINUTES; a row per
# minute with the ring changes so far (the operator's "key ring changed" log lines) and RSS.
#
# Environment: BENCH_KEYS (default 1000), BENCH_PUBLICATIONS (10), BENCH_CLIENTS (client threads,
# 32), BENCH_TIMEOUT (seconds per phase, 900), BENCH_SOAK_KEYS (5), BENCH_SOAK_INTERVAL (4s),
# BENCH_SOAK_MINUTES (30), BENCH_ENV (extra environment for the operator, e.g.
# "MALLOC_ARENA_MAX=2"), BENCH_WRAPPER (a command to run the operator under, e.g. "heaptrack -o
# target/heap"; the RSS figures are then the wrapper's), BENCH_BIN (a prebuilt binary instead of
# the release build), BENCH_TAG (a suffix for the work directory, to run two at once). Every process started here is stopped on exit; the operator's log
# stays in target/bench-<mode>/operator.log.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[bench-scale] %s\n' "$*" >&2; }
MODE=${1:-scale}
[[ $MODE == scale || $MODE == soak ]] || { say "usage: $0 scale|soak"; exit 2; }

BIN=${BENCH_BIN:-$PWD/target/release/jwks-operator}
if [[ -z ${BENCH_BIN:-} ]]; then
  say "building the release binary"
  cargo build --release --locked --quiet --bin jwks-operator
fi
WORK=$PWD/target/bench-$MODE${BENCH_TAG:+-$BENCH_TAG}
rm -rf "$WORK"
mkdir -p "$WORK"

# The control plane stops when this script exits (--watch-pid).
KCP_CRDS=$PWD/crds KCP_DIR=$WORK/kcp KCP_CLEANUP=1 hack/control-plane/start.sh --watch-pid $$ >"$WORK/kcp.out" 2>"$WORK/kcp.log" &
KCP_PID=$!
trap 'KCP_DIR=$WORK/kcp hack/control-plane/start.sh stop >/dev/null 2>&1 || true; wait "$KCP_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q '^KUBECONFIG=' "$WORK/kcp.out" 2>/dev/null && break
  kill -0 "$KCP_PID" 2>/dev/null || { cat "$WORK/kcp.log" >&2; exit 1; }
  sleep 0.5
done
KUBECONFIG=$(sed -n 's/^KUBECONFIG=//p' "$WORK/kcp.out")
say "control plane up ($KUBECONFIG); load average: $(cut -d' ' -f1-3 /proc/loadavg)"

echo
echo "Run of $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, release build, commit $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src || echo '+changes')${BENCH_ENV:+, operator environment $BENCH_ENV}."
echo
# In the background, so that a SIGTERM or Ctrl-C reaches the driver at once (bash defers its
# traps while a foreground child runs); the driver then stops the operator itself.
# shellcheck disable=SC2086 # BENCH_ENV is a list of NAME=value words
env ${BENCH_ENV:-} python3 hack/bench-scale.py "$MODE" "$BIN" "$KUBECONFIG" "$WORK" &
DRIVER_PID=$!
trap 'kill -TERM "$DRIVER_PID" 2>/dev/null || true' TERM INT
status=0
wait "$DRIVER_PID" || status=$?
# A signal interrupts the first wait; the second waits for the driver to finish stopping.
wait "$DRIVER_PID" 2>/dev/null || true
exit "$status"
