#!/usr/bin/env bash
# Builds the .deb from a built binary with dpkg-deb (no debhelper needed):
#   packaging/build-deb.sh BINARY OUTDIR     -> prints the .deb's path
# DEB_REVISION (default 1) is the Debian revision.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin=$1 out=$2
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../Cargo.toml" | head -1)-${DEB_REVISION:-1}"

tree="$(mktemp -d)"
chmod 0755 "$tree"
trap 'rm -rf "$tree"' EXIT
"$here/install-tree.sh" "$bin" "$tree" /lib/systemd/system /usr/share/zsh/vendor-completions
install -D -m 0644 "$here/debian/copyright" "$tree/usr/share/doc/receptor/copyright"
printf 'receptor (%s) unstable; urgency=medium\n\n  * Package built by packaging/build-deb.sh.\n\n -- receptor-rs maintainers <receptor-rs@localhost>  %s\n' \
    "$version" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")" |
    gzip -9n > "$tree/usr/share/doc/receptor/changelog.Debian.gz"
install -d "$tree/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$tree" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@SIZE@/$size/" "$here/debian/control.in" > "$tree/DEBIAN/control"
install -m 0644 "$here/debian/conffiles" "$tree/DEBIAN/conffiles"
install -m 0755 "$here/debian/postinst" "$here/debian/prerm" "$here/debian/postrm" "$tree/DEBIAN/"
(cd "$tree" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
    sort -z | xargs -0 md5sum > DEBIAN/md5sums)
mkdir -p "$out"
deb="$out/receptor_${version}_amd64.deb"
dpkg-deb --root-owner-group --build "$tree" "$deb" >&2
echo "$deb"
