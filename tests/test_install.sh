#!/bin/sh
# `meson install` gives users kiln, the runtime library, its header and a pkg-config file: install
# into a temporary prefix, compile LeNet-5 with the installed kiln, and build the embedding example
# against the installed runtime with nothing but `pkg-config --cflags --libs kiln-runtime`.
# Usage: test_install.sh SOURCE_DIR
set -eu
src=$1
tmp=$(mktemp -d "${TMPDIR:-/tmp}/kiln-install-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
meson setup "$tmp/build" "$src" --prefix="$tmp/prefix" -Dtests=disabled >/dev/null
ninja -C "$tmp/build" >/dev/null
meson install -C "$tmp/build" >/dev/null
pc=$(dirname "$(find "$tmp/prefix" -name kiln-runtime.pc)")
"$tmp/prefix/bin/kiln" compile "$src/samples/lenet5.json" -o "$tmp/gen"
"$tmp/prefix/bin/kiln" build "$src/samples/lenet5.json" -o "$tmp/lenet5"
"$tmp/lenet5" --input "$src/tests/goldens/lenet5/x.npy" --output "$tmp/y.npy"
cc -std=c17 -Wall -Wextra -Werror -O2 -I"$tmp/gen" \
  -DKILN_TEST_GOLDENS_DIR="\"$src/tests/goldens\"" \
  "$src/tests/embed_main.c" "$tmp/gen/lenet5.c" \
  $(PKG_CONFIG_PATH="$pc" pkg-config --cflags --libs kiln-runtime) -o "$tmp/embed"
"$tmp/embed" "$tmp/gen/lenet5.weights"
echo "install: kiln, runtime, header and pkg-config work from $tmp/prefix"
