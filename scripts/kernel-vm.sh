#!/usr/bin/env bash
# A virtual machine with a distribution kernel that has BPF LSM on, for the suites that test
# driftgate's kernel layer. (Build machines may refuse to load BPF LSM programs into their own
# kernel; a VM runs Debian's own kernel, booted with `lsm=...,bpf` as a node would be.)
#
#   scripts/kernel-vm.sh prepare            download and unpack the kernel (cached under target/)
#   scripts/kernel-vm.sh run DIR [SECONDS]  boot with the root file system of
#                                           scripts/debian-image.sh plus DIR on top; DIR/init is
#                                           PID 1; the console goes to stdout; overlayfs's module
#                                           is /usr/lib/driftgate-vm/overlay.ko*
#
# The kernel is Debian trixie's cloud kernel (linux-image-*-cloud-amd64-unsigned, the newest in
# the archive; DRIFTGATE_VM_KERNEL_DEB names another .deb). The root file system is an initramfs
# (nothing to partition or mount), so the VM needs no block device. QEMU under TCG (software
# emulation; DRIFTGATE_VM_KVM=1 for KVM): the workloads are small.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
cache=target/kernel-vm
mkdir -p "$cache"

mirror() {
    local m
    m=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
        grep -m1 -E '/debian/?( |$)' | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//' || true)
    echo "${DEBIAN_MIRROR:-${m:-http://deb.debian.org/debian}}"
}

prepare() {
    exec 9>"$cache/.lock"
    flock 9
    if [ -f "$cache/kernel/vmlinuz" ]; then
        return
    fi
    local deb="${DRIFTGATE_VM_KERNEL_DEB:-}"
    if [ -z "$deb" ]; then
        local m file
        m=$(mirror)
        curl -fsS -m 120 "$m/dists/trixie/main/binary-amd64/Packages.xz" -o "$cache/Packages.xz"
        file=$(xz -dc "$cache/Packages.xz" |
            awk '/^Package: linux-image-[0-9.]+.*-cloud-amd64-unsigned$/{p=1} p&&/^Filename:/{print $2; p=0}' | sort -V | tail -1)
        [ -n "$file" ] || { echo "kernel-vm: no cloud kernel in $m trixie" >&2; exit 1; }
        echo "kernel-vm: $m/$file" >&2
        curl -fsS -m 600 "$m/$file" -o "$cache/kernel.deb"
        deb="$cache/kernel.deb"
    fi
    rm -rf "$cache/kernel.tmp"
    mkdir -p "$cache/kernel.tmp/x"
    dpkg-deb -x "$deb" "$cache/kernel.tmp/x"
    cp "$cache"/kernel.tmp/x/boot/vmlinuz-* "$cache/kernel.tmp/vmlinuz"
    # Only the modules a node of containers needs: overlayfs.
    local mods
    mods=$(ls -d "$cache"/kernel.tmp/x/usr/lib/modules/* "$cache"/kernel.tmp/x/lib/modules/* 2>/dev/null | head -1 || true)
    mkdir -p "$cache/kernel.tmp/modules"
    cp "$mods"/kernel/fs/overlayfs/overlay.ko* "$cache/kernel.tmp/modules/"
    basename "$mods" >"$cache/kernel.tmp/release"
    rm -rf "$cache/kernel.tmp/x" "$cache/kernel"
    mv "$cache/kernel.tmp" "$cache/kernel"
}

base_cpio() {
    local image
    image=$(scripts/debian-image.sh)
    exec 8>"$cache/.base.lock"
    flock 8
    if [ "$cache/base.cpio" -nt "$image/.driftgate-image" ]; then
        return
    fi
    (cd "$image" && find . \( -path ./proc -o -path ./sys \) -prune -print -o -print | cpio -o -H newc --quiet) >"$cache/base.cpio.tmp"
    mv "$cache/base.cpio.tmp" "$cache/base.cpio"
}

run() {
    local dir="$1" limit="${2:-600}"
    prepare
    base_cpio
    [ -x "$dir/init" ] || { echo "kernel-vm: $dir/init is not executable" >&2; exit 64; }
    # (The image has a merged /usr: DIR must not have bin/, lib/ or sbin/ of its own.)
    mkdir -p "$dir/usr/lib/driftgate-vm"
    cp "$cache"/kernel/modules/* "$dir/usr/lib/driftgate-vm/"
    local img
    img=$(mktemp --suffix=.cpio)
    trap 'rm -f "$img"' RETURN
    { cat "$cache/base.cpio"; (cd "$dir" && find . -print | cpio -o -H newc --quiet); } >"$img"
    # TCG unless asked: nested KVM is not dependable on build machines (it fails mid-boot here).
    # Single-threaded TCG: with one host thread per vCPU (MTTCG), the kernel's live patching
    # of its own code (static keys flipped when cgroups or BPF programs come and go) races the
    # other vCPU and oopses now and then (an int3 in get_page_from_freelist, seen here).
    local accel=(-accel tcg,thread=single -cpu max)
    if [ "${DRIFTGATE_VM_KVM:-}" = 1 ]; then
        accel=(-accel kvm -cpu host)
    fi
    timeout "$limit" qemu-system-x86_64 "${accel[@]}" -smp 2 -m 3072 -nographic -no-reboot \
        -kernel "$cache/kernel/vmlinuz" -initrd "$img" \
        -append "console=ttyS0 quiet panic=-1 rdinit=/init lsm=lockdown,capability,landlock,yama,bpf" </dev/null
}

case "${1:-}" in
prepare) prepare ;;
run) shift; run "$@" ;;
*) echo "usage: $0 prepare | run DIR [SECONDS]" >&2; exit 64 ;;
esac
