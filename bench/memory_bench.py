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

--sections splits the median node's binary pages by ELF section (each
resident page of the binary's mappings, from /proc/PID/pagemap, goes to
the sections its file bytes belong to; "copied" counts the pages that
are private copies, e.g. .data.rel.ro after relocation). --after also
measures every node again after one `status` request on its control
socket, and again after it has run one `cat` work unit.

Usage: bench/memory_bench.py PATH_TO_RECEPTOR [--mesh 30] [--idle 3]
                             [--sections] [--after]
"""

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

from benchlib import control, free_port, wait_for
from work_bench import status, submit

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
    return [m[:5] for m in mappings_with_offset(pid)]


def mappings_with_offset(pid):
    """mappings(pid), each with the file offset it maps from appended."""
    out = []
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                lo, hi = (int(x, 16) for x in head[0].split("-"))
                path = head[5] if len(head) > 5 else ""
                out.append([lo, hi, head[1], path, 0, int(head[2], 16)])
            elif head[0] == "Rss:":
                out[-1][4] = int(head[1])
    return out


def elf_sections(binary):
    """(name, file offset, size) of each section of an ELF64 file that
    has bytes in the file and is loaded."""
    with open(binary, "rb") as f:
        elf = f.read()
    shoff, = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    heads = [struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize) for i in range(shnum)]
    strtab = heads[shstrndx][4]
    out = []
    for name, kind, flags, _addr, offset, size in heads:
        if flags & 2 and kind != 8:  # SHF_ALLOC, not SHT_NOBITS
            end = elf.index(b"\0", strtab + name)
            out.append((elf[strtab + name:end].decode(), offset, size))
    return out


def section_kib(pid, binary):
    """{section: [resident KiB, of which private copies]} of the binary."""
    sections = elf_sections(binary)
    kib = {name: [0.0, 0.0] for name, _, _ in sections}
    page = os.sysconf("SC_PAGE_SIZE")
    with open(f"/proc/{pid}/pagemap", "rb") as pm:
        for lo, hi, _perms, path, _rss, offset in mappings_with_offset(pid):
            if path != binary:
                continue
            pm.seek(lo // page * 8)
            entries = struct.unpack(f"<{(hi - lo) // page}Q", pm.read((hi - lo) // page * 8))
            for i, e in enumerate(entries):
                if not e >> 63:  # not present
                    continue
                start = offset + i * page
                for name, s_off, s_size in sections:
                    overlap = min(start + page, s_off + s_size) - max(start, s_off)
                    if overlap > 0:
                        kib[name][0] += overlap / 1024
                        if not e >> 61 & 1:  # anonymous: a private copy
                            kib[name][1] += overlap / 1024
    return kib


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


def report(title, mesh, binary, sections=False):
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
    if sections:
        print(f"binary pages of n{med} by section:")
        print("| section | size KiB | resident KiB | copied KiB |")
        print("|---|---|---|---|")
        sizes = {name: size for name, _, size in elf_sections(binary)}
        for name, (res, copied) in section_kib(pids[med], binary).items():
            if sizes[name] >= 4096 or res >= 1:
                print(f"| {name} | {sizes[name] / 1024:.0f} | {res:.0f} | {copied:.0f} |")
    print()


def run_one_unit(mesh):
    """Each node runs one `cat` unit to the end."""
    units = [submit(sock, f"n{i}", "cat", b"hello\n") for i, sock in enumerate(mesh.socks)]
    for sock, unit in zip(mesh.socks, units):
        wait_for(lambda: status(sock, unit)["StateName"] == "Succeeded", 30, "the unit")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--mesh", type=int, default=0, help="also measure an N-node mesh")
    ap.add_argument("--idle", type=float, default=3, help="seconds to idle before measuring")
    ap.add_argument("--sections", action="store_true", help="binary pages by ELF section")
    ap.add_argument("--after", action="store_true",
                    help="measure again after a status request, and after a work unit")
    args = ap.parse_args()
    binary = os.path.realpath(args.receptor)
    # The steady state of a host that runs the daemon: its file is in the
    # page cache, so a fault maps the whole cached block around it.
    with open(binary, "rb") as f:
        while f.read(1 << 20):
            pass
    work = tempfile.mkdtemp(prefix="receptor-mem-")
    sizes = [1, 2] + ([args.mesh] if args.mesh > 2 else [])
    try:
        for n in sizes:
            mesh = Mesh(binary, n, work)
            try:
                time.sleep(args.idle)
                title = f"{n}-node mesh" if n > 1 else "single node"
                report(title, mesh, binary, args.sections)
                if args.after:
                    for sock in mesh.socks:
                        control(sock, '{"command":"status"}')
                    time.sleep(1)
                    report(f"{title}, after one status", mesh, binary, args.sections)
                    run_one_unit(mesh)
                    time.sleep(1)
                    report(f"{title}, after one work unit", mesh, binary, args.sections)
            finally:
                mesh.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
