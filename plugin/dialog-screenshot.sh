#!/usr/bin/env bash
# dialog-screenshot.sh — takes the README's screenshots of the GIMP 2.10 dialog in a real
# GIMP under a virtual X display (xvfb-run), with a throwaway profile, and checks on the
# way that the preview behaves: the network runs once when the dialog opens, a threshold
# change only redraws (the plug-in's debug lines count the network runs), Return runs the
# filter, and the verdict is shown.
#
#   plugin/dialog-screenshot.sh PLUGIN WEIGHTS IMAGE EMPTY_IMAGE OUTDIR
#
# PLUGIN is the built GIMP 2.10 plug-in (build/dev/plugin/gimp-2.10/condseg); WEIGHTS is
# shown as the installed default model; IMAGE a polyp frame, EMPTY_IMAGE one in which the
# model finds nothing. Writes to OUTDIR:
#   gimp-dialog.png        the dialog at threshold 0.50, preview on
#   gimp-dialog-t020.png   the same after the threshold is typed as 0.20
#   gimp-verdict.png       GIMP after Return: the mask applied and the verdict message
#   gimp-dialog-empty.png  the dialog on EMPTY_IMAGE: "No lesion found"
#   gimp-verdict-empty.png GIMP after Return on it: the image unchanged, the verdict
#   timings.txt            the preview's network run and redraw times (from the debug lines)
# Exit status 1 when a check fails. Needs gimp, xvfb, xdotool, imagemagick (install.sh
# --test-deps installs them).
set -euo pipefail
if [ "${1:-}" != --inside-xvfb ]; then
  [ $# -eq 5 ] || { sed -n '2,20p' "$0"; exit 2; }
  mkdir -p "$5"
  exec timeout 600 xvfb-run -a -s "-screen 0 1280x900x24" "$0" --inside-xvfb \
    "$(realpath "$1")" "$(realpath "$2")" "$(realpath "$3")" "$(realpath "$4")" "$(realpath "$5")"
fi
plugin=$2 weights=$3 image=$4 empty=$5 out=$6
work=$(mktemp -d)
gimp_pid=""
trap '[ -n "$gimp_pid" ] && kill $gimp_pid 2> /dev/null; rm -rf "$work"' EXIT
fail() { echo "dialog-screenshot: FAIL: $*" >&2; grep "ConDSeg" "$work/gimp.log" >&2 || true; exit 1; }

export GIMP2_DIRECTORY="$work/profile"
mkdir -p "$GIMP2_DIRECTORY/plug-ins/condseg" "$GIMP2_DIRECTORY/gradients"
install -m 755 "$plugin" "$GIMP2_DIRECTORY/plug-ins/condseg/condseg"
# This plug-in only, not a copy installed system-wide (see tests/gimp/run_gimp2_tests.sh).
mkdir -p "$work/system-plug-ins"
for p in "$(gimptool-2.0 --gimpplugindir)"/plug-ins/*; do
  [ "$(basename "$p")" = condseg ] || ln -s "$p" "$work/system-plug-ins/"
done
cat > "$GIMP2_DIRECTORY/gimprc" << EOF
(plug-in-path "$GIMP2_DIRECTORY/plug-ins:$work/system-plug-ins")
(show-tips no)
EOF
# The dialog names the default model by its file name.
ln -s "$weights" "$work/condseg-default.safetensors"
export CONDSEG_WEIGHTS="$work/condseg-default.safetensors"
export G_MESSAGES_DEBUG=all   # the plug-in's "ConDSeg preview:" lines

# One GIMP; each image is opened and the plug-in called interactively by a Script-Fu
# function defined at start (cs-open-and-run).
cat > "$GIMP2_DIRECTORY/scripts-condseg.scm" << 'EOF'
; What the run left, in `report` (gimp-message would open a message box here).
(define (cs-open-and-run path report)
  (let* ((image (car (gimp-file-load RUN-NONINTERACTIVE path path)))
         (layer (car (gimp-image-get-active-layer image))))
    (gimp-display-new image)
    (gimp-image-clean-all image)
    (plug-in-condseg RUN-INTERACTIVE image layer "" 0.5 0 0)
    (let ((port (open-output-file report)))
      (display (string-append "CS-AFTER dirty=" (number->string (car (gimp-image-is-dirty image)))
                              " mask=" (number->string (car (gimp-layer-get-mask layer))))
               port)
      (close-output-port port))))
EOF
gimp-2.10 --no-splash -b "(begin (load \"$GIMP2_DIRECTORY/scripts-condseg.scm\")
  (cs-open-and-run \"$image\" \"$work/after-1\")
  (cs-open-and-run \"$empty\" \"$work/after-2\"))" > "$work/gimp.log" 2>&1 &
gimp_pid=$!

wait_for() {   # wait_for SECONDS COMMAND...: until the command succeeds
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 1; done
  return 1
}
dialog_window() { dialog=$(xdotool search --name "^ConDSeg Segmentation$" 2> /dev/null | head -1); [ -n "$dialog" ]; }
network_runs() { grep -c "ConDSeg preview: network run" "$work/gimp.log" || true; }
shot_dialog() { sleep 1; import -window "$dialog" "$out/$1"; echo "dialog-screenshot: wrote $out/$1"; }
# GIMP's image window: the largest one on the screen.
shot_gimp() {
  local crop="" best=0 w
  for w in $(xdotool search --onlyvisible --name ""); do
    eval "$(xdotool getwindowgeometry --shell "$w")"   # X Y WIDTH HEIGHT
    if [ $(( WIDTH * HEIGHT )) -gt "$best" ]; then best=$(( WIDTH * HEIGHT )) crop="${WIDTH}x${HEIGHT}+${X}+${Y}"; fi
  done
  import -window root -crop "$crop" +repage "$out/$1"
  echo "dialog-screenshot: wrote $out/$1"
}
# The verdict message GIMP shows after the run (a message dialog), closed after the shot.
verdict_window() { verdict=$(xdotool search --onlyvisible --name "GIMP Message|Message" 2> /dev/null | head -1); [ -n "$verdict" ]; }

# ---- the polyp frame ---------------------------------------------------------------------
wait_for 120 dialog_window || fail "no dialog"
xdotool mousemove 0 0   # no tooltip under the pointer
wait_for 120 sh -c "grep -q 'ConDSeg preview: redrawn' '$work/gimp.log'" || fail "the preview never drew"
[ "$(network_runs)" = 1 ] || fail "$(network_runs) network runs when the dialog opened, not 1"
shot_dialog gimp-dialog.png
# The threshold has the focus: type 0.20 into it; Tab commits the value.
xdotool key --window "$dialog" ctrl+a
xdotool type --window "$dialog" "0.20"
xdotool key --window "$dialog" Tab
wait_for 20 sh -c "grep -q 'ConDSeg preview: redrawn at threshold 0.200' '$work/gimp.log'" ||
  fail "no redraw at threshold 0.20"
[ "$(network_runs)" = 1 ] || fail "the threshold change ran the network ($(network_runs) runs)"
shot_dialog gimp-dialog-t020.png
# Back to the threshold entry, and Return: the filter runs.
xdotool key --window "$dialog" shift+Tab Return
wait_for 60 test -s "$work/after-1" || fail "Return did not run the filter"
grep -q "CS-AFTER dirty=1 mask=[0-9]" "$work/after-1" || fail "no layer mask after the run: $(cat "$work/after-1")"
wait_for 20 verdict_window || fail "no verdict message"
sleep 2
shot_gimp gimp-verdict.png
xdotool key --window "$verdict" Return 2> /dev/null || true

# ---- the polyp-free frame ----------------------------------------------------------------
sleep 2
wait_for 120 dialog_window || fail "no dialog for the polyp-free frame"
wait_for 120 sh -c "[ \$(grep -c 'ConDSeg preview: redrawn' '$work/gimp.log') -ge 3 ]" ||
  fail "the preview of the polyp-free frame never drew"
grep "ConDSeg preview: redrawn" "$work/gimp.log" | tail -1
shot_dialog gimp-dialog-empty.png
xdotool key --window "$dialog" Return
wait_for 60 test -s "$work/after-2" || fail "Return did not run the filter"
grep -q "CS-AFTER dirty=0 mask=-1" "$work/after-2" ||
  fail "the polyp-free frame was changed: $(cat "$work/after-2")"
wait_for 20 verdict_window || fail "no verdict message for the polyp-free frame"
sleep 2
shot_gimp gimp-verdict-empty.png
xdotool key --window "$verdict" Return 2> /dev/null || true

grep -E "ConDSeg preview:|ConDSeg: network ran" "$work/gimp.log" | sed 's/^.*ConDSeg/ConDSeg/' > "$out/timings.txt"
cat "$out/timings.txt"
echo "dialog-screenshot: all checks passed"
