#!/usr/bin/env bash
# Figures for the Tutum face, through the command line as a user runs it:
#
#   * `autokill service run -t 10 --wait hello`: from the command to all ten containers Running
#     (the CLI creates the service, starts it, and follows the start's action to its end);
#   * with 1,000 services (pagination on): `autokill service list` (every page, 100 a page, as
#     the CLI walks them) and one `GET /api/v1/service/` (the first page of 25, as python-tutum's
#     `Service.list()` starts).
#
# Medians (and min/max) of ROUNDS runs (default 7) against a release build on loopback, with
# the process runtime running `autokill hello`. Needs curl and python3 (to find free ports).
#
#   benches/tutum_cli.sh            # builds target/release/autokill if missing
#   ROUNDS=15 benches/tutum_cli.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-7}
BIN=${AUTOKILL_BIN:-target/release/autokill}
for tool in curl python3; do
    command -v "$tool" >/dev/null || { echo "tutum_cli.sh: $tool is needed" >&2; exit 1; }
done
[ -x "$BIN" ] || cargo build --release
BIN=$(realpath "$BIN")

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
proxy_port=$(free_port)
admin_port=$(free_port)
dir=$(mktemp -d)
server=""
cleanup() {
    [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    rm -rf "$dir"
}
trap cleanup EXIT

cat >"$dir/autokill.yaml" <<EOF
proxy:
  listen: 127.0.0.1:$proxy_port
admin:
  listen: 127.0.0.1:$admin_port
  max_connections: 4096
store:
  path: $dir/autokill.redb
runtime:
  kind: process
  images:
    hello:
      command: ["{autokill}", "hello", "--listen", "127.0.0.1:{port}", "--name", "{name}"]
service_groups: []
EOF
RUST_LOG=autokill=warn "$BIN" serve --config "$dir/autokill.yaml" 2>"$dir/server.log" &
server=$!
export AUTOKILL_URL="http://127.0.0.1:$admin_port"
for _ in $(seq 200); do
    curl -sf "$AUTOKILL_URL/readyz" >/dev/null && break
    sleep 0.05
done

now_ms() { date +%s%3N; }
# Prints "median min max" of the numbers given, one a line.
stats() { sort -n | awk '{a[NR] = $1} END {printf "median %s ms (min %s, max %s, %d runs)\n", a[int((NR + 1) / 2)], a[1], a[NR], NR}'; }

echo "service run -t 10 --wait (until all ten Running):"
for i in $(seq "$ROUNDS"); do
    t0=$(now_ms)
    "$BIN" service run -t 10 --wait -n "run-$i" hello >/dev/null
    t1=$(now_ms)
    running=$(curl -sf "$AUTOKILL_URL/api/v1/service/run-$i/" | python3 -c 'import json, sys; print(json.load(sys.stdin)["running_num_containers"])')
    [ "$running" = 10 ] || { echo "run-$i: $running running, not 10" >&2; exit 1; }
    echo $((t1 - t0))
    "$BIN" service terminate --wait "run-$i" >/dev/null
done | stats

echo "making 1,000 services (target_num_containers 0)..."
for i in $(seq 1000); do
    [ "$i" = 1 ] || echo "next"
    echo "url = \"$AUTOKILL_URL/api/v1/service/\""
    echo "data = \"{\\\"image\\\": \\\"hello\\\", \\\"name\\\": \\\"svc-$i\\\", \\\"target_num_containers\\\": 0}\""
    echo "header = \"Content-Type: application/json\""
    echo "output = /dev/null"
    echo "write-out = \"%{http_code}\\n\""
done >"$dir/create.curl"
created=$(curl -s -K "$dir/create.curl" | grep -c '^201$' || true)
[ "$created" = 1000 ] || { echo "created $created of 1000 services" >&2; exit 1; }

echo "service list, 1,000 services + the ${ROUNDS} terminated above (every page, 100 a page):"
for _ in $(seq "$ROUNDS"); do
    t0=$(now_ms)
    rows=$("$BIN" service list | wc -l)
    t1=$(now_ms)
    [ "$rows" -ge 1001 ] || { echo "service list: $rows lines" >&2; exit 1; }
    echo $((t1 - t0))
done | stats

echo "GET /api/v1/service/ (first page of 25, total_count 1,000+):"
for _ in $(seq "$ROUNDS"); do
    curl -s -o /dev/null -w '%{time_total}\n' "$AUTOKILL_URL/api/v1/service/" |
        awk '{printf "%.2f\n", $1 * 1000}'
done | stats
