#!/usr/bin/env bash
# tools/train_default_model.sh — how condseg's shipped default model
# (models/condseg-default.safetensors) is made: the compact preset, trained with
# `condseg train` on Kvasir-SEG's train split on a CPU, stage 1 (consistency
# reinforcement of the encoder) then stage 2 (ConDSeg), the stage-2 checkpoint with the
# best validation mIoU stored as float16.
#
#   tools/train_default_model.sh [KVASIR_DIR] [RUN_DIR]
#
# Settings that differ from the paper's (README, "The default model", says why): the
# compact preset, input 128x128, no ImageNet start (none can be downloaded), learning rate
# 1e-3 for both groups with a patience of 4 epochs, and the two corrections of the
# original's quirks (--single-sigmoid, --fix-background).
#
# Negatives: this model saw Kvasir-SEG alone, where every frame holds a polyp. `--data`
# may be repeated to mix in polyp-free frames (nopolyp/: 900 train / 100 val frames with
# empty masks), e.g. --data "$data" --data "$CONDSEG_DATA/nopolyp" in `common` below: the
# train splits are then one training set, each val split is logged on its own
# (valid_<folder>_* in train_log.csv, with the false-alarm rate of nopolyp), and the mean
# over the splits of their mIoU picks best.safetensors (README, "Training"). The last line
# measures the false alarms either way when nopolyp/ is there: the share of its val frames
# the model marks over 1% of.
set -euo pipefail
cd "$(dirname "$0")/.."
data="${1:-${CONDSEG_DATA:-../shared/data}/kvasir-seg}"
runs="${2:-runs/default}"
exe="${CONDSEG:-build/test/condseg}"
[ -x "$exe" ] || { echo "train_default_model.sh: build condseg first ($exe)" >&2; exit 1; }
size=128
common=(--preset condseg-compact --data "$data" --image-size "$size" --batch 8
        --single-sigmoid --fix-background)

if [ ! -f "$runs/stage1/state.safetensors" ]; then
  "$exe" train --stage 1 "${common[@]}" --out "$runs/stage1" --epochs 6 --lr 1e-3 --seed 1
fi
if [ ! -f "$runs/stage2/state.safetensors" ]; then
  "$exe" train --stage 2 "${common[@]}" --out "$runs/stage2" --epochs 40 --lr 1e-3 \
    --lr-backbone 1e-3 --patience-lr 4 --patience-stop 10 --seed 2 \
    --init "$runs/stage1/best.safetensors"
else
  "$exe" train --resume "$runs/stage2"    # continue an interrupted stage 2
fi
mkdir -p models
/usr/bin/python3 tools/to_float16.py "$runs/stage2/best.safetensors" \
  models/condseg-default.safetensors \
  --meta "condseg.trained_on=Kvasir-SEG train split (880 images)" \
  --meta "condseg.recipe=tools/train_default_model.sh"
"$exe" eval -w models/condseg-default.safetensors --data "$data" --json "$runs/eval.json"
negatives="$(dirname "$data")/nopolyp"
if [ -d "$negatives" ]; then
  "$exe" eval -w models/condseg-default.safetensors --data "$negatives" --json "$runs/eval_nopolyp.json"
fi
