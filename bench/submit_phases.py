#!/usr/bin/env python3
"""Where a remote `work submit` spends its time, seen from the client.

Usage: bench/submit_phases.py RECEPTOR [--units N]

Starts the 1-hop line of bench/work_bench.py (n0 controller, n1 executor,
datadirs under $TMPDIR) and submits N `echo` units to n1 on n0's control
socket one after another, timing three phases of each: connect until the
greeting, the submit line until the "created" line, and stdin with its
half-close until the result line (n0 submitting to n1 and n1 starting
the unit). Prints the median and the 10th percentile of each phase, the
voluntary context switches per unit of each node's threads (those alive
at the end: a thread's waits for another's message), and the CPU time each node
spent per unit (user + system, its own and its children's: the command
runners and their commands, and the runner fork server that forks them),
measured over the timed units and the second after them, when the last
units finish.
"""
import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import work_bench  # noqa: E402


def phases(sock_path):
    t0 = time.perf_counter()
    s, f = work_bench.connect(sock_path)
    t1 = time.perf_counter()
    req = {"command": "work", "subcommand": "submit", "node": "n1", "worktype": "echo"}
    f.write(json.dumps(req).encode() + b"\n")
    f.flush()
    if b"with ID" not in f.readline():
        raise SystemExit("submit refused")
    t2 = time.perf_counter()
    f.write(b"hi\n")
    f.flush()
    s.shutdown(socket.SHUT_WR)
    result = f.readline()
    t3 = time.perf_counter()
    s.close()
    if b"ERROR" in result:
        raise SystemExit(f"submit failed: {result!r}")
    return t1 - t0, t2 - t1, t3 - t2


def stat_fields(pid):
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_seconds(pid):
    """(own, children's) user + system CPU seconds of process `pid`. Its
    children's: those it reaped, and those still running (a runner fork
    server, which reaps the runners it forks) with theirs."""
    tick = os.sysconf("SC_CLK_TCK")
    utime, stime, cutime, cstime = (int(x) / tick for x in stat_fields(pid)[11:15])
    children = cutime + cstime
    for entry in os.listdir("/proc"):
        try:
            fields = stat_fields(int(entry))
        except (ValueError, OSError):
            continue
        if fields[1] == str(pid):
            children += sum(int(x) for x in fields[11:15]) / tick
    return utime + stime, children


def switches(pid):
    """Voluntary context switches of process `pid`'s live threads."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                for line in f:
                    if line.startswith("voluntary_ctxt_switches:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--units", type=int, default=100)
    args = ap.parse_args()
    line = work_bench.Line(args.receptor, 1, tempfile.gettempdir(), 0)
    try:
        before = [cpu_seconds(p.pid) for p in line.procs]
        waits = [switches(p.pid) for p in line.procs]
        runs = [phases(line.sockets[0]) for _ in range(args.units)]
        time.sleep(1)
        after = [cpu_seconds(p.pid) for p in line.procs]
        waits = [switches(p.pid) - w for p, w in zip(line.procs, waits)]
    finally:
        line.close()
    for name, values in zip(("greeting", "created line", "stdin to result"), zip(*runs)):
        p10 = sorted(values)[len(values) // 10]
        print(f"{name}: median {statistics.median(values) * 1000:.2f} ms, p10 {p10 * 1000:.2f} ms")
    for i, (b, a) in enumerate(zip(before, after)):
        own, children = ((y - x) / args.units * 1000 for x, y in zip(b, a))
        print(f"n{i} CPU per unit: {own:.2f} ms, its children {children:.2f} ms; "
              f"{waits[i] / args.units:.1f} voluntary switches")


if __name__ == "__main__":
    main()
