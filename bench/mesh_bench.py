#!/usr/bin/env python3
"""Mesh benchmark: stream throughput through tcp-server/tcp-client proxies
and ping round trips, on a 1-hop and a 3-hop line of nodes on 127.0.0.1.

Usage: bench/mesh_bench.py RECEPTOR [RECEPTOR ...] [--mib N] [--pings N]
                           [--hops 1,3] [--backend tcp,udp,ws] [--rounds N]
                           [--tls] [--busy N]

--backend picks the links between the nodes: tcp-listener/tcp-peer,
udp-listener/udp-peer or ws-listener/ws-peer; a comma list measures each.
With --tls every link is mutual TLS (certificates made with the first
binary's own --cert-init/--cert-makereq/--cert-signreq); UDP links have no
TLS, so --tls leaves them plain.

With --busy N, N CPU-bound processes at normal priority run while the
pings are measured (not the streams): round trips on a machine whose
cores are taken, where each hand-off between threads waits for the
scheduler. Each stops itself after five minutes should the bench die.

Any receptor that accepts Go-style config flags can be measured, so the
same command compares builds (ours, or the Go daemon). With several
binaries, backends or rounds, the runs are interleaved (round by round,
each binary and backend in turn) so that other load on the machine falls
on all of them alike. Prints one line per figure and a Markdown table at
the end, one column entry per round.
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
import threading
import time

from benchlib import control, free_port, wait_for
from pki import make_certs, tls_args


def link_args(backend, port, pki):
    """Flags for a node's listener on `port`, and for a peer dialing it."""
    srv, cli = (["tls=srv"], ["tls=cli"]) if pki and backend != "udp" else ([], [])
    if backend == "tcp":
        return (["--tcp-listener", f"port={port}", "bindaddr=127.0.0.1", *srv],
                ["--tcp-peer", f"address=127.0.0.1:{port}", *cli])
    if backend == "udp":
        return (["--udp-listener", f"port={port}", "bindaddr=127.0.0.1"],
                ["--udp-peer", f"address=127.0.0.1:{port}"])
    scheme = "wss" if pki else "ws"
    return (["--ws-listener", f"port={port}", "bindaddr=127.0.0.1", *srv],
            ["--ws-peer", f"address={scheme}://127.0.0.1:{port}/", *cli])


