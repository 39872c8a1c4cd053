#!/usr/bin/env bash
# Kill storm: STORM instances spend their request budgets within about a second, and the proxy
# keeps serving another instance meanwhile. Loopback only; bounded; cleans up after itself.
#
#   benches/kill_storm.sh [autokill binary]      (default target/release/autokill, built if missing)
#   STORM=500  BUDGET=20  CONNECTIONS=8  PACE_MS=1  PHASE=5 (seconds)  MAX_KILLS= (default: the
#   configuration's default of runtime.max_concurrent_kills)  STOP_GRACE=2s  CONTROL=0
#   DRIVER_NICE=19  STOPPING_CGROUP= (none; a path, or `auto`: see below)  SPREAD_MS=0
#
# * The configuration declares STORM instances of `autokill hello` (the process runtime), each
#   with `autokill.num_requests: BUDGET`, and one instance "steady" with no limit.
# * wrk keeps CONNECTIONS connections to steady, each sending a request every PACE_MS ms (a
#   wrk `delay`, so that the proxy is not saturated and its latency is not queueing behind wrk
#   itself), for two phases of PHASE seconds: a baseline with nothing else happening, then the
#   storm, fired half a second into the second phase. A python3 asyncio client (one keep-alive
#   connection per storm instance) has sent each storm instance all but the last of its BUDGET
#   requests before the baseline; the storm is the last request of every one, sent at once (or
#   spread: SPREAD_MS), so that all STORM budgets are spent within the same moment and what the
#   second phase measures is the kills, not the traffic that led to them (500 requests at once
#   cost steady several milliseconds by themselves: compare CONTROL=1).
# * Reported: how long the driver took to spend every budget; the storm's completion time (from
#   its first request until every storm instance is gone from GET /v1/instances and no
#   `autokill hello` child of the server is left but steady's); kills completed
#   (autokill_kills_total{reason="num_requests"}); lost kills (storm instances or processes
#   left after the deadline, must be 0); requests of the storm not answered 200 (must be 0:
#   each instance is sent exactly its budget); steady's p99 in each phase and their ratio
#   (target <= 2). Exit status 1 when a criterion fails (the ratio is reported, not enforced:
#   the machine's other load moves it).
# * The python3 client runs at nice DRIVER_NICE (19): it is the measuring tool, sharing the
#   cores with the server, and its own work (500 responses at once, then polling the API and
#   /proc every 20 ms) should weigh as little as it can in steady's p99. DRIVER_NICE=0 runs it
#   at the server's priority.
# * CONTROL=1 is the same run without the kills: the storm instances have no limit, so the
#   same requests reach them and nothing is deleted. Its ratio is what the storm's traffic
#   (and the python3 client sending it, on the same cores) costs steady by itself; the
#   difference to a real run is what the kills cost. DIRECT=1 sends steady's load to the
#   instance's own address instead of through the proxy: what the storm costs an upstream on
#   the same machine without autokill's proxy in the way (the host's share of the spike).
# * SPREAD_MS spreads the storm's last requests evenly over that many milliseconds (instance
#   s<i>'s is sent (i - 1) / STORM of it after the first) instead of sending them all at once:
#   SPREAD_MS=1000 is 500 instances reaching their limits within the same second, each at its
#   own moment. The default 0 (all at once) is the harder case.
# * STOPPING_CGROUP sets runtime.stopping_cgroup: stopping instances are moved into that
#   cgroup before their SIGTERM. `auto` makes one for the run (root only; cgroup v2's
#   cpu.weight 1, else v1's cpu.shares 2, the lowest) and removes it at the end.
# * Bounded: every call has a timeout; the storm is given 120 s to complete; a watchdog ends the
#   run 5 minutes after its start whatever happens.
#
# Needs wrk, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/autokill}
storm=${STORM:-500}
budget=${BUDGET:-20}
connections=${CONNECTIONS:-8}
pace=${PACE_MS:-1}
phase=${PHASE:-5}
max_kills=${MAX_KILLS:-}
stop_grace=${STOP_GRACE:-2s}
control=${CONTROL:-0}
direct=${DIRECT:-0}
driver_nice=${DRIVER_NICE:-19}
stopping=${STOPPING_CGROUP:-}
spread=${SPREAD_MS:-0}
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || { echo "kill_storm.sh: $tool is not installed" >&2; exit 2; }
done
[[ "$spread" =~ ^[0-9]+$ ]] \
    || { echo "kill_storm.sh: SPREAD_MS is a whole number of milliseconds (got $spread)" >&2; exit 2; }
for knob in storm budget connections pace phase; do
    [[ "${!knob}" =~ ^[0-9]+$ ]] && (( ${!knob} >= 1 )) \
        || { echo "kill_storm.sh: ${knob^^} is a whole number >= 1 (got ${!knob})" >&2; exit 2; }
