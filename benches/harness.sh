# Sourced by the bench scripts that run `autokill serve` (soak.sh, kill_storm.sh):
#
#   source benches/harness.sh NAME LIMIT      (NAME for messages, LIMIT seconds for the watchdog)
#
# Gives them a work directory `$work`, removed at exit; `server_pid` (set it when autokill is
# started: at exit it is stopped, and if it had died, the end of `$work/server.log` is shown)
# and `pids` (background jobs to stop at exit); a `curl` whose every call is bounded; a
# watchdog that ends the run LIMIT seconds after this point whatever happens; `free_port`.
bench_name=$1
bench_limit=$2
work=$(mktemp -d)
server_pid=""
pids=()
cleanup() {
    if [[ -n "${watchdog:-}" ]]; then kill "$watchdog" 2>/dev/null || true; fi
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    if [[ -n "$server_pid" ]] && ! kill -0 "$server_pid" 2>/dev/null; then
        echo "$bench_name: autokill is gone; the end of its log:" >&2
        tail -n 30 "$work/server.log" >&2 || true
    fi
    if [[ -n "$server_pid" ]]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# Every call to the admin API is bounded.
curl() { command curl --max-time 10 "$@"; }
(
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep "$bench_limit" &
    nap=$!
    wait "$nap"
    echo "$bench_name: the watchdog ends the run" >&2
    kill -TERM $$
) &
watchdog=$!

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
