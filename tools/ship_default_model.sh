#!/usr/bin/env bash
# tools/ship_default_model.sh — makes a training checkpoint the shipped default model and
# renews everything that describes it, so each new default model is shipped the same way:
#   1. models/condseg-default.safetensors: CHECKPOINT as float16, with the metadata
#      test_default_model checks (condseg.trained_on, condseg.recipe);
#   2. tests/data/default_model_expected.png and .sha256: the mask the PyTorch reference
#      computes from the new file (tools/expected_mask.py), what test_default_model
#      compares `condseg predict` with;
#   3. `condseg eval`, plain and with --tta, on Kvasir-SEG val and nopolyp/val (the six
#      metrics, the false alarms), and what the model marks on the tiny polyp of
#      cju0tl3uz8blh0993wxvn7ly3: the README's figures, printed and kept as JSON in OUT_DIR;
#   4. docs/uncertainty-default-model.png (tools/uncertainty_montage.py) with its ranges;
#   5. with --screenshots, the GIMP 2.10 dialog's screenshots in docs/
#      (plugin/dialog-screenshot.sh, which also checks the dialog).
# The README's tables and tools/train_default_model.sh's recipe are then updated by hand.
#
#   tools/ship_default_model.sh [--screenshots] CHECKPOINT [DATA_DIR] [OUT_DIR]
#   (DATA_DIR holds kvasir-seg/ and nopolyp/; CONDSEG names the condseg program,
#   default build/test/condseg; CONDSEG_GIMP_PLUGIN the GIMP 2.10 plug-in, default
#   build/test/plugin/gimp-2.10/condseg)
set -euo pipefail
cd "$(dirname "$0")/.."
shots=0
if [ "${1:-}" = --screenshots ]; then shots=1; shift; fi
[ $# -ge 1 ] || { sed -n '2,21p' "$0"; exit 2; }
checkpoint="$1"
root="${2:-${CONDSEG_DATA:-../shared/data}}"
out="${3:-runs/default/shipped}"
exe="${CONDSEG:-build/test/condseg}"
plugin="${CONDSEG_GIMP_PLUGIN:-build/test/plugin/gimp-2.10/condseg}"
py=/usr/bin/python3
model=models/condseg-default.safetensors
kvasir="$root/kvasir-seg" negatives="$root/nopolyp"
[ -x "$exe" ] || { echo "ship_default_model.sh: build condseg first ($exe)" >&2; exit 1; }
[ -f "$checkpoint" ] || { echo "ship_default_model.sh: $checkpoint: no such checkpoint" >&2; exit 1; }
mkdir -p "$out" models

"$py" tools/to_float16.py "$checkpoint" "$model" \
  --meta "condseg.trained_on=Kvasir-SEG train split (880 images) + nopolyp train split (900 polyp-free frames)" \
  --meta "condseg.recipe=tools/train_default_model.sh"
ls -l "$model"

"$py" tools/expected_mask.py "$model" "$kvasir/images/cju0s690hkp960855tjuaqvv0.jpg" \
  tests/data/default_model_expected.png --sha256 tests/data/default_model_expected.sha256

for data in "$kvasir" "$negatives"; do
  name="$(basename "$data")"
  "$exe" eval -w "$model" --data "$data" --json "$out/eval_$name.json"
  "$exe" eval -w "$model" --data "$data" --tta --json "$out/eval_${name}_tta.json"
done

small="$kvasir/images/cju0tl3uz8blh0993wxvn7ly3.jpg"
"$exe" predict -w "$model" -o "$out/small.png" --json "$out/small.json" "$small"
"$exe" predict -w "$model" --tta -o "$out/small_tta.png" --json "$out/small_tta.json" "$small"
"$py" - "$kvasir/masks/cju0tl3uz8blh0993wxvn7ly3.jpg" "$out/small.png" "$out/small_tta.png" <<'PY'
import sys, cv2
truth = cv2.imread(sys.argv[1], cv2.IMREAD_GRAYSCALE) > 127
for path in sys.argv[2:]:
    mask = cv2.imread(path, cv2.IMREAD_GRAYSCALE) > 127
    both = (mask & truth).sum()
    print(f"{path}: marks {100 * mask.mean():.1f}% of the frame, holds {both} of the polyp's "
          f"{truth.sum()} pixels, Dice {2 * both / max(mask.sum() + truth.sum(), 1):.3f}")
PY

"$py" tools/uncertainty_montage.py --condseg "$exe" --weights "$model" --data "$kvasir" \
  --out docs/uncertainty-default-model.png \
  cju0s690hkp960855tjuaqvv0 cju0sxqiclckk08551ycbwhno cju0tl3uz8blh0993wxvn7ly3

if [ "$shots" = 1 ]; then
  plugin/dialog-screenshot.sh "$plugin" "$model" "$kvasir/images/cju0sr5ghl0nd08789uzf1raf.jpg" \
    "$negatives/images/473.jpg" "$out/gimp-dialog-shots"
  cp "$out"/gimp-dialog-shots/gimp-*.png docs/
fi
