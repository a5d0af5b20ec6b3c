#!/usr/bin/env bash
# Installs what the test suites need on a Debian machine: busybox-static (the scratch
# containers' image), containerd + runc + umoci, docker.io and podman (the runtime suites),
# debootstrap and systemd-container (a real Debian booted with systemd as PID 1), gcc
# with the static libc (the test tools), bash-static (a shell for the script tests), clang,
# libbpf's headers and QEMU (the kernel layer's program and its VM), the packaging tools and
# cargo-fuzz (with a nightly toolchain, for scripts/fuzz.sh).
# Installing does not start any service here. Idempotent.
set -euo pipefail
need=()
[ -x /bin/busybox ] && file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' || need+=(busybox-static)
command -v containerd >/dev/null || need+=(containerd)
command -v runc >/dev/null || need+=(runc)
command -v umoci >/dev/null || need+=(umoci)
command -v dockerd >/dev/null || need+=(docker.io)
command -v podman >/dev/null || need+=(podman)
# The real-systemd suite boots a minimal Debian (debootstrap) with systemd-nspawn --boot.
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v file >/dev/null || need+=(file)
# A real shell for the script tests: busybox-static runs its own `sh` in-process, never exec.
[ -x /bin/bash-static ] || need+=(bash-static)
# The fileless-execution tests build a static dropper (tests/tools/memfd_exec.c).
command -v gcc >/dev/null || need+=(gcc)
[ -e /usr/lib/x86_64-linux-gnu/libc.a ] || [ -e /usr/lib/aarch64-linux-gnu/libc.a ] || need+=(libc6-dev)
# The kernel layer: clang and llvm-strip rebuild its BPF program (scripts/build-bpf.sh --check,
# with the kernel's UAPI headers and libbpf's), QEMU boots the VM its suite runs in
# (scripts/kernel-vm.sh; cpio makes the VM's root file system, curl and xz fetch its kernel).
command -v clang >/dev/null || need+=(clang)
command -v llvm-strip >/dev/null || need+=(llvm)
[ -e /usr/include/bpf/bpf_helpers.h ] || need+=(libbpf-dev)
[ -e /usr/include/linux/bpf.h ] || need+=(linux-libc-dev)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v cpio >/dev/null || need+=(cpio)
command -v curl >/dev/null || need+=(curl)
command -v xz >/dev/null || need+=(xz-utils)
command -v nsenter >/dev/null || need+=(util-linux)
# setcap: file capabilities for the detection suite (tests/exec/detections.rs).
command -v setcap >/dev/null || [ -x /usr/sbin/setcap ] || [ -x /sbin/setcap ] || need+=(libcap2-bin)
# The OTLP tests' receiver, Helm and a Kubernetes validator run in Python environments of their
# own (scripts/py-env.sh: python3 -m venv, then pinned packages from PyPI).
python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
# Packaging tools for the package suite, cargo-fuzz for the fuzz targets (crates.io).
for tool in cargo-deb cargo-generate-rpm cargo-fuzz; do
    if ! command -v "$tool" >/dev/null; then
        echo "test-deps: cargo install $tool" >&2
        cargo install --locked --quiet "$tool"
    fi
done
# Fuzzing needs a nightly toolchain (libFuzzer's sanitizer flags).
if ! cargo +nightly --version >/dev/null 2>&1 && command -v rustup >/dev/null; then
    echo "test-deps: rustup toolchain install nightly" >&2
    rustup toolchain install --profile minimal nightly >/dev/null
fi
if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "test-deps: not root; cannot install ${need[*]} (privileged suites will be skipped)" >&2
    exit 0
fi
echo "test-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
