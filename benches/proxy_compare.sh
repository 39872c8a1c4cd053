#!/usr/bin/env bash
# Side-by-side benchmark: autokill against nginx and HAProxy as reverse proxies in front of the
# same upstream, as described in PERFORMANCE.md ("How to measure").
#
# Usage:  benches/proxy_compare.sh            (from the repository root, after cargo build --release)
#
# Environment (all optional):
#   DURATION=5s          length of every wrk run (and of the oha latency run, see LAT_DURATION)
#   CONNECTIONS=64       wrk/oha connections (PERFORMANCE.md quotes 64 and 256)
#   THREADS=1            wrk threads
#   ROUNDS=3             interleaved rounds; medians are taken over them
#   RATE=10000           oha fixed rate (req/s) for the latency run; RATE=0 skips the latency run
#   LAT_DURATION=5s      length of each oha run
#   TARGETS="direct autokill autokill-limit nginx haproxy"
#                        autokill       = instance with autokill: {num_requests: 0} (no limit)
#                        autokill-limit = instance with num_requests: AK_LIMIT (counted against a
#                                         limit it never reaches); its own upstream nginx, same config
#                        autokill-base  = AUTOKILL_BASE (another build, e.g. of main) as a second
#                                         server with its own instance `up` (same upstream config, its
#                                         own nginx process), so before and after are measured in one run
#   AUTOKILL_BASE=       a second autokill binary; adds the target autokill-base (and "÷ autokill-base")
#   CLOSE=0              1: every request on a new connection (wrk -H "Connection: close", oha
#                        --disable-keepalive); the proxies keep their upstream connections pooled
#   AK_LIMIT=1000000000  request limit of the autokill-limit instance
#   AK_POOL_IDLE=128     autokill proxy.pool_idle_per_instance (per worker, like nginx `keepalive 128`)
#   WORKERS=2            workers of every proxy (nginx worker_processes, HAProxy nbthread, autokill workers)
#   BASE_PORT=18080      autokill proxy BASE, admin BASE+1, nginx proxy BASE+2, haproxy BASE+3
#   AUTOKILL=target/release/autokill   the binary to measure
#   IDLE_WAIT=60         before each run wait up to this many seconds for the machine to be idle (it is
#                        shared); runs where other work still used > 0.1 core are left out of the medians
#                        (unless every run of a target is), see the "others" column
#   PERF=1               also: syscalls and context switches per request of each proxy (`perf stat`, one
#                        wrk run each), and a profile of autokill under load (`perf record`, top symbols)
#   KEEP_TMP=1           keep the temp dir (configs, logs, raw wrk/oha output)
#
# Needs: wrk, nginx, haproxy, curl, jq or python3; optional: oha (latency run), perf (PERF=1).
# Loopback only. The script installs nothing; it stops everything it started on exit.
#
# CPU per request: utime+stime from /proc/PID/stat of the proxy process (all its threads; for nginx
# the master and its workers), before and after each run, divided by the requests wrk completed.
# For autokill only the autokill process is counted, not its child (the upstream nginx). The
# "upstream µs/req" column is the same figure for the upstream nginx of that run.
set -euo pipefail

