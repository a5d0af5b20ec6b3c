#!/usr/bin/env bash
# Builds, once, a minimal real Debian (debootstrap, from Debian's packages) for the suites that
# test the way users run driftgate: booted with systemd as PID 1 (systemd-nspawn --boot), and
# used as a real container image (python3 and pip, perl, bash, the dynamic loader, dpkg, apt), and as the root
# file system of the kernel-layer VM (kmod for overlayfs's module; podman, runc and conmon for a
# real runtime there). Cached under
# target/ (CI's time is bounded): rebuilt only when the package list below changes.
#   scripts/debian-image.sh [DIR]     prints DIR when it is ready
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${1:-target/debian-image/bookworm}"
suite=bookworm
packages=systemd,systemd-sysv,dbus,python3,python3-pip,perl,procps,libcap2-bin,kmod,podman,runc,conmon,uidmap,netavark
want="suite=$suite variant=minbase packages=$packages v=1"
mkdir -p "$(dirname "$dir")"
exec 9>"$dir.lock"
flock 9
if [ -f "$dir/.driftgate-image" ] && [ "$(cat "$dir/.driftgate-image")" = "$want" ]; then
    echo "$dir"
    exit 0
fi
# The first Debian mirror this machine's apt uses (deb822 or one-line sources).
mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
        grep -m1 -E '/debian/?( |$)' | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
fi
mirror="${mirror:-http://deb.debian.org/debian}"
echo "debian-image: debootstrap $suite from $mirror into $dir" >&2
rm -rf "$dir.tmp"
debootstrap --variant=minbase --include="$packages" "$suite" "$dir.tmp" "$mirror" >"$dir.log" 2>&1 ||
    { tail -n 20 "$dir.log" >&2; exit 1; }
# A guest that boots quietly in a container: no console login, no first-boot prompts.
rm -f "$dir.tmp/etc/machine-id" "$dir.tmp/var/lib/dbus/machine-id"
: >"$dir.tmp/etc/machine-id"
echo driftgate-guest >"$dir.tmp/etc/hostname"
ln -sf /dev/null "$dir.tmp/etc/systemd/system/getty.target"
ln -sf /dev/null "$dir.tmp/etc/systemd/system/console-getty.service"
echo "$want" >"$dir.tmp/.driftgate-image"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
echo "$dir"