class Sink:
    """A TCP server that reads everything and counts it (the far end)."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    @staticmethod
    def _drain(conn):
        total = 0
        while True:
            data = conn.recv(1 << 20)
            if not data:
                break
            total += len(data)
        # Report the count back, then close: the sender waits for this.
        conn.sendall(str(total).encode())
        conn.close()


class Mesh:
    """A line of nodes n0 - n1 - ... - nH joined by `backend` links; n0
    serves the proxy to the sink (tcp-client) and nH accepts local
    connections (tcp-server). With `pki`, every TCP or WS link is mutual
    TLS."""

    def __init__(self, binary, backend, hops, sink_port, workdir, pki=None):
        self.procs = []
        self.dir = tempfile.mkdtemp(dir=workdir)
        kind = socket.SOCK_DGRAM if backend == "udp" else socket.SOCK_STREAM
        ports = [free_port(kind) for _ in range(hops + 1)]
        self.proxy_port = free_port()
        self.sockets = []
        for i in range(hops + 1):
            sock = os.path.join(self.dir, f"n{i}.sock")
            self.sockets.append(sock)
            listen, _ = link_args(backend, ports[i], pki)
            args = [binary, "--node", f"id=n{i}", f"datadir={self.dir}/d{i}",
                    "--log-level", "error",
                    "--control-service", f"filename={sock}", *listen]
            if pki:
                args += tls_args(pki, f"n{i}")
            if i > 0:
                args += link_args(backend, ports[i - 1], pki)[1]
            if i == 0:
                args += ["--tcp-client", "service=sink", f"address=127.0.0.1:{sink_port}"]
            if i == hops:
                args += ["--tcp-server", f"port={self.proxy_port}", "bindaddr=127.0.0.1",
                         "remotenode=n0", "remoteservice=sink"]
            log = open(os.path.join(self.dir, f"n{i}.log"), "w")
            self.procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            wait_for(lambda: os.path.exists(sock), 10)
        wait_for(lambda: self.routes_ready(hops), 30)

    def routes_ready(self, hops):
        table = control(self.sockets[hops], '{"command":"status","requested_fields":["RoutingTable"]}')
        return "n0" in json.loads(table).get("RoutingTable", {})

    def close(self):
        for p in self.procs:
            p.send_signal(signal.SIGKILL)
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def send_through(port, nbytes):
    """Sends nbytes through the proxy; returns seconds until the sink
    confirmed it had every byte."""
    chunk = os.urandom(1 << 20)
    s = socket.create_connection(("127.0.0.1", port))
    start = time.perf_counter()
    left = nbytes
    while left > 0:
        n = min(left, len(chunk))
        s.sendall(chunk[:n])
        left -= n
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        d = s.recv(64)
        if not d:
            break
        got += d
    elapsed = time.perf_counter() - start
    s.close()
    if int(got or b"0") != nbytes:
        raise SystemExit(f"sink received {got!r} bytes, expected {nbytes}")
    return elapsed


def throughput(port, mib, streams):
    nbytes = mib << 20
    times = [0.0] * streams
    def one(i):
        times[i] = send_through(port, nbytes)
    start = time.perf_counter()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return streams * nbytes / wall / 1e6


BUSY_LOOP = "import signal\nsignal.alarm(300)\nwhile True: pass"


def ping_median(sock, target, count, busy=0):
    hogs = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    if hogs:
        time.sleep(1)  # until they spin: the pings may all fit in their start-up
    try:
        rtts = []
        for _ in range(count):
            r = json.loads(control(sock, json.dumps({"command": "ping", "target": target})))
            if not r.get("Success"):
                raise SystemExit(f"ping failed: {r}")
            rtts.append(r["Time"] / 1000.0)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    return statistics.median(rtts)


def measure(binary, backend, hops, args, sink, workdir, pki):
    """(1-stream MB/s, 8-stream MB/s, ping median µs) on a fresh mesh."""
    mesh = Mesh(binary, backend, hops, sink.port, workdir, pki)
    try:
        one = throughput(mesh.proxy_port, args.mib, 1)
        eight = throughput(mesh.proxy_port, max(1, args.mib // 8), 8)
        rtt = ping_median(mesh.sockets[hops], "n0", args.pings, args.busy)
    finally:
        mesh.close()
    return one, eight, rtt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("receptor", nargs="+", help="binaries to measure")
    ap.add_argument("--mib", type=int, default=256, help="MiB per single-stream run")
    ap.add_argument("--pings", type=int, default=100)
    ap.add_argument("--hops", default="1,3", help="comma-separated line lengths")
    ap.add_argument("--backend", default="tcp", help="comma-separated: tcp, udp, ws")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds")
    ap.add_argument("--tls", action="store_true", help="mutual TLS on every TCP/WS link")
    ap.add_argument("--busy", type=int, default=0,
                    help="CPU-bound processes running while pings are measured")
    args = ap.parse_args()
    binaries = [os.path.abspath(b) for b in args.receptor]
    backends = args.backend.split(",")
    for b in backends:
        if b not in ("tcp", "udp", "ws"):
            ap.error(f"unknown backend {b!r}")
    hop_counts = [int(h) for h in args.hops.split(",")]
    sink = Sink()
    results = {}
    workdir = tempfile.mkdtemp(prefix="receptor-bench-")
    try:
        nodes = [f"n{i}" for i in range(max(hop_counts) + 1)]
        pki = make_certs(binaries[0], workdir, nodes) if args.tls else None
        for rnd in range(args.rounds):
            for hops in hop_counts:
                for backend in backends:
                    for binary in binaries:
                        fig = measure(binary, backend, hops, args, sink, workdir, pki)
                        results.setdefault((binary, backend, hops), []).append(fig)
                        print(f"round {rnd + 1}, {os.path.basename(binary)}, {backend}, "
                              f"{hops} hop(s): 1 stream {fig[0]:.1f} MB/s, "
                              f"8 streams {fig[1]:.1f} MB/s, ping median {fig[2]:.0f} us",
                              flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print("TLS on TCP/WS links:", "mutual" if args.tls else "none")
    print("CPU-bound processes during pings:", args.busy)
    print("| binary | link | hops | 1 stream MB/s | 8 streams MB/s | ping median µs |")
    print("|---|---|---|---|---|---|")
    for binary in binaries:
        for backend in backends:
            for hops in hop_counts:
                figs = results[(binary, backend, hops)]
                cols = [" / ".join(f"{f[k]:.{p}f}" for f in figs) for k, p in ((0, 1), (1, 1), (2, 0))]
                print(f"| {os.path.basename(binary)} | {backend} | {hops} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    sys.exit(main())
