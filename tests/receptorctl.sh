#!/usr/bin/env bash
# Installs the pinned receptorctl into target/receptorctl-venv if needed and
# prints the path of its executable.
set -euo pipefail

RECEPTORCTL_VERSION=1.6.9
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$repo/target/receptorctl-venv"

installed_version() {
    "$venv/bin/python" - <<'PY' 2>/dev/null || true
import importlib.metadata as m
try:
    print(m.version("receptorctl"))
except m.PackageNotFoundError:
    pass
PY
}

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$repo/target"
    if ! python3 -m venv "$venv" >&2; then
        rm -rf "$venv"
        # Debian/Ubuntu ship ensurepip separately; install it if we can.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "receptorctl.sh: python3 -m venv failed; installing python3-venv" >&2
            DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv </dev/null >&2
            python3 -m venv "$venv" >&2
        else
            echo "receptorctl.sh: cannot create a Python venv; install python3-venv" >&2
            exit 1
        fi
    fi
fi

if [ "$(installed_version)" != "$RECEPTORCTL_VERSION" ]; then
    "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
        "receptorctl==$RECEPTORCTL_VERSION" </dev/null >&2
fi
echo "$venv/bin/receptorctl"
