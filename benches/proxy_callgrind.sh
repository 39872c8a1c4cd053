#!/usr/bin/env bash
# User-space instructions per proxied request, counted by callgrind: repeatable on a shared, busy
# machine where wall-clock figures are not (PERFORMANCE.md: compare builds by ratios of one run).
#
# Usage:  benches/proxy_callgrind.sh [BINARY...]      (default: target/release/autokill)
#
# For each binary: `autokill serve` (one worker) under `valgrind --tool=callgrind`, in front of one
# instance (nginx, as in proxy_compare.sh); a warm-up; then, between two dumps (which zero the
# counters), N requests on one keep-alive connection and N requests each on a new connection (curl), and the
# instructions (Ir) of the proxy process divided by N. Kernel time is not counted: this is the
# proxy's own code, hyper, tokio and the allocator.
#
# Environment: N=2000 requests per phase, BASE_PORT=38080, KEEP_TMP=1 keeps the callgrind files,
# TOP=12 functions listed per phase (inclusive of nothing: self cost).
# Needs: valgrind (callgrind_control, callgrind_annotate), nginx, curl.
set -euo pipefail

N=${N:-2000}
BASE_PORT=${BASE_PORT:-38080}
KEEP_TMP=${KEEP_TMP:-0}
TOP=${TOP:-12}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BINARIES=("$@")
if ((${#BINARIES[@]} == 0)); then BINARIES=("$REPO/target/release/autokill"); fi
for tool in valgrind callgrind_control callgrind_annotate nginx curl; do
    command -v "$tool" >/dev/null || { echo "proxy_callgrind: $tool not found" >&2; exit 2; }
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/proxy_callgrind.XXXXXX")
PID=""
cleanup() {
    if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        wait "$PID" 2>/dev/null || true
    fi
    if [[ $KEEP_TMP == 1 ]]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

cat >"$TMP/upstream.conf.in" <<EOF
worker_processes 1;
pid $TMP/upstream-@PORT@.pid;
error_log $TMP/upstream-@PORT@.err warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 100000000;
    client_body_temp_path $TMP/body-@PORT@;
    proxy_temp_path $TMP/proxy-@PORT@;
    server { listen 127.0.0.1:@PORT@; location / { return 200 "Hello, world\n"; } }
}
EOF
PROXY=$BASE_PORT ADMIN=$((BASE_PORT + 1))

# curl arguments for N requests: one connection (keep-alive), or one each (Connection: close).
urls=() warm=()
for ((i = 0; i < N; i++)); do urls+=("http://127.0.0.1:$PROXY/" -o /dev/null); done
for ((i = 0; i < 200; i++)); do warm+=("http://127.0.0.1:$PROXY/" -o /dev/null); done

DUMPS=0
dump() { # dump REASON: a dump (which also zeroes the counters); waits until it is written
    callgrind_control -d "$1" "$PID" >/dev/null 2>&1
    DUMPS=$((DUMPS + 1))
    DUMP=$TMP/callgrind.out.$PID.$DUMPS
    # valgrind takes the command when a thread of the proxy next runs (a timer wakes it often).
    for ((i = 0; i < 300; i++)); do [[ -s $DUMP ]] && return 0; sleep 0.1; done
    echo "proxy_callgrind: no dump $DUMP" >&2
    exit 1
}
measure() { # measure LABEL CURL-ARGS...: Ir of the proxy over the requests curl makes
    local label=$1 ir
    shift
    dump "before-$label"
    curl -fsS -H "Host: up.localhost" "$@" "${urls[@]}"
    dump "$label"
    ir=$(awk '/^summary:/ { s += $2 } END { print s + 0 }' "$DUMP")
    printf '  %-10s %8.0f instructions per request\n' "$label" "$(awk -v a="$ir" -v n="$N" 'BEGIN { print a / n }')"
    # All functions (`--threshold=100`); the thread's entry frames, which callgrind_annotate
    # 3.19 lists first with the whole cost, are left out.
    callgrind_annotate --inclusive=no --threshold=100 "$DUMP" 2>/dev/null |
        grep -Ev 'PROGRAM TOTALS|clone\.S:clone|pthread_create\.c:start_thread|thread_start|call_once\{\{vtable\.shim\}\}' |
        awk -v top="$TOP" -v n="$N" '/^ *[0-9,]+ \(/ && k < top {
            ir = $1; gsub(",", "", ir); sub(/^ *[0-9,]+ \([ 0-9.%]+\) */, ""); sub(/ \[.*\]$/, "")
            printf "      %6.0f  %s\n", ir / n, substr($0, 1, 110); k++ }' || true
}

for bin in "${BINARIES[@]}"; do
    cat >"$TMP/autokill.yaml" <<EOF
proxy:
  listen: 127.0.0.1:$PROXY
  workers: 1
admin:
  listen: 127.0.0.1:$ADMIN
store:
  path: $TMP/autokill-$RANDOM.redb
runtime:
  kind: process
  images:
    upstream:
      command: ["sh", "-c", "sed 's/@PORT@/{port}/g' $TMP/upstream.conf.in > $TMP/upstream-{port}.conf && exec nginx -p $TMP -e $TMP/upstream-{port}.err -c $TMP/upstream-{port}.conf -g 'daemon off;'"]
instances:
  - name: up
    image: upstream
    autokill: { num_requests: 1000000000 }
EOF
    (cd "$TMP" && exec valgrind --tool=callgrind --dump-instr=no \
        --callgrind-out-file="$TMP/callgrind.out.%p" "$bin" serve --config "$TMP/autokill.yaml") \
        >"$TMP/autokill.log" 2>&1 &
    PID=$!
    for ((i = 0; i < 600; i++)); do
        if curl -fsS -o /dev/null -H "Host: up.localhost" "http://127.0.0.1:$PROXY/" 2>/dev/null; then break; fi
        sleep 0.1
    done
    # valgrind's own pid is the process callgrind_control talks to.
    echo "$bin, N=$N (self cost per request of the top functions below each figure):"
    curl -fsS -H "Host: up.localhost" "${warm[@]}" # warm-up: pool, allocator, caches
    DUMPS=0
    measure keepalive
    measure close -H "Connection: close"
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    mkdir -p "$TMP/$(basename "$bin")-$PID" && mv "$TMP"/callgrind.out.* "$TMP/$(basename "$bin")-$PID"/ 2>/dev/null || true
    PID=""
done
