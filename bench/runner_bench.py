#!/usr/bin/env python3
"""CPU one work-command unit's runner costs, without a daemon.

Usage: bench/runner_bench.py RECEPTOR [RECEPTOR ...] [--units N] [--rounds R]

Runs N units of `cat` (a 3-byte stdin) one after another in a unit
directory under $TMPDIR, two ways, and prints the CPU (user + system)
per unit of everything started for them (the runner and `cat`; with the
fork server, the server too), from getrusage(RUSAGE_CHILDREN), and the
minor page faults:

  exec  posix_spawn `RECEPTOR --command-runner ...` per unit and wait
        for it (what the daemon did before the fork server, and does as
        its fallback);
  fork  start `RECEPTOR --command-runner-server` once, send it one
        request line per unit, wait for its `Exited` line (the server is
        then stopped, so its reaped runners count too).

A binary without the fork server is measured in `exec` only. Binaries
and modes run in turn, round by round.
"""
import argparse
import json
import os
import resource
import socket
import subprocess
import tempfile


def unit_dir(root):
    d = tempfile.mkdtemp(dir=root)
    with open(os.path.join(d, "stdin"), "w") as f:
        f.write("hi\n")
    return d


def reset(d):
    with open(os.path.join(d, "status"), "w") as f:
        f.write('{"State":0,"Detail":"","StdoutSize":0,"WorkType":"t","ExtraData":null}')
    try:
        os.unlink(os.path.join(d, "stdout"))
    except FileNotFoundError:
        pass


def run_exec(binary, d, n):
    args = [binary, "--node", "id=worker", "--log-level", "error", "--command-runner",
            "command=cat", "params=", f"unitdir={d}"]
    for _ in range(n):
        reset(d)
        pid = os.posix_spawn(binary, args, os.environ)
        os.waitpid(pid, 0)


def run_fork(binary, d, n):
    ours, theirs = socket.socketpair()
    server = subprocess.Popen([binary, "--node", "id=worker", "--log-level", "error",
                               "--command-runner-server"], stdin=theirs)
    theirs.close()
    replies = ours.makefile("rb")
    request = json.dumps({"command": "cat", "params": "", "unitdir": d}).encode() + b"\n"
    for _ in range(n):
        reset(d)
        ours.sendall(request)
        while b"Exited" not in replies.readline():
            pass
    # The file object holds the socket open too; both must go for EOF.
    replies.close()
    ours.close()
    server.wait()


def has_server(binary):
    return b"command-runner-server" in open(binary, "rb").read()


def measure(run, binary, d, n):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    run(binary, d, n)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / n * 1000
    return cpu, (after.ru_minflt - before.ru_minflt) / n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptors", nargs="+")
    ap.add_argument("--units", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    d = unit_dir(tempfile.gettempdir())
    results = {}
    for r in range(args.rounds):
        for binary in args.receptors:
            modes = [("exec", run_exec)] + ([("fork", run_fork)] if has_server(binary) else [])
            for mode, run in modes:
                cpu, flt = measure(run, binary, d, args.units)
                name = f"{os.path.basename(binary)} {mode}"
                print(f"round {r + 1}, {name}: {cpu:.2f} ms CPU, {flt:.0f} minor faults per unit")
                results.setdefault(name, []).append((cpu, flt))
    print("| binary, mode | CPU per unit (ms) | minor faults per unit |")
    print("|---|---|---|")
    for name, rows in results.items():
        cpus = " / ".join(f"{c:.2f}" for c, _ in rows)
        flts = " / ".join(f"{f:.0f}" for _, f in rows)
        print(f"| {name} | {cpus} | {flts} |")


if __name__ == "__main__":
    main()
