#!/bin/bash
# The wheels scripts/cuda_check.py needs on a lent GPU machine beyond its image (which has
# torch, Triton, JAX with CUDA, numpy, scipy, networkx, sympy, opt-einsum, pytest):
# TensorCircuit-NG and the two pure-Python packages it pulls in. Run here, in the repo's root;
# the device call then carries .whl (see scripts/cuda_check.py). Versions: the ones
# `qlam bench sim` was checked with on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qx '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
  -d .whl tensorcircuit-ng==1.10.0 tensornetwork-ng==0.5.3 graphviz==0.21
ls -l .whl
