#!/bin/sh
# `meson install` gives users kiln, the runtime library, its header and a pkg-config file: install
# this build into a staging directory (DESTDIR, as packagers do), compile LeNet-5 with the staged
# kiln (which finds its runtime beside itself: an installed tree can move), and build the embedding
# example against the staged runtime with nothing but `pkg-config --cflags --libs kiln-runtime`.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -eu
build=$1
src=$2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
stage=$tmp/stage
meson install -C "$build" --destdir "$stage" --no-rebuild --quiet >/dev/null
kiln=$(find "$stage" -path '*/bin/kiln' -type f)
pc=$(dirname "$(find "$stage" -name kiln-runtime.pc)")
[ -x "$kiln" ] && [ -d "$pc" ] || { echo "install: no bin/kiln or kiln-runtime.pc in $stage" >&2; exit 1; }
# No way back to the build tree: the staged kiln must use the staged runtime.
env -u KILN_RUNTIME_DIR "$kiln" compile "$src/samples/lenet5.json" -o "$tmp/gen"
env -u KILN_RUNTIME_DIR "$kiln" build -v "$src/samples/lenet5.json" -o "$tmp/lenet5" 2>"$tmp/build.log"
grep -q -- "-I$stage/" "$tmp/build.log" || {
  echo "install: the staged kiln did not compile against the staged runtime:" >&2
  cat "$tmp/build.log" >&2
  exit 1
}
"$tmp/lenet5" --input "$src/tests/goldens/lenet5/x.npy" --output "$tmp/y.npy"
# PKG_CONFIG_SYSROOT_DIR: the .pc file names the configured prefix; the files are under $stage.
flags=$(PKG_CONFIG_SYSROOT_DIR="$stage" PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs kiln-runtime)
cc -std=c17 -Wall -Wextra -Werror -O2 -I"$tmp/gen" \
  -DKILN_TEST_GOLDENS_DIR="\"$src/tests/goldens\"" \
  "$src/tests/embed_main.c" "$tmp/gen/lenet5.c" $flags -o "$tmp/embed"
"$tmp/embed" "$tmp/gen/lenet5.weights"
echo "install: kiln, runtime, header and pkg-config work from $stage"
