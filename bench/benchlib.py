"""What the bench scripts share: free ports on 127.0.0.1, waiting for a
condition, and one command on a node's control socket."""

import json
import socket
import time


def free_port(kind=socket.SOCK_STREAM):
    """A port nobody listens on right now (TCP, or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, timeout, what="the mesh"):
    """Polls `cond` every 50 ms; exits the script if it is not true in time.
    A node not answering yet (socket errors, a partial reply) counts as
    not yet."""
    end = time.time() + timeout
    while time.time() < end:
        try:
            if cond():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    raise SystemExit(f"timed out waiting for {what}")


def control(sock_path, line, timeout=10):
    """Sends one command line after the greeting; returns the reply line."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(sock_path)
        f = s.makefile("rwb")
        f.readline()
        f.write(line.encode() + b"\n")
        f.flush()
        return f.readline().decode()
    finally:
        s.close()


def control_json(sock_path, line, timeout=10):
    """`control`, with the reply parsed as JSON."""
    return json.loads(control(sock_path, line, timeout))
