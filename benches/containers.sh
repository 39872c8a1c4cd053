#!/usr/bin/env bash
# Figures of the docker runtime against a real engine (Podman's API service), medians of ROUNDS:
#
#   1. create:  API create with autostart -> first 200 through the proxy
#   2. kill:    the request that spends num_requests -> its container gone from the engine's
#               list (what `podman ps -a` shows)
#   3. adopt:   autokill restarted (kill -9) with 50 running containers -> /readyz 200
#
# Usage: benches/containers.sh [path/to/autokill]   (default target/release/autokill)
# Needs podman (its service is started on a socket of this run unless DOCKER_HOST names one),
# curl and python3 (for the medians). Everything it makes is removed at the end.
# ROUNDS (default 20) and CONTAINERS (default 50) change the counts.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${1:-target/release/autokill}
rounds=${ROUNDS:-20}
containers=${CONTAINERS:-50}
for tool in podman curl python3; do
    command -v "$tool" >/dev/null || { echo "benches/containers.sh: $tool is needed" >&2; exit 1; }
done
[[ -x $bin ]] || { echo "benches/containers.sh: no $bin (cargo build --release)" >&2; exit 1; }

work=$(mktemp -d)
image=localhost/autokill-bench:$$
proxy=127.0.0.1:$((20000 + RANDOM % 10000))
admin=127.0.0.1:$((30000 + RANDOM % 10000))
server_pid=
service_pid=

cleanup() {
    [[ -n $server_pid ]] && kill -9 "$server_pid" 2>/dev/null || true
    podman ps -aq --filter "label=autokill.store=$work/store.redb" | xargs -r podman rm -f >/dev/null 2>&1 || true
    podman rmi -f "$image" >/dev/null 2>&1 || true
    [[ -n $service_pid ]] && kill "$service_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The engine: DOCKER_HOST if it names one, else a service of this run.
if [[ ${DOCKER_HOST:-} == unix://* ]]; then
    socket=${DOCKER_HOST#unix://}
else
    socket=$work/podman.sock
    # Its complaints about clients that went away (autokill killed with -9) go to a log.
    podman system service --time=0 "unix://$socket" >"$work/podman.log" 2>&1 &
    service_pid=$!
    for _ in $(seq 100); do [[ -S $socket ]] && break; sleep 0.1; done
fi

# The image: this autokill (and the libraries it loads) running `hello` on port 8080.
mkdir -p "$work/rootfs"
cp "$bin" "$work/rootfs/autokill"
for lib in $(ldd "$bin" | grep -o '/[^ ]*'); do
    mkdir -p "$work/rootfs$(dirname "$lib")"
    cp -L "$lib" "$work/rootfs$lib"
done
tar -C "$work/rootfs" -cf - . | podman import --quiet \
    --change 'CMD ["/autokill", "hello", "--listen", "0.0.0.0:8080"]' \
    --change 'EXPOSE 8080' - "$image" >/dev/null

cat > "$work/autokill.yaml" <<EOF
proxy: {listen: "$proxy", workers: 2}
admin: {listen: "$admin"}
store: {path: "$work/store.redb"}
runtime: {kind: docker, docker_host: "unix://$socket", stop_grace: 1s, start_timeout: 60s}
EOF

now() { date +%s%N; }
ms() { echo $((($2 - $1) / 1000000)); }

start_server() {
    "$bin" serve --config "$work/autokill.yaml" >>"$work/autokill.log" 2>&1 </dev/null &
    server_pid=$!
    until [[ $(curl -s -o /dev/null -w '%{http_code}' "http://$admin/readyz") == 200 ]]; do
        sleep 0.002
    done
}

api() { # method path [json]
    curl -s -X "$1" "http://$admin$2" ${3:+-H 'Content-Type: application/json' -d "$3"} >/dev/null
}

# What the engine lists of a container (`podman ps -a` through the API, without a CLI start).
listed() {
    curl -s --unix-socket "$socket" \
        "http://d/containers/json?all=1&filters=%7B%22name%22%3A%5B%22autokill-$1%22%5D%7D"
}

median() { python3 -c 'import statistics,sys; v=[int(x) for x in sys.argv[1:]]; print(f"median {statistics.median(v):.0f} ms (min {min(v)}, max {max(v)}, n={len(v)})")' "$@"; }

start_server

echo "1. API create (autostart) -> first proxied 200"
create=()
for i in $(seq "$rounds"); do
    t0=$(now)
    api POST /v1/instances "{\"name\":\"c$i\",\"image\":\"$image\",\"autostart\":true}"
    until [[ $(curl -s -o /dev/null -w '%{http_code}' -H "Host: c$i.localhost" "http://$proxy/") == 200 ]]; do
        sleep 0.002
    done
    create+=("$(ms "$t0" "$(now)")")
    api DELETE "/v1/instances/c$i"
done
median "${create[@]}"

echo "2. limit-crossing request -> container gone from the engine's list"
kill_ms=()
for i in $(seq "$rounds"); do
    api POST /v1/instances "{\"name\":\"k$i\",\"image\":\"$image\",\"autostart\":true,\"timeout_s\":60,\"autokill\":{\"num_requests\":1}}"
    t0=$(now)
    curl -s -o /dev/null -H "Host: k$i.localhost" "http://$proxy/"
    until [[ $(listed "k$i") == "[]" ]]; do sleep 0.002; done
    kill_ms+=("$(ms "$t0" "$(now)")")
done
median "${kill_ms[@]}"

echo "3. autokill restarted (kill -9) with $containers running containers -> /readyz 200"
for i in $(seq "$containers"); do
    api POST /v1/instances "{\"name\":\"a$i\",\"image\":\"$image\",\"autostart\":true}"
done
until [[ $(curl -s "http://$admin/v1/instances" | grep -o '"state":"running"' | wc -l) -ge $containers ]]; do
    sleep 0.2
done
adopt=()
for i in $(seq "$rounds"); do
    kill -9 "$server_pid"
    wait "$server_pid" 2>/dev/null || true
    server_pid=
    t0=$(now)
    start_server
    adopt+=("$(ms "$t0" "$(now)")")
done
running=$(curl -s "http://$admin/v1/instances" | grep -o '"state":"running"' | wc -l)
echo "   (after the last restart: $running of $containers running)"
median "${adopt[@]}"
