#!/usr/bin/env bash
# Benchmarks `jwks-operator serve` against nginx serving the same jwks.json with the same
# headers, on loopback with wrk, for JWK Sets of the sizes real publications have, and prints one
# markdown table: requests/s, p50, p99, peak RSS of both, serve's ratios to nginx, and a verdict
# against the goal (at least 1.5x nginx's requests/s, and a p99 no higher than nginx's). A third
# contender, hack/min-server.c, sends serve's own response bytes with nothing but one recv and one
# send per request (one send and one sendfile for a body over 16 KiB): the most requests/s any
# server can reach on this machine, as a yardstick.
#
#   hack/bench-server.sh            # or: make bench-server
#
# Environment: BENCH_KEYS (JWK Set sizes in keys, default "1 4 100"), BENCH_CONNECTIONS (default
# "16 64"), BENCH_DURATION (default 15s), BENCH_WARMUP (default 3s), BENCH_ROUNDS (default 3),
# BENCH_THREADS (wrk threads, default 2), BENCH_PROFILE (cargo profile, default release; `dist`
# is the size-optimised build), BENCH_PIN=1 (both servers on CPU 0, wrk on CPU 1, so the load
# generator does not take CPU time from the server under test), BENCH_SERVE_WORKERS (serve
# --workers; default: serve's own), BENCH_PORT (default 18080; nginx uses the next port,
# min-server the one after). Installs nginx and wrk from Debian when missing and run as root.
# Traffic goes to 127.0.0.1 only; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '[bench-server] %s\n' "$*" >&2; }

KEYS=${BENCH_KEYS:-1 4 100}
CONNECTIONS=${BENCH_CONNECTIONS:-16 64}
DURATION=${BENCH_DURATION:-15s}
WARMUP=${BENCH_WARMUP:-3s}
ROUNDS=${BENCH_ROUNDS:-3}
THREADS=${BENCH_THREADS:-2}
PROFILE=${BENCH_PROFILE:-release}
PIN=${BENCH_PIN:-}
SERVE_WORKERS=${BENCH_SERVE_WORKERS:-}
SERVER_CPUS=() LOAD_CPUS=()
if [[ -n $PIN ]]; then
  SERVER_CPUS=(taskset -c 0) LOAD_CPUS=(taskset -c 1)
fi
SERVE_PORT=${BENCH_PORT:-18080}
NGINX_PORT=$((SERVE_PORT + 1))
MIN_PORT=$((SERVE_PORT + 2))
CONTENDERS=(serve nginx min-server)
declare -A PORT=([serve]=$SERVE_PORT [nginx]=$NGINX_PORT [min-server]=$MIN_PORT)
MAX_AGE=300
PATH_JWKS=/.well-known/jwks.json

# --- tools -------------------------------------------------------------------------------------
missing=()
command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v gcc >/dev/null 2>&1 || missing+=(gcc libc6-dev)
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

WORK=target/bench-server
rm -rf "$WORK"
mkdir -p "$WORK/keys"
WORK=$(cd "$WORK" && pwd)
gcc -O2 -pthread -o "$WORK/min-server" hack/min-server.c
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# --- content -----------------------------------------------------------------------------------
# The sets: 1 key (RSA-2048 RS256 with x5c); 4 keys (that one, RSA-2048 PS256, P-256 with x5c,
# Ed25519); 100 keys (those 4 and 96 more without certificates, RS256, PS256, RS256, ES256 in
# turn: a long rotation history, about 43 KB, under the 51,200 bytes Nimbus JOSE+JWT reads).
key() { # name alg [cert-cn]
  "$BIN" jwk generate --alg "$2" ${3:+--cert-cn "$3"} --out-dir "$WORK/keys/$1" >"$WORK/keys/$1.json"
}
key k000 RS256 bench-rsa
key k001 PS256
key k002 ES256 bench-ec
key k003 EdDSA
max_keys=0
for keys in $KEYS; do ((keys > max_keys)) && max_keys=$keys; done
algs=(RS256 PS256 RS256 ES256)
for ((i = 4; i < max_keys; i++)); do
  key "$(printf 'k%03d' "$i")" "${algs[i % 4]}"
done
for keys in $KEYS; do
  mkdir -p "$WORK/k$keys/content" "$WORK/k$keys/www/.well-known" "$WORK/k$keys/nginx"
  python3 - "$WORK" "$keys" <<'EOF'
import json, sys
work, count = sys.argv[1], int(sys.argv[2])
keys = [json.load(open(f"{work}/keys/k{i:03}.json")) for i in range(count)]
keys.sort(key=lambda k: k["kid"])
text = json.dumps({"keys": keys}, separators=(",", ":"), sort_keys=True)
for path in (f"{work}/k{count}/content/jwks.json", f"{work}/k{count}/www/.well-known/jwks.json"):
    with open(path, "w") as f:
        f.write(text)
