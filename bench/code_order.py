#!/usr/bin/env python3
"""Writes the link order of the release binary's functions
(packaging/code-order/TARGET.txt, which build.rs hands to the linker).

The kernel maps a cached file's pages in blocks (64 KiB or more) around
each page a process touches, so an idle node's resident code is every
block that start-up, idling and a few control commands touch. Placing
the functions they run next to each other makes those blocks few. This
script finds those functions: it runs one node under callgrind in a
3-node line and dumps the functions executed in each phase (twice, under
each of valgrind's thread schedulers), then lists them phase by phase
(start-up and idle first, then control commands, then work units, then
shutdown), each phase sorted by name, each function once. The linker
places the listed functions first, in that order, and the rest after
them as usual.

The names must be those of the release build (a symbol's hash comes
from the crate's build settings), so the binary traced is a release
build with symbols kept (RUSTFLAGS="-C strip=none" leaves the settings
that go into the hash unchanged). A name that no longer exists (after a
dependency, compiler or code change) is skipped by the linker: a stale
list only makes the layout worse, never the program wrong. Rerun after
such changes; --check says how much of the list a build still matches.

Usage: bench/code_order.py [--target TRIPLE] [--receptor UNSTRIPPED_BINARY] [--out FILE]
       bench/code_order.py --check [--target ...] [--receptor ...] [--out FILE]
Without --receptor it builds one in target/code-order (about as long as a
release build); the list goes to packaging/code-order/TRIPLE.txt (TRIPLE:
x86_64-unknown-linux-gnu, the default, or x86_64-unknown-linux-musl).
Needs valgrind and nm.
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from benchlib import control, free_port, wait_for
from work_bench import release, results, status, submit

PHASES = ["start-up and idle", "control commands", "work units", "shutdown"]
# valgrind runs one thread at a time, so which side of a channel waits
# (and so which code runs) depends on its scheduler: the list has what
# ran under either of them.
SCHEDULERS = ["no", "yes"]
HOST_TARGET = "x86_64-unknown-linux-gnu"


def build(repo, target):
    """An unstripped release build for `target`, built the way the
    shipped one is: `cargo build --release` for the host's glibc build,
    with --target for musl (packaging/build-static.sh)."""
    env = dict(os.environ, RUSTFLAGS="-C strip=none")
    out = os.path.join(repo, "target", "code-order")
    cmd = ["cargo", "build", "--release", "--locked", "--bin", "receptor", "--target-dir", out]
    if target != HOST_TARGET:
        cmd += ["--target", target]
        out = os.path.join(out, target)
        env.setdefault(f"CC_{target.replace('-', '_')}", "musl-gcc")
    subprocess.run(cmd, cwd=repo, env=env, check=True)
    return os.path.join(out, "release", "receptor")


def node_args(binary, name, workdir, port, peer=None):
    sock = os.path.join(workdir, f"{name}.sock")
    args = [binary, "--node", f"id={name}", f"datadir={workdir}/{name}",
            "--log-level", "info", "--control-service", f"filename={sock}",
            "--tcp-listener", f"port={port}", "bindaddr=127.0.0.1",
            "--work-command", "worktype=cat", "command=cat"]
    if peer:
        args += ["--tcp-peer", f"address=127.0.0.1:{peer}"]
    return args, sock


def routes(sock):
    reply = control(sock, '{"command":"status","requested_fields":["RoutingTable"]}')
    return len(json.loads(reply).get("RoutingTable", {}))


class Line:
    """n0 <- n1 <- n2, n1 under callgrind: it both accepts and dials."""

    def __init__(self, binary, workdir, sched):
        self.workdir = workdir
        self.out = os.path.join(workdir, "callgrind.out")
        ports = [free_port() for _ in range(3)]
        self.procs = []
        self.socks = []
        grind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={self.out}",
                 "--compress-strings=no", "--compress-pos=no", "--demangle=no",
                 f"--fair-sched={sched}"]
        for i in range(3):
            args, sock = node_args(binary, f"n{i}", workdir, ports[i],
                                   ports[i - 1] if i else None)
            log = open(os.path.join(workdir, f"n{i}.log"), "w")
            self.procs.append(subprocess.Popen(grind + args if i == 1 else args,
                                               stdout=log, stderr=subprocess.STDOUT))
            self.socks.append(sock)
            wait_for(lambda: os.path.exists(sock), 120, f"n{i}'s control socket")
        wait_for(lambda: routes(self.socks[1]) >= 2, 120, "n1's routes")

    def dump(self):
        """Ends a phase: callgrind writes what ran since the last dump."""
        subprocess.run(["callgrind_control", "--dump", str(self.procs[1].pid)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGKILL)
            p.wait()


def run_phases(line):
    """Runs each phase on n1; returns callgrind's dump files in order."""
    time.sleep(3)
    line.dump()
    n1 = line.socks[1]
    for cmd in ['{"command":"status"}', "ping n0", "traceroute n2", "work list"]:
        control(n1, cmd, timeout=60)
    # Past the pooled threads' idle wait (src/workers.rs, 5 s), so the
    # code that ends a thread, which every idle node runs after its first
    # control command, is listed with the commands and not with the units.
    time.sleep(7)
    line.dump()
    # A local unit, and a remote one that n0 runs on n1 over the mesh.
    # Both fail: the daemon starts a unit's runner as /proc/self/exe,
    # which under valgrind is valgrind's tool, not receptor. The daemon's
    # side (start, watch, status, results, release) runs all the same.
    for sock, node in [(n1, "n1"), (line.socks[0], "n1")]:
        unit = submit(sock, node, "cat", b"hello\n")
        wait_for(lambda: status(sock, unit)["StateName"] in ("Succeeded", "Failed"),
                 120, "the unit")
        results(sock, unit)
        release(sock, unit)
    line.dump()
    line.procs[1].send_signal(signal.SIGTERM)
    line.procs[1].wait(timeout=120)
    dumps = [f for f in os.listdir(line.workdir) if f.startswith("callgrind.out")]
    # callgrind.out.1 .. .3 from the dumps; callgrind.out (or .4) at exit.
    return sorted((os.path.join(line.workdir, f) for f in dumps),
                  key=lambda f: int(f.rsplit(".", 1)[1]) if f[-1].isdigit() else 1 << 30)


