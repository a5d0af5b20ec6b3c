#!/usr/bin/env bash
# Compiles driftgate's BPF LSM program (crates/driftgate-bpf/bpf/driftgate.bpf.c) with clang into
# the object the daemon embeds. The object is committed, so that building driftgate needs no
# clang; the test suite runs `scripts/build-bpf.sh --check`, which rebuilds it and fails if it
# differs from the committed one.
#   scripts/build-bpf.sh [--check]
set -euo pipefail
cd "$(dirname "$0")/.."
src=crates/driftgate-bpf/bpf/driftgate.bpf.c
obj=crates/driftgate-bpf/bpf/driftgate.bpf.o
out=$(mktemp --suffix=.bpf.o)
trap 'rm -f "$out"' EXIT
arch=$(uname -m)
case "$arch" in
    x86_64) target_arch=x86 ;;
    aarch64) target_arch=arm64 ;;
    *) target_arch=$arch ;;
esac
# -g for the BTF that CO-RE relocates by; the DWARF is stripped again. Paths are made relative
# so that the object does not depend on where the tree is.
clang -O2 -g -target bpf -mcpu=v3 -D__TARGET_ARCH_$target_arch \
    -I crates/driftgate-bpf/bpf -I "/usr/include/$arch-linux-gnu" \
    -ffile-prefix-map="$PWD"=. -fdebug-prefix-map="$PWD"=. \
    -Wall -Werror -c "$src" -o "$out"
llvm-strip -g "$out"
if [ "${1:-}" = --check ]; then
    if ! cmp -s "$out" "$obj"; then
        echo "build-bpf: $obj differs from what $src compiles to: run scripts/build-bpf.sh and commit it" >&2
        exit 1
    fi
    echo "build-bpf: $obj is what $src compiles to"
else
    cp "$out" "$obj"
    echo "build-bpf: wrote $obj"
fi