DURATION=${DURATION:-5s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
RATE=${RATE:-10000}
LAT_DURATION=${LAT_DURATION:-$DURATION}
AUTOKILL_BASE=${AUTOKILL_BASE:-}
CLOSE=${CLOSE:-0}
TARGETS=${TARGETS:-direct autokill autokill-limit nginx haproxy}
if [[ -n $AUTOKILL_BASE && " $TARGETS " != *" autokill-base "* ]]; then TARGETS="$TARGETS autokill-base"; fi
AK_LIMIT=${AK_LIMIT:-1000000000}
AK_POOL_IDLE=${AK_POOL_IDLE:-128}
WORKERS=${WORKERS:-2}
BASE_PORT=${BASE_PORT:-18080}
PERF=${PERF:-0}
IDLE_WAIT=${IDLE_WAIT:-60}
KEEP_TMP=${KEEP_TMP:-0}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AUTOKILL=${AUTOKILL:-$REPO/target/release/autokill}

AK_PORT=$BASE_PORT
ADMIN_PORT=$((BASE_PORT + 1))
AKB_PORT=$((BASE_PORT + 4))
AKB_ADMIN_PORT=$((BASE_PORT + 5))
NGINX_PORT=$((BASE_PORT + 2))
HAPROXY_PORT=$((BASE_PORT + 3))
HOST_HEADER=up.localhost

say() { printf '%s\n' "$*"; }
die() { printf 'proxy_compare: %s\n' "$*" >&2; exit 1; }
has_target() { [[ " $TARGETS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------
missing=()
need() { # need TOOL "install command"
    command -v "$1" >/dev/null 2>&1 || missing+=("  $1: not found; install it with: $2")
}
need wrk "apt-get install -y wrk"
need nginx "apt-get install -y nginx-light   (or nginx)"
need curl "apt-get install -y curl"
need awk "apt-get install -y gawk   (or mawk)"
if has_target haproxy; then need haproxy "apt-get install -y haproxy"; fi
if command -v jq >/dev/null 2>&1; then
    JSON=jq
elif command -v python3 >/dev/null 2>&1; then
    JSON=python3
else
    missing+=("  jq: not found (nor python3); install it with: apt-get install -y jq")
fi
if has_target autokill-base && [[ ! -x $AUTOKILL_BASE ]]; then
    missing+=("  autokill-base: AUTOKILL_BASE=$AUTOKILL_BASE is not an executable")
fi
if [[ ! -x $AUTOKILL ]]; then
    missing+=("  autokill: $AUTOKILL not found; build it with: (cd $REPO && cargo build --release)")
fi
if ((${#missing[@]})); then
    printf 'proxy_compare: missing tools:\n' >&2
    printf '%s\n' "${missing[@]}" >&2
    exit 2
fi
HAVE_OHA=0
if command -v oha >/dev/null 2>&1; then HAVE_OHA=1; fi
if [[ $PERF == 1 ]] && ! command -v perf >/dev/null 2>&1; then
    die "PERF=1 needs perf; install it with: apt-get install -y linux-perf"
fi
for t in $TARGETS; do
    case $t in direct | autokill | autokill-limit | autokill-base | nginx | haproxy) ;; *) die "unknown target $t" ;; esac
done
CLK_TCK=$(getconf CLK_TCK)

# ---------------------------------------------------------------------------------------------
# Temp dir and cleanup: every process started here is stopped on exit, whatever the exit path.
# ---------------------------------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/proxy_compare.XXXXXX")
AK_PID="" AKB_PID="" NGINX_PID="" HAPROXY_PID="" LOAD_PID="" PERF_PID=""

alive() { [[ -n $1 ]] && kill -0 "$1" 2>/dev/null; }

stop_pid() { # stop_pid PID SIGNAL SECONDS: signal, wait, then SIGKILL
    local pid=$1 sig=$2 secs=$3 i
    alive "$pid" || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < secs * 10; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

# Processes whose command line names the temp dir (upstream and proxy nginx masters, haproxy,
# autokill, sh wrappers), and their children (nginx workers do not name it).
tmp_pids() {
    local d pid cmd ppid rest found=()
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        if [[ $pid == "$$" ]]; then continue; fi
        cmd=$({ tr '\0' ' ' <"$d/cmdline"; } 2>/dev/null) || continue
        if [[ $cmd == *"$TMP"* ]]; then found+=("$pid"); fi
    done
    ((${#found[@]})) || return 0
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        rest=$(cat "$d/stat" 2>/dev/null) || continue
        rest=${rest##*) }
        read -r _ ppid _ <<<"$rest"
        if [[ " ${found[*]} " == *" $ppid "* ]]; then found+=("$pid"); fi
    done
    printf '%s\n' "${found[@]}" | sort -u
}

cleanup() {
    local rc=$? left
    set +e
    trap - EXIT INT TERM
    stop_pid "$LOAD_PID" INT 2
    stop_pid "$PERF_PID" INT 5
    # autokill stops its instances on SIGTERM (within its stop_grace).
    stop_pid "$AK_PID" TERM 15
    stop_pid "$AKB_PID" TERM 15
    stop_pid "$NGINX_PID" TERM 5
    stop_pid "$HAPROXY_PID" TERM 5
    left=$(tmp_pids)
    if [[ -n $left ]]; then
        say "cleanup: stopping leftover processes of $TMP: $(echo $left)" >&2
        kill -TERM $left 2>/dev/null
        sleep 1
        left=$(tmp_pids)
        if [[ -n $left ]]; then kill -KILL $left 2>/dev/null; fi
    fi
    if [[ $KEEP_TMP == 1 || $rc != 0 ]]; then
        say "temp dir kept: $TMP" >&2
    else
        rm -rf "$TMP"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # wait_port PORT SECONDS PID-that-must-stay-alive NAME
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        port_open "$1" && return 0
        alive "$3" || die "$4 exited while starting; see $TMP"
        sleep 0.1
    done
    die "$4 did not listen on 127.0.0.1:$1 within $2 s"
}

# PIDs of a process and its direct children (nginx master + workers).
with_children() {
    local root=$1 d rest ppid
    echo "$root"
    for d in /proc/[0-9]*; do
        rest=$(cat "$d/stat" 2>/dev/null) || continue
        rest=${rest##*) }
        read -r _ ppid _ <<<"$rest"
        if [[ $ppid == "$root" ]]; then echo "${d#/proc/}"; fi
    done
}

# utime+stime (clock ticks) of the given processes: /proc/PID/stat sums all of a process's threads.
cpu_ticks() {
    local pid s total=0 f
    for pid in "$@"; do
        s=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        s=${s##*) }
        read -r -a f <<<"$s"
        total=$((total + f[11] + f[12]))
    done
    echo "$total"
}

# Busy ticks of the whole machine (all CPUs) from /proc/stat.
box_ticks() { awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }

# Waits (at most IDLE_WAIT s) until the machine has been idle for 1 s: under 10 % of one core busy.
wait_idle() {
    local start=$SECONDS a b
    while ((SECONDS - start < IDLE_WAIT)); do
        a=$(box_ticks)
        sleep 1
        b=$(box_ticks)
        if (((b - a) * 10 < CLK_TCK)); then return 0; fi
    done
    return 0
}

# CPU ticks used by this shell's reaped children so far (wrk/oha and the little helpers), into CT.
# `times` must run in this shell, not in a $(...) subshell, which has children of its own.
child_ticks() {
    local line
    times >"$TMP/times"
    line=$(tail -n 1 "$TMP/times")
    CT=$(awk -v l="$line" -v hz="$CLK_TCK" 'BEGIN {
        n = split(l, f, " "); t = 0
        for (i = 1; i <= n; i++) { m = f[i]; sub("s$", "", m); split(m, ms, "m"); t += ms[1] * 60 + ms[2] }
        printf "%d", t * hz + 0.5 }')
}

# JSON of /v1/instances -> "name ip:port state requests" lines (private_ip is the IP alone, as in
# Unikraft's API; the port is private_port).
instances() { # instances [ADMIN_PORT]
    local body
    body=$(curl -fsS "http://127.0.0.1:${1:-$ADMIN_PORT}/v1/instances") || return 1
    if [[ $JSON == jq ]]; then
        jq -r '.data.instances[] | "\(.name) \(.private_ip):\(.private_port) \(.state) \(.requests)"' <<<"$body"
    else
        python3 -c 'import json,sys
for i in json.load(sys.stdin)["data"]["instances"]:
    print(i["name"], "%s:%s" % (i.get("private_ip"), i.get("private_port")), i["state"], i["requests"])' <<<"$body"
    fi
}

# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------
for p in "$AK_PORT" "$ADMIN_PORT" "$NGINX_PORT" "$HAPROXY_PORT" "$AKB_PORT" "$AKB_ADMIN_PORT"; do
    port_open "$p" && die "port 127.0.0.1:$p is in use (set BASE_PORT)"
done

# The upstream: nginx, one worker, a fixed 13-byte answer. @PORT@ is filled by the image command.
cat >"$TMP/upstream.conf.in" <<EOF
worker_processes 1;
pid $TMP/upstream-@PORT@.pid;
error_log $TMP/upstream-@PORT@.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/body-@PORT@;
    proxy_temp_path $TMP/proxy-@PORT@;
    server {
        listen 127.0.0.1:@PORT@ reuseport;
        location / { return 200 "Hello, world\n"; }
    }
}
EOF

up_cmd="sed 's/@PORT@/{port}/g' $TMP/upstream.conf.in > $TMP/upstream-{port}.conf && exec nginx -p $TMP -e $TMP/upstream-{port}.err -c $TMP/upstream-{port}.conf -g 'daemon off;'"
up_cmd_yaml=${up_cmd//\\/\\\\}
up_cmd_yaml=${up_cmd_yaml//\"/\\\"}
{
    cat <<EOF
proxy:
  listen: 127.0.0.1:$AK_PORT
  workers: $WORKERS
  pool_idle_per_instance: $AK_POOL_IDLE
admin:
  listen: 127.0.0.1:$ADMIN_PORT
store:
  path: $TMP/autokill.redb
runtime:
  kind: process
  stop_grace: 3s
  images:
    upstream:
      command: ["sh", "-c", "$up_cmd_yaml"]
instances:
  - name: up
    image: upstream
    autokill: { num_requests: 0 }
EOF
    if has_target autokill-limit; then
        cat <<EOF
  - name: lim
    image: upstream
    autokill: { num_requests: $AK_LIMIT }
EOF
    fi
} >"$TMP/autokill.yaml"

# ---------------------------------------------------------------------------------------------
# Start autokill (which starts the upstream), then nginx and HAProxy pointed at that upstream.
# ---------------------------------------------------------------------------------------------
"$AUTOKILL" serve --check --config "$TMP/autokill.yaml" >"$TMP/check.log" 2>&1 ||
    { cat "$TMP/check.log" >&2; die "autokill refused the generated config $TMP/autokill.yaml"; }
NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$AUTOKILL" serve --config "$TMP/autokill.yaml" >"$TMP/autokill.log" 2>&1 &
AK_PID=$!
wait_port "$ADMIN_PORT" 20 "$AK_PID" autokill
wait_port "$AK_PORT" 20 "$AK_PID" autokill

UP_ADDR="" LIM_ADDR=""
for ((i = 0; i < 200; i++)); do
    list=$(instances || true)
    UP_ADDR=$(awk '$1 == "up" && $3 == "running" { print $2 }' <<<"$list")
    LIM_ADDR=$(awk '$1 == "lim" && $3 == "running" { print $2 }' <<<"$list")
    if [[ -n $UP_ADDR ]] && { ! has_target autokill-limit || [[ -n $LIM_ADDR ]]; }; then break; fi
    alive "$AK_PID" || die "autokill exited; see $TMP/autokill.log"
    sleep 0.1
done
[[ -n $UP_ADDR ]] || die "instance up not running after 20 s: $list"
if has_target autokill-limit && [[ -z $LIM_ADDR ]]; then die "instance lim not running: $list"; fi
UP_PORT=${UP_ADDR##*:}
UP_PID=$(cat "$TMP/upstream-$UP_PORT.pid")
LIM_PID=""
if [[ -n $LIM_ADDR ]]; then LIM_PID=$(cat "$TMP/upstream-${LIM_ADDR##*:}.pid"); fi

# The baseline build: a server of its own with the same instance `up` (its own upstream process).
UPB_PID=""
if has_target autokill-base; then
    sed -e "s|127.0.0.1:$AK_PORT|127.0.0.1:$AKB_PORT|; s|127.0.0.1:$ADMIN_PORT|127.0.0.1:$AKB_ADMIN_PORT|" \
        -e "s|$TMP/autokill.redb|$TMP/autokill-base.redb|" -e '/^  - name: lim$/,$d' \
        "$TMP/autokill.yaml" >"$TMP/autokill-base.yaml"
    NO_COLOR=1 RUST_LOG=${RUST_LOG:-info} "$AUTOKILL_BASE" serve --config "$TMP/autokill-base.yaml" \
        >"$TMP/autokill-base.log" 2>&1 &
    AKB_PID=$!
    wait_port "$AKB_ADMIN_PORT" 20 "$AKB_PID" autokill-base
    wait_port "$AKB_PORT" 20 "$AKB_PID" autokill-base
    UPB_ADDR=""
    for ((i = 0; i < 200; i++)); do
        UPB_ADDR=$(instances "$AKB_ADMIN_PORT" | awk '$1 == "up" && $3 == "running" { print $2 }' || true)
        if [[ -n $UPB_ADDR ]]; then break; fi
        alive "$AKB_PID" || die "autokill-base exited; see $TMP/autokill-base.log"
        sleep 0.1
    done
    [[ -n $UPB_ADDR ]] || die "autokill-base: instance up not running after 20 s"
    UPB_PID=$(cat "$TMP/upstream-${UPB_ADDR##*:}.pid")
fi

if has_target nginx; then
    cat >"$TMP/nginx-proxy.conf" <<EOF
worker_processes $WORKERS;
pid $TMP/nginx-proxy.pid;
error_log $TMP/nginx-proxy.err warn;
events { worker_connections 8192; }
http {
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path $TMP/nginx-proxy-body;
    proxy_temp_path $TMP/nginx-proxy-temp;
    upstream up {
        server $UP_ADDR;
        keepalive 128;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    nginx -p "$TMP" -e "$TMP/nginx-proxy.err" -c "$TMP/nginx-proxy.conf" -g 'daemon off;' \
        >"$TMP/nginx-proxy.log" 2>&1 &
    NGINX_PID=$!
    wait_port "$NGINX_PORT" 10 "$NGINX_PID" "nginx (proxy)"
fi

if has_target haproxy; then
    cat >"$TMP/haproxy.cfg" <<EOF
global
    nbthread $WORKERS
    maxconn 4096
    pidfile $TMP/haproxy.pid
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:$HAPROXY_PORT
    default_backend be
backend be
    server up $UP_ADDR
EOF
    haproxy -db -f "$TMP/haproxy.cfg" >"$TMP/haproxy.log" 2>&1 &
    HAPROXY_PID=$!
    wait_port "$HAPROXY_PORT" 10 "$HAPROXY_PID" haproxy
fi

url_of() {
    case $1 in
    direct) echo "http://$UP_ADDR/" ;;
    autokill | autokill-limit) echo "http://127.0.0.1:$AK_PORT/" ;;
    autokill-base) echo "http://127.0.0.1:$AKB_PORT/" ;;
    nginx) echo "http://127.0.0.1:$NGINX_PORT/" ;;
    haproxy) echo "http://127.0.0.1:$HAPROXY_PORT/" ;;
    esac
}
host_of() { if [[ $1 == autokill-limit ]]; then echo lim.localhost; else echo "$HOST_HEADER"; fi; }
proxy_pids() {
    case $1 in
    direct) ;;
    autokill | autokill-limit) echo "$AK_PID" ;;
    autokill-base) echo "$AKB_PID" ;;
    nginx) with_children "$NGINX_PID" ;;
    haproxy) echo "$HAPROXY_PID" ;;
    esac
}
upstream_pids() {
    case $1 in
    autokill-limit) with_children "$LIM_PID" ;;
    autokill-base) with_children "$UPB_PID" ;;
    *) with_children "$UP_PID" ;;
    esac
}

# Every target must answer 200 "Hello, world" before anything is measured.
for t in $TARGETS; do
    out=$(curl -sS -o "$TMP/curl.body" -w '%{http_code}' -H "Host: $(host_of "$t")" "$(url_of "$t")") ||
        die "$t: curl $(url_of "$t") failed"
    [[ $out == 200 && $(cat "$TMP/curl.body") == "Hello, world" ]] ||
        die "$t: expected 200 \"Hello, world\", got $out $(head -c 200 "$TMP/curl.body")"
done

# ---------------------------------------------------------------------------------------------
# Throughput rounds
# ---------------------------------------------------------------------------------------------
# The revision of the code (last commit touching it), and whether the binary is older than the sources.
ak_rev=$(git -C "$REPO" log -1 --format=%h -- src Cargo.toml Cargo.lock 2>/dev/null || echo '?')
if ! git -C "$REPO" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null; then ak_rev="$ak_rev+dirty"; fi
if [[ -n $(find "$REPO/src" "$REPO/Cargo.toml" "$REPO/Cargo.lock" -newer "$AUTOKILL" -print -quit 2>/dev/null) ]]; then
    ak_rev="$ak_rev, BINARY OLDER THAN THE SOURCES (cargo build --release)"
fi
say "proxy_compare: $(nproc) CPUs, $(uname -r), load avg $(cut -d' ' -f1-3 /proc/loadavg)"
say "  autokill: code $ak_rev, $AUTOKILL (workers $WORKERS, pool_idle_per_instance $AK_POOL_IDLE), $(nginx -v 2>&1 | sed 's/.*: //')$(has_target haproxy && haproxy -v | head -1 | awk '{print ", HAProxy " $3}'), $(wrk -v 2>&1 | head -1 | awk '{print "wrk " $2}')"
say "  upstream nginx (1 worker) at $UP_ADDR${LIM_ADDR:+ (autokill-limit: $LIM_ADDR, num_requests $AK_LIMIT)}"
if has_target autokill-base; then
    say "  autokill-base: $AUTOKILL_BASE, its own upstream nginx (same config) at $UPB_ADDR"
fi
if [[ $CLOSE == 1 ]]; then say "  CLOSE=1: every request on a new client connection (Connection: close)"; fi
say "  wrk -t$THREADS -c$CONNECTIONS -d$DURATION, $ROUNDS interleaved rounds"
say "  µs/req: CPU (user+sys) per completed request; others: cores used meanwhile by anything but proxy," \
    "upstream and wrk (≈0 on an idle machine)"
say ""

CLOSE_WRK=() CLOSE_OHA=()
if [[ $CLOSE == 1 ]]; then CLOSE_WRK=(-H "Connection: close") CLOSE_OHA=(--disable-keepalive); fi
RESULTS=$TMP/results.tsv
: >"$RESULTS"
AK_SENT_UP=1 # the curl check above

# Load generators run in the background and are waited for, so that a signal reaches the trap at once.
run_wrk() { # run_wrk TARGET DURATION OUTFILE
    wrk -t"$THREADS" -c"$CONNECTIONS" -d"$2" --latency -H "Host: $(host_of "$1")" "${CLOSE_WRK[@]}" "$(url_of "$1")" >"$3" 2>&1 &
    LOAD_PID=$!
    wait "$LOAD_PID"
}

# Warm-up: pools filled, caches hot.
for t in $TARGETS; do run_wrk "$t" 1s "$TMP/warmup-$t.txt" || die "wrk failed on $t: $(cat "$TMP/warmup-$t.txt")"; done
for t in $TARGETS; do
    if [[ $t == autokill ]]; then AK_SENT_UP=$((AK_SENT_UP + $(awk '/requests in/ {print $1}' "$TMP/warmup-$t.txt"))); fi
done

read -r -a tlist <<<"$TARGETS"
ntargets=${#tlist[@]}
printf '%-5s %-15s %9s %9s %13s %10s %11s %7s %s\n' round target req/s requests "proxy µs/req" "up µs/req" "wrk µs/req" "others" errors
for ((r = 1; r <= ROUNDS; r++)); do
    for ((k = 0; k < ntargets; k++)); do
        t=${tlist[$(((k + r - 1) % ntargets))]} # rotate the order every round
        out=$TMP/wrk-$t-$r.txt
        mapfile -t pp < <(proxy_pids "$t")
        mapfile -t up < <(upstream_pids "$t")
        wait_idle
        child_ticks
        c0=$CT p0=$(cpu_ticks "${pp[@]}") u0=$(cpu_ticks "${up[@]}") b0=$(box_ticks) s0=$(date +%s.%N)
        run_wrk "$t" "$DURATION" "$out" || die "wrk failed on $t: $(cat "$out")"
        b1=$(box_ticks) s1=$(date +%s.%N)
        child_ticks
        c1=$CT p1=$(cpu_ticks "${pp[@]}") u1=$(cpu_ticks "${up[@]}")
        reqs=$(awk '/requests in/ {print $1}' "$out")
        rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
        non2xx=$(awk '/Non-2xx or 3xx responses:/ {print $NF}' "$out")
        sockerr=$(awk '/Socket errors:/ {gsub(",", ""); print "connect " $4 " read " $6 " write " $8 " timeout " $10}' "$out")
        errs=""
        if [[ -n $non2xx ]]; then errs="non-2xx $non2xx"; fi
        if [[ -n $sockerr ]]; then errs="${errs:+$errs, }$sockerr"; fi
        if [[ $t == direct ]]; then
            pcpu=-
        else
            pcpu=$(awk -v a="$p0" -v b="$p1" -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
        fi
        ucpu=$(awk -v a="$u0" -v b="$u1" -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
        wcpu=$(awk -v a="$c0" -v b="$c1" -v n="$reqs" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - a) / hz * 1e6 / n }')
        # CPU (in cores) used during the run by everything else on the machine: other users of a
        # shared box, the kernel's softirq work not charged to our processes. Above ~0.1 the run is suspect.
        others=$(awk -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v u="$((u1 - u0))" -v c="$((c1 - c0))" \
            -v s0="$s0" -v s1="$s1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - p - u - c) / hz / (s1 - s0) }')
        if [[ $t == autokill ]]; then AK_SENT_UP=$((AK_SENT_UP + reqs)); fi
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "$rps" "$pcpu" "$ucpu" "$wcpu" "$others" "${errs:-0}" >>"$RESULTS"
        printf '%-5s %-15s %9.0f %9s %12s %9s %10s %7s %s\n' "$r" "$t" "$rps" "$reqs" "$pcpu" "$ucpu" "$wcpu" "$others" "${errs:-0}"
    done
done

# Runs disturbed by other work (others > 0.1 core) are left out, unless all runs of a target are.
clean_runs() { # clean_runs TARGET
    local n
    n=$(awk -F'\t' -v t="$1" '$1 == t && $7 <= 0.1' "$RESULTS" | wc -l)
    if ((n > 0)); then awk -F'\t' -v t="$1" '$1 == t && $7 <= 0.1' "$RESULTS"; else awk -F'\t' -v t="$1" '$1 == t' "$RESULTS"; fi
}
median() { # median TARGET COLUMN
    clean_runs "$1" | awk -F'\t' -v c="$2" '$c != "-" { print $c }' | sort -g |
        awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) printf "%.2f\n", v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }

declare -A MRPS MCPU MUP MOTH MN
for t in $TARGETS; do
    MN[$t]=$(clean_runs "$t" | wc -l)
    MRPS[$t]=$(median "$t" 3)
    MCPU[$t]=$(median "$t" 4)
    MUP[$t]=$(median "$t" 5)
    MOTH[$t]=$(median "$t" 7)
done
say ""
say "Medians over $ROUNDS rounds (wrk -t$THREADS -c$CONNECTIONS -d$DURATION):"
printf '%-15s %10s %9s %14s %17s %7s %5s\n' target req/s "÷ nginx" "proxy µs/req" "upstream µs/req" others runs
for t in $TARGETS; do
    printf '%-15s %10.0f %8s %13s %16s %7s %5s\n' "$t" "${MRPS[$t]}" "$(ratio "${MRPS[$t]}" "${MRPS[nginx]:--}")" \
        "${MCPU[$t]}" "${MUP[$t]}" "${MOTH[$t]}" "${MN[$t]}/$ROUNDS"
done
say ""
for a in autokill autokill-limit autokill-base; do
    has_target "$a" || continue
    for b in nginx haproxy autokill-base; do
        has_target "$b" && [[ $a != "$b" ]] || continue
        printf '%-15s ÷ %-8s req/s %s   CPU/request %s\n' "$a" "$b" \
            "$(ratio "${MRPS[$a]}" "${MRPS[$b]}")" "$(ratio "${MCPU[$a]}" "${MCPU[$b]}")"
    done
done
busy_runs=$(awk -F'\t' '$7 > 0.1' "$RESULTS" | wc -l)
if ((busy_runs > 0)); then
    say "WARNING: in $busy_runs of $((ROUNDS * ntargets)) runs something else used more than 0.1 core (column" \
        "\"others\"); they are left out of the medians where a target has undisturbed runs (column \"runs\")."
fi
if grep -qv -P '\t0$' "$RESULTS"; then
    say "ERRORS in some runs (see the errors column; raw wrk output in $TMP); the temp dir is kept."
    KEEP_TMP=1
fi

# ---------------------------------------------------------------------------------------------
# Latency at a fixed rate
# ---------------------------------------------------------------------------------------------
say ""
if [[ $RATE == 0 ]]; then
    say "Latency run skipped (RATE=0)."
elif [[ $HAVE_OHA == 0 ]]; then
    say "Latency run skipped: oha not found; install it with: cargo install oha --locked"
else
    say "Latency at a fixed rate (oha -q $RATE -z $LAT_DURATION -c $CONNECTIONS):"
    printf '%-15s %10s %9s %9s %9s %13s %7s %s\n' target req/s p50_ms p99_ms max_ms "proxy µs/req" others statuses
    for t in $TARGETS; do
        out=$TMP/oha-$t.json
        mapfile -t pp < <(proxy_pids "$t")
        mapfile -t up < <(upstream_pids "$t")
        wait_idle
        child_ticks
        c0=$CT p0=$(cpu_ticks "${pp[@]}") u0=$(cpu_ticks "${up[@]}") b0=$(box_ticks) s0=$(date +%s.%N)
        oha --no-tui --output-format json -q "$RATE" -z "$LAT_DURATION" -c "$CONNECTIONS" "${CLOSE_OHA[@]}" \
            -H "Host: $(host_of "$t")" "$(url_of "$t")" >"$out" 2>"$TMP/oha-$t.err" &
        LOAD_PID=$!
        wait "$LOAD_PID" || die "oha failed on $t: $(cat "$TMP/oha-$t.err")"
        b1=$(box_ticks) s1=$(date +%s.%N)
        child_ticks
        c1=$CT p1=$(cpu_ticks "${pp[@]}") u1=$(cpu_ticks "${up[@]}")
        others=$(awk -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v u="$((u1 - u0))" -v c="$((c1 - c0))" \
            -v s0="$s0" -v s1="$s1" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", (b - p - u - c) / hz / (s1 - s0) }')
        if [[ $JSON == jq ]]; then
            read -r rps p50 p99 max statuses n < <(jq -r '[.summary.requestsPerSec, .latencyPercentiles.p50 * 1000,
                .latencyPercentiles.p99 * 1000, .summary.slowest * 1000,
                ([(.statusCodeDistribution | to_entries[] | "\(.key):\(.value)"),
                  ((.errorDistribution // {}) | to_entries[] | "\(.key | gsub(" "; "_")):\(.value)")] | join(",")),
                (.statusCodeDistribution | to_entries | map(.value) | add // 0)] | @tsv' "$out")
        else
            read -r rps p50 p99 max statuses n < <(python3 -c 'import json,sys
d = json.load(open(sys.argv[1])); s = d["statusCodeDistribution"]
print(d["summary"]["requestsPerSec"], d["latencyPercentiles"]["p50"] * 1000, d["latencyPercentiles"]["p99"] * 1000,
      d["summary"]["slowest"] * 1000,
      ",".join([f"{k}:{v}" for k, v in s.items()] + [k.replace(" ", "_") + f":{v}" for k, v in (d.get("errorDistribution") or {}).items()]),
      sum(s.values()))' "$out")
        fi
        if [[ $t == autokill ]]; then AK_SENT_UP=$((AK_SENT_UP + n)); fi
        if [[ $t == direct ]]; then pcpu=-; else
            pcpu=$(awk -v a="$p0" -v b="$p1" -v n="$n" -v hz="$CLK_TCK" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / hz * 1e6 / n; else print "-" }')
        fi
        note=""
        if awk -v a="$rps" -v q="$RATE" 'BEGIN { exit !(a < 0.95 * q) }'; then note="  (rate not sustained)"; fi
        if [[ -s $TMP/oha-$t.err ]]; then note="$note  [oha: $(head -c 120 "$TMP/oha-$t.err" | tr '\n' ' ')]"; fi
        printf '%-15s %10.0f %9.3f %9.3f %9.3f %12s %7s %s%s\n' "$t" "$rps" "$p50" "$p99" "$max" "$pcpu" "$others" "$statuses" "$note"
    done
fi

# ---------------------------------------------------------------------------------------------
# Optional profile of autokill under load
# ---------------------------------------------------------------------------------------------
if [[ $PERF == 1 ]]; then
    say ""
    say "Per request, from perf stat on the proxy's processes during one wrk -c$CONNECTIONS -d$DURATION run each:"
    printf '%-15s %9s %10s %15s %12s\n' target req/s syscalls "context switches" migrations
    for t in $TARGETS; do
        [[ $t == direct ]] && continue
        pids=$(proxy_pids "$t" | paste -sd, -)
        wait_idle
        perf stat -x, -e raw_syscalls:sys_enter,context-switches,cpu-migrations -p "$pids" \
            -o "$TMP/perfstat-$t.txt" >/dev/null 2>&1 &
        PERF_PID=$!
        sleep 0.3
        run_wrk "$t" "$DURATION" "$TMP/wrk-perfstat-$t.txt" || true
        stop_pid "$PERF_PID" INT 10
        PERF_PID=""
        reqs=$(awk '/requests in/ {print $1}' "$TMP/wrk-perfstat-$t.txt")
        if [[ $t == autokill ]]; then AK_SENT_UP=$((AK_SENT_UP + reqs)); fi
        awk -F, -v n="$reqs" -v t="$t" -v rps="$(awk '/^Requests\/sec:/ {print $2}' "$TMP/wrk-perfstat-$t.txt")" '
            $3 ~ /sys_enter/ { sc = $1 } $3 == "context-switches" { cs = $1 } $3 == "cpu-migrations" { mg = $1 }
            END { printf "%-15s %9.0f %10.2f %15.3f %12.4f\n", t, rps, sc / n, cs / n, mg / n }' "$TMP/perfstat-$t.txt"
    done
fi

if [[ $PERF == 1 ]] && has_target autokill; then
    say ""
    say "perf profile of autokill under wrk -c$CONNECTIONS -d$DURATION (cpu-clock, top 15 symbols):"
    perf record -e cpu-clock -F 1999 -p "$AK_PID" -o "$TMP/perf.data" >"$TMP/perf.log" 2>&1 &
    PERF_PID=$!
    wait_idle
    run_wrk autokill "$DURATION" "$TMP/wrk-perf.txt" || true
    AK_SENT_UP=$((AK_SENT_UP + $(awk '/requests in/ {print $1}' "$TMP/wrk-perf.txt")))
    stop_pid "$PERF_PID" INT 10
    PERF_PID=""
    perf report -i "$TMP/perf.data" --no-children --sort dso --stdio >"$TMP/perf-dso.txt" 2>/dev/null || true
    perf report -i "$TMP/perf.data" --no-children --sort sym --stdio >"$TMP/perf-sym.txt" 2>/dev/null || true
    say "  by dso: $(awk '/^ +[0-9.]+%/ { printf "%s %s   ", $2, $1 }' "$TMP/perf-dso.txt" | head -c 200)"
    awk '/^ +[0-9.]+%/' "$TMP/perf-sym.txt" >"$TMP/perf-top.txt"
    head -n 15 "$TMP/perf-top.txt"
    say "  top user-space symbols ([.]):"
    awk '$2 == "[.]"' "$TMP/perf-top.txt" >"$TMP/perf-user.txt"
    head -n 15 "$TMP/perf-user.txt"
    say "  (perf data kept in $TMP)"
    KEEP_TMP=1
fi

# ---------------------------------------------------------------------------------------------
# autokill's own view: its count for the instance, its log's warnings.
# ---------------------------------------------------------------------------------------------
say ""
if has_target autokill; then
    counted=$(instances | awk '$1 == "up" { print $4 }')
    say "autokill counted $counted requests for instance up; clients completed $AK_SENT_UP" \
        "(requests in flight when a run ended are counted but not completed: at most $CONNECTIONS per run)."
fi
if ! alive "$AK_PID"; then say "WARNING: autokill is no longer running!"; fi
nwarn=$(grep -c -E '(WARN|ERROR) ' "$TMP/autokill.log" || true)
if ((nwarn > 0)); then
    say "autokill log: $nwarn WARN/ERROR lines, first ones:"
    grep -E '(WARN|ERROR) ' "$TMP/autokill.log" | head -n 5 | cut -c 1-200 | sed 's/^/  /' || true
else
    say "autokill log: no WARN/ERROR lines."
fi
say ""
say "reproduce: DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS ROUNDS=$ROUNDS RATE=$RATE" \
    "CLOSE=$CLOSE${AUTOKILL_BASE:+ AUTOKILL_BASE=$AUTOKILL_BASE} TARGETS=\"$TARGETS\" IDLE_WAIT=$IDLE_WAIT WORKERS=$WORKERS AK_POOL_IDLE=$AK_POOL_IDLE$([[ $PERF == 1 ]] && echo " PERF=1") benches/proxy_compare.sh"
