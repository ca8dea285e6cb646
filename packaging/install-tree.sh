#!/usr/bin/env bash
# Lays out everything the packages install under DESTDIR:
#   packaging/install-tree.sh BINARY DESTDIR UNITDIR ZSHDIR
# Debian: /lib/systemd/system and /usr/share/zsh/vendor-completions;
# RPM: /usr/lib/systemd/system and /usr/share/zsh/site-functions.
# The completion scripts come from the binary itself (same schema as --help).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin=$1 dest=$2 unitdir=$3 zshdir=$4

install -D -m 0755 "$bin" "$dest/usr/bin/receptor"
install -D -m 0644 "$here/../receptor.service" "$dest$unitdir/receptor.service"
install -D -m 0644 "$here/receptor.conf" "$dest/etc/receptor/receptor.conf"
install -D -m 0644 "$here/sysusers.conf" "$dest/usr/lib/sysusers.d/receptor.conf"
install -d -m 0750 "$dest/var/lib/receptor"
for page in receptor.8 receptor.conf.5; do
    section=${page##*.}
    install -d "$dest/usr/share/man/man$section"
    gzip -9nc "$here/../man/$page" > "$dest/usr/share/man/man$section/$page.gz"
    chmod 0644 "$dest/usr/share/man/man$section/$page.gz"
done
install -d "$dest/usr/share/bash-completion/completions" "$dest$zshdir"
"$bin" --completion bash > "$dest/usr/share/bash-completion/completions/receptor"
"$bin" --completion zsh > "$dest$zshdir/_receptor"
chmod 0644 "$dest/usr/share/bash-completion/completions/receptor" \
    "$dest$zshdir/_receptor"
