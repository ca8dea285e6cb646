#!/usr/bin/env bash
# The main job, end to end on this machine: builds receptor, starts the
# three-node mesh of the Receptor blog (controller01 -> relayer01 <-
# executor01), shows it with the real receptorctl, runs a work unit on the
# executor from the controller, and stops the nodes it started.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
cargo build --release --quiet
bin="$repo/target/release/receptor"
RECEPTORCTL="$(tests/receptorctl.sh)"

dir="$(mktemp -d /tmp/receptor-demo.XXXXXX)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
p_ctl=$(port); p_relay=$(port)

start() { # name, then directives
    local name=$1; shift
    "$bin" --node id="$name" datadir="$dir/data" --log-level info \
        --control-service filename="$dir/$name.sock" "$@" >"$dir/$name.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [ -S "$dir/$name.sock" ] && return; sleep 0.05; done
    echo "demo: $name did not start; its log:" >&2; cat "$dir/$name.log" >&2; exit 1
}

start controller01 --tcp-listener port="$p_ctl" bindaddr=127.0.0.1
start relayer01 --tcp-listener port="$p_relay" bindaddr=127.0.0.1 \
    --tcp-peer address=127.0.0.1:"$p_ctl"
start executor01 --tcp-peer address=127.0.0.1:"$p_relay" \
    --work-command worktype=gather-hostname command=hostname \
    --work-command worktype=echo-reply command=cat

ctl() { "$RECEPTORCTL" --socket "$dir/controller01.sock" "$@" 2>/dev/null; }
for _ in $(seq 100); do
    ctl status --json | grep -q '"executor01": "relayer01"' && break
    sleep 0.1
done

set -x
ctl status
ctl ping executor01 --count 2
ctl traceroute executor01
ctl work submit gather-hostname --node executor01 --no-payload --rm --follow
ctl work submit echo-reply --node executor01 --payload-literal "hello from controller01" --rm --follow
