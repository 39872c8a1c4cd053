#!/usr/bin/env bash
# Soak: the proxy under steady load while autokill keeps killing and the configuration keeps
# re-creating, for DURATION (default 10 minutes), loopback only; it stops by itself.
#
#   benches/soak.sh [autokill binary]      (default target/release/autokill, built if missing)
#   DURATION=600 (seconds)  CONNECTIONS=256  INSTANCES=8  BUDGET=2000  RELOAD_EVERY=30
#
# * wrk sends CONNECTIONS keep-alive connections to a service group whose INSTANCES declared
#   instances (in the YAML) and INSTANCES more made through /v1 each serve BUDGET requests
#   (`autokill.num_requests`) and are then killed.
# * The configuration re-creates the declared ones: SIGHUP every RELOAD_EVERY seconds (the file
#   rewritten each time, so that the reload also has something to change); a loop re-creates
#   the /v1 ones through the API whenever fewer than INSTANCES of them are left.
# * While no instance of the group has budget left the proxy answers 503 with Retry-After:
#   those are expected. Anything else is an error: other statuses, and wrk's socket errors.
# * Reported: requests and expected 503s, errors (must be 0), RSS of the autokill process after
#   the warm-up (the first fifth of the run, at least 20 s) and at the end (growth must be
#   < 10 %), open file descriptors before the load and after it (with the same instances
#   declared, and none made through /v1): once idle, and again after a few requests (a proxy
#   worker lets go of a deleted instance's pooled connections when it next takes the route
#   table); the second must be back to the baseline, pooled connections to the live instances
#   aside. Also kills completed (`autokill_kills_total{reason="num_requests"}`), and leftover
#   instance processes (must be 0). Exit status 1 when a criterion fails.
# * Bounded: every call has a timeout, and a watchdog ends the run DURATION + 3 minutes after
#   its start whatever happens.
#
# Needs wrk, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/autokill}
duration=${DURATION:-600}
connections=${CONNECTIONS:-256}
instances=${INSTANCES:-8}
budget=${BUDGET:-2000}
reload_every=${RELOAD_EVERY:-30}
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "soak.sh: $tool is not installed" >&2; exit 2; }
done
[[ "$duration" =~ ^[0-9]+$ ]] && (( duration >= 30 )) \
    || { echo "soak.sh: DURATION is whole seconds, at least 30 (got $duration)" >&2; exit 2; }
if [[ ! -x "$bin" ]]; then
    cargo build --release --bin autokill
fi
bin=$(realpath "$bin")

source benches/harness.sh soak.sh $((duration + 180))
proxy=$(free_port)
admin=$(free_port)

# The file; `generation` changes a comment-free value (the group's autokill time) on each
# rewrite, so every reload applies a change besides re-creating the killed instances.
write_config() {
    local generation=$1
    {
        cat <<YAML
proxy: { listen: "127.0.0.1:$proxy", workers: 2 }
admin: { listen: "127.0.0.1:$admin" }
store: { path: "$work/store.redb" }
defaults: { drain_timeout: 2s }
runtime:
  kind: process
  stop_grace: 1s
  images:
    hello: { command: ["{autokill}", "hello", "--listen", "127.0.0.1:{port}", "--name", "{name}"] }
service_groups:
  - name: soak
    domains: [soak]
    autokill: { time: $((3600 + generation))s }
    instances:
YAML
        for i in $(seq "$instances"); do
            echo "      - { name: declared-$i, image: hello, autokill: { num_requests: $budget } }"
        done
    } > "$work/autokill.yaml.new"
    mv "$work/autokill.yaml.new" "$work/autokill.yaml"
}

