#!/bin/bash
# Build and run scripts/kernel_breakdown.cpp (see there) against the kernel source of this
# checkout: bash scripts/kernel_breakdown.sh [n [batch [tokens [layer]]]]. Needs g++ and an
# AVX-512 or AVX2 + FMA CPU (the kernel's build for the widest it has).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src="$here/../src/qlam/csrc/recurrence.cpp"
if grep -q avx512f /proc/cpuinfo; then  # the kernel's shapes (kShapes): vector bytes, rows
  flags="-mavx512f -mavx512vl -mavx512dq -mavx512bw -mavx2 -mfma -DQLAM_VB=64 -DQLAM_MR=8"
elif grep -q avx2 /proc/cpuinfo && grep -qw fma /proc/cpuinfo; then
  flags="-mavx2 -mfma -DQLAM_VB=32 -DQLAM_MR=6"
else
  echo "kernel_breakdown: needs an AVX-512 or AVX2 + FMA CPU" >&2; exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# the torch-free part of the kernel: from "namespace {" up to the ISA variants
awk '/^namespace \{/{on=1} /^\/\/ ISA variants/{exit} on' "$src" | sed '$d' > "$work/body.inc"
grep -q "backward_tasks" "$work/body.inc" || { echo "kernel_breakdown: source layout changed" >&2; exit 1; }
# shellcheck disable=SC2086
g++ -O3 -ffp-contract=fast -fopenmp $flags -Wno-psabi \
    -DQLAM_KERNEL_BODY="\"$work/body.inc\"" "$here/kernel_breakdown.cpp" -o "$work/breakdown"
"$work/breakdown" "$@"
