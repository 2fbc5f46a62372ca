#!/usr/bin/env bash
# dialog-screenshot.sh — takes the README's screenshots of the plug-in's dialog in a real
# GIMP (2.10, or 3 in the trixie chroot of tests/gimp/gimp3_chroot.sh) under a virtual X
# display, with a throwaway profile, and checks on the way what a user relies on:
#   - the preview's network runs once when the dialog opens; typing another threshold
#     only redraws (the plug-in's "ConDSeg preview:" debug lines count the network runs);
#   - Return in the dialog runs the filter, and the verdict message appears; Help and F1
#     show the plug-in's own help;
#   - the values are remembered across a restart of GIMP (the second session's dialog
#     opens at the threshold typed in the first);
#   - on a frame where the model finds nothing, the verdict says so and the image is left
#     unchanged.
#
#   plugin/dialog-screenshot.sh [--gimp3] PLUGIN WEIGHTS IMAGE EMPTY_IMAGE OUTDIR
#
# PLUGIN is the built plug-in (build/dev/plugin/gimp-2.10/condseg; with --gimp3 the chroot's
# build, /var/cache/condseg/trixie-gimp3/opt/condseg-build/plugin/gimp-3.0/condseg); WEIGHTS
# is shown as the installed default model; IMAGE a polyp frame, EMPTY_IMAGE one in which
# the model finds nothing. Writes to OUTDIR (PREFIX gimp- or gimp3-):
#   PREFIXdialog.png          the dialog at threshold 0.50, preview on
#   PREFIXdialog-t020.png     the same after the threshold is typed as 0.20
#   gimp-dialog-probability.png, gimp-dialog-uncertainty.png  the map outputs' previews
#                             (GIMP 2.10 only)
#   PREFIXverdict.png         GIMP after Return: the mask applied and the verdict message
#   PREFIXdialog-empty.png    the dialog on EMPTY_IMAGE at 0.50: "No lesion found"
#   PREFIXverdict-empty.png   GIMP after Return on it: the image unchanged, the verdict
#   PREFIXhelp.png            the plug-in's help (F1 and the Help button both show it)
#   PREFIXtimings.txt         the preview's network runs and redraws (debug lines)
# Exit status 1 when a check fails; CONDSEG_KEEP_TEST_FILES=1 keeps the work folder (the
# profiles, GIMP's output). Needs gimp, xvfb, xdotool, imagemagick (install.sh
# --test-deps installs them); --gimp3 needs root and the chroot.
set -euo pipefail
gimp3=0
if [ "${1:-}" = --gimp3 ]; then gimp3=1; shift; fi
if [ "${1:-}" != --inside-xvfb ]; then
  [ $# -eq 5 ] || { sed -n '2,32p' "$0"; exit 2; }
  mkdir -p "$5"
  flag=(); [ "$gimp3" = 1 ] && flag=(--gimp3)
  exec timeout 900 xvfb-run -a -s "-screen 0 1280x900x24" "$0" "${flag[@]}" --inside-xvfb \
    "$(realpath "$1")" "$(realpath "$2")" "$(realpath "$3")" "$(realpath "$4")" "$(realpath "$5")"
fi
plugin=$2 weights=$3 image=$4 empty=$5 out=$6
root=${CONDSEG_GIMP3_ROOT:-/var/cache/condseg/trixie-gimp3}
prefix=gimp-; [ "$gimp3" = 1 ] && prefix=gimp3-

# The work folder; with --gimp3 inside the chroot, `in` being its path as GIMP sees it.
if [ "$gimp3" = 1 ]; then work=$(mktemp -d "$root/tmp/condseg-shot.XXXXXX"); in=${work#"$root"}
else work=$(mktemp -d); in=$work; fi
gimp_pid="" mounted=()
cleanup() {
  # GIMP 3 ignores SIGTERM while a script runs: SIGKILL after a moment.
  if [ -n "$gimp_pid" ]; then
    kill "$gimp_pid" 2> /dev/null; sleep 2; kill -9 "$gimp_pid" 2> /dev/null
  fi
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do umount "${mounted[$i]}" 2> /dev/null || umount -l "${mounted[$i]}" || true; done
  if [ "${CONDSEG_KEEP_TEST_FILES:-0}" = 1 ]; then echo "dialog-screenshot: files kept in $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
fail() { echo "dialog-screenshot: FAIL: $*" >&2; grep -h "ConDSeg" "$work"/gimp*.log >&2 || true; exit 1; }

mkdir -p "$work/profile/plug-ins/condseg" "$work/profile/gradients"
install -m 755 "$plugin" "$work/profile/plug-ins/condseg/condseg"
cp "$image" "$work/image.${image##*.}"; cp "$empty" "$work/empty.${empty##*.}"
image_in="$in/image.${image##*.}" empty_in="$in/empty.${empty##*.}"
# The dialog names the default model by its file name.
cp "$weights" "$work/condseg-default.safetensors"

if [ "$gimp3" = 1 ]; then
  mount_in() { local t=$1; shift; mkdir -p "$t"; mount "$@" "$t"; mounted+=("$t"); }
  mount_in "$root/proc" -t proc proc
  mount_in "$root/dev" --bind /dev
  mount_in "$root/dev/shm" -t tmpfs -o mode=1777 tmpfs
  mount_in "$root/tmp/.X11-unix" --bind /tmp/.X11-unix
  cp "${XAUTHORITY:-/dev/null}" "$work/xauth" 2> /dev/null || true
  cat > "$work/run.scm" << 'EOF'
(script-fu-use-v3)
(define (cs-id x) (cond ((number? x) x) ((or (null? x) (not x)) -1) (else (gimp-item-get-id x))))
(define (cs-open-and-run path report)
  (let* ((image (gimp-file-load RUN-NONINTERACTIVE path))
         (layer (vector-ref (gimp-image-get-selected-layers image) 0)))
    (gimp-display-new image)
    (gimp-image-clean-all image)
    (plug-in-condseg #:run-mode RUN-INTERACTIVE #:image image #:drawables (vector layer))
    (let ((port (open-output-file report)))
      (display (string-append "CS-AFTER dirty=" (if (gimp-image-is-dirty image) "1" "0")
                              " mask=" (number->string (cs-id (gimp-layer-get-mask layer))))
               port)
      (close-output-port port))
    (gimp-image-clean-all image)))
EOF
  start_gimp() {   # start_gimp IMAGE REPORT LOG
    chroot "$root" env HOME=/root DISPLAY="$DISPLAY" XAUTHORITY="$in/xauth" LANG=C.UTF-8 \
      GIMP3_DIRECTORY="$in/profile" CONDSEG_WEIGHTS="$in/condseg-default.safetensors" \
      G_MESSAGES_DEBUG=all NO_AT_BRIDGE=1 \
      gimp-3.0 --no-splash --batch-interpreter=plug-in-script-fu-eval \
      -b "(begin (load \"$in/run.scm\") (cs-open-and-run \"$1\" \"$2\"))" > "$3" 2>&1 &
    gimp_pid=$!
  }
else
  export GIMP2_DIRECTORY="$work/profile"
  # This plug-in only, not a copy installed system-wide (see tests/gimp/run_gimp2_tests.sh).
  mkdir -p "$work/system-plug-ins"
  for p in "$(gimptool-2.0 --gimpplugindir)"/plug-ins/*; do
    [ "$(basename "$p")" = condseg ] || ln -s "$p" "$work/system-plug-ins/"
  done
  printf '(plug-in-path "%s")\n(show-tips no)\n' "$work/profile/plug-ins:$work/system-plug-ins" \
    > "$GIMP2_DIRECTORY/gimprc"
  export CONDSEG_WEIGHTS="$work/condseg-default.safetensors" G_MESSAGES_DEBUG=all
  # What the run left goes to `report` (gimp-message would open a message box here); the
  # image is then marked clean, so that Ctrl+Q quits at once.
  cat > "$work/run.scm" << 'EOF'
(define (cs-open-and-run path report)
  (let* ((image (car (gimp-file-load RUN-NONINTERACTIVE path path)))
         (layer (car (gimp-image-get-active-layer image))))
    (gimp-display-new image)
    (gimp-image-clean-all image)
    (plug-in-condseg RUN-INTERACTIVE image layer "" 0.5 0 0 0 0)
    (let ((port (open-output-file report)))
      (display (string-append "CS-AFTER dirty=" (number->string (car (gimp-image-is-dirty image)))
                              " mask=" (number->string (car (gimp-layer-get-mask layer))))
               port)
      (close-output-port port))
    (gimp-image-clean-all image)))
EOF
  start_gimp() {   # start_gimp IMAGE REPORT LOG
    gimp-2.10 --no-splash -b "(begin (load \"$in/run.scm\") (cs-open-and-run \"$1\" \"$2\"))" \
      > "$3" 2>&1 &
    gimp_pid=$!
  }
fi

wait_for() {   # wait_for SECONDS COMMAND...: until the command succeeds
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" && return 0; sleep 1; done
  return 1
}
dialog_window() { dialog=$(xdotool search --onlyvisible --name "^ConDSeg Segmentation$" 2> /dev/null | head -1); [ -n "$dialog" ]; }
log_has() { grep -q "$1" "$log"; }
network_runs() { grep -c "ConDSeg preview: network run" "$log" || true; }
shot_dialog() { sleep 1; import -window "$dialog" "$out/$prefix$1"; echo "dialog-screenshot: wrote $out/$prefix$1"; }
shot_screen() { import -window root -trim +repage "$out/$prefix$1"; echo "dialog-screenshot: wrote $out/$prefix$1"; }
# The verdict message GIMP shows after the run (a message box).
verdict_window() { verdict=$(xdotool search --onlyvisible --name "Message" 2> /dev/null | head -1); [ -n "$verdict" ]; }
# Keys go through XTEST to the focused window (GTK 3 ignores keys sent to a window).
keys() { xdotool windowfocus --sync "$dialog" 2> /dev/null || true; xdotool key "$@"; }
type_threshold() {   # the threshold entry has the focus: select all, type, Tab commits
  keys ctrl+a
  xdotool type "$1"
  keys Tab
}
# Quits GIMP as a user does (Ctrl+Q on its main window), so that it saves its settings.
quit_gimp() {
  local main
  # No visible main window found (a closing message box can hide it a moment) fails the
  # search, which under pipefail and set -e ended the script without a word: Ctrl+Q goes
  # to the focused GIMP window then.
  main=$(xdotool search --onlyvisible --name "GNU Image Manipulation Program|GIMP" 2> /dev/null |
    tail -1) || main=""
  [ -z "$main" ] || xdotool windowfocus --sync "$main" 2> /dev/null || true
  # A key xdotool could not send must not end the script unexplained (set -e): whether
  # GIMP quit is the check, with its message.
  xdotool key ctrl+q 2> /dev/null || echo "dialog-screenshot: xdotool could not send Ctrl+Q" >&2
  wait_for 60 sh -c "! kill -0 $gimp_pid 2> /dev/null" || fail "GIMP did not quit"
  gimp_pid=""
}

# ---- session 1: the polyp frame ----------------------------------------------------------
log="$work/gimp-1.log"
start_gimp "$image_in" "$in/after-1" "$log"
wait_for 180 dialog_window || fail "no dialog"
xdotool mousemove 0 0   # no tooltip under the pointer
wait_for 120 log_has "ConDSeg preview: redrawn" || fail "the preview never drew"
[ "$(network_runs)" = 1 ] || fail "$(network_runs) network runs when the dialog opened, not 1"
shot_dialog dialog.png
# Help (its button, Alt+H; and F1) shows the plug-in's own help, not GIMP's manual.
for key in alt+h F1; do
  keys "$key"
  wait_for 20 sh -c 'xdotool search --onlyvisible --name "^ConDSeg Segmentation Help$" > /dev/null' ||
    fail "$key did not show the plug-in's help"
  help=$(xdotool search --onlyvisible --name "^ConDSeg Segmentation Help$" | head -1)
  [ "$key" = F1 ] && { sleep 1; import -window "$help" "$out/${prefix}help.png"; }
  xdotool windowfocus --sync "$help" 2> /dev/null || true
  xdotool key Escape
  wait_for 20 sh -c '! xdotool search --onlyvisible --name "^ConDSeg Segmentation Help$" > /dev/null' ||
    fail "the help window did not close"
done
keys Tab shift+Tab   # the focus back on the threshold entry
type_threshold 0.20
wait_for 20 log_has "ConDSeg preview: redrawn at threshold 0.200" || fail "no redraw at threshold 0.20"
[ "$(network_runs)" = 1 ] || fail "the threshold change ran the network ($(network_runs) runs)"
shot_dialog dialog-t020.png
# The map outputs' previews (GIMP 2.10: the focus, now after the threshold entry, goes back
# over the entry and the slider to the output buttons, where the arrow keys choose): still
# no network run.
if [ "$gimp3" = 0 ]; then
  keys shift+Tab shift+Tab shift+Tab Down Down
  wait_for 20 log_has "ConDSeg preview: redrawn at threshold 0.200, output 2" ||
    fail "no preview of the probability map"
  shot_dialog dialog-probability.png
  keys Down
  wait_for 20 log_has "ConDSeg preview: redrawn at threshold 0.200, output 3" ||
    fail "no preview of the uncertainty map"
  shot_dialog dialog-uncertainty.png
  keys Up Up Up
  wait_for 20 sh -c "grep 'ConDSeg preview: redrawn' '$log' | tail -1 | grep -q 'output 0'" ||
    fail "could not go back to the layer mask output"
  [ "$(network_runs)" = 1 ] || fail "choosing an output ran the network ($(network_runs) runs)"
  keys Tab Tab Tab   # back after the threshold entry
fi
keys shift+Tab Return   # back to the threshold entry; Return runs
wait_for 60 test -s "$work/after-1" || fail "Return did not run the filter"
grep -q "CS-AFTER dirty=1 mask=[0-9]" "$work/after-1" || fail "no layer mask after the run: $(cat "$work/after-1")"
wait_for 20 verdict_window || fail "no verdict message"
sleep 2
shot_screen verdict.png
{ xdotool windowfocus --sync "$verdict" && xdotool key Return; } 2> /dev/null || true
timings=$(grep -h "ConDSeg preview:" "$log" | sed 's/^.*ConDSeg/ConDSeg/')
quit_gimp

# ---- session 2, after a restart: the polyp-free frame ------------------------------------
log="$work/gimp-2.log"
start_gimp "$empty_in" "$in/after-2" "$log"
wait_for 180 dialog_window || fail "no dialog for the polyp-free frame"
xdotool mousemove 0 0
wait_for 120 log_has "ConDSeg preview: redrawn" || fail "the preview of the polyp-free frame never drew"
grep "ConDSeg preview: redrawn" "$log" | head -1 | grep -q "threshold 0.200" ||
  fail "the threshold typed before the restart was not remembered: $(grep 'ConDSeg preview: redrawn' "$log" | head -1)"
type_threshold 0.50
wait_for 20 log_has "ConDSeg preview: redrawn at threshold 0.500" || fail "no redraw at threshold 0.50"
shot_dialog dialog-empty.png
keys shift+Tab Return
wait_for 60 test -s "$work/after-2" || fail "Return did not run the filter"
grep -q "CS-AFTER dirty=0 mask=-1" "$work/after-2" ||
  fail "the polyp-free frame was changed: $(cat "$work/after-2")"
wait_for 20 verdict_window || fail "no verdict message for the polyp-free frame"
sleep 2
shot_screen verdict-empty.png
{ xdotool windowfocus --sync "$verdict" && xdotool key Return; } 2> /dev/null || true

{ echo "$timings"; grep -h "ConDSeg preview:" "$log" | sed 's/^.*ConDSeg/ConDSeg/'; } > "$out/${prefix}timings.txt"
quit_gimp
cat "$out/${prefix}timings.txt"
echo "dialog-screenshot: all checks passed"