metric() { # metric NAME [LABEL=VALUE...]: the sum of its samples that carry those labels
    local name=$1; shift
    curl -sf "http://127.0.0.1:$admin/metrics" | python3 -c '
import sys
name, want = sys.argv[1], sys.argv[2:]
total = 0.0
for line in sys.stdin:
    if line.startswith("#"):
        continue
    series, _, value = line.rpartition(" ")
    base = series.split("{")[0]
    if base == name and all(f"{w.split(chr(61))[0]}=\"{w.split(chr(61))[1]}\"" in series for w in want):
        total += float(value)
print(f"{total:g}")' "$name" "$@"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$server_pid/status"; }
fds() { ls "/proc/$server_pid/fd" | wc -l; }
# "RUNNING TOTAL": instances running, and instances in all.
instance_counts() {
    curl -sf "http://127.0.0.1:$admin/v1/instances" | python3 -c '
import json, sys
items = json.load(sys.stdin)["data"]["instances"]
print(sum(1 for i in items if i["state"] == "running"), len(items))' || echo "0 0"
}
# Instances of the group by origin: those made here through /v1 are named api-*.
count_api_instances() {
    curl -sf "http://127.0.0.1:$admin/v1/instances" | python3 -c '
import json, sys
items = json.load(sys.stdin)["data"]["instances"]
print(sum(1 for i in items if i["name"].startswith("api-") and i["state"] not in ("draining", "stopping", "deleted")))'
}

write_config 0
RUST_LOG=autokill=warn "$bin" serve --config "$work/autokill.yaml" > "$work/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 400); do
    curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null && break
    sleep 0.05
done
curl -sf "http://127.0.0.1:$admin/readyz" >/dev/null || { echo "soak.sh: autokill did not start" >&2; cat "$work/server.log" >&2; exit 1; }
# Every declared instance running before the baseline is taken.
for _ in $(seq 200); do
    read -r running _ < <(instance_counts)
    (( running >= instances )) && break
    sleep 0.1
done
sleep 1
fds_before=$(fds)
rss_start=$(rss_kib)

# The /v1 creator: keeps INSTANCES api-* instances in the group.
(
    n=0
    end=$((SECONDS + duration))
    while (( SECONDS < end )); do
        have=$(count_api_instances 2>/dev/null || echo "$instances")
        while (( have < instances )); do
            n=$((n + 1))
            curl -sf "http://127.0.0.1:$admin/v1/instances" -H 'Content-Type: application/json' \
                -d "{\"name\":\"api-$n\",\"image\":\"hello\",\"autostart\":true,\"service_group\":{\"name\":\"soak\"},\"autokill\":{\"num_requests\":$budget}}" \
                >/dev/null || true
            have=$((have + 1))
        done
        sleep 0.5
    done
) &
pids+=($!)

# The reloader: the file rewritten and SIGHUP every RELOAD_EVERY seconds.
(
    generation=0
    end=$((SECONDS + duration))
    while (( SECONDS + reload_every < end )); do
        sleep "$reload_every"
        generation=$((generation + 1))
        write_config "$generation"
        kill -HUP "$server_pid"
        echo "$generation" > "$work/reloads"
    done
) &
pids+=($!)

# RSS after the warm-up, and every 30 s, sampled while the load runs.
warmup=$(( duration / 5 > 20 ? duration / 5 : 20 ))
( sleep "$warmup"; rss_kib > "$work/rss_warm" ) &
pids+=($!)
(
    end=$((SECONDS + duration))
    while (( SECONDS + 30 <= end )); do
        sleep 30
        rss_kib >> "$work/rss_samples"
    done
) &
pids+=($!)

cat > "$work/count.lua" <<'LUA'
-- Counts answers by status in each thread; `done` adds them up.
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) statuses = {} end
function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end
function done(summary, latency, requests)
    local total = {}
    for _, t in ipairs(threads) do
        local s = t:get("statuses")
        for code, n in pairs(s) do total[code] = (total[code] or 0) + n end
    end
    for code, n in pairs(total) do io.write(string.format("status %d %d\n", code, n)) end
    local e = summary.errors
    io.write(string.format("socket_errors %d %d %d %d %d\n",
        e.connect, e.read, e.write, e.status, e.timeout))
end
LUA
echo "soak: ${duration}s, $connections connections, $instances declared + $instances /v1 instances of $budget requests, SIGHUP every ${reload_every}s" >&2
wrk -t2 -c"$connections" -d"${duration}s" --timeout 10s -s "$work/count.lua" \
    -H 'Host: soak.localhost' "http://127.0.0.1:$proxy/" > "$work/wrk.out" 2>&1 || true
rss_end=$(rss_kib)
for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
pids=()

# Back to the starting set: no /v1 instance left, the declared ones re-created, then the
# descriptors are counted again.
sleep 3
curl -sf "http://127.0.0.1:$admin/v1/instances" | python3 -c '
import json, sys
items = json.load(sys.stdin)["data"]["instances"]
print(json.dumps([{"name": i["name"]} for i in items if i["name"].startswith("api-")]))' > "$work/api.json"
curl -sf -X DELETE "http://127.0.0.1:$admin/v1/instances" -H 'Content-Type: application/json' \
    -d "@$work/api.json" >/dev/null || true
write_config 0
kill -HUP "$server_pid"
for _ in $(seq 300); do
    read -r running total < <(instance_counts)
    (( running == instances && total == instances )) && break
    sleep 0.1
