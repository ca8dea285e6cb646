#!/usr/bin/env bash
# The one test command (README and CI): installs the real receptorctl client
# into target/receptorctl-venv, then runs every cargo test target.
# Extra arguments go to `cargo test`, e.g. `tests/run.sh --test mesh`.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# The Go reference daemon for the interop tests, when it is shipped beside
# the checkout; those tests print "skipped: no Go reference" without it.
go_xz="$repo/../shared/reference/receptor-go.xz"
if [ ! -x target/reference/receptor-go ] && [ -f "$go_xz" ]; then
    mkdir -p target/reference
    xz -dc "$go_xz" > target/reference/receptor-go.part
    chmod +x target/reference/receptor-go.part
    mv target/reference/receptor-go.part target/reference/receptor-go
fi
RECEPTORCTL="$(tests/receptorctl.sh)"
export RECEPTORCTL
"$RECEPTORCTL" --help >/dev/null

# With no arguments every target runs, then the one that needs the
# simulator (Cargo.toml's required-features); `--test mesh` runs that one
# alone.
if [ $# -gt 0 ]; then
    exec cargo test "$@"
fi
cargo test --all-targets
cargo test --features sim --test relay_allocs
