#!/usr/bin/env python3
"""Chaos soak: remote units through a diamond while its relays are killed.

    controller --+-- relay1 --+-- executor
                 +-- relay2 --+

Client threads submit remote `cat` units from the controller to the
executor, each with a random payload, and fetch its results; a chaos
thread SIGKILLs a random relay every few seconds and restarts it after a
random pause (one relay at a time, so the executor stays reachable most of
the time). At the end every unit must be Succeeded with stdout equal to
its payload (SHA-256), the controller must list exactly the units that were
submitted (none lost, none twice), and the survivors (controller and
executor) must not have grown in threads, descriptors or memory beyond a
small allowance; their figures are printed.

Usage: bench/soak.py PATH_TO_RECEPTOR [--seconds S] [--clients C]
                     [--max-payload BYTES] [--seed N]

Exit status 0 when everything holds, 1 with the first problem otherwise.
"""

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import control_json, free_port, wait_for

# Allowed growth of a survivor between the warm-up and the end: threads
# and descriptors of connections still closing, memory the allocator
# keeps. Anything beyond is a leak.
THREAD_SLACK = 8
FD_SLACK = 16
RSS_SLACK_KIB = 8 * 1024


class Node:
    def __init__(self, binary, name, workdir, args):
        self.name = name
        self.sock = os.path.join(workdir, f"{name}.sock")
        self.log_path = os.path.join(workdir, f"{name}.log")
        self.cmd = [binary, "--node", f"id={name}", f"datadir={workdir}/data",
                    "--log-level", "warning",
                    "--control-service", f"filename={self.sock}", *args]
        self.proc = None
        self.start()

    def start(self):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_for(lambda: control_json(self.sock, "status") is not None, 15, f"{self.name} control")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def usage(self):
        pid = self.proc.pid
        threads = len(os.listdir(f"/proc/{pid}/task"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        return {"threads": threads, "fds": fds, "rss_kib": rss}


def connect(sock_path, timeout=60):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock_path)
    f = s.makefile("rwb")
    f.readline()
    return s, f


def submit(sock_path, node, payload):
    s, f = connect(sock_path)
    try:
        req = {"command": "work", "subcommand": "submit", "node": node, "worktype": "cat"}
        f.write(json.dumps(req).encode() + b"\n")
        f.flush()
        line = f.readline().decode()
        if "with ID" not in line:
            raise RuntimeError(f"submit refused: {line.strip()}")
        unit = line.split("with ID ")[1].split(".")[0]
        f.write(payload)
        f.flush()
        s.shutdown(socket.SHUT_WR)
        result = f.readline().decode()
        if "ERROR" in result:
            raise RuntimeError(f"submit of {unit} failed: {result.strip()}")
        return unit
    finally:
        s.close()


def results(sock_path, unit):
    """The unit's whole stdout; the stream ends when the unit is done."""
    s, f = connect(sock_path, timeout=300)
    try:
        f.write(f"work results {unit} 0\n".encode())
        f.flush()
        header = f.readline().decode()
        if not header.startswith("Streaming results"):
            raise RuntimeError(f"results of {unit}: {header.strip()}")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = f.read1(1 << 20)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)
    finally:
        s.close()


