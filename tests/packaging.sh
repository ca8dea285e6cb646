#!/usr/bin/env bash
# The packaging check (README, .ci/run): builds the static binary, the .deb
# and the .rpm once, checks their contents against the expected file lists,
# runs the static binary in an empty chroot, installs the .deb on this
# machine, starts the daemon from the installed unit's ExecStart line as
# user receptor with the sample config, upgrades the package under a
# running work unit, lints, and removes everything again (also on failure).
# Run as root. Takes a release build (~5 min on 2 cores) the first time.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n== packaging: %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
checks=0
ok() { checks=$((checks + 1)); echo "ok: $*"; }

[ "$(id -u)" = 0 ] || fail "needs root (dpkg -i, useradd, chroot)"
if dpkg -s receptor >/dev/null 2>&1 || getent passwd receptor >/dev/null; then
    fail "a receptor package or user is already on this machine; not touching it"
fi

step "tools"
need=()
for tool in rpmbuild:rpm lintian:lintian musl-gcc:musl-tools file:file \
    man:man-db systemd-analyze:systemd setpriv:util-linux; do
    command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
RECEPTORCTL="$(tests/receptorctl.sh)"

work="$(mktemp -d /tmp/receptor-packaging.XXXXXX)"
chmod 0755 "$work"
pids=()
installed=
# unshare --fork ignores SIGTERM while it waits: stop its child (the node)
# first, by its pid; then everything this script started.
stop_all() {
    local p c
    for p in "${pids[@]}"; do
        for c in $(ps -o pid= --ppid "$p" 2>/dev/null); do
            [ "$(ps -o comm= -p "$p")" = unshare ] && kill "$c" 2>/dev/null
        done
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
cleanup() {
    local rc=$?
    stop_all
    if [ -n "$installed" ]; then
        # Work units left running by a failed upgrade test: user receptor
        # did not exist before this script made it, so these are its own.
        for p in $(ps -o pid= -u receptor 2>/dev/null); do kill "$p" 2>/dev/null || true; done
        dpkg --purge receptor >/dev/null 2>&1 || true
        userdel receptor 2>/dev/null || true
        groupdel receptor 2>/dev/null || true
        rm -rf /run/receptor /etc/receptor
    fi
    rm -rf "$work"
    [ $rc = 0 ] || echo "packaging check FAILED (exit $rc)" >&2
}
trap cleanup EXIT

wait_socket() { # socket, log
    for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
    echo "no socket $1; log:" >&2; cat "$2" >&2; return 1
}
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

step "static binary"
bin="$(packaging/build-static.sh)"
file -L "$bin"
file -L "$bin" | grep -Eq 'statically linked|static-pie linked' || fail "not static"
size=$(stat -c %s "$bin")
echo "size: $size bytes"
[ "$size" -lt $((6 * 1024 * 1024)) ] || fail "static binary is $size bytes, over 6 MiB"
ok "static binary, $size bytes"

step "static binary in an empty root (chroot in its own mount namespace)"
root="$work/root"
mkdir -p "$root"
cp "$bin" "$root/receptor"
p=$(port)
cat > "$root/receptor.conf" <<CONF
- node:
    id: appliance
    datadir: /data
- tcp-listener:
    port: $p
    bindaddr: 127.0.0.1
- control-service:
    filename: /ctl.sock
CONF
echo "root before start: $(cd "$root" && find . | sort | tr '\n' ' ')"
unshare --mount --fork --kill-child -- chroot "$root" /receptor -c /receptor.conf \
    > "$work/appliance.log" 2>&1 &
pids+=($!)
wait_socket "$root/ctl.sock" "$work/appliance.log"
"$bin" --node id=visitor datadir="$work/visitor" --tcp-peer address=127.0.0.1:"$p" \
    --control-service filename="$work/visitor.sock" > "$work/visitor.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    "$RECEPTORCTL" --socket "$root/ctl.sock" status --json 2>/dev/null |
        grep -q '"visitor"' && break
    sleep 0.1
done
"$RECEPTORCTL" --socket "$root/ctl.sock" status
"$RECEPTORCTL" --socket "$work/visitor.sock" ping appliance --count 1 | grep -q "Reply from appliance" ||
    fail "no ping reply from the chrooted node"
ok "chrooted static node serves a mesh"
stop_all
pids=()

step "container image (when podman is installed)"
if command -v podman >/dev/null; then
    pod() { podman --storage-driver vfs "$@"; }
    make -s image-context >/dev/null
    pod build -q --isolation chroot -f packaging/container/Containerfile \
        -t receptor-rs-check target/image-context
    ctr="$(pod create receptor-rs-check)"
    # To a file: podman 4.3's export to a pipe can write nothing at all.
    pod export -o "$work/image.tar" "$ctr"
    files="$(tar -tf "$work/image.tar" | grep -v '/$' | sort | tr '\n' ' ')"
    pod rm "$ctr" >/dev/null
    pod rmi receptor-rs-check >/dev/null
    echo "image files: $files"
    [ "$files" = "etc/receptor/receptor.conf usr/bin/receptor " ] ||
        fail "image holds more than the binary and its config"
    ok "image FROM scratch: the binary and its config only"
else
    echo "skipped: no podman (apt-get install podman to build the image here)"
fi

step "build .deb and .rpm"
out="$work/out"
deb="$(packaging/build-deb.sh "$bin" "$out")"
rpm="$(packaging/build-rpm.sh "$bin" "$out")"
ls -l "$out"

expected_common="etc/receptor/receptor.conf
usr/bin/receptor
usr/lib/sysusers.d/receptor.conf
usr/share/bash-completion/completions/receptor
usr/share/man/man5/receptor.conf.5.gz
usr/share/man/man8/receptor.8.gz"
expect_deb="$(printf '%s\n' "$expected_common" lib/systemd/system/receptor.service \
    usr/share/zsh/vendor-completions/_receptor usr/share/doc/receptor/copyright \
    usr/share/doc/receptor/changelog.Debian.gz | sort)"
got_deb="$(dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -v '/$' | sed 's|^\./||' | sort)"
diff <(echo "$expect_deb") <(echo "$got_deb") || fail ".deb contents differ from the expected list"
dpkg-deb --fsys-tarfile "$deb" | tar -t | grep -qx './var/lib/receptor/' || fail ".deb lacks /var/lib/receptor"
ok ".deb contents"
expect_rpm="$(printf '%s\n' "$expected_common" usr/lib/systemd/system/receptor.service \
    usr/share/zsh/site-functions/_receptor etc/receptor var/lib/receptor | sort)"
got_rpm="$(rpm -qlp "$rpm" 2>/dev/null | sed 's|^/||' | sort)"
diff <(echo "$expect_rpm") <(echo "$got_rpm") || fail ".rpm contents differ from the expected list"
rpm -qp --configfiles "$rpm" 2>/dev/null | grep -qx /etc/receptor/receptor.conf || fail "rpm config not %config"
ok ".rpm contents"

step "rpm upgrade keeps an edited config (rpm --root, no scripts)"
rroot="$work/rpmroot"
mkdir -p "$rroot"
rpm --root "$rroot" --initdb
rpm --root "$rroot" -i --nodeps --noscripts "$rpm" 2>&1 | grep -v 'does not exist - using root' || true
echo "# edited locally" >> "$rroot/etc/receptor/receptor.conf"
rpm2="$(RPM_RELEASE=2 packaging/build-rpm.sh "$bin" "$out")"
rpm --root "$rroot" -U --nodeps --noscripts "$rpm2" 2>&1 | grep -v 'does not exist - using root' || true
rpm --root "$rroot" -q receptor | grep -q 'receptor-.*-2\.' || fail "rpm upgrade did not happen"
grep -q "edited locally" "$rroot/etc/receptor/receptor.conf" || fail "rpm upgrade lost the edited config"
ok "rpm upgrade kept the edited config"

step "install the .deb"
installed=yes
dpkg -i "$deb"
getent passwd receptor
[ "$(stat -c %U:%a /var/lib/receptor)" = receptor:750 ] || fail "datadir ownership: $(stat -c %U:%a /var/lib/receptor)"
for f in /usr/bin/receptor /lib/systemd/system/receptor.service /etc/receptor/receptor.conf \
    /usr/share/man/man8/receptor.8.gz /usr/share/man/man5/receptor.conf.5.gz \
    /usr/share/bash-completion/completions/receptor; do
    [ -e "$f" ] || fail "missing $f"
done
bash -c '. /usr/share/bash-completion/completions/receptor && complete -p receptor' ||
    fail "bash completion does not load"
ok "installed: user, datadir, files"

step "lint: systemd-analyze verify, man --warnings"
systemd-analyze verify /lib/systemd/system/receptor.service
ok "systemd-analyze verify"
for page in receptor.8 receptor.conf.5; do
    warnings="$(MANWIDTH=80 man --warnings -l "$repo/man/$page" 2>&1 >/dev/null)"
    [ -z "$warnings" ] || fail "man --warnings $page: $warnings"
done
MANWIDTH=80 man receptor.conf >/dev/null || fail "installed receptor.conf(5) does not render"
ok "man pages render without warnings"

# What systemd does before ExecStart= for this unit: RuntimeDirectory=.
start_from_unit() { # log file
    install -d -o receptor -g receptor -m 0750 /run/receptor
    local exec
    exec="$(sed -n 's/^ExecStart=//p' /lib/systemd/system/receptor.service)"
    # User=, Group=, NoNewPrivileges= and the empty CapabilityBoundingSet=.
    # shellcheck disable=SC2086
    setpriv --reuid=receptor --regid=receptor --init-groups --no-new-privs \
        --bounding-set=-all --inh-caps=-all -- $exec > "$1" 2>&1 &
    pids+=($!)
    wait_socket /run/receptor/receptor.sock "$1"
}

step "start the daemon from ExecStart as user receptor, sample config"
start_from_unit "$work/daemon.log"
"$RECEPTORCTL" --socket /run/receptor/receptor.sock status
[ "$(stat -c %U:%G /run/receptor/receptor.sock)" = receptor:receptor ] || fail "socket owner"
ok "receptorctl status on the installed daemon"
# systemctl reload: ExecReload sends SIGHUP, and the daemon reads its
# configuration again in place; receptorctl reload does the same.
kill -HUP "${pids[-1]}"
for _ in $(seq 100); do
    grep -q "Reloaded the configuration" "$work/daemon.log" && break
    sleep 0.1
done
grep -q "Reloaded the configuration" "$work/daemon.log" || fail "SIGHUP did not reload"
kill -0 "${pids[-1]}" || fail "the daemon ended on SIGHUP"
"$RECEPTORCTL" --socket /run/receptor/receptor.sock reload | grep -q "Reload successful" ||
    fail "receptorctl reload on the installed daemon"
"$RECEPTORCTL" --socket /run/receptor/receptor.sock status >/dev/null ||
    fail "no status after the reload"
ok "SIGHUP and receptorctl reload re-read the config in place"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
pids=()

step "upgrade under a running work unit, edited config kept"
cat > "$work/slow.sh" <<'SH'
#!/bin/sh
read -r line
sleep 4
echo "slow: $line"
SH
chmod 0755 "$work/slow.sh"
cat >> /etc/receptor/receptor.conf <<CONF
# edited locally: a worker for the upgrade test
- work-command:
    worktype: slow
    command: $work/slow.sh
CONF
start_from_unit "$work/daemon2.log"
ctl() { "$RECEPTORCTL" --socket /run/receptor/receptor.sock "$@"; }
unit="$(ctl work submit slow --payload-literal before-upgrade | sed -n 's/^Unit ID: *//p')"
[ -n "$unit" ] || fail "no unit submitted"
echo "unit: $unit"
inode_before=$(stat -c %i /usr/bin/receptor)
deb2="$(DEB_REVISION=2 packaging/build-deb.sh "$bin" "$out")"
dpkg -i "$deb2"
dpkg-query -W -f '${Version}\n' receptor | grep -q -- '-2$' || fail "deb upgrade did not happen"
[ "$(stat -c %i /usr/bin/receptor)" != "$inode_before" ] || fail "the binary was not replaced"
grep -q "edited locally" /etc/receptor/receptor.conf || fail "deb upgrade lost the edited config"
ok "deb upgrade kept the edited config"
# `work results` follows the unit until it ends.
timeout 30 "$RECEPTORCTL" --socket /run/receptor/receptor.sock work results "$unit" 2>/dev/null |
    grep -q "slow: before-upgrade" || fail "unit started before the upgrade did not finish"
ctl work list --unit_id "$unit" 2>/dev/null | tee "$work/unit.json"
grep -q '"StateName": "Succeeded"' "$work/unit.json" || fail "unit did not succeed"
ok "unit started before the binary was replaced finished"
after="$(timeout 30 "$RECEPTORCTL" --socket /run/receptor/receptor.sock \
    work submit slow --payload-literal after-upgrade --follow 2>/dev/null || true)"
echo "$after"
echo "$after" | grep -q "slow: after-upgrade" || fail "unit submitted after the binary was replaced failed"
ok "running daemon still starts units after its binary was replaced"
kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true
pids=()

step "lintian"
if command -v lintian >/dev/null; then
    lintian "$deb" 2>&1 | grep -v 'running with root privileges' || true
fi

step "remove"
dpkg --purge receptor
[ ! -e /usr/bin/receptor ] || fail "/usr/bin/receptor left behind"
ok "purged"

echo
echo "packaging: $checks passed, 0 failed"
