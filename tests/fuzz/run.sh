#!/usr/bin/env bash
# tests/fuzz/run.sh — runs the libFuzzer harnesses, one after the other, each for SECONDS
# from its seed corpus (tests/fuzz/corpus/<harness>/, copied: the committed seeds stay as
# they are) and fails on the first crash, leak, timeout (10 s an input) or input that
# takes more than 2 GB. Prints each harness's executions; what it found is kept in
# OUT/<harness>/ (corpus/ and the crashing input, if any).
#
#   tests/fuzz/run.sh BUILD/tests/fuzz SECONDS [HARNESS...]    (default: all three)
#   e.g. the 60 s per harness of tests/run.sh, or a long campaign:
#   CONDSEG_FUZZ_RUNS=1000000 nice -n 19 tests/fuzz/run.sh build/fuzz/tests/fuzz 1800 image
# (CONDSEG_FUZZ_RUNS: stop a harness after that many executions, if sooner)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=$(cd "$1" && pwd)
seconds=$2
shift 2
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(safetensors image dataset)
out=${CONDSEG_FUZZ_OUT:-$bin/runs}

for h in "${harnesses[@]}"; do
  work="$out/$h"
  rm -rf "$work"
  mkdir -p "$work/corpus"
  cp "$here/corpus/$h/"* "$work/corpus/"
  echo "fuzz_$h: ${seconds} s from $(ls "$here/corpus/$h" | wc -l) seeds"
  status=0
  "$bin/fuzz_$h" -max_total_time="$seconds" -runs="${CONDSEG_FUZZ_RUNS:--1}" -timeout=10 -rss_limit_mb=2048 \
    -max_len=65536 -print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" \
    > "$work/log" 2>&1 || status=$?
  grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb" "$work/log" | sed 's/^/  /'
  if [ "$status" != 0 ]; then
    echo "fuzz_$h: FAILED (exit $status); the input is in $work/, the log:" >&2
    grep -E "ERROR|SUMMARY|==[0-9]+==" "$work/log" | head -20 >&2
    exit 1
  fi
done
echo "tests/fuzz/run.sh: no crash, leak or timeout"