def trace(binary, sched):
    """The functions of `binary` that ran in each phase, one run."""
    work = tempfile.mkdtemp(prefix="receptor-order-")
    try:
        line = Line(binary, work, sched)
        try:
            dumps = run_phases(line)
        finally:
            line.close()
        return [functions(dump, binary) for dump in dumps]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def functions(dump, binary):
    """The functions of `binary` that ran in one callgrind dump."""
    names = set()
    obj = ""
    with open(dump) as f:
        for line in f:
            if line.startswith("ob="):
                obj = line[3:].strip()
            elif line.startswith("fn=") and os.path.realpath(obj) == binary:
                # callgrind marks recursion depth as NAME'2.
                names.add(line[3:].strip().split("'")[0])
    return names


def symbols(binary):
    out = subprocess.run(["nm", "--defined-only", binary], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if len(line.split()) == 3}


def main():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser()
    ap.add_argument("--receptor", help="an unstripped release build")
    ap.add_argument("--target", default=HOST_TARGET,
                    help="x86_64-unknown-linux-musl for the static binary")
    ap.add_argument("--out", help="default: packaging/code-order/TARGET.txt")
    ap.add_argument("--check", action="store_true",
                    help="only count the names of --out that the build still has")
    args = ap.parse_args()
    args.out = args.out or os.path.join(repo, "packaging", "code-order", f"{args.target}.txt")
    if args.check:
        binary = os.path.realpath(args.receptor or build(repo, args.target))
        with open(args.out) as f:
            listed = f.read().split()
        found = len(set(listed) & symbols(binary))
        print(f"{found} of {len(listed)} listed functions are in {binary}")
        return 0
    for tool in ["valgrind", "callgrind_control", "nm"]:
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found")
    binary = os.path.realpath(args.receptor or build(repo, args.target))
    known = symbols(binary)
    ran = [set() for _ in PHASES]
    for sched in SCHEDULERS:
        for phase, names in enumerate(trace(binary, sched)):
            ran[phase] |= names & known
    seen = set()
    order = []
    for phase, names in zip(PHASES, ran):
        new = sorted(names - seen)
        seen.update(new)
        order += new
        print(f"{phase}: {len(new)} functions", file=sys.stderr)
    with open(args.out, "w") as f:
        f.write("".join(name + "\n" for name in order))
    print(f"{len(order)} functions -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