EOF
  echo "$MAX_AGE" >"$WORK/k$keys/content/cache-max-age"
  say "jwks.json: $keys key(s), $(wc -c <"$WORK/k$keys/content/jwks.json") bytes"
done

# --- servers -----------------------------------------------------------------------------------
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_servers EXIT

# nginx as a competent admin would set it up for one static file on 2 cores: a worker per core,
# reuseport, sendfile, open_file_cache, no access log, long keep-alive; same headers as serve.
nginx_conf() { # dir
  cat <<EOF
worker_processes auto;
daemon off;
pid $1/nginx/nginx.pid;
error_log $1/nginx/error.log warn;
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
  client_body_temp_path $1/nginx/client_body;
  proxy_temp_path $1/nginx/proxy;
  fastcgi_temp_path $1/nginx/fastcgi;
  uwsgi_temp_path $1/nginx/uwsgi;
  scgi_temp_path $1/nginx/scgi;
  types { }
  server {
    listen 127.0.0.1:$NGINX_PORT reuseport backlog=4096;
    root $1/www;
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
}

wait_ok() { # url
  for _ in $(seq 1 100); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  say "no 200 from $1"; return 1
}

start_servers() { # dir
  "${SERVER_CPUS[@]}" "$BIN" serve --dir "$1/content" --listen "127.0.0.1:$SERVE_PORT" \
    ${SERVE_WORKERS:+--workers "$SERVE_WORKERS"} --log-format json 2>"$1/serve.log" &
  SERVE_PID=$!
  pids+=("$SERVE_PID")
  nginx_conf "$1" >"$1/nginx/nginx.conf"
  "${SERVER_CPUS[@]}" "$NGINX" -c "$1/nginx/nginx.conf" -p "$1/nginx" 2>>"$1/nginx/error.log" &
  NGINX_PID=$!
  pids+=("$NGINX_PID")
  wait_ok "http://127.0.0.1:$SERVE_PORT$PATH_JWKS"
  wait_ok "http://127.0.0.1:$NGINX_PORT$PATH_JWKS"
  # min-server answers every request with serve's response, head and body, byte for byte; a
  # body over 16 KiB goes out with sendfile, which is faster there (and slower for small ones).
  curl -fsS -i "http://127.0.0.1:$SERVE_PORT$PATH_JWKS" >"$1/response.http"
  MIN_MODE=()
  (($(wc -c <"$1/content/jwks.json") > 16384)) && MIN_MODE=(sendfile)
  "${SERVER_CPUS[@]}" "$WORK/min-server" "$MIN_PORT" "$1/response.http" "$(nproc)" "${MIN_MODE[@]}" &
  pids+=($!)
  wait_ok "http://127.0.0.1:$MIN_PORT$PATH_JWKS"
  curl -fsS "http://127.0.0.1:$MIN_PORT$PATH_JWKS" | cmp -s - "$1/content/jwks.json" ||
    { say "min-server does not serve the same jwks.json"; exit 1; }
  # The same bytes, and the same headers: those of serve, and also nginx's Server,
  # Last-Modified, Accept-Ranges and Connection (HTTP/1.1 keeps connections alive anyway); the
  # ETags differ in form only (a hash of the bytes; nginx's mtime and size).
  for port in "$SERVE_PORT" "$NGINX_PORT"; do
    curl -fsS "http://127.0.0.1:$port$PATH_JWKS" | cmp -s - "$1/content/jwks.json" ||
      { say "port $port does not serve the same jwks.json"; exit 1; }
    curl -fsS -o /dev/null -D - "http://127.0.0.1:$port$PATH_JWKS" | tr -d '\r' | tr 'A-Z' 'a-z' |
      grep -v '^\(date\|server\|last-modified\|accept-ranges\|connection\):\|^$' |
      sed 's/^etag: "[^"]*"$/etag: "…"/' | sort >"$1/headers-$port.txt"
  done
  diff "$1/headers-$SERVE_PORT.txt" "$1/headers-$NGINX_PORT.txt" >&2 ||
    { say "serve and nginx answer with different headers"; exit 1; }
}

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
run() { # dir name port connections round
  local out="$1/wrk-$2-c$4-r$5.txt"
  "${LOAD_CPUS[@]}" wrk -t"$THREADS" -c"$4" -d"$WARMUP" "http://127.0.0.1:$3$PATH_JWKS" >/dev/null
  "${LOAD_CPUS[@]}" wrk -t"$THREADS" -c"$4" -d"$DURATION" --latency "http://127.0.0.1:$3$PATH_JWKS" >"$out"
  if grep -q 'Non-2xx\|Socket errors' "$out"; then
    say "$2 at $4 connections had errors:"
    cat "$out" >&2
    exit 1
  fi
  say "$(basename "$1"), round $5, $2, $4 connections:" \
    "$(awk '/^Requests\/sec:/ {printf "%.0f req/s", $2}' "$out")," \
    "p50 $(awk '$1 == "50%" {print $2}' "$out"), p99 $(awk '$1 == "99%" {print $2}' "$out")," \
    "load $(cut -d' ' -f1 /proc/loadavg)"
}
for keys in $KEYS; do
  dir="$WORK/k$keys"
  start_servers "$dir"
  for round in $(seq 1 "$ROUNDS"); do
    for conns in $CONNECTIONS; do
      # Each round starts with a different contender.
      first=$(((round - 1) % ${#CONTENDERS[@]}))
      for name in "${CONTENDERS[@]:first}" "${CONTENDERS[@]:0:first}"; do
        run "$dir" "$name" "${PORT[$name]}" "$conns" "$round"
      done
    done
  done
  printf 'serve %s\nnginx %s\n' "$(peak_rss_kib "$SERVE_PID")" "$(peak_rss_kib "$NGINX_PID")" >"$dir/rss.txt"
  WORKERS=$(grep -o '"workers":[0-9]*' "$dir/serve.log" | head -1 | cut -d: -f2)
  stop_servers
done

echo
echo "Machine: $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo))," \
  "$(free -g | awk '/^Mem:/ {print $2}') GiB, Linux $(uname -r);" \
  "load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after." \
  "Load: wrk $(wrk -v 2>&1 | awk 'NR==1 {print $2}'), $THREADS threads" \
  "$(if [[ -n $PIN ]]; then echo "on CPU 1, servers on CPU 0,"; else echo "on the same cores as the servers,"; fi)" \
  "$DURATION per run after a $WARMUP warm-up, median of $ROUNDS rounds." \
  "serve: \`$PROFILE\` profile, $WORKERS worker thread(s);" \
  "nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'), worker_processes auto ($(nproc));" \
  "min-server: $(nproc) threads, sendfile for bodies over 16 KiB."
echo "Goal: serve at least 1.5x nginx's requests/s with a p99 at most nginx's." \
  "Peak RSS: VmHWM of the serve process; for nginx the sum over its master and workers."
echo
python3 - "$WORK" "$ROUNDS" "$KEYS" "$CONNECTIONS" <<'PY'
import os, re, statistics, sys

work, rounds, sizes, connections = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
to_ms = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def ms(text):
    number, unit = re.fullmatch(r"([0-9.]+)(us|ms|s)", text).groups()
    return float(number) * to_ms[unit]


def show(value):
    return f"{value * 1000:.0f} µs" if value < 1 else f"{value:.2f} ms"


def median(dir, name, conns):
    rps, p50, p99 = [], [], []
    for r in range(1, rounds + 1):
        text = open(f"{dir}/wrk-{name}-c{conns}-r{r}.txt").read()
        rps.append(float(re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M).group(1)))
        p50.append(ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)))
        p99.append(ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)))
    return statistics.median(rps), statistics.median(p50), statistics.median(p99)


