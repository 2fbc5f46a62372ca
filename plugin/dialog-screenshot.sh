#!/usr/bin/env bash
# dialog-screenshot.sh — takes the screenshot of the plug-in's dialog in the README
# (docs/gimp-dialog.png): GIMP 2.10 under a virtual X display (xvfb-run) with a throwaway
# profile, an image open, Filters > Medical > ConDSeg Segmentation... called interactively;
# the GIMP window is captured with ImageMagick's `import`, then the dialog is cancelled.
#
#   plugin/dialog-screenshot.sh PLUGIN IMAGE WEIGHTS OUT.png
#
# PLUGIN is the built GIMP 2.10 plug-in (build/plugin/gimp-2.10/condseg); WEIGHTS is shown
# as the installed default model. Needs gimp, xvfb, xdotool, imagemagick (install.sh
# --test-deps installs them).
set -euo pipefail
if [ "${1:-}" != --inside-xvfb ]; then
  [ $# -eq 4 ] || { sed -n '2,12p' "$0"; exit 2; }
  exec timeout 300 xvfb-run -a -s "-screen 0 1280x800x24" "$0" --inside-xvfb \
    "$(realpath "$1")" "$(realpath "$2")" "$(realpath "$3")" "$(realpath -m "$4")"
fi
plugin=$2 image=$3 weights=$4 out=$5
work=$(mktemp -d)
trap 'kill $gimp_pid 2> /dev/null || true; rm -rf "$work"' EXIT

export GIMP2_DIRECTORY="$work/profile"
mkdir -p "$GIMP2_DIRECTORY/plug-ins/condseg" "$GIMP2_DIRECTORY/gradients"
install -m 755 "$plugin" "$GIMP2_DIRECTORY/plug-ins/condseg/condseg"
# This plug-in only, not a copy installed system-wide (see tests/gimp/run_gimp2_tests.sh).
mkdir -p "$work/system-plug-ins"
for p in "$(gimptool-2.0 --gimpplugindir)"/plug-ins/*; do
  [ "$(basename "$p")" = condseg ] || ln -s "$p" "$work/system-plug-ins/"
done
echo "(plug-in-path \"$GIMP2_DIRECTORY/plug-ins:$work/system-plug-ins\")" > "$GIMP2_DIRECTORY/gimprc"
# The dialog names the default model by its file name.
ln -s "$weights" "$work/condseg-default.safetensors"
export CONDSEG_WEIGHTS="$work/condseg-default.safetensors"

gimp-2.10 --no-splash -b "(let* ((image (car (gimp-file-load RUN-NONINTERACTIVE \"$image\" \"$image\")))
    (layer (car (gimp-image-get-active-layer image))))
  (gimp-display-new image)
  (plug-in-condseg RUN-INTERACTIVE image layer \"\" 0.5 0))" > "$work/gimp.log" 2>&1 &
gimp_pid=$!

dialog=""
for _ in $(seq 90); do
  sleep 1
  dialog=$(xdotool search --name "ConDSeg Segmentation" 2> /dev/null | head -1 || true)
  [ -n "$dialog" ] && break
done
[ -n "$dialog" ] || { cat "$work/gimp.log"; echo "dialog-screenshot: no dialog" >&2; exit 1; }
xdotool mousemove 0 0   # no tooltip under the pointer
sleep 3                 # let GIMP draw the image behind
# GIMP's window: the largest one on the screen.
crop="" best=0
for w in $(xdotool search --onlyvisible --name ""); do
  eval "$(xdotool getwindowgeometry --shell "$w")"   # X Y WIDTH HEIGHT
  if [ $(( WIDTH * HEIGHT )) -gt "$best" ]; then
    best=$(( WIDTH * HEIGHT )) crop="${WIDTH}x${HEIGHT}+${X}+${Y}"
  fi
done
import -window root -crop "$crop" +repage -trim +repage "$out"
xdotool key --window "$dialog" Escape 2> /dev/null || true
echo "dialog-screenshot: wrote $out"
