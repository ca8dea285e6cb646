#!/usr/bin/env bash
# Builds the fully static appliance binary:
#   packaging/build-static.sh            -> prints the path of the binary
# x86_64-unknown-linux-musl with the release profile (Cargo.toml says why each
# choice). Needs the musl Rust target (`rustup target add`) and musl-tools
# (`musl-gcc`, for ring's C and assembly). Where no musl std can be had, set
# RECEPTOR_STATIC_FALLBACK=glibc to build a glibc binary linked with
# +crt-static instead (static too, but glibc's NSS and iconv then only work
# with the same glibc installed on the target).
# Cargo's output goes to stderr; the one stdout line is the binary's path.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

target=x86_64-unknown-linux-musl
if [ "${RECEPTOR_STATIC_FALLBACK:-}" = glibc ]; then
    target=x86_64-unknown-linux-gnu
    export RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static"
    # A separate directory, so the normal gnu build is not rebuilt.
    export CARGO_TARGET_DIR="$repo/target/static-glibc"
else
    if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
        rustup target add "$target" >&2
    fi
    if ! command -v musl-gcc >/dev/null; then
        echo "musl-gcc not found: apt-get install musl-tools" >&2
        exit 1
    fi
    export CC_x86_64_unknown_linux_musl=musl-gcc
fi

cargo build --release --locked --target "$target" --bin receptor >&2
bin="${CARGO_TARGET_DIR:-$repo/target}/$target/release/receptor"
# Refuse to hand back anything that is not static.
if ! file -L "$bin" | grep -Eq 'statically linked|static-pie linked'; then
    file -L "$bin" >&2
    echo "not a static binary: $bin" >&2
    exit 1
fi
echo "$bin"
