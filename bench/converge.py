#!/usr/bin/env python3
"""Convergence of a mesh of real processes, for one or more receptor
binaries side by side: the time until every node routes to every other,
and the time to re-converge after the busiest relay is SIGKILLed (every
survivor routes to every other survivor and no longer to the dead relay).

Usage: bench/converge.py BINARY [BINARY...] [--nodes N] [--rounds R] [--seed S]

The same random topology (a hub joined to a third of the nodes, the rest
a random graph of degree 2-3 that stays connected without the hub) is
used for every binary; rounds are interleaved (A, B, A, B, ...) so load
on the machine affects each alike. Prints the median of each figure per
binary, and the ratio to the first binary.
"""

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time

from benchlib import control_json, free_port


def topology(n, rng):
    """Edges (dialer, listener): node 0 is the hub."""
    edges = set()
    for i in rng.sample(range(1, n), max(2, n // 3)):
        edges.add((i, 0))
    # A ring over the others keeps them connected without the hub.
    others = list(range(1, n))
    rng.shuffle(others)
    for a, b in zip(others, others[1:] + others[:1]):
        edges.add((max(a, b), min(a, b)))
    for i in range(1, n):
        j = rng.randrange(1, n)
        if j != i:
            edges.add((max(i, j), min(i, j)))
    return sorted(edges)


class Mesh:
    def __init__(self, binary, n, edges):
        self.dir = tempfile.mkdtemp(prefix="receptor-converge-")
        self.procs, self.socks = [], []
        ports = [free_port() for _ in range(n)]
        for i in range(n):
            sock = os.path.join(self.dir, f"n{i}.sock")
            args = [binary, "--node", f"id=n{i}", f"datadir={self.dir}/data",
                    "--log-level", "error", "--control-service", f"filename={sock}",
                    "--tcp-listener", f"port={ports[i]}", "bindaddr=127.0.0.1"]
            for a, b in edges:
                if a == i:
                    args += ["--tcp-peer", f"address=127.0.0.1:{ports[b]}"]
            log = open(os.path.join(self.dir, f"n{i}.log"), "w")
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            self.socks.append(sock)
        self.started = time.perf_counter()
        for sock in self.socks:
            self.wait(lambda s=sock: os.path.exists(s), 20)

    def wait(self, cond, timeout):
        end = time.perf_counter() + timeout
        while time.perf_counter() < end:
            try:
                if cond():
                    return time.perf_counter()
            except (OSError, ValueError):
                pass
            time.sleep(0.005)
        raise SystemExit("timed out")

    def converged(self, alive):
        names = {f"n{i}" for i in alive}
        for i in alive:
            table = set(control_json(self.socks[i], "status", 5)["RoutingTable"])
            if table != names - {f"n{i}"}:
                return False
        return True

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def one_round(binary, n, edges):
    mesh = Mesh(binary, n, edges)
    try:
        everyone = list(range(n))
        converge = mesh.wait(lambda: mesh.converged(everyone), 60) - mesh.started
        time.sleep(1)  # let periodic traffic settle
        mesh.procs[0].send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        reconverge = mesh.wait(lambda: mesh.converged(everyone[1:]), 60) - killed
        return converge, reconverge
    finally:
        mesh.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("binaries", nargs="+")
    p.add_argument("--nodes", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args()
    edges = topology(args.nodes, random.Random(args.seed))
    figures = {b: ([], []) for b in args.binaries}
    for _ in range(args.rounds):
        for b in args.binaries:
            c, r = one_round(b, args.nodes, edges)
            figures[b][0].append(c)
            figures[b][1].append(r)
    first = args.binaries[0]
    base = [statistics.median(figures[first][k]) for k in (0, 1)]
    print(f"{args.nodes} nodes, {len(edges)} links, {args.rounds} rounds (medians):")
    for b in args.binaries:
        c, r = (statistics.median(figures[b][k]) for k in (0, 1))
        print(f"  {b}: converge {c:.3f} s ({c / base[0]:.2f}x), "
              f"re-converge after the hub dies {r:.3f} s ({r / base[1]:.2f}x)")


if __name__ == "__main__":
    main()
