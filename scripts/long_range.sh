#!/usr/bin/env bash
# The runs of issue 18 (long range and state tracking), as qlam sweeps into results/long/.
# Not run by the tests: each sweep is hours of CPU. Finished runs are skipped and interrupted
# ones resumed, so rerunning a line continues it. Settings: scripts/long_range.toml (equal
# parameter budget, same recipe for every model); override with flags, e.g. --params 50000.
#
#   bash scripts/long_range.sh state      # parity and S5/A5 word problems, seeds 0-2
#   bash scripts/long_range.sh memory     # adding, copying, selective copying, MQAR (seed 0)
#   bash scripts/long_range.sh listops    # ListOps (seed 0)
#   bash scripts/long_range.sh psmnist    # psMNIST at sMNIST's budget (seed 0)
#   bash scripts/long_range.sh report     # tables and accuracy-against-length plots
set -euo pipefail
ROOT=${ROOT:-results/long}
MODELS=${MODELS:-qlam,ssm,lstm,gru,transformer}
QLAM=${QLAM:-"python -m qlam"}
CFG=scripts/long_range.toml
what=${1:-state}
shift || true

case "$what" in
  state)
    # train at 64 tokens, test at 4x, 16x and 64x; per-token supervision (-running) as in
    # Merrill et al. 2024, and the final product / parity as one label per sequence
    $QLAM sweep --config $CFG --root "$ROOT" --models "$MODELS" --seeds 0-2 \
      --tasks parity,parity-running,s5-running,a5-running,s5 \
      --length 64 --test-lengths 256,1024,4096 "$@"
    ;;
  memory)
    $QLAM sweep --config $CFG --root "$ROOT/adding-1000" --models "$MODELS" --seeds 0 \
      --tasks adding --length 1000 --test-lengths 5000 "$@"
    $QLAM sweep --config $CFG --root "$ROOT/adding-5000" --models "$MODELS" --seeds 0 \
      --tasks adding --length 5000 "$@"
    $QLAM sweep --config $CFG --root "$ROOT" --models "$MODELS" --seeds 0 \
      --tasks copying --length 1000 --test-lengths 2000,4000 "$@"
    $QLAM sweep --config $CFG --root "$ROOT" --models "$MODELS" --seeds 0 \
      --tasks selective-copying --length 4096 "$@"
    # Zoology's (length, pairs) = (64, 4) .. (512, 64): one sweep per length. The 8,192-token
    # vocabulary makes the embedding and head dominate any parameter budget, so MQAR runs at
    # equal width (d_model 64, as Zoology compares models) instead of equal parameters
    for L in 64 128 256 512; do
      $QLAM sweep --root "$ROOT/mqar-$L" --models "$MODELS" --seeds 0 --tasks mqar \
        --length $L --d-model 64 --n-layers 2 --epochs 20 --batch-size 64 --lr 3e-3 \
        --limit-train 20000 --threads 1 --max-minutes 120 "$@"
    done
    ;;
  listops)
    # LRA: 96,000 training expressions of 500-2,000 tokens (~2.5 ms each to generate: ~4 min)
    $QLAM sweep --config $CFG --root "$ROOT" --models "$MODELS" --seeds 0 \
      --tasks listops --length 2000 --limit-train 96000 "$@"
    ;;
  psmnist)
    # sMNIST's budget (README): QLAM d_model 64 x 2 layers, 8 heads of 4 qubits (87,050
    # parameters), the baselines sized to it; 9 epochs, 92 minutes on 2 threads
    $QLAM train --task psmnist --model qlam --batch-size 64 --lr 3e-3 --d-model 64 \
      --n-layers 2 --n-heads 8 --n-qubits 4 --epochs 9 --threads 2 --max-minutes 92 \
      --out "$ROOT/psmnist/qlam/seed0" "$@"
    $QLAM sweep --root "$ROOT" --models "${MODELS/qlam,/}" --seeds 0 --tasks psmnist \
      --batch-size 64 --lr 3e-3 --params 87050 --epochs 9 --threads 2 --max-minutes 92 "$@"
    ;;
  report)
    $QLAM report "$ROOT"
    ;;
  *)
    echo "usage: $0 state|memory|listops|psmnist|report [qlam sweep flags]" >&2
    exit 2
    ;;
esac
