#!/usr/bin/env python3
"""Idle memory benchmark: where the resident set of an idle node goes.

Starts (1) one node with a tcp-listener, a control service on a Unix
socket and a work-command; (2) a 2-node mesh of such nodes; (3) with
--mesh N, an N-node mesh (a binary tree of tcp-peer links). Waits until
every route is known and the nodes have idled, then reads
/proc/PID/smaps of each and sorts every resident KiB into a category:

  binary text   the receptor file's read-only mappings (code, rodata)
  binary data   the receptor file's writable mappings and the .bss after them
  shared libs   libc, ld.so, libgcc_s (file-backed, shared with every process)
  main heap     [heap]: glibc's main arena (brk)
  arenas        glibc per-thread malloc arenas (64 MiB-aligned anonymous heaps)
  stacks        a thread's stack: the mapping its stack pointer is in
                (/proc/PID/task/TID/syscall), or [stack] for the main thread
  other anon    other anonymous mappings: allocations of 128 KiB and more,
                which glibc mmaps on their own
  kernel        [vvar], [vdso]

Usage: bench/memory_bench.py PATH_TO_RECEPTOR [--mesh 30] [--idle 3]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import control, free_port, wait_for

ARENA_ALIGN = 64 << 20
CATEGORIES = ["binary text", "binary data", "shared libs", "main heap", "arenas",
              "stacks", "other anon", "kernel"]


def known_nodes(sock):
    reply = control(sock, '{"command":"status","requested_fields":["RoutingTable"]}')
    return len(json.loads(reply).get("RoutingTable", {}))


class Mesh:
    """Nodes n0..n(N-1); node i > 0 dials node (i - 1) // 2."""

    def __init__(self, binary, count, workdir):
        self.dir = tempfile.mkdtemp(dir=workdir)
        self.procs = []
        self.socks = []
        ports = [free_port() for _ in range(count)]
        for i in range(count):
            sock = os.path.join(self.dir, f"n{i}.sock")
            self.socks.append(sock)
            args = [binary, "--node", f"id=n{i}", f"datadir={self.dir}/d{i}",
                    "--log-level", "error",
                    "--control-service", f"filename={sock}",
                    "--tcp-listener", f"port={ports[i]}", "bindaddr=127.0.0.1",
                    "--work-command", "worktype=cat", "command=cat"]
            if i > 0:
                args += ["--tcp-peer", f"address=127.0.0.1:{ports[(i - 1) // 2]}"]
            log = open(os.path.join(self.dir, f"n{i}.log"), "w")
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            wait_for(lambda: os.path.exists(sock), 10, f"n{i}'s control socket")
        for sock in self.socks:
            # RoutingTable lists the other nodes, not this one.
            wait_for(lambda: known_nodes(sock) >= count - 1, 60, "routes")

    def close(self):
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def mappings(pid):
    """(start, end, perms, path, rss_kib) for every mapping of pid."""
    out = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                out.append([lo, hi, head[1], head[5] if len(head) > 5 else "", 0])
            elif head[0] == "Rss:":
                out[-1][4] = int(head[1])
    return out


def stack_pointers(pid):
    sps = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/syscall") as f:
                fields = f.read().split()
        except OSError:
            continue
        if len(fields) >= 2 and fields[0] != "running":
            sps.append(int(fields[-2], 16))
    return sps


def breakdown(pid, binary):
    maps = mappings(pid)
    sps = stack_pointers(pid)
    kib = dict.fromkeys(CATEGORIES, 0)
    prev_path = ""
    prev_end = 0
    for lo, hi, perms, path, rss in maps:
        if path == binary:
            cat = "binary data" if "w" in perms else "binary text"
        elif path == "" and prev_path == binary and lo == prev_end:
            cat = "binary data"
        elif path.startswith("/"):
            cat = "shared libs"
        elif path == "[heap]":
            cat = "main heap"
        elif path == "[stack]" or any(lo <= sp < hi for sp in sps):
            cat = "stacks"
        elif path in ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]"):
            cat = "kernel"
        elif lo % ARENA_ALIGN == 0:
            cat = "arenas"
        else:
            cat = "other anon"
        kib[cat] += rss
        prev_path, prev_end = path, hi
    return kib


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))


def private_kib(pid):
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(l.split()[1]) for l in f
                   if l.startswith(("Private_Clean:", "Private_Dirty:")))


def report(title, mesh, binary):
    pids = [p.pid for p in mesh.procs]
    rss = [status_kib(p, "VmRSS") for p in pids]
    priv = [private_kib(p) for p in pids]
    threads = [status_kib(p, "Threads") for p in pids]
    print(f"## {title}: {len(pids)} node(s)")
    print(f"RSS KiB: min {min(rss)} median {statistics.median(rss):.0f} max {max(rss)}; "
          f"private KiB: median {statistics.median(priv):.0f}; "
          f"threads: median {statistics.median(threads):.0f}")
    # The breakdown of the node with the median RSS.
    med = sorted(range(len(pids)), key=lambda i: rss[i])[len(pids) // 2]
    kib = breakdown(pids[med], binary)
    print(f"breakdown of n{med} (RSS {rss[med]} KiB, {threads[med]} threads):")
    print("| category | KiB |")
    print("|---|---|")
    for cat in CATEGORIES:
        print(f"| {cat} | {kib[cat]} |")
    print(f"| total | {sum(kib.values())} |")
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--mesh", type=int, default=0, help="also measure an N-node mesh")
    ap.add_argument("--idle", type=float, default=3, help="seconds to idle before measuring")
    args = ap.parse_args()
    binary = os.path.realpath(args.receptor)
    work = tempfile.mkdtemp(prefix="receptor-mem-")
    sizes = [1, 2] + ([args.mesh] if args.mesh > 2 else [])
    try:
        for n in sizes:
            mesh = Mesh(binary, n, work)
            try:
                time.sleep(args.idle)
                report(f"{n}-node mesh" if n > 1 else "single node", mesh, binary)
            finally:
                mesh.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
