#!/usr/bin/env bash
# tests/gpu/run.sh — condseg's CUDA backend on a GPU machine, in one call of a few minutes:
#   1. the build: Release with -DCONDSEG_CUDA=ON into build/gpu (missing Debian -dev packages
#      are installed with apt-get when it can reach a mirror; a machine that cannot uses
#      the prebuilt bundle made by --bundle, see below);
#   2. test_cuda: every CUDA operation (forward, backward) and the whole network against
#      the CPU backend; it must run, not be skipped;
#   3. the benchmark, condseg and the PyTorch reference (tools/bench_ref.py, python3 with
#      PyTorch 2.x) in the same run, paper preset at 256x256, TF32 off and on: mask
#      inference ms/img at batch 1 and images/s at batch 16, training images/s at batch 12;
#   4. a table with the ratios and the GPU's name.
# Every part has a time limit and prints as it goes; with $OUT set, everything is also
# written there (gpu_run.log, gpu_results.jsonl, gpu_table.txt).
#
#   tests/gpu/run.sh             all of the above (exit 0: test passed, benchmarks ran;
#                                1: a failure; 3: no GPU here)
#   tests/gpu/run.sh --dry-run   build, then the CUDA code's host emulation (quick), and
#                                stop: for machines without a GPU
#   tests/gpu/run.sh --bundle    build here and pack the binaries with the non-system
#                                libraries they need into build/gpu-bundle.tar.gz, for a
#                                GPU machine that has the CUDA toolkit but neither these
#                                packages nor a network (carry build/gpu-bundle.tar.gz)
#   --use-bundle                 no build: the binaries of build/gpu-bundle(.tar.gz)
#   --quick                      fewer timed runs (about half the benchmark time)
#   --no-torch                   skip the PyTorch side
# Environment: CONDSEG_TORCH_PYTHON (default python3): the Python with PyTorch 2.x.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
BUILD=build/gpu
BUNDLE=build/gpu-bundle
mode=run
quick=0
torch_side=1
force_bundle=0
for arg in "$@"; do
  case "$arg" in
    --dry-run) mode=dry ;;
    --bundle) mode=bundle ;;
    --use-bundle) force_bundle=1 ;;
    --quick) quick=1 ;;
    --no-torch) torch_side=0 ;;
    -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "tests/gpu/run.sh: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

if [ -n "${OUT:-}" ]; then
  mkdir -p "$OUT"
  exec > >(tee -a "$OUT/gpu_run.log") 2>&1
  RESULTS="$OUT/gpu_results.jsonl"
  TABLE="$OUT/gpu_table.txt"
else
  mkdir -p "$BUILD"
  RESULTS="$BUILD/gpu_results.jsonl"
  TABLE="$BUILD/gpu_table.txt"
fi
: > "$RESULTS"
T0=$(date +%s)
say() { printf '\n== [%4ds] %s\n' $(( $(date +%s) - T0 )) "$*"; }
failures=()
fail() { failures+=("$*"); echo "FAILED: $*"; }
jobs_n=$(nproc 2>/dev/null || echo 4)
export GOMP_SPINCOUNT=10000

# ---- 0. the GPU ----------------------------------------------------------------------
gpu_name=""
if command -v nvidia-smi >/dev/null 2>&1; then
  gpu_name=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
fi
say "machine: $(uname -m), $jobs_n cores; GPU: ${gpu_name:-none found (nvidia-smi)}"

# ---- 1. dependencies and the build -------------------------------------------------------
any_file() { for f in "$@"; do [ -e "$f" ] && return 0; done; return 1; }
have_deps() {
  command -v cmake >/dev/null && command -v pkg-config >/dev/null &&
    pkg-config --exists glib-2.0 json-glib-1.0 gdk-pixbuf-2.0 libpng &&
    any_file /usr/include/jpeglib.h /usr/include/*/jpeglib.h &&
    any_file /usr/include/cblas.h /usr/include/*/cblas.h /usr/include/*/*/cblas.h &&
    any_file /usr/include/oneapi/dnnl/dnnl.h
}

