#!/usr/bin/env python3
"""A mesh of real receptor processes on 127.0.0.1: time to converge and
memory (RSS) per process.

Usage: bench/mesh100.py PATH_TO_RECEPTOR [--nodes 100] [--seed 1]
                        [--settle 15]

Node i listens on its own port and dials one random earlier node (a
spanning tree), and every other node dials a second one too: a connected
random graph of average degree about 3. All processes start at once; the
run waits until node n0's status lists a route to every other node, and
records how long that took and the memory of every process (VmRSS from
/proc/PID/status, and PSS, at convergence and again after --settle seconds
of periodic routing updates). Kills exactly the processes it started.
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import time

from benchlib import control


def free_ports(n):
    """n distinct ports the kernel just handed out (held open together, so
    no two are the same)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def links(n, rng):
    """(dialer, listener) pairs of a connected graph, average degree ~3."""
    out = []
    for i in range(1, n):
        first = rng.randrange(i)
        out.append((i, first))
        if i % 2 == 0 and i > 1:
            second = rng.choice([j for j in range(i) if j != first])
            out.append((i, second))
    return out


def routes(sock_path):
    try:
        reply = control(sock_path, '{"command":"status","requested_fields":["RoutingTable"]}')
        return json.loads(reply).get("RoutingTable") or {}
    except (OSError, ValueError):
        return {}


def kib(path, field):
    with open(path) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in {path}")


def memory(procs):
    """Total, median and largest VmRSS, and total PSS (which counts pages
    shared between the processes, like the binary, once), in KiB."""
    rss = [kib(f"/proc/{p.pid}/status", "VmRSS") for p in procs]
    pss = sum(kib(f"/proc/{p.pid}/smaps_rollup", "Pss") for p in procs)
    return sum(rss), statistics.median(rss), max(rss), pss


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--nodes", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--settle", type=float, default=15.0,
                    help="seconds to run on after convergence before the second RSS reading")
    ap.add_argument("--timeout", type=float, default=120.0)
    args = ap.parse_args()
    binary = os.path.abspath(args.receptor)
    n = args.nodes
    graph = links(n, random.Random(args.seed))
    ports = free_ports(n)
    workdir = tempfile.mkdtemp(prefix="receptor-mesh100-")
    procs = []
    try:
        start = time.monotonic()
        for i in range(n):
            cmd = [binary, "--node", f"id=n{i}", f"datadir={workdir}/d{i}",
                   "--log-level", "error",
                   "--control-service", f"filename={workdir}/n{i}.sock",
                   "--tcp-listener", f"port={ports[i]}", "bindaddr=127.0.0.1"]
            for a, b in graph:
                if a == i:
                    cmd += ["--tcp-peer", f"address=127.0.0.1:{ports[b]}"]
            log = open(os.path.join(workdir, f"n{i}.log"), "w")
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
        started = time.monotonic() - start
        sock = f"{workdir}/n0.sock"
        others = {f"n{i}" for i in range(1, n)}
        while True:
            if others <= set(routes(sock)):
                break
            if time.monotonic() - start > args.timeout:
                raise SystemExit(f"n0 routes to {len(routes(sock))} of {n - 1} nodes after {args.timeout} s")
            for p in procs:
                if p.poll() is not None:
                    raise SystemExit(f"a node exited with {p.returncode}; logs in {workdir}")
            time.sleep(0.1)
        converged = time.monotonic() - start
        at_conv = memory(procs)
        time.sleep(args.settle)
        settled = memory(procs)
        print(f"{n} nodes, {len(graph)} links; all started after {started:.2f} s; "
              f"n0 routes to all after {converged:.2f} s")
        print("| when | total RSS MiB | median RSS MiB | max RSS MiB | total PSS MiB |")
        print("|---|---|---|---|---|")
        for when, (total, med, mx, pss) in (("at convergence", at_conv),
                                           (f"{args.settle:.0f} s later", settled)):
            print(f"| {when} | {total / 1024:.1f} | {med / 1024:.1f} | {mx / 1024:.1f} | {pss / 1024:.1f} |")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
