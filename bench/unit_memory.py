#!/usr/bin/env python3
"""Memory per remote unit: does a controller or executor keep anything of
units that are over and released?

Usage: bench/unit_memory.py RECEPTOR [--rounds R] [--units N]

Starts the 1-hop line of bench/work_bench.py (n0 controller, n1 executor,
datadirs under $TMPDIR), then R rounds of: submit N `echo` units to n1,
wait until each is Succeeded, release them all, wait 2 s. Prints both
nodes' RSS and thread counts at the start and after every round; a steady
rise from round to round after the first is a leak (the first round
warms up allocator arenas and connections).
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import work_bench  # noqa: E402


def one_round(sock, units):
    ids = [work_bench.submit(sock, "n1", "echo", b"x" * 1000) for _ in range(units)]
    for unit in ids:
        while work_bench.status(sock, unit)["StateName"] != "Succeeded":
            time.sleep(0.01)
    for unit in ids:
        work_bench.release(sock, unit)
    time.sleep(2)  # connections of the releases close


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--units", type=int, default=1000)
    args = ap.parse_args()
    line = work_bench.Line(args.receptor, 1, tempfile.gettempdir(), 0)

    def report(what):
        threads = [len(os.listdir(f"/proc/{p.pid}/task")) for p in line.procs]
        rss = line.rss_kib()
        print(f"{what}: RSS KiB controller {rss[0]}, executor {rss[1]}; "
              f"threads {threads[0]}, {threads[1]}", flush=True)

    try:
        report("start")
        for r in range(args.rounds):
            one_round(line.sockets[0], args.units)
            report(f"after round {r + 1}")
    finally:
        line.close()


if __name__ == "__main__":
    main()
