#!/usr/bin/env python3
"""Start-up and idle-memory benchmark: time from exec to the control
socket answering a status request (median of N starts), and the RSS of an
idle node.

Usage: bench/startup_bench.py PATH_TO_RECEPTOR [--runs N]
"""

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def answers(path):
    try:
        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        f = s.makefile("rwb")
        f.readline()
        f.write(b'{"command":"status","requested_fields":["NodeID"]}\n')
        f.flush()
        ok = b"NodeID" in f.readline()
        s.close()
        return ok
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    binary = os.path.abspath(args.receptor)
    tmp = tempfile.mkdtemp(prefix="receptor-startup-")
    times = []
    rss = 0
    try:
        for i in range(args.runs):
            sock = os.path.join(tmp, f"s{i}.sock")
            start = time.perf_counter()
            p = subprocess.Popen([binary, "--node", "id=bench", f"datadir={tmp}/d",
                                  "--local-only", "--control-service", f"filename={sock}"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            while not answers(sock):
                time.sleep(0.0005)
            times.append(time.perf_counter() - start)
            if i == args.runs - 1:
                time.sleep(1)
                with open(f"/proc/{p.pid}/status") as f:
                    rss = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))
            p.kill()
            p.wait()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    med = statistics.median(times) * 1000
    print(f"start to control socket answering: median {med:.1f} ms over {args.runs} starts")
    print(f"idle RSS: {rss / 1024:.1f} MiB")
    print(f"binary size: {os.path.getsize(binary) / 2**20:.1f} MiB")


if __name__ == "__main__":
    sys.exit(main())
