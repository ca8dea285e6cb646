#!/usr/bin/env python3
"""Exact CPU per remote submit, by thread, on both nodes of a 1-hop line.

Usage: bench/thread_cpu.py RECEPTOR [RECEPTOR ...] [--units N] [--rounds R]

Starts the 1-hop line of bench/work_bench.py (n0 controller, n1 executor,
datadirs under $TMPDIR), submits 30 `echo` units to warm it up, then N
more one after another as bench/submit_phases.py does, and prints for
each node the run time per unit of each of its threads and how many
times per unit each was scheduled in, from
/proc/PID/task/TID/schedstat. That is the kernel's own account of time on
a CPU, not a sample, so it holds on a guest where `perf -e cpu-clock`
charges a halted vCPU's idle time to the thread it wakes for
(BENCHMARKS.md, "Issue 14, 2026-12-03").

Threads are grouped by name (pooled threads are renamed per job, and
each unit's `remote-…` and `results-…` threads count as one group).
"exited" is the node's total (/proc/PID/stat) minus its live threads:
the CPU of threads that ended during the run, unit monitors and
results fetches among them. The command runners and their commands are
other processes and are not counted. With several binaries or rounds
the runs are interleaved, round by round.
"""
import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import submit_phases  # noqa: E402
import work_bench  # noqa: E402

POOLED = ("remote-", "results-")


def threads(pid):
    """{name: [run ns, times scheduled]} over the live threads of `pid`."""
    out = collections.defaultdict(lambda: [0, 0])
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                run, _, slices = (int(x) for x in f.read().split())
        except OSError:
            continue
        for prefix in POOLED:
            if name.startswith(prefix):
                name = prefix + "*"
        out[name][0] += run
        out[name][1] += slices
    return out


def total_ns(pid):
    """User + system time of `pid`, all its threads, dead ones too."""
    fields = submit_phases.stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) * 1e9 / os.sysconf("SC_CLK_TCK")


def measure(binary, units):
    line = work_bench.Line(binary, 1, tempfile.gettempdir(), 0)
    try:
        for _ in range(30):
            submit_phases.phases(line.sockets[0])
        pids = [p.pid for p in line.procs]
        before = [(threads(p), total_ns(p)) for p in pids]
        for _ in range(units):
            submit_phases.phases(line.sockets[0])
        # The last units' monitors and results streams finish.
        time.sleep(0.5)
        after = [(threads(p), total_ns(p)) for p in pids]
    finally:
        line.close()
    for i, ((t0, all0), (t1, all1)) in enumerate(zip(before, after)):
        live = 0.0
        rows = []
        for name in sorted(t1):
            run = (t1[name][0] - t0.get(name, [0, 0])[0]) / units / 1000
            slices = (t1[name][1] - t0.get(name, [0, 0])[1]) / units
            live += run
            if run >= 1:
                rows.append(f"{name} {run:.0f} µs ×{slices:.1f}")
        exited = (all1 - all0) / units / 1000 - live
        print(f"n{i}: " + ", ".join(rows) + f"; exited {exited:.0f} µs "
              f"(clock ticks: ±{1e6 / os.sysconf('SC_CLK_TCK') / units:.0f}); "
              f"live total {live:.0f} µs per unit")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptors", nargs="+")
    ap.add_argument("--units", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    for r in range(args.rounds):
        for binary in args.receptors:
            print(f"round {r + 1}, {os.path.basename(binary)}:")
            measure(os.path.abspath(binary), args.units)


if __name__ == "__main__":
    main()
