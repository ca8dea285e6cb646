#!/usr/bin/env bash
# Builds the .rpm from a built binary with rpmbuild (Debian's `rpm` package
# has it):  packaging/build-rpm.sh BINARY OUTDIR   -> prints the .rpm's path
# RPM_RELEASE (default 1) is the release.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$(realpath "$1")" out="$(mkdir -p "$2" && realpath "$2")"
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -1)"
top="$(mktemp -d)"
trap 'rm -rf "$top"' EXIT
rpmbuild -bb --quiet \
    --define "_topdir $top" \
    --define "_rpmdir $out" \
    --define "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm" \
    --define "receptor_version $version" \
    --define "receptor_release ${RPM_RELEASE:-1}" \
    --define "receptor_bin $bin" \
    --define "receptor_src $(dirname "$here")" \
    "$here/rpm/receptor.spec" >&2
echo "$out/receptor-$version-${RPM_RELEASE:-1}.x86_64.rpm"
