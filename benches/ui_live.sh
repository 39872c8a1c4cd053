#!/usr/bin/env bash
# What the web page costs the proxy: requests/s through the proxy (wrk, one instance without a
# budget) with the instances page open in headless Chromium and streaming, against without.
# The page lists INSTANCES instances (one running, the rest stopped with a stopped-time
# countdown); while wrk runs, the running one's counter moves, so the page's stream renders
# and sends its row twice a second. Three modes per round, order rotated: without the page; with
# it open and Chromium running (on this machine the browser's own rendering takes CPU from the same
# cores); and with it open but Chromium paused (SIGSTOP) once the stream is established, so the
# server still renders and sends every update (into the socket buffer) but the browser costs
# nothing: the cost the page puts on the node, where in production the browser runs elsewhere.
# Per mode: median req/s and the server's CPU µs per request (/proc/PID/stat), with ratios.
# First, the stream's own cost without load: the server's CPU time per second while one
# request every 100 ms keeps a counter moving, without the page and with it open (paused).
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
    setsid chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
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
pause_page() { kill -STOP -- "-$browser_pid"; }
close_page() {
    kill -CONT -- "-$browser_pid" 2>/dev/null || true
    kill -- "-$browser_pid" 2>/dev/null || true
    wait "$browser_pid" 2>/dev/null || true
    browser_pid=""
}
# The server's user + system CPU time so far, in clock ticks.
server_ticks() { awk '{print $14 + $15}' "/proc/$server_pid/stat"; }
ticks_per_s=$(getconf CLK_TCK)
# One wrk run; prints "req/s cpu_us_per_request".
run_wrk() {
    local before after out rps
    before=$(server_ticks)
    out=$(wrk -t1 -c"$connections" -d"$duration" -H 'Host: bench.localhost' "http://127.0.0.1:$proxy/")
    after=$(server_ticks)
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    local total
    total=$(awk '/requests in/ {print $1}' <<<"$out")
    awk -v r="$rps" -v t="$total" -v d="$((after - before))" -v hz="$ticks_per_s" \
        'BEGIN {printf "%s %.2f\n", r, d / hz * 1e6 / t}'
}

# The stream's own cost: CPU ms per second of the server while a counter moves slowly.
trickle_cost() {
    local before after started ended
    before=$(server_ticks)
    started=$(date +%s%N)
    for _ in $(seq 100); do
        curl -s -o /dev/null -H 'Host: bench.localhost' "http://127.0.0.1:$proxy/"
        sleep 0.1
    done
    after=$(server_ticks)
    ended=$(date +%s%N)
    awk -v d="$((after - before))" -v hz="$ticks_per_s" -v ns="$((ended - started))" \
        'BEGIN {printf "%.1f", d / hz * 1e3 / (ns / 1e9)}'
}
idle_without=$(trickle_cost)
open_page
pause_page
idle_with=$(trickle_cost)
close_page
echo "server CPU while one counter moves (10 req/s): ${idle_without} ms/s without the page," \
    "${idle_with} ms/s with it open and streaming"

modes=(without running paused)
declare -A rps_of cpu_of
for round in $(seq "$rounds"); do
    shift_by=$(( (round - 1) % 3 ))
    order=("${modes[@]:shift_by}" "${modes[@]:0:shift_by}")
    for mode in "${order[@]}"; do
        [[ $mode != without ]] && open_page
        [[ $mode == paused ]] && pause_page
        read -r rps cpu < <(run_wrk)
        [[ $mode != without ]] && close_page
        rps_of[$mode]+="$rps "
        cpu_of[$mode]+="$cpu "
        echo "round $round $mode: $rps req/s, $cpu µs server CPU per request"
    done
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A rps_m cpu_m
for mode in "${modes[@]}"; do
    # shellcheck disable=SC2086 # the lists are space-separated numbers, split on purpose
    rps_m[$mode]=$(median ${rps_of[$mode]})
    cpu_m[$mode]=$(median ${cpu_of[$mode]})
done
for mode in running paused; do
    echo "page open, browser $mode: req/s ${rps_m[$mode]} (÷ without ${rps_m[without]}:" \
        "$(awk -v a="${rps_m[$mode]}" -v b="${rps_m[without]}" 'BEGIN {printf "%.3f", a/b}')); " \
        "server CPU µs/request ${cpu_m[$mode]} (÷ without ${cpu_m[without]}:" \
        "$(awk -v a="${cpu_m[$mode]}" -v b="${cpu_m[without]}" 'BEGIN {printf "%.3f", a/b}'))"
done
