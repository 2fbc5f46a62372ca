#!/usr/bin/env bash
# tests/run.sh — the whole test suite, as the README and CI run it: installs the Debian
# packages (build + the PyTorch/OpenCV reference side), builds condseg, runs every ctest
# test (reference files are generated on the way), then the fast tests again in an
# AddressSanitizer + UndefinedBehaviorSanitizer build, and the libFuzzer harnesses for a
# minute each (CONDSEG_FUZZ_SECONDS; clang).
#
#   tests/run.sh              everything
#   tests/run.sh --no-sanitize
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
sanitize=1
[ "${1:-}" = "--no-sanitize" ] && sanitize=0

./install.sh --deps-only --test-deps

jobs=$(nproc)
# The data: $CONDSEG_DATA, else ../shared/data beside the checkout, else the workplace's
# shared folder (a clone made elsewhere, e.g. /tmp/ci).
if [ -z "${CONDSEG_DATA:-}" ]; then
  for d in "$root/../shared/data" /work/shared/data; do
    if [ -d "$d/kvasir-seg/images" ]; then CONDSEG_DATA="$d"; break; fi
  done
fi
export CONDSEG_DATA="${CONDSEG_DATA:-$root/../shared/data}"
if [ ! -d "$CONDSEG_DATA/kvasir-seg/images" ]; then
  echo "tests/run.sh: Kvasir-SEG not found under CONDSEG_DATA=$CONDSEG_DATA;" \
       "set CONDSEG_DATA to the folder that holds kvasir-seg/" >&2
  exit 1
fi
echo "tests/run.sh: data from $CONDSEG_DATA"

echo "== build (Release) and ctest"
cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Release > /dev/null
cmake --build build/test -j"$jobs" > build/test-build.log 2>&1 ||
  { tail -40 build/test-build.log; echo "tests/run.sh: the build failed" >&2; exit 1; }
# A failure here does not stop the sanitizer stage: both are reported.
status=0
ctest --test-dir build/test --output-on-failure -j"$jobs" || status=$?

if [ "$sanitize" = 1 ]; then
  echo "== ASan/UBSan build: the C tests again"
  # The reference files are the Release build's: no fixture setup runs again (-FS).
  cmake -S . -B build/sanitize -DCMAKE_BUILD_TYPE=Debug -DCONDSEG_SANITIZE=ON \
    -DCONDSEG_GOLDEN_DIR="$root/build/test/golden" > /dev/null
  cmake --build build/sanitize -j"$jobs" > build/sanitize-build.log 2>&1 ||
    { tail -40 build/sanitize-build.log; echo "tests/run.sh: the build failed" >&2; exit 1; }
  ASAN_OPTIONS=detect_leaks=1 \
    ctest --test-dir build/sanitize --output-on-failure -j"$jobs" -L sanitize -FS '.*' ||
    status=$?
fi
if [ "$sanitize" = 1 ]; then
  echo "== libFuzzer harnesses (tests/fuzz/): ${CONDSEG_FUZZ_SECONDS:-60} s each, ASan/UBSan"
  CC=clang cmake -S . -B build/fuzz -DCONDSEG_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug > /dev/null
  cmake --build build/fuzz -j"$jobs" > build/fuzz-build.log 2>&1 ||
    { tail -40 build/fuzz-build.log; echo "tests/run.sh: the fuzz build failed" >&2; exit 1; }
  tests/fuzz/run.sh build/fuzz/tests/fuzz "${CONDSEG_FUZZ_SECONDS:-60}" || status=$?
fi
if [ "$status" != 0 ]; then
  echo "tests/run.sh: some tests failed (see above)" >&2
  exit "$status"
fi
echo "tests/run.sh: all tests passed (skipped tests, if any, are listed above with the reason)"