find_nvcc() {
  command -v nvcc >/dev/null 2>&1 && return 0
  for d in /usr/local/cuda/bin /usr/local/cuda-*/bin; do
    if [ -x "$d/nvcc" ]; then export PATH="$d:$PATH"; return 0; fi
  done
  return 1
}

install_deps() {
  command -v apt-get >/dev/null || return 1
  local pkgs="cmake pkg-config libglib2.0-dev libjson-glib-dev libgdk-pixbuf-2.0-dev libpng-dev
              libjpeg-dev libopenblas-dev libdnnl-dev"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  local apt_opts="-o Acquire::http::Timeout=15 -o Acquire::Retries=0 -qq"
  echo "installing the build dependencies with apt-get (quietly) ..."
  # Package lists may be missing (container images drop them): update only if needed.
  DEBIAN_FRONTEND=noninteractive timeout 150 $sudo apt-get install -y --no-install-recommends \
      $apt_opts $pkgs >/dev/null 2>&1 && return 0
  timeout 60 $sudo apt-get update $apt_opts >/dev/null 2>&1 || return 1
  DEBIAN_FRONTEND=noninteractive timeout 240 $sudo apt-get install -y --no-install-recommends \
      $apt_opts $pkgs >/dev/null 2>&1
}

build() {
  local archs=()
  # On the GPU machine itself only its own architecture is compiled (half the time).
  # (CMake 3.24 and later know "native".)
  if [ -n "$gpu_name" ] && [ "$mode" = run ] &&
     printf '3.24\n%s\n' "$(cmake --version | awk 'NR==1 {print $3}')" | sort -V -C; then
    archs=(-DCMAKE_CUDA_ARCHITECTURES=native)
  fi
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCONDSEG_CUDA=ON -DCONDSEG_GIMP=OFF \
        "${archs[@]}" > "$BUILD.configure.log" 2>&1 ||
    { tail -30 "$BUILD.configure.log"; return 1; }
  grep -E "CUDA backend" "$BUILD.configure.log"
  local t=$(date +%s)
  cmake --build "$BUILD" -j"$jobs_n" --target test_cuda test_device bench_infer bench_train \
        condseg_cli > "$BUILD.build.log" 2>&1 || { grep -E "error|Error" -A3 "$BUILD.build.log" | head -40; return 1; }
  echo "built in $(( $(date +%s) - t )) s: $BUILD/tests/test_cuda, $BUILD/bench_infer, $BUILD/bench_train"
}

BIN_TEST=$BUILD/tests/test_cuda
BIN_DEVICE=$BUILD/tests/test_device
BIN_INFER=$BUILD/bench_infer
BIN_TRAIN=$BUILD/bench_train

use_bundle() {
  [ -f build/gpu-bundle.tar.gz ] && tar -xzf build/gpu-bundle.tar.gz -C build
  [ -x "$BUNDLE/bin/test_cuda" ] || return 1
  BIN_TEST=$BUNDLE/bin/test_cuda BIN_DEVICE=$BUNDLE/bin/test_device
  BIN_INFER=$BUNDLE/bin/bench_infer BIN_TRAIN=$BUNDLE/bin/bench_train
  # cuBLAS from this machine's CUDA toolkit (or PyTorch's wheels), the rest from the bundle.
  local libs="$ROOT/$BUNDLE/lib"
  for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib /usr/local/cuda-13*/lib*; do
    [ -e "$d/libcublas.so.13" ] && libs="$libs:$d"
  done
  local py="${CONDSEG_TORCH_PYTHON:-python3}"
  for d in $("$py" -c 'import site; print(" ".join(site.getsitepackages()))' 2>/dev/null); do
    for f in $(find "$d/nvidia" -maxdepth 4 -name 'libcublas.so.13' 2>/dev/null); do
      libs="$libs:$(dirname "$f")"
    done
  done
  export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  echo "using the prebuilt bundle ($BUNDLE, built $(cat "$BUNDLE/BUILT" 2>/dev/null))"
}

mkdir -p build
built=0
if [ "$force_bundle" = 1 ]; then
  say "no build (--use-bundle)"
