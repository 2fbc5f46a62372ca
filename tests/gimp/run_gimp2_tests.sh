#!/usr/bin/env bash
# run_gimp2_tests.sh — the headless GIMP 2.10 tests of the ConDSeg plug-in (ctest
# gimp2_plugin): installs the built plug-in into a throwaway GIMP profile, runs every case
# of gimp_plugin_tests.py through gimp-console-2.10 in one batch, and checks the files and
# report lines it left (gimp-console-2.10 exits 0 even when a batch command fails).
#
#   run_gimp2_tests.sh PLUGIN CONDSEG FULL_WEIGHTS STAGE1_WEIGHTS KVASIR_DIR DEFAULT_MODEL
#                      EMPTY_IMAGE [PYTHON]
#
# DEFAULT_MODEL and EMPTY_IMAGE (a polyp-free frame where that model finds nothing) give
# the "No lesion found" cases.
# Fails (never skips) when GIMP 2.10 is missing. CONDSEG_KEEP_TEST_FILES=1 keeps the work
# folder (it is kept anyway when a check fails).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 7 ] || { sed -n '2,15p' "$0"; exit 2; }
plugin=$1 condseg=$2 full=$3 stage1=$4 kvasir=$5 default_model=$6 empty_image=$7
python=${8:-/usr/bin/python3}

fail() { echo "run_gimp2_tests: FAIL: $*" >&2; exit 1; }
command -v gimp-console-2.10 > /dev/null ||
  fail "gimp-console-2.10 not found: install GIMP 2.10 (./install.sh --deps-only --test-deps)"
[ -x "$plugin" ] || fail "the plug-in $plugin was not built"
for f in "$full" "$stage1" "$default_model" "$empty_image"; do [ -f "$f" ] || fail "$f missing"; done

work=$(mktemp -d "${TMPDIR:-/tmp}/condseg-gimp2.XXXXXX")
keep=${CONDSEG_KEEP_TEST_FILES:-0}
trap '[ "$keep" = 1 ] && echo "run_gimp2_tests: files kept in $work" || rm -rf "$work"' EXIT

export GIMP2_DIRECTORY="$work/profile"
mkdir -p "$GIMP2_DIRECTORY/plug-ins/condseg" "$GIMP2_DIRECTORY/gradients"
install -m 755 "$plugin" "$GIMP2_DIRECTORY/plug-ins/condseg/condseg"
# Only this build's plug-in: GIMP's own plug-ins are linked in one by one, leaving out a
# condseg plug-in installed system-wide (install.sh), which registers the same procedure.
system_plug_ins="$(gimptool-2.0 --gimpplugindir 2> /dev/null || echo /usr/lib/gimp/2.0)/plug-ins"
mkdir -p "$work/system-plug-ins"
for p in "$system_plug_ins"/*; do
  [ "$(basename "$p")" = condseg ] || ln -s "$p" "$work/system-plug-ins/"
done
echo "(plug-in-path \"$GIMP2_DIRECTORY/plug-ins:$work/system-plug-ins\")" > "$GIMP2_DIRECTORY/gimprc"

"$python" "$here/gimp_plugin_tests.py" prepare --work "$work" --kvasir "$kvasir" \
  --full "$full" --stage1 "$stage1" --condseg "$condseg" --default-model "$default_model" \
  --empty-image "$empty_image"

# A first GIMP session stores the last values as the plug-in does (its persistent
# parasite); GIMP writes them to the profile's parasiterc when it quits, and the batch's
# session (a restart) must find them.
timeout 300 gimp-console-2.10 -i -d -f -b "(load \"$work/remember.scm\")" -b '(gimp-quit 0)' \
  > "$work/gimp-remember.log" 2>&1 || true
grep -q "plug-in-condseg-last-values" "$GIMP2_DIRECTORY/parasiterc" ||
  fail "the first GIMP session did not store the last values (parasiterc: $(cat "$GIMP2_DIRECTORY/parasiterc" 2>&1))"

echo "run_gimp2_tests: $(gimp-console-2.10 --version)"
start=$(date +%s)
status=0
CONDSEG_WEIGHTS="$full" timeout 1200 gimp-console-2.10 -i -d -f \
  -b "(begin (load \"$here/gimp2_cases.scm\") (load \"$work/batch.scm\"))" \
  -b '(gimp-quit 0)' > "$work/gimp.log" 2>&1 || status=$?
echo "run_gimp2_tests: gimp-console-2.10 ran $(( $(date +%s) - start )) s, exit status $status"
grep -E "CS-RESULT|ConDSeg: |rror" "$work/gimp.log" | sed 's/^/  gimp: /' || true

if ! "$python" "$here/gimp_plugin_tests.py" check --work "$work" --log "$work/gimp.log" \
     --condseg "$condseg"; then
  keep=1
  fail "see above (GIMP's whole output: $work/gimp.log)"
fi
