#!/bin/sh
# The standalone binaries are valgrind-clean (docs/testing.md): LeNet-5's inference binary and
# the XOR trainer run under memcheck with no invalid access, no use of uninitialized memory and no
# definite leak (OpenMP's thread pool holds memory until exit: "possibly lost" is not counted).
#   test_valgrind.sh KILN SOURCE_DIR
set -eu
kiln=$1
src=$2
command -v valgrind >/dev/null || { echo "valgrind not installed: skipping"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
vg() {
  valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
    --show-possibly-lost=no --track-origins=yes "$@"
}

# valgrind 3.19 does not know AVX-512 instructions: --target avx2.
"$kiln" build "$src/samples/lenet5.json" --target avx2 -o "$dir/lenet5" >/dev/null
vg "$dir/lenet5" --input "$src/tests/goldens/lenet5/x.npy" --output "$dir/y.npy" --threads 1
vg "$dir/lenet5" --input "$src/tests/goldens/lenet5/x.npy" --bench 3 --threads 2 >/dev/null
# Bad input must be refused cleanly too.
status=0
vg "$dir/lenet5" --input "$src/tests/goldens/lenet5/logits.npy" >/dev/null 2>&1 || status=$?
[ "$status" -eq 2 ] || { echo "a wrong-shape input gave exit $status, not 2" >&2; exit 1; }

"$kiln" build --train "$src/samples/xor_mlp.json" --target avx2 -o "$dir/xor-train" >/dev/null
printf '0,0,0\n0,1,1\n1,0,1\n1,1,0\n' >"$dir/xor.csv"
vg "$dir/xor-train" --train "$dir/xor.csv" --epochs 3 --threads 1 --save "$dir/ck.safetensors" \
  >/dev/null
vg "$dir/xor-train" --train "$dir/xor.csv" --epochs 4 --threads 1 --resume "$dir/ck.safetensors" \
  >/dev/null
echo "valgrind: lenet5 and the XOR trainer are clean"