done
sleep 2
# TCP connections of autokill to anything but its own listeners (its upstreams), in STATE.
upstream_sockets() {
    ss -tanp 2>/dev/null | awk -v pid="pid=$server_pid," -v proxy=":$proxy" -v admin=":$admin" -v st="$1" '
        index($0, pid) && $1 == st && $4 !~ (proxy "$") && $4 !~ (admin "$") { n++ } END { print n + 0 }'
}
fds_idle=$(fds)
closewait_idle=$(upstream_sockets CLOSE-WAIT)
# A worker drops a deleted instance's idle upstream connections when it next takes the route
# table, at its next request: a few requests on new connections reach both workers.
for _ in $(seq 32); do
    curl -s -o /dev/null -H "Host: declared-1.localhost" "http://127.0.0.1:$proxy/" || true
done
sleep 1
fds_after=$(fds)
closewait_after=$(upstream_sockets CLOSE-WAIT)
# Pooled connections to the live instances, made by those requests: not a leak.
pooled_after=$(upstream_sockets ESTAB)
kills=$(metric autokill_kills_total resource=instance reason=num_requests)
reloads=$(cat "$work/reloads" 2>/dev/null || echo 0)
reload_ok=$(metric autokill_config_last_reload_successful)
# Instance processes (hello) of this server that no instance of the view accounts for.
procs=$(pgrep -f -- "$bin hello --listen" | wc -l || true)
leftover=$(( procs > instances ? procs - instances : 0 ))

python3 - "$work/wrk.out" "$(cat "$work/rss_warm" 2>/dev/null || echo 0)" "$rss_end" \
    "$fds_before" "$fds_after" "$kills" "$reloads" "$reload_ok" "$leftover" "$duration" \
    "$rss_start" "$fds_idle" "$closewait_idle" "$closewait_after" "$pooled_after" \
    "$(cat "$work/rss_samples" 2>/dev/null | tr '\n' ' ')" <<'PY'
import sys
(out, rss_warm, rss_end, fds_before, fds_after, kills, reloads, reload_ok, leftover, duration,
 rss_start, fds_idle, closewait_idle, closewait_after, pooled_after, samples) = sys.argv[1:]
statuses, socket_errors = {}, [0] * 5
for line in open(out):
    parts = line.split()
    if parts[:1] == ["status"]:
        statuses[int(parts[1])] = int(parts[2])
    elif parts[:1] == ["socket_errors"]:
        socket_errors = [int(x) for x in parts[1:]]
rss_warm, rss_end, rss_start = int(rss_warm), int(rss_end), int(rss_start)
fds_before, fds_after, fds_idle = int(fds_before), int(fds_after), int(fds_idle)
pooled_after = int(pooled_after)
total = sum(statuses.values())
ok = statuses.get(200, 0)
expected = statuses.get(503, 0)
other = total - ok - expected
# wrk's "status" errors are the non-2xx answers, counted above by status.
errors = other + socket_errors[0] + socket_errors[1] + socket_errors[2] + socket_errors[4]
growth = (rss_end - rss_warm) / rss_warm * 100 if rss_warm else float("nan")
checks = {
    "errors other than 503 = 0": errors == 0,
    "RSS growth after warm-up < 10 %": growth < 10,
    "file descriptors back to the baseline (but pooled connections to live instances)":
        fds_after - pooled_after <= fds_before,
    "no leftover instance process": int(leftover) == 0,
    "last reload successful": float(reload_ok) == 1,
}
print(f"duration                 {duration} s")
print(f"requests                 {total} ({total / int(duration):.0f}/s): 200 {ok}, 503 {expected}, other {other}")
print(f"socket errors            connect {socket_errors[0]}, read {socket_errors[1]}, write {socket_errors[2]}, timeout {socket_errors[4]}")
print(f"errors (not 503)         {errors}")
print(f"RSS                      start {rss_start / 1024:.1f} MiB, after warm-up {rss_warm / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB ({growth:+.1f} %)")
print("RSS every 30 s (MiB)     " + " ".join(f"{int(k) / 1024:.1f}" for k in samples.split()))
print(f"open file descriptors    before the load {fds_before}; after it, idle {fds_idle} "
      f"({closewait_idle} upstream sockets in CLOSE-WAIT), after 32 requests {fds_after} "
      f"({closewait_after} in CLOSE-WAIT, {pooled_after} pooled to live instances)")
print(f"kills completed          {float(kills):.0f} (num_requests)")
print(f"reloads (SIGHUP + file)  {reloads}")
print(f"leftover processes       {leftover}")
for name, passed in checks.items():
    print(f"{'PASS' if passed else 'FAIL'}  {name}")
sys.exit(0 if all(checks.values()) else 1)
PY
