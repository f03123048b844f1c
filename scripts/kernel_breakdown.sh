#!/bin/bash
# Build and run scripts/kernel_breakdown.cpp (see there) against the kernel source of this
# checkout: bash scripts/kernel_breakdown.sh [n [batch [tokens]]]. Needs g++ and AVX-512.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../src/qlam/csrc/recurrence.cpp"
grep -q avx512f /proc/cpuinfo || { echo "kernel_breakdown: needs an AVX-512 CPU" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the torch-free part of the kernel: from "namespace {" up to the ISA variants
awk '/^namespace \{/{on=1} /^\/\/ ISA variants/{exit} on' "$src" | sed '$d' > "$work/body.inc"
grep -q "backward_tasks" "$work/body.inc" || { echo "kernel_breakdown: source layout changed" >&2; exit 1; }
g++ -O3 -ffp-contract=fast -mavx512f -mavx512vl -mavx512dq -mavx512bw -mavx2 -mfma -Wno-psabi \
    -DQLAM_KERNEL_BODY="\"$work/body.inc\"" "$here/kernel_breakdown.cpp" -o "$work/breakdown"
"$work/breakdown" "$@"
