#!/usr/bin/env bash
# gimp3_chroot.sh — the GIMP 3 tests of the ConDSeg plug-in (ctest gimp3_plugin). Debian 12
# has no GIMP 3, so this runs them in a Debian trixie chroot (GIMP 3.0.x):
#   1. debootstraps trixie into a cache folder and installs GIMP there (first run only:
#      ~3 min, ~2 GB; reused after);
#   2. copies the source tree in and runs its ./install.sh there, as a user of Debian 13
#      would: it installs the build dependencies (libgimp-3.0-dev among them), builds
#      libcondseg, `condseg` and the GIMP 3 front end and installs them;
#   3. runs the cases of gimp_plugin_tests.py (those of the GIMP 2.10 test) with
#      gimp-console-3.0 and a throwaway profile, `condseg predict` of the chroot's build as
#      the reference, and checks the outputs on the host;
#   4. unmounts everything it mounted, whatever happens.
#
#   gimp3_chroot.sh FULL_WEIGHTS STAGE1_WEIGHTS KVASIR_DIR DEFAULT_MODEL EMPTY_IMAGE [PYTHON]
#
# DEFAULT_MODEL and EMPTY_IMAGE (a polyp-free frame where that model finds nothing) give
# the "No lesion found" cases (see run_gimp2_tests.sh).
# Needs root (or password-less sudo) and, the first time, deb.debian.org; without root, and
# inside a chroot (no nested one is made), it says why and exits 77 (ctest: skipped).
# Environment:
# CONDSEG_GIMP3_ROOT the chroot (default /var/cache/condseg/trixie-gimp3);
# CONDSEG_KEEP_TEST_FILES=1 keeps the work folder (kept anyway when a check fails);
# CONDSEG_GIMP3_SCREENSHOTS=DIR also runs plugin/dialog-screenshot.sh --gimp3 with the
# plug-in built here (CONDSEG_GIMP3_DIALOG_IMAGE: its polyp frame), screenshots into DIR.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
[ $# -ge 5 ] || { sed -n '2,24p' "$0"; exit 2; }
full=$(realpath "$1") stage1=$(realpath "$2") kvasir=$(realpath "$3")
default_model=$(realpath "$4") empty_image=$(realpath "$5") python=${6:-/usr/bin/python3}
root=${CONDSEG_GIMP3_ROOT:-/var/cache/condseg/trixie-gimp3}
mirror=${CONDSEG_DEBIAN_MIRROR:-http://deb.debian.org/debian}

say() { echo "gimp3_chroot: $*"; }
fail() { echo "gimp3_chroot: FAIL: $*" >&2; exit 1; }
skip() { echo "SKIPPED: $*"; exit 77; }

if [ "$(id -u)" != 0 ]; then
  sudo -n true 2> /dev/null ||
    skip "needs root (debootstrap, chroot, mount): run as root or with password-less sudo"
  exec sudo -n --preserve-env=CONDSEG_GIMP3_ROOT,CONDSEG_KEEP_TEST_FILES,CONDSEG_DEBIAN_MIRROR,CONDSEG_GIMP3_SCREENSHOTS,CONDSEG_GIMP3_DIALOG_IMAGE \
    "$0" "$@"
fi
! ischroot 2> /dev/null ||
  skip "running inside a chroot: the trixie chroot of the GIMP 3 tests is not nested in it"
command -v debootstrap > /dev/null ||
  fail "debootstrap not found (./install.sh --deps-only --test-deps installs it)"
for f in "$full" "$stage1" "$default_model" "$empty_image"; do [ -f "$f" ] || fail "$f missing"; done
t0=$(date +%s)
elapsed() { echo "$(( $(date +%s) - t0 )) s"; }

# One run at a time per chroot (two checkouts testing at once would share it): so that
# mounts found under it before ours are a killed run's, never a live one's.
mkdir -p "$(dirname "$root")"
exec 9> "$root.lock"
flock -n 9 || { say "waiting for another run of the GIMP 3 tests in $root"; flock 9; }

# What the chroot needs before install.sh: GIMP 3 itself (install.sh installs the rest).
packages="gimp"

# ---- mounts, always undone --------------------------------------------------------------
mounted=()
work=""
keep=${CONDSEG_KEEP_TEST_FILES:-0}
unmount_all() {
  local i
  for (( i=${#mounted[@]}-1; i>=0; i-- )); do
    umount "${mounted[$i]}" 2> /dev/null || umount -l "${mounted[$i]}" || true
  done
  mounted=()
}
cleanup() {
  unmount_all
  if [ -n "$work" ]; then
    if [ "$keep" = 1 ]; then say "files kept in $work"; else rm -rf "$work"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mount_in() {   # mount_in TARGET mount-arguments...
  local target=$1; shift
  mkdir -p "$target"
  mount "$@" "$target"
  mounted+=("$target")
}
# Mounts a killed run (SIGKILL cannot be trapped) left under the chroot: undone first, or
# this run's mounts fail with "already mounted". The lock above makes them stale ones.
unmount_stale() {
  local target
  { findmnt -rn -o TARGET | grep "^$1/" || true; } | sort -r | while read -r target; do
    say "unmounting $target, left by an earlier run"
    umount "$target" 2> /dev/null || umount -l "$target" || true
  done
}
mount_system() {   # /proc, /sys (read-only), /dev and a private /dev/pts, /dev/shm
  unmount_stale "$1"
  mount_in "$1/proc" -t proc proc
  mount_in "$1/sys" -t sysfs -o ro sysfs
  mount_in "$1/dev" --bind /dev
  mount_in "$1/dev/pts" -t devpts -o newinstance,ptmxmode=0666 devpts
  mount_in "$1/dev/shm" -t tmpfs -o mode=1777 tmpfs
}

# ---- 1. the chroot ------------------------------------------------------------------------
if [ "$(cat "$root/.condseg-packages" 2> /dev/null)" != "$packages" ]; then
  if [ ! -x "$root/usr/bin/apt-get" ]; then
    say "debootstrap trixie into $root ($mirror)"
    rm -rf "$root.partial"
    mkdir -p "$(dirname "$root")"
    debootstrap --variant=minbase trixie "$root.partial" "$mirror" > "$root.debootstrap.log" 2>&1 ||
      { tail -20 "$root.debootstrap.log"; fail "debootstrap failed (log: $root.debootstrap.log)"; }
    mv "$root.partial" "$root"
  fi
  say "installing GIMP 3 in the chroot ($(elapsed))"
  cp /etc/resolv.conf "$root/etc/resolv.conf"
  mount_system "$root"
  chroot "$root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $packages" > "$root.apt.log" 2>&1 ||
    { tail -20 "$root.apt.log"; fail "apt-get in the chroot failed (log: $root.apt.log)"; }
  chroot "$root" apt-get clean
  unmount_all
  echo "$packages" > "$root/.condseg-packages"
fi
say "chroot ready: $root, $(chroot "$root" gimp-console-3.0 --version) ($(elapsed))"

# ---- 2. install.sh inside ----------------------------------------------------------------
# A fresh copy of the source tree beside the build/ folder of the last run (tar keeps the
# mtimes, so the build stays incremental); the checkout's build folders and .git stay out.
# The build folder is kept only when the last build in it was this checkout's (the stamp
# names the checkout and nothing in the folder is newer than it): another checkout's
# objects can be newer than this one's sources, and make would keep them.
mkdir -p "$root/opt/condseg-src"
find "$root/opt/condseg-src" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
build="$root/opt/condseg-src/build" stamp="$root/opt/condseg-src/build/.condseg-checkout"
if [ -d "$build" ] && { [ "$(cat "$stamp" 2> /dev/null)" != "$src" ] ||
                        [ -n "$(find "$build" -newer "$stamp" -name '*.o' -print -quit)" ]; }; then
  say "the chroot's build folder is another checkout's: building from scratch"
  rm -rf "$build"
fi
tar -C "$src" --exclude=./.git --exclude='./build*' -cf - . | tar -C "$root/opt/condseg-src" -xf -
mount_system "$root"
cp /etc/resolv.conf "$root/etc/resolv.conf"
say "running install.sh in the chroot ($(elapsed))"
chroot "$root" /opt/condseg-src/install.sh > "$root.install.log" 2>&1 ||
  { tail -30 "$root.install.log"; fail "install.sh in the chroot failed (log: $root.install.log)"; }
sed 's/^/  /' "$root.install.log"
echo "$src" > "$stamp"
plugin=/opt/condseg-src/build/plugin/gimp-3.0/condseg
[ -x "$root$plugin" ] || fail "install.sh built no GIMP 3 plug-in (see $root.install.log)"

# ---- 3. the cases ----------------------------------------------------------------------------
# One work folder seen at the same path inside and outside (bind mount), so that the case
# list, images and outputs need no path translation; Kvasir likewise, read-only.
work=$(mktemp -d "${TMPDIR:-/tmp}/condseg-gimp3.XXXXXX")
mount_in "$root$work" --bind "$work"
mount_in "$root$kvasir" --bind -o ro "$kvasir"
mkdir -p "$work/weights"
cp "$full" "$work/weights/full.safetensors"
cp "$stage1" "$work/weights/stage1.safetensors"
cp "$default_model" "$work/weights/default.safetensors"
cp "$empty_image" "$work/empty.${empty_image##*.}"
cp "$here/gimp3_cases.scm" "$work/"
condseg="chroot $root /usr/local/bin/condseg"
"$python" "$here/gimp_plugin_tests.py" prepare --work "$work" --kvasir "$kvasir" \
  --full "$work/weights/full.safetensors" --stage1 "$work/weights/stage1.safetensors" \
  --condseg "$condseg" --default-model "$work/weights/default.safetensors" \
  --empty-image "$work/empty.${empty_image##*.}"

profile="$work/profile"
mkdir -p "$profile/plug-ins/condseg"
cp "$root$plugin" "$profile/plug-ins/condseg/condseg"
# The last values of an earlier interactive run, where GIMP 3 keeps them.
mkdir -p "$profile/plug-in-settings"
cp "$work/gimp3.last" "$profile/plug-in-settings/GimpProcedureConfigRun-plug-in-condseg.last"
say "running the cases in gimp-console-3.0 ($(elapsed))"
start=$(date +%s)
status=0
chroot "$root" env HOME=/root GIMP3_DIRECTORY="$profile" LANG=C.UTF-8 \
  CONDSEG_WEIGHTS="$work/weights/full.safetensors" \
  timeout 1200 gimp-console-3.0 -i -d -f --batch-interpreter=plug-in-script-fu-eval \
  -b "(begin (load \"$work/gimp3_cases.scm\") (load \"$work/batch.scm\"))" --quit \
  > "$work/gimp.log" 2>&1 || status=$?
say "gimp-console-3.0 ran $(( $(date +%s) - start )) s, exit status $status"
grep -E "CS-RESULT|ConDSeg: |rror" "$work/gimp.log" | sed 's/^/  gimp: /' || true

if ! "$python" "$here/gimp_plugin_tests.py" check --work "$work" --log "$work/gimp.log" \
     --condseg "$condseg"; then
  keep=1
  fail "see above (GIMP's whole output: $work/gimp.log)"
fi

# ---- 4. the dialog, in a real GIMP 3 under Xvfb (optional) --------------------------------
if [ -n "${CONDSEG_GIMP3_SCREENSHOTS:-}" ]; then
  say "the dialog in GIMP 3 under Xvfb ($(elapsed))"
  "$src/plugin/dialog-screenshot.sh" --gimp3 "$root$plugin" "$default_model" \
    "${CONDSEG_GIMP3_DIALOG_IMAGE:-$kvasir/images/cju0sr5ghl0nd08789uzf1raf.jpg}" \
    "$empty_image" "$CONDSEG_GIMP3_SCREENSHOTS" || fail "the dialog checks failed (see above)"
fi
say "passed in $(elapsed)"