def run_soak(args):
    workdir = tempfile.mkdtemp(prefix="receptor-soak-")
    ports = {"relay1": free_port(), "relay2": free_port()}
    rng = random.Random(args.seed)
    nodes = {}
    problems = []
    try:
        for relay, port in ports.items():
            nodes[relay] = Node(args.binary, relay, workdir,
                                ["--tcp-listener", f"port={port}", "bindaddr=127.0.0.1"])
        peers = []
        for port in ports.values():
            peers += ["--tcp-peer", f"address=127.0.0.1:{port}"]
        nodes["executor"] = Node(args.binary, "executor", workdir,
                                 [*peers, "--work-command", "worktype=cat", "command=cat"])
        nodes["controller"] = Node(args.binary, "controller", workdir, peers)
        controller = nodes["controller"].sock
        wait_for(lambda: "executor" in control_json(controller, "status")["RoutingTable"], 30, "route")
        wait_for(lambda: any(a["NodeID"] == "executor"
                             for a in control_json(controller, "status")["Advertisements"]), 30, "ads")

        submitted = {}  # unit -> sha256 of its payload
        lock = threading.Lock()
        stop = threading.Event()

        def client(seed):
            crng = random.Random(seed)
            while not stop.is_set():
                payload = crng.randbytes(crng.randint(0, args.max_payload))
                try:
                    unit = submit(controller, "executor", payload)
                except (OSError, RuntimeError) as e:
                    with lock:
                        problems.append(f"submit: {e}")
                    return
                with lock:
                    submitted[unit] = hashlib.sha256(payload).hexdigest()
                try:
                    out = results(controller, unit)
                except (OSError, RuntimeError) as e:
                    with lock:
                        problems.append(f"results of {unit}: {e}")
                    return
                if hashlib.sha256(out).hexdigest() != submitted[unit]:
                    with lock:
                        problems.append(f"{unit}: stdout differs ({len(out)} of {len(payload)} bytes)")

        kills = []

        def chaos():
            while not stop.wait(rng.uniform(1.0, 4.0)):
                relay = rng.choice(list(ports))
                nodes[relay].kill()
                kills.append(relay)
                if stop.wait(rng.uniform(0.2, 2.5)):
                    nodes[relay].start()
                    return
                nodes[relay].start()

        # Warm up before taking the survivors' baseline.
        warm = [threading.Thread(target=client, args=(1000 + i,)) for i in range(args.clients)]
        start = time.time()
        for t in warm:
            t.start()
        time.sleep(min(5.0, args.seconds / 4))
        baseline = {n: nodes[n].usage() for n in ("controller", "executor")}
        chaos_thread = threading.Thread(target=chaos)
        chaos_thread.start()
        time.sleep(max(0.0, args.seconds - (time.time() - start)))
        stop.set()
        chaos_thread.join()
        for t in warm:
            t.join(timeout=300)
            if t.is_alive():
                problems.append("a client is still waiting for results 300 s after the end")
        elapsed = time.time() - start

        # Every unit Succeeded, none lost or doubled.
        listed = control_json(controller, "work list")
        for unit, digest in submitted.items():
            st = listed.get(unit)
            if st is None:
                problems.append(f"{unit} is missing from work list")
            elif st["StateName"] != "Succeeded":
                problems.append(f"{unit} ended {st['StateName']}: {st['Detail']}")
        extra = set(listed) - set(submitted)
        if extra:
            problems.append(f"units nobody submitted: {sorted(extra)[:5]}")
        for unit in submitted:
            control_json(controller, f"work release {unit}")
        time.sleep(2)  # connections of the releases close
        end = {n: nodes[n].usage() for n in ("controller", "executor")}
        for n in end:
            b, e = baseline[n], end[n]
            if e["threads"] > b["threads"] + THREAD_SLACK:
                problems.append(f"{n}: threads {b['threads']} -> {e['threads']}")
            if e["fds"] > b["fds"] + FD_SLACK:
                problems.append(f"{n}: descriptors {b['fds']} -> {e['fds']}")
            if e["rss_kib"] > b["rss_kib"] + RSS_SLACK_KIB:
                problems.append(f"{n}: RSS {b['rss_kib']} -> {e['rss_kib']} KiB")
        report = {
            "seconds": round(elapsed, 1),
            "units": len(submitted),
            "units_per_second": round(len(submitted) / elapsed, 1),
            "relay_kills": len(kills),
            "baseline": baseline,
            "end": end,
            "problems": problems[:10],
        }
        print(json.dumps(report, indent=1))
        if not submitted:
            problems.append("no unit was submitted")
        return 0 if not problems else 1
    finally:
        for node in nodes.values():
            if node.proc and node.proc.poll() is None:
                node.kill()
        if problems:
            print(f"soak failed; logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("binary")
    p.add_argument("--seconds", type=float, default=300)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--max-payload", type=int, default=64 * 1024)
    p.add_argument("--seed", type=int, default=1)
    sys.exit(run_soak(p.parse_args()))


if __name__ == "__main__":
    main()
