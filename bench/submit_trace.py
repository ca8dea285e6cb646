#!/usr/bin/env python3
"""Records the scheduler during a few remote submits, for a timeline of
one submit (BENCHMARKS.md, "Where one remote submit's wall time goes").

Usage: bench/submit_trace.py RECEPTOR [--units N] [--out FILE]

Starts the 1-hop line of bench/work_bench.py, submits 30 units to warm it
up, then runs `perf sched record -a -o FILE` over N submits 50 ms apart
(so that each runs alone) and prints each one's phases as
bench/submit_phases.py times them. Read the result with
`perf sched timehist -i FILE -w`: the client's wake-up of `control-unix`
marks each submit's start.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import submit_phases  # noqa: E402
import work_bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--units", type=int, default=10)
    ap.add_argument("--out", default="sched.data")
    args = ap.parse_args()
    line = work_bench.Line(args.receptor, 1, tempfile.gettempdir(), 0)
    try:
        for _ in range(30):
            submit_phases.phases(line.sockets[0])
        print("node PIDs:", " ".join(str(p.pid) for p in line.procs))
        rec = subprocess.Popen(["perf", "sched", "record", "-a", "-o", args.out])
        try:
            time.sleep(1.5)
            runs = []
            for _ in range(args.units):
                runs.append(submit_phases.phases(line.sockets[0]))
                time.sleep(0.05)
        finally:
            rec.send_signal(2)
            rec.wait()
    finally:
        line.close()
    for r in runs:
        print("greeting %.2f ms, created line %.2f ms, stdin to result %.2f ms" % tuple(x * 1000 for x in r))


if __name__ == "__main__":
    main()
