#!/usr/bin/env python3
"""Work-unit benchmark: units per second for units run locally and some hops
away, daemon RSS afterwards, and the time to stream a large stdout from a
unit.

Usage: bench/work_bench.py RECEPTOR [RECEPTOR ...] [--units N] [--parallel P]
                           [--stdout-mib M] [--hops 0,3] [--tls]
                           [--measure roundtrip,succeeded] [--rounds R]
                           [--print-pids]

Units are submitted over the control socket the way receptorctl does it
(JSON submit, payload, half-close), by P client threads at once. Two
measures (--measure picks):

  roundtrip  each client fetches its unit's results (`work results`) and
             releases it before the next submit, so the figure is the whole
             round trip; the mean time of each phase is printed beside it.
  succeeded  each client submits its units back to back, then polls
             `work status` of each until it is Succeeded; the figure is
             units over the time from the first submit until every unit
             was seen Succeeded (what a user waiting for a batch sees).

The Go daemon's controller learns a remote unit's state by asking every
second and copies its stdout on a separate one-second poll, and its
`work results` rereads the file every 250 ms, so its round trip is bound
by those intervals (~2.4 s per remote unit); `succeeded` lets its units
overlap the way its users run them.

With --tls every backend link is mutual TLS, the executor's mesh control
service is TLS, and remote units are submitted with a TLS client, so each
remote unit pays for its stream handshakes.

Any receptor that accepts Go-style config flags can be measured. With
several binaries or rounds the runs are interleaved (round by round, each
binary in turn, every run on freshly started nodes) so that other load on
the machine falls on all of them alike; the table at the end has one entry
per round.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import control_json, free_port, wait_for
from pki import make_certs, tls_args


class Line:
    """n0 - n1 - ... - nH on 127.0.0.1; nH runs the work types."""

    def __init__(self, binary, hops, workdir, stdout_mib, pki=None):
        self.dir = tempfile.mkdtemp(dir=workdir)
        self.procs = []
        self.sockets = []
        try:
            self._start(binary, hops, stdout_mib, pki)
        except BaseException:
            # Nodes of a line that never came up must not outlive the script.
            self.close()
            raise

    def _start(self, binary, hops, stdout_mib, pki):
        ports = [free_port() for _ in range(hops + 1)]
        for i in range(hops + 1):
            sock = os.path.join(self.dir, f"n{i}.sock")
            self.sockets.append(sock)
            srv, cli = (["tls=srv"], ["tls=cli"]) if pki else ([], [])
            args = [binary, "--node", f"id=n{i}", f"datadir={self.dir}/data",
                    "--log-level", "error", "--control-service", f"filename={sock}", *srv,
                    "--tcp-listener", f"port={ports[i]}", "bindaddr=127.0.0.1", *srv,
                    "--work-command", "worktype=echo", "command=cat",
                    "--work-command", "worktype=big", "command=head",
                    f"params=-c {stdout_mib << 20} /dev/zero"]
            if pki:
                args += tls_args(pki, f"n{i}")
            if i > 0:
                args += ["--tcp-peer", f"address=127.0.0.1:{ports[i - 1]}", *cli]
            log = open(os.path.join(self.dir, f"n{i}.log"), "w")
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            wait_for(lambda: os.path.exists(sock), 10, f"n{i} socket")
        if hops:
            wait_for(lambda: f"n{hops}" in control_json(self.sockets[0], "status")["RoutingTable"], 30, "routes")
            # A Go node's first ad can go out before its link is up; the
            # next comes a minute later.
            wait_for(lambda: any(a["NodeID"] == f"n{hops}" for a in control_json(self.sockets[0], "status")["Advertisements"]), 90, "ads")

    def rss_kib(self):
        out = []
        for p in self.procs:
            with open(f"/proc/{p.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        out.append(int(line.split()[1]))
        return out

    def close(self):
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def connect(sock_path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    f = s.makefile("rwb")
    f.readline()
    return s, f


TLS_CLIENT = {}


def submit(sock_path, node, worktype, payload):
    s, f = connect(sock_path)
    req = {"command": "work", "subcommand": "submit", "node": node, "worktype": worktype}
    if node != "localhost":
        req.update(TLS_CLIENT)
    f.write(json.dumps(req).encode() + b"\n")
    f.flush()
    line = f.readline().decode()
    if "with ID" not in line:
        raise SystemExit(f"submit failed: {line}")
    unit = line.split("with ID ")[1].split(".")[0]
    f.write(payload)
    f.flush()
    s.shutdown(socket.SHUT_WR)
    result = f.readline().decode()
    s.close()
    if "ERROR" in result:
        raise SystemExit(f"submit failed: {result}")
    return unit


def results(sock_path, unit):
    s, f = connect(sock_path)
    f.write(f"work results {unit} 0\n".encode())
    f.flush()
    f.readline()
    s.shutdown(socket.SHUT_WR)
    total = 0
    data = b""
    while True:
        chunk = f.read1(1 << 20)
        if not chunk:
            break
        total += len(chunk)
        if len(data) < 64:
            data += chunk[:64]
    s.close()
    return total, data


def release(sock_path, unit):
    s, f = connect(sock_path)
    f.write(f"work release {unit}\n".encode())
    f.flush()
    f.readline()
    s.close()


def status(sock_path, unit):
    return control_json(sock_path, f"work status {unit}")


def in_threads(count, parallel, worker):
    """Runs worker(n, tid) in `parallel` threads sharing `count` items;
    returns the seconds it took and the errors they reported."""
    errors = []
    per_thread = [count // parallel + (1 if i < count % parallel else 0) for i in range(parallel)]

    def run(n, tid):
        try:
            worker(n, tid)
        except (SystemExit, OSError, ValueError, KeyError) as e:
            errors.append(str(e))

    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n, t)) for t, n in enumerate(per_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - start, errors


def round_trips(line, node, count, parallel):
    """Units per second when each client fetches its unit's results and
    releases it before the next submit, and the mean milliseconds a unit
    spent in each client phase (submit, results, release)."""
    sock = line.sockets[0]
    phases = [0.0, 0.0, 0.0]
    errors = []

    def worker(n, tid):
        for i in range(n):
            payload = f"unit {tid}-{i}\n".encode()
            t0 = time.perf_counter()
            unit = submit(sock, node, "echo", payload)
            t1 = time.perf_counter()
            total, data = results(sock, unit)
            t2 = time.perf_counter()
            if data != payload:
                errors.append(f"{unit}: got {data!r}")
            release(sock, unit)
            t3 = time.perf_counter()
            for k, d in enumerate((t1 - t0, t2 - t1, t3 - t2)):
                phases[k] += d

    elapsed, failed = in_threads(count, parallel, worker)
    errors += failed
    if errors:
        raise SystemExit(f"{len(errors)} units failed, first: {errors[0]}")
    return count / elapsed, [1000 * p / count for p in phases]


SUCCEEDED, FAILED = 2, 3


def until_succeeded(line, node, count, parallel):
    """Units per second from the first submit until `work status` says
    Succeeded for every unit: each client submits its units back to back,
    then polls each one's status (every 10 ms while it is not complete),
    as a receptorctl user waiting for a batch would. Also the mean
    milliseconds per submit and the milliseconds from the last submit
    until the last unit was seen Succeeded. The stdout size in each final
    status is checked; then every unit is released (not timed)."""
    sock = line.sockets[0]
    units = []
    submit_secs = [0.0]
    last_submit = [0.0]

    def worker(n, tid):
        mine = []
        for i in range(n):
            payload = f"unit {tid}-{i}\n".encode()
            t0 = time.perf_counter()
            mine.append((submit(sock, node, "echo", payload), len(payload)))
            t1 = time.perf_counter()
            submit_secs[0] += t1 - t0
            last_submit[0] = max(last_submit[0], t1)
        units.extend(mine)
        for unit, size in mine:
            while (st := status(sock, unit))["State"] not in (SUCCEEDED, FAILED):
                time.sleep(0.01)
            if st["State"] != SUCCEEDED or st["StdoutSize"] != size:
                raise SystemExit(f"{unit}: state {st['State']}, stdout {st['StdoutSize']} bytes")

    start = time.perf_counter()
    elapsed, errors = in_threads(count, parallel, worker)
    tail = start + elapsed - last_submit[0]
    in_threads(len(units), 8, lambda n, tid: [release(sock, u) for u, _ in units[tid::8]])
    if errors:
        raise SystemExit(f"{len(errors)} units failed, first: {errors[0]}")
    return count / elapsed, [1000 * submit_secs[0] / count, 1000 * tail]


def big_stdout_seconds(line, node):
    sock = line.sockets[0]
    start = time.perf_counter()
    unit = submit(sock, node, "big", b"")
    total, _ = results(sock, unit)
    elapsed = time.perf_counter() - start
    release(sock, unit)
    return total, elapsed


MEASURES = {
    "roundtrip": (round_trips, "round trips", ("submit", "results", "release")),
    "succeeded": (until_succeeded, "submit → all Succeeded", ("submit", "tail")),
}


def measure(binary, hops, args, workdir, pki):
    """One fresh line of nodes: each chosen measure, RSS, the big stdout."""
    line = Line(binary, hops, workdir, args.stdout_mib, pki)
    node = f"n{hops}" if hops else "localhost"
    figs = {}
    if args.print_pids:
        # For a profiler to attach to (perf record -p, strace -p).
        print("pids " + " ".join(f"n{i}={p.pid}" for i, p in enumerate(line.procs)), flush=True)
    try:
        for name in args.measure:
            figs[name] = MEASURES[name][0](line, node, args.units, args.parallel)
        figs["rss"] = "/".join(f"{r / 1024:.1f}" for r in line.rss_kib())
        if args.stdout_mib:
            figs["stdout"] = big_stdout_seconds(line, node)
    finally:
        line.close()
    return figs


def describe(figs, measures):
    parts = []
    for name in measures:
        rate, phases = figs[name]
        _, title, labels = MEASURES[name]
        ms = ", ".join(f"{label} {p:.1f}" for label, p in zip(labels, phases))
        parts.append(f"{title} {rate:.1f} units/s (ms: {ms})")
    parts.append(f"RSS after {figs['rss']} MiB")
    if "stdout" in figs:
        size, secs = figs["stdout"]
        parts.append(f"{size / 2**20:.0f} MiB stdout in {secs:.2f} s")
    return "; ".join(parts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor", nargs="+", help="binaries to measure")
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--stdout-mib", type=int, default=1024, help="0 skips the big stdout")
    ap.add_argument("--hops", default="0,3", help="comma-separated line lengths")
    ap.add_argument("--measure", default="roundtrip,succeeded",
                    help="comma-separated: roundtrip, succeeded")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    ap.add_argument("--tls", action="store_true", help="mutual TLS links and TLS control")
    ap.add_argument("--print-pids", action="store_true",
                    help="print each fresh line's node PIDs before measuring it")
    args = ap.parse_args()
    binaries = [os.path.abspath(b) for b in args.receptor]
    hop_counts = [int(h) for h in args.hops.split(",")]
    args.measure = args.measure.split(",")
    for name in args.measure:
        if name not in MEASURES:
            ap.error(f"unknown measure {name!r}")
    workdir = tempfile.mkdtemp(prefix="receptor-work-bench-")
    rows = {}
    try:
        pki = None
        if args.tls:
            pki = make_certs(binaries[0], workdir, [f"n{i}" for i in range(max(hop_counts) + 1)])
            TLS_CLIENT["tlsclient"] = "cli"
        for rnd in range(args.rounds):
            for hops in hop_counts:
                for binary in binaries:
                    figs = measure(binary, hops, args, workdir, pki)
                    rows.setdefault((binary, hops), []).append(figs)
                    where = "local" if hops == 0 else f"{hops} hops"
                    print(f"round {rnd + 1}, {os.path.basename(binary)}, {where}: "
                          f"{describe(figs, args.measure)}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("links:", "mutual TLS, TLS control service" if args.tls else "plain TCP",
          f"; {args.units} units, {args.parallel} clients; one entry per round")
    titles = [MEASURES[m][1] + " (units/s)" for m in args.measure]
    print("| binary | where | " + " | ".join(titles) + " | RSS after (MiB) | stdout seconds |")
    print("|---|---|" + "---|" * len(titles) + "---|---|")
    for (binary, hops), runs in rows.items():
        cols = [" / ".join(f"{r[m][0]:.1f}" for r in runs) for m in args.measure]
        cols.append(" ; ".join(r["rss"] for r in runs))
        cols.append(" / ".join(f"{r['stdout'][1]:.2f}" for r in runs) if args.stdout_mib else "–")
        where = "local" if hops == 0 else f"{hops} hops"
        print(f"| {os.path.basename(binary)} | {where} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