print("| keys (bytes) | conns | serve req/s | nginx req/s | ratio | serve p50 | nginx p50 "
      "| serve p99 | nginx p99 | ratio | peak RSS serve / nginx | goal "
      "| min-server req/s (× nginx) | min-server p99 (× nginx) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for keys in sizes:
    dir = f"{work}/k{keys}"
    size = os.path.getsize(f"{dir}/content/jwks.json")
    rss = {name: int(kib) / 1024 for name, kib in (line.split() for line in open(f"{dir}/rss.txt"))}
    for conns in connections:
        s, n = median(dir, "serve", conns), median(dir, "nginx", conns)
        m = median(dir, "min-server", conns)
        rps_ratio, p99_ratio = s[0] / n[0], s[2] / n[2]
        misses = [what for what, met in (("req/s", rps_ratio >= 1.5), ("p99", p99_ratio <= 1.0)) if not met]
        verdict = "met" if not misses else "**not met** (" + ", ".join(misses) + ")"
        print(
            f"| {keys} ({size:,}) | {conns} | {s[0]:,.0f} | {n[0]:,.0f} | {rps_ratio:.2f}× "
            f"| {show(s[1])} | {show(n[1])} | {show(s[2])} | {show(n[2])} | {p99_ratio:.2f}× "
            f"| {rss['serve']:.1f} / {rss['nginx']:.1f} MiB | {verdict} "
            f"| {m[0]:,.0f} ({m[0] / n[0]:.2f}×) | {show(m[2])} ({m[2] / n[2]:.2f}×) |"
        )
PY
