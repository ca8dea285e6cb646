#!/usr/bin/env bash
# The one test command (README and CI): installs the real receptorctl client
# into target/receptorctl-venv, then runs every cargo test target.
# Extra arguments go to `cargo test`, e.g. `tests/run.sh --test mesh`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
RECEPTORCTL="$(tests/receptorctl.sh)"
export RECEPTORCTL
"$RECEPTORCTL" --help >/dev/null

exec cargo test --all-targets "$@"