done
[[ "$driver_nice" =~ ^[0-9]+$ ]] && (( driver_nice <= 19 )) \
    || { echo "kill_storm.sh: DRIVER_NICE is a whole number from 0 to 19 (got $driver_nice)" >&2; exit 2; }
if [[ ! -x "$bin" ]]; then
    cargo build --release --bin autokill
fi
bin=$(realpath "$bin")

source benches/harness.sh kill_storm.sh 300
made_cgroup=""
if [[ "$stopping" == auto ]]; then
    if [[ -e /sys/fs/cgroup/cgroup.controllers ]]; then
        stopping=/sys/fs/cgroup/autokill-storm-$$ weight=cpu.weight lowest=1
    else
        stopping=/sys/fs/cgroup/cpu/autokill-storm-$$ weight=cpu.shares lowest=2
    fi
    mkdir "$stopping" && echo "$lowest" > "$stopping/$weight" \
        || { echo "kill_storm.sh: cannot make the cgroup $stopping (root and a writable cgroup file system needed)" >&2; exit 2; }
    made_cgroup=$stopping
    # After the harness's cleanup has stopped the server: the cgroup empties as its last
    # processes exit.
    trap 'cleanup; for _ in $(seq 50); do rmdir "$made_cgroup" 2>/dev/null && break; sleep 0.1; done' EXIT
fi
proxy=$(free_port)
admin=$(free_port)
{
    cat <<YAML
proxy: { listen: "127.0.0.1:$proxy", workers: 2 }
admin: { listen: "127.0.0.1:$admin" }
store: { path: "$work/store.redb" }
runtime:
  kind: process
  stop_grace: $stop_grace
${max_kills:+  max_concurrent_kills: $max_kills}
${stopping:+  stopping_cgroup: $stopping}
  images:
    hello: { command: ["{autokill}", "hello", "--listen", "127.0.0.1:{port}", "--name", "{name}"] }
instances:
  - { name: steady, image: hello }
YAML
    limit=$budget
    if [[ "$control" == 1 ]]; then limit=0; fi
    for i in $(seq "$storm"); do
        echo "  - { name: s$i, image: hello, autokill: { num_requests: $limit } }"
    done
} > "$work/autokill.yaml"
"$bin" serve --check --config "$work/autokill.yaml" >/dev/null

# Instances are processes: many sockets for the proxy and the storm's client.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
RUST_LOG=autokill=warn "$bin" serve --config "$work/autokill.yaml" > "$work/server.log" 2>&1 &
server_pid=$!

children() { # `autokill hello` children of the server
    pgrep -P "$server_pid" -f ' hello ' | wc -l
}
running() {
    curl -sf "http://127.0.0.1:$admin/v1/instances" | python3 -c '
import json, sys
print(sum(1 for i in json.load(sys.stdin)["data"]["instances"] if i["state"] == "running"))' \
        2>/dev/null || echo 0
}
deadline=$((SECONDS + 120))
until [[ "$(running)" == "$((storm + 1))" && "$(children)" == "$((storm + 1))" ]]; do
    (( SECONDS < deadline )) || { echo "kill_storm.sh: instances did not all start" >&2; exit 1; }
    sleep 0.5
done

