#!/usr/bin/env bash
# The memory ablation protocol (issue 17): sCIFAR-10, the first 10,000 training images
# (9,000 train / 1,000 validation), 3 epochs, 2,000 test images, batch 64, lr 3e-3, one
# thread, ~87k parameters (--params 87178, QLAM v1's count). Fixed data and steps, so the
# accuracy does not depend on what else the machine runs; tokens/s does.
# Usage: results/ablations/run.sh NAME SEED   (runs into runs/abl/NAME_sSEED, resumable)
#
# PROTOCOL=full2: the committed sCIFAR-10 recipe (the whole training set, a 10-epoch
# schedule) stopped one step into epoch 3, after epoch 2's validation (steps 1,409 of
# 7,040; runs/abl_full2/NAME_sSEED). The committed full-budget runs' epoch-2 validation
# accuracies are its reference rows, and `--resume` with `--max-minutes 140` and without
# the stop continues such a run to the full budget.
set -euo pipefail
name=$1; seed=$2
if [ "${PROTOCOL:-short}" = full2 ]; then
  P="--task scifar10 --epochs 10 --batch-size 64 --lr 3e-3 --threads 1 --checkpoint-minutes 5 --seed $seed --stop-after-steps 1409"
  dir=runs/abl_full2
else
  P="--task scifar10 --limit-train 10000 --limit-test 2000 --epochs 3 --batch-size 64 --lr 3e-3 --threads 1 --checkpoint-minutes 3 --seed $seed"
  dir=runs/abl
fi
C=results/ablations/configs
case $name in
  v1)            A="--model qlam --d-model 64 --n-layers 2 --n-heads 8 --n-qubits 4" ;;
  v1_dtwide)     A="--model qlam --d-model 64 --n-layers 2 --n-heads 8 --n-qubits 4 --dt-min 1e-3 --dt-max 1" ;;
  v1_lrmem1)     A="--model qlam --d-model 64 --n-layers 2 --n-heads 8 --n-qubits 4 --lr-memory-scale 1" ;;
  v1_frozen)     A="--model qlam --d-model 64 --n-layers 2 --n-heads 8 --n-qubits 4 --dt-min 1e-9 --dt-max 1e-9" ;;
  h16n3)         A="--model qlam --params 87178 --n-layers 2 --n-heads 16 --n-qubits 3" ;;
  v1_depth2)     A="--model qlam --params 87178 --n-layers 2 --n-heads 8 --n-qubits 4 --depth 2" ;;
  h16n4_o2)      A="--model qlam --params 87178 --n-layers 2 --n-heads 16 --n-qubits 4 --read-order 2" ;;
  h8n5_o2)       A="--model qlam --params 87178 --n-layers 2 --n-heads 8 --n-qubits 5 --read-order 2" ;;
  h8n6_o2)       A="--model qlam --params 87178 --n-layers 2 --n-heads 8 --n-qubits 6 --read-order 2" ;;
  v1_conv4)      A="--model qlam --d-model 64 --n-layers 2 --n-heads 8 --n-qubits 4 --conv 4" ;;
  v1_conv4_bf16) A="--model qlam --d-model 64 --n-layers 2 --n-heads 8 --n-qubits 4 --conv 4 --precision bf16" ;;
  frozen_conv4)  A="--model qlam --d-model 64 --n-layers 2 --n-heads 8 --n-qubits 4 --conv 4 --dt-min 1e-9 --dt-max 1e-9" ;;
  conv4_h16n4_o2) A="--model qlam --params 87178 --n-layers 2 --n-heads 16 --n-qubits 4 --read-order 2 --conv 4" ;;
  mixed_conv4)   A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3 --conv 4" ;;
  mixed_n3h8_gradfix) A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3" ;;
  mixed_conv4_gradfix) A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3 --conv 4" ;;
  mixed_n3h8)    A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3" ;;
  mixed_n3h8k2_gradfix) A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3 --config $C/bases2.toml" ;;
  mixed_n3h8k2)  A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3 --config $C/bases2.toml" ;;
  mixed_n3h4k4)  A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 4 --n-qubits 3 --config $C/bases4.toml" ;;
  mixed_n2h16)   A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 16 --n-qubits 2" ;;
  mixed_n4h8)    A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 4" ;;
  mixed_nonsel)  A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3 --config $C/nonselective.toml" ;;
  mixed_nodeph)  A="--model qlam --memory mixed --params 87178 --n-layers 2 --n-heads 8 --n-qubits 3 --config $C/nodephasing.toml" ;;
  s4d64)         A="--model ssm --params 87178 --n-layers 2 --d-state 64" ;;
  s4d4)          A="--model ssm --params 87178 --n-layers 2 --d-state 4" ;;
  gru)           A="--model gru --params 87178 --n-layers 2" ;;
  *) echo "unknown ablation $name" >&2; exit 2 ;;
esac
out=$dir/${name}_s$seed
[ -f "$out/summary.json" ] && { echo "$out done"; exit 0; }
if [ "${PROTOCOL:-short}" = full2 ] && grep -qs '"epoch": 2,' "$out/metrics.jsonl"; then
  echo "$out done (epoch 2 validated)"; exit 0
fi
resume=""; [ -f "$out/checkpoint.pt" ] && resume="--resume"
exec python -m qlam train $P $A --out "$out" $resume
