#!/usr/bin/env bash
# bench/run.sh — the inference benchmark, one run: condseg (fp32 and bf16; the compact
# preset; then OpenBLAS's own kernel choice) and the PyTorch reference on the
# same machine, so that the ratios are taken under the same load. Figures go to stdout;
# the JSON lines are collected in BUILD/bench.jsonl.
#
#   bench/run.sh [BUILD_DIR] [bench_infer options]   (default build/test; needs a Release build)
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build/test}"
shift || true
exe="$build/bench_infer"
[ -x "$exe" ] || { echo "bench/run.sh: build first ($exe missing)" >&2; exit 1; }
data="${CONDSEG_DATA:-../shared/data}"
img="$data/kvasir-seg/images/cju0s690hkp960855tjuaqvv0.jpg"
args=("$@")
[ -f "$img" ] && args+=(--image "$img")
out="$build/bench.jsonl"
: > "$out"
echo "== condseg, OpenBLAS kernels chosen by condseg"
"$exe" "${args[@]}" | tee -a "$out"
echo "== condseg, bf16 (oneDNN on AMX), the same network"
"$exe" "${args[@]}" --precision bf16 | tee -a "$out"
echo "== condseg, the condseg-compact preset (the default model's network), same kernels"
img_args=()
[ -f "$img" ] && img_args=(--image "$img")
"$exe" --preset condseg-compact "${img_args[@]}" | tee -a "$out"
echo "== condseg, OpenBLAS's own kernel choice (CONDSEG_BLAS_AUTO=0)"
CONDSEG_BLAS_AUTO=0 "$exe" "${args[@]}" | tee -a "$out"
echo "== PyTorch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') reference, same machine"
/usr/bin/python3 tools/bench_ref.py --repeat 3 | tee -a "$out"
/usr/bin/python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
ours = [r for r in rows if r["what"] == "condseg_mask_b1"]
torch = [r for r in rows if r["what"] == "pytorch_mask_b1"]
compact = [r for r in rows if r["what"] == "condseg_mask_b1" and r["preset"] == "condseg-compact"
           and r.get("precision", "fp32") == "fp32"]
ours = [r for r in ours if r["preset"] != "condseg-compact" and r.get("precision", "fp32") == "fp32"]
bf16 = [r for r in rows if r["what"] == "condseg_mask_b1" and r.get("precision") == "bf16"]
if ours and bf16:
    print(f"mask inference, 256x256, batch 1: fp32 {ours[0]['ms_per_img']:.0f} ms, bf16 "
          f"{bf16[0]['ms_per_img']:.0f} ms ({ours[0]['ms_per_img'] / bf16[0]['ms_per_img']:.2f}x); "
          f"bf16 at {bf16[0]['ratio_to_bf16_peak']:.2f}x its roofline "
          f"({bf16[0]['gflop']:.1f} GFLOP at {bf16[0]['bf16_gflops']:.0f} GFLOP/s)")
if ours and compact:
    print(f"mask inference, 256x256, batch 1: {ours[0]['preset']} {ours[0]['ms_per_img']:.0f} ms "
          f"({ours[0]['gflop']:.1f} GFLOP), condseg-compact {compact[0]['ms_per_img']:.0f} ms "
          f"({compact[0]['gflop']:.1f} GFLOP): the compact preset is "
          f"{ours[0]['ms_per_img'] / compact[0]['ms_per_img']:.1f}x as fast")
if ours and torch:
    print(f"mask inference, 256x256, batch 1: condseg {ours[0]['ms_per_img']:.0f} ms, "
          f"PyTorch {torch[0]['ms_per_img']:.0f} ms: condseg is "
          f"{torch[0]['ms_per_img'] / ours[0]['ms_per_img']:.2f}x as fast")
PY
