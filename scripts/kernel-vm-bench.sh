#!/usr/bin/env bash
# The kernel layer's cost, measured where the kernel has BPF LSM: boots the VM of
# scripts/kernel-vm.sh and runs, in one run each, `driftgate bench exec` with driftgate
# configurations side by side with the layer off (`-kernel-off`), and `driftgate bench open
# --kernel-layer` (the dynamic program's start is the mmap-heavy figure). `driftgate-enforce`
# and `driftgate-audit` exec from outside the container's PID namespace (the host's path: the
# program leaves after its first lookups); the `-dynamic` configurations and bench open's
# dynamic start run in a PID namespace of the container (the enforced path: every exec and
# executable mapping checked). The VM emulates its CPU (TCG): absolute figures are many times
# a real node's; the ratios and the programs' ns per run (bpf_stats) are what to read.
#   scripts/kernel-vm-bench.sh [ITERATIONS] [ROUNDS] [exec|open|both]
set -euo pipefail
cd "$(dirname "$0")/.."
iterations="${1:-400}"
rounds="${2:-5}"
which="${3:-both}"
case "$which" in exec | open | both) ;; *) echo "kernel-vm-bench: exec, open or both, not $which" >&2; exit 64 ;; esac
run_exec=true; run_open=true
[ "$which" = open ] && run_exec=false
[ "$which" = exec ] && run_open=false
cargo build --release --quiet
bin="$PWD/target/release/driftgate"
dir=$(mktemp -d /tmp/dgvm-bench.XXXXXX)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir$(dirname "$bin")" "$dir/usr/bin"
strip -g -o "$dir$bin" "$bin"
cp /bin/busybox "$dir/usr/bin/busybox"
cat >"$dir/init" <<'INIT'
#!/bin/sh
mkdir -p /newroot
mount --bind / /newroot
cd /newroot
mount --move . /
exec chroot . /init2
INIT
cat >"$dir/init2" <<INIT
#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm; mount -t devpts devpts /dev/pts; mount -t tmpfs shm /dev/shm
mount -t securityfs none /sys/kernel/security; mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 none /sys/fs/cgroup; mkdir -p /.dgvm-tmp; mount --bind /tmp /.dgvm-tmp
mount -t tmpfs tmpfs /tmp; cp -a /.dgvm-tmp/. /tmp/; chmod 1777 /tmp; rm -rf /.dgvm-tmp/*; umount /.dgvm-tmp
mount -t tmpfs tmpfs /run
for m in /usr/lib/driftgate-vm/overlay.ko*; do insmod "\$m"; done
echo "DGVM-KERNEL \$(uname -r) LSM \$(cat /sys/kernel/security/lsm)"
$run_exec && $bin bench exec --pin 1 --iterations $iterations --rounds $rounds \
    --configs none,driftgate-enforce-kernel-off,driftgate-enforce,driftgate-audit-kernel-off,driftgate-audit,none-dynamic,driftgate-enforce-dynamic-kernel-off,driftgate-enforce-dynamic 2>&1
$run_open && $bin bench open --pin 1 --kernel-layer --rounds $rounds --iterations $((iterations * 10)) --files 2000 --starts $((iterations / 4)) 2>&1
echo DGVM-BENCH-DONE
echo o >/proc/sysrq-trigger
sleep 30
INIT
chmod +x "$dir/init" "$dir/init2"
scripts/kernel-vm.sh run "$dir" 5400 | sed -n '/DGVM-KERNEL/,/DGVM-BENCH-DONE/p'
