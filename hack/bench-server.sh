#!/usr/bin/env bash
# Benchmarks `jwks-operator serve` against nginx serving the same jwks.json with the same
# headers, on loopback with wrk, and prints one markdown table (requests/s, p50, p99, peak RSS).
#
#   hack/bench-server.sh            # or: make bench-server
#
# Environment: BENCH_DURATION (default 15s), BENCH_THREADS (wrk threads, default 2),
# BENCH_CONNECTIONS (default "16 64"), BENCH_WARMUP (default 3s), BENCH_ROUNDS (default 3),
# BENCH_PROFILE (cargo profile, default release; `dist` is the size-optimised build),
# BENCH_PIN=1 (both servers on CPU 0, wrk on CPU 1, so the load generator does not take CPU time
# from the server under test), BENCH_PORT (default 18080; nginx uses the next port). Installs nginx and wrk from Debian when missing and run as root.
# Traffic goes to 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[bench-server] %s\n' "$*" >&2; }

DURATION=${BENCH_DURATION:-15s}
THREADS=${BENCH_THREADS:-2}
CONNECTIONS=${BENCH_CONNECTIONS:-16 64}
WARMUP=${BENCH_WARMUP:-3s}
ROUNDS=${BENCH_ROUNDS:-3}
PROFILE=${BENCH_PROFILE:-release}
PIN=${BENCH_PIN:-}
SERVER_CPUS=() LOAD_CPUS=()
if [[ -n $PIN ]]; then
  SERVER_CPUS=(taskset -c 0) LOAD_CPUS=(taskset -c 1)
