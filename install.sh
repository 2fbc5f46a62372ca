#!/usr/bin/env bash
# install.sh — sets condseg up on Debian/Ubuntu: installs the Debian packages it needs,
# builds it, installs the `condseg` program, and checks it by running it.
#
#   ./install.sh                  packages + build + install (+ a first prediction when
#                                 a model is installed), and the GIMP plug-in for each
#                                 GIMP found (2.10; 3 where libgimp-3.0-dev is installed)
#   ./install.sh --deps-only      only the Debian packages (add --test-deps for the test
#                                 suite's reference side: PyTorch, OpenCV)
#   ./install.sh --prefix DIR     install under DIR (default /usr/local as root,
#                                 ~/.local otherwise)
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

# Build and run time: compiler, CMake, OpenBLAS (the OpenMP build), oneDNN, GLib, json-glib,
# gdk-pixbuf and the image codecs.
build_packages=(build-essential cmake pkg-config libopenblas-openmp-dev libopenblas-dev libdnnl-dev
  libglib2.0-dev libjson-glib-dev libgdk-pixbuf-2.0-dev libpng-dev libjpeg-dev libtiff-dev
  libgdk-pixbuf2.0-bin
  libgimp2.0-dev)   # the GIMP 2.10 plug-in (GIMP 3's needs libgimp-3.0-dev, Debian 13)
# The test suite's reference side: Debian's PyTorch 1.13, NumPy and OpenCV.
test_packages=(python3 python3-torch python3-numpy python3-opencv python3-torchvision
  gimp debootstrap   # the plug-in tests: gimp-console-2.10; GIMP 3 in a trixie chroot
  xvfb xauth xdotool imagemagick)   # the plug-in's dialog under a virtual display

deps_only=0
test_deps=0
prefix=""
while [ $# -gt 0 ]; do
  case "$1" in
    --deps-only) deps_only=1 ;;
    --test-deps) test_deps=1 ;;
    --prefix) prefix="$2"; shift ;;
    --prefix=*) prefix="${1#--prefix=}" ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

install_packages() {
  local wanted=("${build_packages[@]}")
  [ "$test_deps" = 1 ] && wanted+=("${test_packages[@]}")
  local missing=()
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}"
  fi
}

install_packages
[ "$deps_only" = 1 ] && exit 0

if [ -z "$prefix" ]; then
  if [ "$(id -u)" = 0 ]; then prefix=/usr/local; else prefix="$HOME/.local"; fi
fi
build="$here/build"
cmake -S "$here" -B "$build" -DCMAKE_BUILD_TYPE=Release -DCMAKE_INSTALL_PREFIX="$prefix" \
  -DCONDSEG_TESTS=OFF > /dev/null
cmake --build "$build" -j"$(nproc)"
cmake --install "$build" > /dev/null
echo "install.sh: installed $prefix/bin/condseg"
"$prefix/bin/condseg" --version
case ":$PATH:" in
  *":$prefix/bin:"*) ;;
  *) echo "install.sh: add $prefix/bin to your PATH" ;;
esac

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
