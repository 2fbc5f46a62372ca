#!/usr/bin/env bash
# bench/bf16_accuracy.sh — what bf16 does to results: `condseg eval` of WEIGHTS on a split
# (default Kvasir-SEG val) in fp32 and in bf16, the six metrics of each, and the Dice between
# the two precisions' masks per image (mean and worst). Figures to stdout; the per-image
# JSON of both runs stays in OUT_DIR (default a temporary folder).
#
#   bench/bf16_accuracy.sh BUILD_DIR WEIGHTS [DATA_DIR] [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
build="$1" weights="$2"
data="${3:-${CONDSEG_DATA:-../shared/data}/kvasir-seg}"
out="${4:-$(mktemp -d)}"
exe="$build/condseg"
[ -x "$exe" ] || { echo "bench/bf16_accuracy.sh: $exe missing: build first" >&2; exit 1; }
for p in fp32 bf16; do
  mkdir -p "$out/$p"
  "$exe" eval -w "$weights" --data "$data" --precision "$p" --save-masks "$out/$p/masks" \
    --json "$out/$p/metrics.json" > "$out/$p/eval.txt"
  echo "== $p"; cat "$out/$p/eval.txt"
done
/usr/bin/python3 - "$out" <<'PY'
import glob, json, os, sys
import cv2, numpy as np
out = sys.argv[1]
dices = []
for f in sorted(glob.glob(os.path.join(out, "fp32", "masks", "*.png"))):
    a = cv2.imread(f, cv2.IMREAD_GRAYSCALE) > 127
    b = cv2.imread(os.path.join(out, "bf16", "masks", os.path.basename(f)), cv2.IMREAD_GRAYSCALE) > 127
    s = a.sum() + b.sum()
    dices.append(1.0 if s == 0 else 2.0 * (a & b).sum() / s)
m = {p: json.load(open(os.path.join(out, p, "metrics.json")))["mean"] for p in ("fp32", "bf16")}
print(f"masks of {len(dices)} images, Dice between bf16 and fp32: mean {np.mean(dices):.4f}, "
      f"worst {np.min(dices):.4f}")
for k in m["fp32"]:
    print(f"  {k:<10} fp32 {m['fp32'][k]:.4f}  bf16 {m['bf16'][k]:.4f}  diff {m['bf16'][k] - m['fp32'][k]:+.4f}")
PY
