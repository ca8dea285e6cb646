"""Certificates for TLS benchmarks, made by the measured binary's own
--cert-init / --cert-makereq / --cert-signreq."""

import os
import subprocess


def make_certs(binary, workdir, nodes):
    """A CA and one certificate per node ID; returns the directory."""
    pki = os.path.join(workdir, "pki")
    os.makedirs(pki, exist_ok=True)

    def tool(*args):
        subprocess.run([binary, *args], cwd=pki, check=True, stdout=subprocess.DEVNULL)

    tool("--cert-init", "commonname=Bench CA", "bits=2048", "outcert=ca.crt", "outkey=ca.key")
    for n in nodes:
        tool("--cert-makereq", f"commonname={n}", "bits=2048", f"outreq={n}.csr",
             f"outkey={n}.key", f"nodeid={n}", "ipaddress=127.0.0.1")
        tool("--cert-signreq", f"req={n}.csr", "cacert=ca.crt", "cakey=ca.key",
             f"outcert={n}.crt", "verify=true")
    return pki


def tls_args(pki, node):
    """Flags for a `srv` tls-server (client certs required) and a `cli`
    tls-client, both with `node`'s certificate."""
    cert, key, ca = (os.path.join(pki, f) for f in (f"{node}.crt", f"{node}.key", "ca.crt"))
    return ["--tls-server", "name=srv", f"cert={cert}", f"key={key}",
            "requireclientcert=true", f"clientcas={ca}",
            "--tls-client", "name=cli", f"cert={cert}", f"key={key}", f"rootcas={ca}"]
