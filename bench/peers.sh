#!/usr/bin/env bash
# bench/peers.sh — condseg beside the engines a user would pick instead, in one run on this
# machine: mask inference at 256x256, batch 1, and a training step (stage 2, batch 2 by
# default), condseg fp32 and bf16 against PyTorch eager (fp32, bf16 autocast), ONNX Runtime
# (fp32) and OpenVINO (fp32 and its default precision, bf16 on AMX), all on THREADS threads
# (default 2). The peers run our reference network (tools/condseg_ref.py, exported to ONNX
# opset 18) from a Python venv made on first use from PyPI (torch, onnx, onnxscript,
# onnxruntime, openvino; about 6 GB) in $CONDSEG_PEERS_VENV (default /var/tmp/condseg-peers).
# Never run in CI, never a dependency of condseg. Prints one table; the JSON lines go to
# BUILD/peers.jsonl.
#
#   bench/peers.sh [BUILD_DIR] [--threads N] [--train-batches 2,8] [--no-train]
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/test
threads=2
train_batches=2
train=1
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift ;;
    --train-batches) train_batches="$2"; shift ;;
    --no-train) train=0 ;;
    -*) echo "bench/peers.sh: unknown option '$1'" >&2; exit 2 ;;
    *) build="$1" ;;
  esac
  shift
done
[ -x "$build/bench_infer" ] || { echo "bench/peers.sh: build first ($build/bench_infer missing)" >&2; exit 1; }
venv="${CONDSEG_PEERS_VENV:-/var/tmp/condseg-peers}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, onnx, onnxscript, onnxruntime, openvino' 2> /dev/null; then
  echo "bench/peers.sh: making the peers' venv in $venv (PyPI)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q torch onnx onnxscript onnxruntime openvino
fi
out="$build/peers.jsonl"
: > "$out"
data="${CONDSEG_DATA:-../shared/data}"
img="$data/kvasir-seg/images/cju0s690hkp960855tjuaqvv0.jpg"
img_args=()
[ -f "$img" ] && img_args=(--image "$img")
for preset in condseg-r50 condseg-compact; do
  for precision in fp32 bf16; do
    echo "== condseg $preset $precision inference"
    "$build/bench_infer" --preset "$preset" --precision "$precision" --threads "$threads" \
      "${img_args[@]}" | tee -a "$out" | grep -E "forward|ratio|peak"
  done
done
echo "== peers inference (condseg-r50 reference network)"
"$venv/bin/python" tools/bench_peers.py --threads "$threads" 2> /dev/null | tee -a "$out"
if [ "$train" = 1 ]; then
  for batch in ${train_batches//,/ }; do
    for preset in condseg-r50 condseg-compact; do
      for precision in fp32 bf16; do
        echo "== condseg $preset $precision training step, batch $batch"
        "$build/bench_train" --preset "$preset" --precision "$precision" --batch "$batch" \
          --threads "$threads" | tee -a "$out" | grep -E "step:|ratio|memory"
      done
    done
    echo "== PyTorch training step, batch $batch"
    "$venv/bin/python" tools/bench_peers.py --threads "$threads" --skip torch,ort,openvino \
      --train-step --train-batch "$batch" 2> /dev/null | tee -a "$out"
  done
fi
python3 - "$out" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def ours(what, preset, precision):
    for r in rows:
        if r["what"] == what and r.get("preset") == preset and r.get("precision") == precision:
            return r
peers = {r["what"]: r for r in rows if r["what"].startswith("peer_")}
print("\nmask inference, 256x256, batch 1 (one run, same machine)")
print(f"{'engine':<44} {'ms':>8} {'x condseg fp32':>15}")
base = ours("condseg_mask_b1", "condseg-r50", "fp32")
table = [(f"condseg {p} {q}", ours("condseg_mask_b1", p, q)["ms_per_img"])
         for p in ("condseg-r50", "condseg-compact") for q in ("fp32", "bf16")
         if ours("condseg_mask_b1", p, q)]
names = {"peer_torch_fp32": "PyTorch eager fp32", "peer_torch_bf16": "PyTorch eager bf16 autocast",
         "peer_ort_fp32": "ONNX Runtime fp32", "peer_openvino_fp32": "OpenVINO fp32",
         "peer_openvino_default": "OpenVINO default precision"}
table += [(f"{names[k]} ({peers[k].get('version', '')[:12]})", peers[k]["ms"]) for k in names if k in peers]
for name, ms in table:
    print(f"{name:<44} {ms:8.1f} {ms / base['ms_per_img'] if base else 0:15.2f}")
for p in ("condseg-r50", "condseg-compact"):
    for q in ("fp32", "bf16"):
        r = ours("condseg_mask_b1", p, q)
        if r:
            peak = r["ratio_to_bf16_peak"] if q == "bf16" else r["ratio_to_sgemm_peak"]
            print(f"  {p} {q}: {r['gflop']:.2f} GFLOP, ratio to its {'bf16 matmul' if q == 'bf16' else 'sgemm'} roofline {peak:.2f}")
steps = [r for r in rows if r["what"] in ("condseg_train_step",) or r["what"].startswith("peer_torch_train")]
if steps:
    print("\ntraining step (stage 2, 256x256)")
    for r in steps:
        if r["what"] == "condseg_train_step":
            print(f"  condseg {r['preset']} {r['precision']} batch {r['batch']}: {r['s_per_step']:.2f} s, peak RSS {r['peak_rss_mb']:.0f} MB")
        else:
            print(f"  PyTorch {r['what'][len('peer_torch_train_'):]}: {r['ms'] / 1000:.2f} s")
PY