cat > "$work/pace.lua" <<LUA
function delay() return $pace end
LUA
target="127.0.0.1:$proxy"
if [[ "$direct" == 1 ]]; then
    target=$(curl -sf "http://127.0.0.1:$admin/v1/instances/steady" | python3 -c '
import json, sys
i = json.load(sys.stdin)["data"]["instances"][0]
print(str(i["private_ip"]) + ":" + str(i["private_port"]))')
fi
steady() { # steady OUT: one phase of paced load on steady
    wrk -t1 -c"$connections" -d"${phase}s" --timeout 5s --latency -s "$work/pace.lua" \
        -H 'Host: steady.localhost' "http://$target/" > "$1" 2>&1
}

# The client that spends the budgets: one keep-alive connection per storm instance, each
# sending `count` requests. `prime` sends all but the last of every budget (before the
# measured phases, so that the storm's own traffic is not what is measured); `storm` sends the
# last one of each, all at once, and waits until every storm instance is gone.
cat > "$work/drive.py" <<'PY'
import asyncio, json, subprocess, sys, time, urllib.request

stage = sys.argv[1]
proxy, admin, storm, budget, server, control, spread = (int(a) for a in sys.argv[2:])
count = budget - 1 if stage == "prime" else 1

async def spend(i):
    """Sends instance s<i> `count` requests on one keep-alive connection; the statuses."""
    codes = []
    if stage == "storm" and spread:
        await asyncio.sleep((i - 1) * spread / storm / 1000)
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    request = f"GET / HTTP/1.1\r\nHost: s{i}.localhost\r\n\r\n".encode()
    try:
        for _ in range(count):
            writer.write(request)
            await writer.drain()
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").lower()
            codes.append(int(head.split(" ", 2)[1]))
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            await reader.readexactly(length)
            if "connection: close" in head:
                writer.close()
                reader, writer = await asyncio.open_connection("127.0.0.1", proxy)
    finally:
        writer.close()
    return codes

async def main():
    return await asyncio.gather(*(spend(i) for i in range(1, storm + 1)))

def left():
    """Storm instances still listed, and `autokill hello` children still alive (steady aside)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/v1/instances", timeout=10) as r:
        listed = sum(1 for i in json.load(r)["data"]["instances"] if i["name"] != "steady")
    ps = subprocess.run(["pgrep", "-P", str(server), "-f", " hello "], capture_output=True, text=True)
    return listed, len(ps.stdout.split()) - 1

start = time.monotonic()
codes = [c for per in asyncio.run(main()) for c in per]
fired = time.monotonic() - start
bad = sum(1 for c in codes if c != 200)
if stage == "prime":
    print(f"primed={len(codes)} bad={bad}")
    sys.exit(0)
deadline = start + 120
while True:
    listed, processes = left()
    done = time.monotonic() - start
    if control or (listed == 0 and processes <= 0) or time.monotonic() > deadline:
        break
    time.sleep(0.02)
print(f"fired={fired:.3f} done={done:.3f} listed={listed} processes={processes} requests={len(codes)} bad={bad}")
PY
drive() { nice -n "$driver_nice" python3 "$work/drive.py" "$1" "$proxy" "$admin" "$storm" "$budget" "$server_pid" "$control" "$spread"; }

if (( budget > 1 )); then
    drive prime > "$work/prime.out"
    grep -q ' bad=0$' "$work/prime.out" \
        || { echo "kill_storm.sh: priming failed: $(cat "$work/prime.out")" >&2; exit 1; }
fi
steady "$work/before.out"

# The storm, during the second phase.
steady "$work/during.out" &
pids+=($!)
sleep 0.5
drive storm > "$work/storm.out"
wait "${pids[@]}" || true
pids=()

kills=$(curl -sf "http://127.0.0.1:$admin/metrics" | python3 -c '
import sys
total = 0.0
for line in sys.stdin:
    if line.startswith("autokill_kills_total{") and "reason=\"num_requests\"" in line:
        total += float(line.rsplit(" ", 1)[1])
print(f"{total:g}")')

python3 - "$work/before.out" "$work/during.out" "$work/storm.out" "$kills" "$storm" \
    "${max_kills:-default (64)}" "$phase" "$control" "$direct" "${stopping:-none}" "$spread" <<'PY'
import re, sys

before, during, storm_out, kills, storm, max_kills, phase, control, direct, stopping, spread = sys.argv[1:]
storm, kills, phase, control = int(storm), float(kills), float(phase), control == "1"
if control:
    print("CONTROL run: the same traffic, no limits, no kills")

def p99(path):
    text = open(path).read()
    m = re.search(r"^\s*99%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
    if not m:
        sys.exit(f"kill_storm.sh: no p99 in wrk's output:\n{text}")
    scale = {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    requests = re.search(r"(\d+) requests in", text)
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: (.*)", text)
    return float(m.group(1)) * scale, int(requests.group(1)) if requests else 0, \
        (int(errors.group(1)) if errors else 0), (socket.group(1) if socket else "none")

b, b_n, b_err, b_sock = p99(before)
d, d_n, d_err, d_sock = p99(during)
s = dict(kv.split("=") for kv in open(storm_out).read().split())
fired, done = float(s["fired"]), float(s["done"])
lost = 0 if control else int(s["listed"]) + max(0, int(s["processes"]))
ratio = d / b if b else float("inf")
together = "together" if spread == "0" else f"spread over {spread} ms"
print(f"storm: {storm} instances spending their last request {together}, "
      f"max_concurrent_kills {max_kills}, stopping_cgroup {stopping}")
print(f"  last requests answered in        {fired * 1000:8.0f} ms  (every budget spent)")
print(f"  storm completed in               {done * 1000:8.0f} ms  (first request -> all gone, processes too)")
print(f"  kills completed                  {kills:8.0f}")
print(f"  lost (instances/processes left)  {lost:8d}   (must be 0)")
print(f"  storm requests not 200           {int(s['bad']):8d}   (must be 0)")
how = "straight to the instance, not through the proxy" if direct == "1" else "through the proxy"
print(f"steady (paced wrk {how}, {phase:g} s per phase)")
print(f"  p99 before                       {b:8.2f} ms  ({b_n} requests, non-2xx {b_err}, socket errors {b_sock})")
print(f"  p99 during the storm             {d:8.2f} ms  ({d_n} requests, non-2xx {d_err}, socket errors {d_sock})")
print(f"  ratio                            {ratio:8.2f}   (target <= 2)")
if done > phase - 0.5:
    print(f"  note: the storm outlasted the measured phase ({done:.1f} s > {phase - 0.5:g} s); raise PHASE")
failed = lost != 0 or int(s["bad"]) != 0 or kills != (0 if control else storm) or b_err or d_err
sys.exit(1 if failed else 0)
PY