fi
SERVE_PORT=${BENCH_PORT:-18080}
NGINX_PORT=$((SERVE_PORT + 1))
MAX_AGE=300
PATH_JWKS=/.well-known/jwks.json

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ((${#missing[@]})); then
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    say "missing: ${missing[*]} (install them, or run as root to let this script do it)"
    exit 1
  fi
  say "installing from Debian: ${missing[*]}"
  # Keep the package's init script from starting a system nginx on port 80.
  added_policy=""
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [[ -n $added_policy ]] && rm -f /usr/sbin/policy-rc.d
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

say "building the $PROFILE binary"
cargo build --profile "$PROFILE" --locked --quiet --bin jwks-operator
BIN=target/$PROFILE/jwks-operator

# --- content -----------------------------------------------------------------------------------
WORK=target/bench-server
rm -rf "$WORK"
mkdir -p "$WORK/keys" "$WORK/content" "$WORK/www/.well-known" "$WORK/nginx"
WORK=$(cd "$WORK" && pwd)

# A realistic set: RSA-2048 with and without x5c, P-256 with x5c, Ed25519 without.
"$BIN" jwk generate --alg RS256 --cert-cn bench-rsa --out-dir "$WORK/keys/rs256" >"$WORK/keys/rs256.json"
"$BIN" jwk generate --alg PS256 --out-dir "$WORK/keys/ps256" >"$WORK/keys/ps256.json"
"$BIN" jwk generate --alg ES256 --cert-cn bench-ec --out-dir "$WORK/keys/es256" >"$WORK/keys/es256.json"
"$BIN" jwk generate --alg EdDSA --out-dir "$WORK/keys/eddsa" >"$WORK/keys/eddsa.json"
python3 - "$WORK" <<'EOF'
import json, sys
work = sys.argv[1]
keys = [json.load(open(f"{work}/keys/{n}.json")) for n in ("rs256", "ps256", "es256", "eddsa")]
keys.sort(key=lambda k: k["kid"])
text = json.dumps({"keys": keys}, separators=(",", ":"), sort_keys=True)
for path in (f"{work}/content/jwks.json", f"{work}/www/.well-known/jwks.json"):
    with open(path, "w") as f:
        f.write(text)
EOF
echo "$MAX_AGE" >"$WORK/content/cache-max-age"
JWKS_BYTES=$(wc -c <"$WORK/content/jwks.json")
say "jwks.json: 4 keys, $JWKS_BYTES bytes"

# --- servers -----------------------------------------------------------------------------------
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"${SERVER_CPUS[@]}" "$BIN" serve --dir "$WORK/content" --listen "127.0.0.1:$SERVE_PORT" --log-format json \
  2>"$WORK/serve.log" &
SERVE_PID=$!
pids+=("$SERVE_PID")

# nginx as a competent admin would set it up for one static file on 2 cores: a worker per core,
# reuseport, sendfile, open_file_cache, no access log, long keep-alive; same headers as serve.
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_timeout 65;
  keepalive_requests 1000000;
  open_file_cache max=64 inactive=60s;
  open_file_cache_valid 60s;
  server_tokens off;
  client_body_temp_path $WORK/nginx/client_body;
  proxy_temp_path $WORK/nginx/proxy;
  fastcgi_temp_path $WORK/nginx/fastcgi;
  uwsgi_temp_path $WORK/nginx/uwsgi;
  scgi_temp_path $WORK/nginx/scgi;
  types { }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
    root $WORK/www;
    location = $PATH_JWKS {
      default_type application/jwk-set+json;
      etag on;
      add_header Cache-Control "public, max-age=$MAX_AGE" always;
      add_header Access-Control-Allow-Origin "*" always;
      add_header X-Content-Type-Options nosniff always;
    }
    location / { return 404; }
  }
}
EOF
"${SERVER_CPUS[@]}" "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>>"$WORK/nginx/error.log" &
NGINX_PID=$!
pids+=("$NGINX_PID")

wait_ok() { # url
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  say "no 200 from $1"; return 1
}
wait_ok "http://127.0.0.1:$SERVE_PORT$PATH_JWKS"
wait_ok "http://127.0.0.1:$NGINX_PORT$PATH_JWKS"
for port in "$SERVE_PORT" "$NGINX_PORT"; do
  curl -fsS "http://127.0.0.1:$port$PATH_JWKS" | cmp -s - "$WORK/content/jwks.json" ||
    { say "port $port does not serve the same jwks.json"; exit 1; }
  say "headers on port $port:"
  curl -fsS -o /dev/null -D - "http://127.0.0.1:$port$PATH_JWKS" | tr -d '\r' | sed 's/^/    /' >&2
done

# Peak resident memory (VmHWM) of a process and its children, in KiB.
peak_rss_kib() { # pid
  local total=0 pid
  for pid in "$1" $(cat "/proc/$1/task/"*/children 2>/dev/null); do
    local kib
    kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    total=$((total + ${kib:-0}))
  done
  echo "$total"
}

# --- runs --------------------------------------------------------------------------------------
# Rounds alternate which server goes first; the table reports each figure's median over the
# rounds, since other load on a 2-core machine moves single runs a lot.
run() { # name port connections round
  local out="$WORK/wrk-$1-c$3-r$4.txt"
  "${LOAD_CPUS[@]}" wrk -t"$THREADS" -c"$3" -d"$WARMUP" "http://127.0.0.1:$2$PATH_JWKS" >/dev/null
  "${LOAD_CPUS[@]}" wrk -t"$THREADS" -c"$3" -d"$DURATION" --latency "http://127.0.0.1:$2$PATH_JWKS" >"$out"
  if grep -q 'Non-2xx\|Socket errors' "$out"; then
    say "$1 at $3 connections had errors:"
    cat "$out" >&2
    exit 1
  fi
  say "round $4, $1, $3 connections:" \
    "$(awk '/^Requests\/sec:/ {printf "%.0f req/s", $2}' "$out")," \
    "p50 $(awk '$1 == "50%" {print $2}' "$out"), p99 $(awk '$1 == "99%" {print $2}' "$out")"
}
for round in $(seq 1 "$ROUNDS"); do
  for conns in $CONNECTIONS; do
    if ((round % 2)); then
      run serve "$SERVE_PORT" "$conns" "$round"
      run nginx "$NGINX_PORT" "$conns" "$round"
    else
      run nginx "$NGINX_PORT" "$conns" "$round"
      run serve "$SERVE_PORT" "$conns" "$round"
    fi
  done
done
printf 'serve %s\nnginx %s\n' "$(peak_rss_kib "$SERVE_PID")" "$(peak_rss_kib "$NGINX_PID")" >"$WORK/rss.txt"

echo
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))," \
  "$(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r)." \
  "Load: wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), $THREADS threads" \
  "$(if [[ -n $PIN ]]; then echo "on CPU 1, servers on CPU 0,"; else echo "on the same cores as the servers,"; fi)" \
  "$DURATION per run after a $WARMUP warm-up, median of $ROUNDS rounds." \
  "jwks.json: $JWKS_BYTES bytes, 4 keys. serve: \`$PROFILE\` profile," \
  "$(grep -o '"workers":[0-9]*' "$WORK/serve.log" | head -1 | cut -d: -f2) worker thread(s);" \
  "nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), worker_processes auto ($(nproc))."
echo "Peak RSS: VmHWM of the serve process; for nginx the sum over its master and workers."
echo
python3 - "$WORK" "$ROUNDS" "$CONNECTIONS" <<'PY'
import re, statistics, sys

work, rounds, connections = sys.argv[1], int(sys.argv[2]), sys.argv[3].split()
to_ms = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text):
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()
    return float(number) * to_ms[unit]


def show(value):
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


rss = dict(line.split() for line in open(f"{work}/rss.txt"))
print("| server | connections | requests/s | p50 | p99 | peak RSS |")
print("|---|---|---|---|---|---|")
for conns in connections:
    for name, label in (("serve", "jwks-operator serve"), ("nginx", "nginx")):
        rps, p50, p99 = [], [], []
        for r in range(1, rounds + 1):
            text = open(f"{work}/wrk-{name}-c{conns}-r{r}.txt").read()
            rps.append(float(re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M).group(1)))
            p50.append(ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)))
            p99.append(ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)))
        print(
            f"| {label} | {conns} | {statistics.median(rps):,.0f} "
            f"| {show(statistics.median(p50))} | {show(statistics.median(p99))} "
            f"| {int(rss[name]) / 1024:.1f} MiB |"
        )
PY
