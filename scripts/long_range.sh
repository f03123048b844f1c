#!/usr/bin/env bash
# The runs of issue 18 (long range and state tracking), as qlam sweeps into results/long/.
# Not run by the tests: the whole set is ~3 hours of one core. Finished runs are skipped and
# interrupted ones resumed, so rerunning a line continues it. Settings:
# scripts/long_range.toml (equal parameter budget, same recipe for every model, at most 6
# minutes of training per run) and scripts/long_range_fastdt.toml (both QLAM memories with
# fast time scales, dt 0.3..3); override with flags, e.g. --params 50000.
#
#   bash scripts/long_range.sh state      # parity and S3 per prefix, seeds 0-2; S5 seed 0
#   bash scripts/long_range.sh fastdt     # the same for both QLAM memories with dt 0.3..3
#   bash scripts/long_range.sh memory     # adding, MQAR, selective copying, copying, ListOps (seed 0)
#   bash scripts/long_range.sh psmnist    # psMNIST at sMNIST's budget (seed 0)
#   bash scripts/long_range.sh report     # tables and accuracy-against-length plots
set -euo pipefail
ROOT=${ROOT:-results/long}
MODELS=${MODELS:-qlam,qlam-mixed,ssm,lstm,gru,transformer}
QLAM=${QLAM:-"python -m qlam"}
CFG=scripts/long_range.toml
LENGTHS="--length 64 --test-lengths 256,1024,4096"
what=${1:-state}
shift || true

case "$what" in
  state)
    # train at 64 tokens, test at 4x, 16x and 64x; per-token supervision (-running) as in
    # Merrill et al. 2024. S5 (120 classes) is learned by no model at this budget: seed 0 only
    $QLAM sweep --config $CFG --root "$ROOT/state" --models "$MODELS" --seeds 0-2 \
      --tasks parity-running,s3-running $LENGTHS --no-plot "$@"
    $QLAM sweep --config $CFG --root "$ROOT/state" --models "$MODELS" --seeds 0 \
      --tasks s5-running $LENGTHS --no-plot "$@"
    ;;
  fastdt)
    $QLAM sweep --config scripts/long_range_fastdt.toml --root "$ROOT/state-fastdt" \
      --models qlam,qlam-mixed --seeds 0-2 --tasks parity-running,s3-running $LENGTHS --no-plot "$@"
    $QLAM sweep --config scripts/long_range_fastdt.toml --root "$ROOT/state-fastdt" \
      --models qlam,qlam-mixed --seeds 0 --tasks s5-running $LENGTHS --no-plot "$@"
    ;;
  memory)
    # one core's budget: 3,000 training sequences, at most 6 epochs or 4 minutes per run
    M="--config $CFG --models $MODELS --seeds 0 --no-plot --max-minutes 4 --epochs 6 --limit-train 3000"
    $QLAM sweep $M --root "$ROOT/memory/adding-1000" --tasks adding --length 1000 "$@"
    # MQAR at Zoology's (128 tokens, 8 pairs), vocabulary 1,024, at equal width d_model 32
    $QLAM sweep ${M/long_range.toml/long_range_mqar.toml} --root "$ROOT/memory/mqar-128" \
      --tasks mqar --length 128 --vocab 1024 --test-lengths 512 "$@"
    $QLAM sweep $M --root "$ROOT/memory/selective-copying-1024" --tasks selective-copying \
      --length 1024 "$@"
    $QLAM sweep $M --root "$ROOT/memory/copying-1000" --tasks copying --length 1000 "$@"
    $QLAM sweep $M --root "$ROOT/memory/listops-500" --tasks listops --length 500 \
      --limit-train 8000 "$@"
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
    echo "usage: $0 state|fastdt|memory|psmnist|report [qlam sweep flags]" >&2
    exit 2
    ;;
esac
