#!/usr/bin/env bash
# What the web page costs the proxy: requests/s through the proxy (wrk, one instance without a
# budget) with the instances page open in headless Chromium and streaming, against without.
# The page lists INSTANCES instances (one running, the rest stopped with a stopped-time
# countdown); while wrk runs, the running one's counter moves, so the page's stream renders
# and sends its row twice a second. Modes alternate within each round (ABBA), medians printed.
#
#   benches/ui_live.sh [autokill binary]      (default target/release/autokill)
#   ROUNDS=5 DURATION=10s CONNECTIONS=64 INSTANCES=1000
#
# Needs wrk and chromium (Debian packages wrk, chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/autokill}")
rounds=${ROUNDS:-5}
duration=${DURATION:-10s}
connections=${CONNECTIONS:-64}
instances=${INSTANCES:-1000}
for tool in wrk chromium curl; do
    command -v "$tool" >/dev/null || { echo "ui_live.sh: $tool is not installed" >&2; exit 2; }
done

work=$(mktemp -d)
server_pid=""
browser_pid=""
cleanup() {
    [[ -n "$browser_pid" ]] && kill "$browser_pid" 2>/dev/null && wait "$browser_pid" 2>/dev/null
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
proxy=$(free_port)
admin=$(free_port)
cat > "$work/autokill.yaml" <<YAML
proxy: { listen: "127.0.0.1:$proxy", workers: 1 }
admin: { listen: "127.0.0.1:$admin" }
store: { path: "$work/store.redb" }
runtime:
  kind: process
  stop_grace: 1s
  images:
    hello: { command: ["{autokill}", "hello", "--listen", "127.0.0.1:{port}", "--name", "{name}"] }
YAML
RUST_LOG=autokill=warn "$bin" serve --config "$work/autokill.yaml" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 200); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
    sleep 0.05
done
api() { curl -sf "http://127.0.0.1:$admin$1" -H 'Content-Type: application/json' -d "$2" >/dev/null; }
api /v1/instances '{"name":"bench","image":"hello","autostart":true,"timeout_s":10}'
python3 - "$instances" > "$work/many.json" <<'PY'
import json, sys
n = int(sys.argv[1]) - 1
print(json.dumps([{"name": f"idle-{i:04}", "image": "hello",
                   "autokill": {"num_requests": 100, "time_ms": 3600000}} for i in range(n)]))
PY
api /v1/instances "@$work/many.json"

open_page() {
    rm -rf "$work/profile"
    chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
        --disable-background-networking --disable-component-update --disable-sync \
        --user-data-dir="$work/profile" --window-size=1280,800 \
        "http://localhost:$admin/ui/instances" >/dev/null 2>&1 &
    browser_pid=$!
    # Loaded and streaming: the server has an open event stream.
    for _ in $(seq 100); do
        ss -Htn state established "( sport = :$admin )" | grep -q . && break
        sleep 0.1
    done
    sleep 1
}
close_page() {
    kill "$browser_pid" 2>/dev/null || true
    wait "$browser_pid" 2>/dev/null || true
    browser_pid=""
}
run_wrk() {
    wrk -t1 -c"$connections" -d"$duration" -H 'Host: bench.localhost' "http://127.0.0.1:$proxy/" \
        | awk '/Requests\/sec/ {print $2}'
}

without=()
with=()
for round in $(seq "$rounds"); do
    if (( round % 2 )); then order="without with"; else order="with without"; fi
    for mode in $order; do
        if [[ $mode == with ]]; then
            open_page
            rps=$(run_wrk)
            close_page
            with+=("$rps")
        else
            rps=$(run_wrk)
            without+=("$rps")
        fi
        echo "round $round $mode: $rps req/s"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
m_without=$(median "${without[@]}")
m_with=$(median "${with[@]}")
echo "median req/s without the page: $m_without; with the page open and streaming: $m_with; ratio $(awk -v a="$m_with" -v b="$m_without" 'BEGIN {printf "%.3f", a/b}')"
