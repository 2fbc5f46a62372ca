#!/usr/bin/env bash
# install.sh — sets condseg up on Debian/Ubuntu: installs the Debian packages it needs,
# builds it, installs the `condseg` program, and checks it by running it. Tried on Debian 12
# (bookworm: GIMP 2.10) and Debian 13 (trixie: GIMP 3); not yet on Ubuntu.
#
#   ./install.sh [IMAGE...]       packages + build + install, the GIMP plug-in for each GIMP
#                                 whose development files the release has, then a first
#                                 prediction of each IMAGE with the installed program
#                                 (IMAGE -> ./<name>.mask.png), as a check that needs no PATH
#   ./install.sh --deps-only      only the Debian packages (add --test-deps for the test
#                                 suite's reference side: PyTorch, OpenCV, GIMP)
#   ./install.sh --prefix DIR     install under DIR (default /usr/local as root,
#                                 ~/.local otherwise)
#   ./install.sh --verbose        show apt's and the compiler's output (else in build/*.log)
set -euo pipefail
caller_dir=$(pwd)   # where IMAGE paths are relative to
cd "$(dirname "$0")"
here=$(pwd)

# Build and run time: compiler, CMake, OpenBLAS (the OpenMP build), oneDNN, GLib, json-glib,
# gdk-pixbuf and the image codecs; Open MPI for training on several processes and machines
# (`mpirun -np N condseg train ...`).
build_packages=(build-essential cmake pkg-config libopenblas-openmp-dev libopenblas-dev libdnnl-dev
  libglib2.0-dev libjson-glib-dev libgdk-pixbuf-2.0-dev libpng-dev libjpeg-dev libtiff-dev
  libgdk-pixbuf2.0-bin libopenmpi-dev openmpi-bin)
# Installed where the release has them: each GIMP's plug-in development files (Debian 12
# has GIMP 2.10's only, Debian 13 GIMP 3's only); CMake builds the front ends they allow.
optional_build_packages=(libgimp2.0-dev libgimp-3.0-dev)
# The test suite's reference side: Debian's PyTorch (1.13 on Debian 12, 2.6 on 13), NumPy
# and OpenCV; GIMP (2.10 or 3, whichever the release ships) and debootstrap for the GIMP 3
# chroot; a virtual display for the plug-in's dialog.
test_packages=(python3 python3-torch python3-numpy python3-opencv python3-torchvision
  gimp debootstrap xvfb xauth xdotool imagemagick
  clang libclang-rt-dev)   # the libFuzzer harnesses (tests/fuzz/)

deps_only=0
test_deps=0
verbose=0
prefix=""
images=()
while [ $# -gt 0 ]; do
  case "$1" in
    --deps-only) deps_only=1 ;;
    --test-deps) test_deps=1 ;;
    --verbose) verbose=1 ;;
    --prefix) prefix="$2"; shift ;;
    --prefix=*) prefix="${1#--prefix=}" ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) images+=("$1") ;;
  esac
  shift
done

build="$here/build"
mkdir -p "$build"
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
# quietly LOG COMMAND...: runs COMMAND with its output in LOG (shown with --verbose); on
# failure shows the end of the log.
quietly() {
  local log=$1; shift
  if [ "$verbose" = 1 ]; then "$@" 2>&1 | tee "$log"; return "${PIPESTATUS[0]}"; fi
  "$@" > "$log" 2>&1 || { tail -25 "$log" >&2; echo "install.sh: failed (log: $log)" >&2; return 1; }
}

installed() { dpkg-query -W -f='${Status}' "$1" 2> /dev/null | grep -q "ok installed"; }
available() { apt-cache show --no-all-versions "$1" > /dev/null 2>&1; }
not_installed() { local p; for p; do installed "$p" || echo "$p"; done; }
offered() { local p; for p; do available "$p" && echo "$p"; done; true; }

install_packages() {
  local required=("${build_packages[@]}")
  [ "$test_deps" = 1 ] && required+=("${test_packages[@]}")
  # Optional packages the package lists do not offer are left out without asking apt
  # again, so that a second run on Debian 13 (no libgimp2.0-dev) needs no sudo.
  local missing
  missing=$(not_installed "${required[@]}" $(offered "${optional_build_packages[@]}"))
  [ -z "$missing" ] && return 0
  echo "install.sh: installing Debian packages (log: $build/apt.log)"
  quietly "$build/apt-update.log" as_root apt-get update
  missing=$(not_installed "${required[@]}" $(offered "${optional_build_packages[@]}"))
  echo "install.sh:  " $missing
  quietly "$build/apt.log" as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y --no-install-recommends $missing
}

install_packages
[ "$deps_only" = 1 ] && exit 0

if [ -z "$prefix" ]; then
  if [ "$(id -u)" = 0 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
fi
echo "install.sh: building in $build (log: $build/build.log)"
quietly "$build/configure.log" cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_INSTALL_PREFIX="$prefix" -DCONDSEG_TESTS=OFF
quietly "$build/build.log" cmake --build "$build" -j"$(nproc)"
quietly "$build/install.log" cmake --install "$build"
echo "install.sh: installed $prefix/bin/condseg"
"$prefix/bin/condseg" --version

# The GIMP plug-ins built above, one per GIMP whose libgimp development files were found:
# as root into that GIMP's system plug-in folder, otherwise into the user's GIMP profile.
install_gimp_plugin() {   # install_gimp_plugin BINARY SYSTEM_DIR USER_PROFILE LABEL
  local binary=$1 system_dir=$2 user_profile=$3 label=$4 dir
  [ -x "$binary" ] || return 0
  if [ "$(id -u)" = 0 ] && [ -n "$system_dir" ]; then
    dir="$system_dir/plug-ins/condseg"
  else
    dir="$user_profile/plug-ins/condseg"
  fi
  install -D -m 755 "$binary" "$dir/condseg"
  echo "install.sh: installed the $label plug-in: $dir/condseg" \
       "(restart GIMP; Filters > Medical > ConDSeg Segmentation...)"
}
config_home=${XDG_CONFIG_HOME:-$HOME/.config}
install_gimp_plugin "$build/plugin/gimp-2.10/condseg" \
  "$(gimptool-2.0 --gimpplugindir 2> /dev/null || true)" \
  "${GIMP2_DIRECTORY:-$config_home/GIMP/2.10}" "GIMP 2.10"
install_gimp_plugin "$build/plugin/gimp-3.0/condseg" \
  "$(pkg-config --variable=gimplibdir gimp-3.0 2> /dev/null || true)" \
  "${GIMP3_DIRECTORY:-$config_home/GIMP/3.0}" "GIMP 3"
[ -x "$build/plugin/gimp-2.10/condseg" ] || [ -x "$build/plugin/gimp-3.0/condseg" ] ||
  echo "install.sh: no GIMP plug-in: this release offers neither libgimp2.0-dev nor libgimp-3.0-dev"

# Not on PATH yet (~/.local/bin is added by Debian's ~/.profile at the next login, when it
# exists): say how, and run the first prediction through the installed path.
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "install.sh: $prefix/bin is not on your PATH yet: log in again, or for this" \
          "shell: export PATH=\"$prefix/bin:\$PATH\"" ;;
esac
if [ ${#images[@]} -gt 0 ]; then
  (cd "$caller_dir" && "$prefix/bin/condseg" predict "${images[@]}")
fi
