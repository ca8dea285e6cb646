#!/usr/bin/env python3
"""Work-unit benchmark: units per second (submit -> Succeeded -> results
fetched) for units run locally and 3 hops away, daemon RSS afterwards, and
the time to stream a large stdout from a remote unit.

Usage: bench/work_bench.py PATH_TO_RECEPTOR [--units N] [--parallel P] [--stdout-mib M]
                           [--hops 0,3] [--tls]

With --tls every backend link is mutual TLS, the executor's mesh control
service is TLS, and remote units are submitted with a TLS client, so each
remote unit pays for its stream handshakes.

Units are submitted over the control socket the way receptorctl does it
(JSON submit, payload, half-close), by P client threads at once; each
client waits for its unit's results before submitting the next, so the
figure is the whole round trip; the mean time of each phase (submit,
results, release) is printed beside it. Works with any receptor that accepts
Go-style config flags.
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
            wait_for(lambda: any(a["NodeID"] == f"n{hops}" for a in control_json(self.sockets[0], "status")["Advertisements"]), 30, "ads")

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


def units_per_second(line, node, count, parallel):
    """Units per second, and the mean milliseconds a unit spent in each
    client phase (submit, results, release)."""
    sock = line.sockets[0]
    errors = []
    phases = [0.0, 0.0, 0.0]
    per_thread = [count // parallel + (1 if i < count % parallel else 0) for i in range(parallel)]

    def worker(n, tid):
        try:
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
        except SystemExit as e:
            errors.append(str(e))

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(n, t)) for t, n in enumerate(per_thread)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise SystemExit(f"{len(errors)} units failed, first: {errors[0]}")
    return count / elapsed, [1000 * p / count for p in phases]


def big_stdout_seconds(line, node):
    sock = line.sockets[0]
    start = time.perf_counter()
    unit = submit(sock, node, "big", b"")
    total, _ = results(sock, unit)
    elapsed = time.perf_counter() - start
    release(sock, unit)
    return total, elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor")
    ap.add_argument("--units", type=int, default=1000)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--stdout-mib", type=int, default=1024)
    ap.add_argument("--hops", default="0,3", help="comma-separated line lengths")
    ap.add_argument("--tls", action="store_true", help="mutual TLS links and TLS control")
    args = ap.parse_args()
    binary = os.path.abspath(args.receptor)
    hop_counts = [int(h) for h in args.hops.split(",")]
    workdir = tempfile.mkdtemp(prefix="receptor-work-bench-")
    rows = []
    try:
        pki = None
        if args.tls:
            pki = make_certs(binary, workdir, [f"n{i}" for i in range(max(hop_counts) + 1)])
            TLS_CLIENT["tlsclient"] = "cli"
        for hops in hop_counts:
            line = Line(binary, hops, workdir, args.stdout_mib, pki)
            node = f"n{hops}" if hops else "localhost"
            try:
                rate, phases = units_per_second(line, node, args.units, args.parallel)
                rss = line.rss_kib()
                size, secs = big_stdout_seconds(line, node)
            finally:
                line.close()
            where = "local" if hops == 0 else f"{hops} hops"
            rss_text = "/".join(f"{r / 1024:.1f}" for r in rss)
            print(f"{where}: {rate:.0f} units/s, RSS after {rss_text} MiB, "
                  f"{size / 2**20:.0f} MiB stdout in {secs:.2f} s; ms per unit: submit "
                  f"{phases[0]:.1f}, results {phases[1]:.1f}, release {phases[2]:.1f}", flush=True)
            rows.append((where, rate, rss_text, size, secs))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("links:", "mutual TLS, TLS control service" if args.tls else "plain TCP")
    print("| where | units/s | RSS after (MiB, per node) | stdout | seconds |")
    print("|---|---|---|---|---|")
    for where, rate, rss_text, size, secs in rows:
        print(f"| {where} | {rate:.0f} | {rss_text} | {size / 2**20:.0f} MiB | {secs:.2f} |")


if __name__ == "__main__":
    sys.exit(main())