elif say "build (CUDA on, Release) in $BUILD" && find_nvcc; then
  # Missing packages: a carried bundle first (no network needed), else apt-get.
  if ! have_deps && [ "$mode" = run ] && { [ -f build/gpu-bundle.tar.gz ] || [ -d "$BUNDLE" ]; }; then
    echo "the build dependencies are missing here, and a prebuilt bundle is present"
  elif have_deps || install_deps; then
    if have_deps && build; then built=1; else fail "build"; fi
  else
    echo "the build dependencies (GLib, json-glib, gdk-pixbuf, libpng, libjpeg, OpenBLAS -dev"
    echo "packages) are missing and apt-get could not install them"
  fi
else
  echo "no CUDA compiler (nvcc) found"
fi
if [ "$built" = 0 ] && [ "$mode" = run ]; then
  use_bundle || { fail "no build and no prebuilt bundle: make one with 'tests/gpu/run.sh --bundle' on a machine with the packages and carry build/gpu-bundle.tar.gz"; }
fi
if [ "$built" = 0 ] && [ "$mode" != run ]; then
  [ "$mode" = dry ] && use_bundle || { echo "FAILED: build"; exit 1; }
fi

if [ "$mode" = bundle ]; then
  say "packing $BUNDLE"
  rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin" "$BUNDLE/lib"
  cp "$BUILD/tests/test_cuda" "$BUILD/tests/test_device" "$BUILD/bench_infer" "$BUILD/bench_train" \
     "$BUILD/condseg" "$BUNDLE/bin/"
  # Everything they load except the C library, the C++ runtime and CUDA's own libraries,
  # which the GPU machine has (cuBLAS alone is over 500 MB).
  ldd "$BUNDLE"/bin/* | awk '/=> \// {print $3}' | sort -u |
    grep -Ev '/(libc|libm|libdl|libpthread|librt|libutil|ld-linux[^/]*|libcuda|libcublas|libcublasLt|libstdc\+\+|libgcc_s)\.so' |
    while read -r lib; do cp -L "$lib" "$BUNDLE/lib/"; done
  echo "$(date -u +%F) on $(. /etc/os-release 2>/dev/null; echo "${PRETTY_NAME:-?}"), $(git rev-parse --short HEAD 2>/dev/null)" > "$BUNDLE/BUILT"
  tar -czf build/gpu-bundle.tar.gz -C build gpu-bundle
  ls -la build/gpu-bundle.tar.gz
  echo "carry build/gpu-bundle.tar.gz to the GPU machine; tests/gpu/run.sh uses it when it cannot build"
  exit 0
fi

# ---- a dry run, or no GPU: stop here ------------------------------------------------------
if [ "$mode" = dry ]; then
  say "dry run: the CUDA code compiled; its host emulation (test_cuda --emulated --quick)"
  timeout 600 "$BIN_TEST" --emulated --quick | tail -2 || fail "test_cuda --emulated --quick"
  say "test_cuda on the GPU (skipped where there is none)"
  timeout 300 "$BIN_TEST" | tail -2
  echo "dry run done${gpu_name:+; this machine has a GPU: run tests/gpu/run.sh without --dry-run}"
  [ ${#failures[@]} = 0 ]; exit $?
fi
if [ -z "$gpu_name" ]; then
  say "NO GPU: nvidia-smi finds no NVIDIA GPU here. The CUDA code compiled; the GPU tests and the benchmark need one (--dry-run checks the rest)."
  "$BIN_TEST" | tail -1
  exit 3
fi

# ---- 2. the tests -------------------------------------------------------------------------
say "test_cuda: CUDA vs the CPU backend, every operation and the whole network (TF32 off)"
timeout 600 "$BIN_TEST"
rc=$?
case $rc in
  0) echo "test_cuda: passed" ;;
  77) fail "test_cuda was SKIPPED on a machine with a GPU ($gpu_name): the CUDA backend did not start" ;;
  124) fail "test_cuda: over its 600 s limit" ;;
  *) fail "test_cuda (exit $rc)" ;;
esac
timeout 120 "$BIN_DEVICE" || fail "test_device"

# ---- 3. the benchmarks ----------------------------------------------------------------------
if [ "$quick" = 1 ]; then runs=8 budget=4 steps=5 tbudget=8 reps=8; else runs=20 budget=8 steps=10 tbudget=15 reps=20; fi
say "condseg inference (paper preset, 256x256, mask only): batch 1 and 16, TF32 off and on"
timeout 400 "$BIN_INFER" --device cuda --batch 1,16 --tf32 off,on --runs $runs --budget $budget |
  tee -a "$RESULTS" | grep -v '^{' || fail "condseg inference benchmark"
say "condseg training step (stage 2, batch 12, 256x256): TF32 off and on"
timeout 400 "$BIN_TRAIN" --device cuda --batch 12 --size 256 --steps $steps --tf32 off,on --budget $tbudget |
  tee -a "$RESULTS" | grep -v '^{' || fail "condseg training benchmark"
if [ "$torch_side" = 1 ]; then
  py="${CONDSEG_TORCH_PYTHON:-python3}"
  tv=$("$py" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda, "GPU" if torch.cuda.is_available() else "no GPU")' 2>/dev/null)
  say "PyTorch reference (tools/bench_ref.py, $py: torch ${tv:-missing}), same settings"
  if [ -n "$tv" ]; then
    PYTHONUNBUFFERED=1 timeout 600 "$py" tools/bench_ref.py --device cuda --infer-batches 1,16 \
        --train-step --batch 12 --tf32 both --repeat $reps --budget $budget |
      tee -a "$RESULTS" | cut -c1-200 || fail "PyTorch benchmark"
  else
    fail "no PyTorch in $py (set CONDSEG_TORCH_PYTHON)"
  fi
fi

# ---- 4. the table -------------------------------------------------------------------------
say "results"
python3 - "$RESULTS" "$gpu_name" <<'PY' | tee "$TABLE"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def find(prefix, tf32):
    for r in rows:
        if r.get("what") == prefix and r.get("tf32") == tf32:
            return r
    return None
print(f"GPU: {sys.argv[2]}")
tv = next((r.get("torch") for r in rows if r.get("what", "").startswith("pytorch")), "?")
print(f"condseg vs PyTorch {tv} eager (tools/condseg_ref.py), paper preset, 256x256, same run")
print(f"{'measurement':26} {'TF32':4} {'condseg':>14} {'PyTorch':>14} {'speed-up':>9}  goal")
met = True
for label, key, field, unit, higher in [
        ("mask inference, batch 1", "mask_b1", "ms_per_img", "ms/img", False),
        ("mask inference, batch 16", "mask_b16", "images_per_s", "img/s", True),
        ("training step, batch 12", "train_b12", "images_per_s", "img/s", True)]:
    for tf32 in (False, True):
        ours, ref = find(f"condseg_cuda_{key}", tf32), find(f"pytorch_cuda_{key}", tf32)
        a = ours.get(field) if ours else None
        b = ref.get(field) if ref else None
        cell = lambda v: f"{v:.2f} {unit}" if v is not None else "-"
        if a and b:
            speed = (b / a) if not higher else (a / b)
            ok = speed >= 1.0
            met &= ok
            extra = f"{speed:8.2f}x  {'yes' if ok else 'NO'}"
        else:
            extra, met = "        -   ?", False
        print(f"{label:26} {'on' if tf32 else 'off':4} {cell(a):>14} {cell(b):>14} {extra}")
print("speed-up: condseg's speed over PyTorch's (above 1: condseg faster); both include the "
      "host copies of inputs and outputs")
for tf32 in (False, True):
    g = [(b, find(f"pytorch_cuda_mask_b{b}", tf32)) for b in (1, 16)]
    g = ", ".join(f"batch {b} {r['gpu_ms_per_img']:.2f} ms/img" for b, r in g if r and "gpu_ms_per_img" in r)
    if g:
        print(f"PyTorch without the host copies (input already on the GPU), TF32 {'on' if tf32 else 'off'}: {g}")
print("goal (at least as fast as PyTorch eager in each):", "met" if met else "NOT met")
PY

echo
if [ ${#failures[@]} -gt 0 ]; then
  say "FAILED: ${failures[*]}"
  exit 1
fi
say "all done: test_cuda passed, benchmark complete ($(( $(date +%s) - T0 )) s)"
