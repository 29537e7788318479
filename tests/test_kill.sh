#!/bin/sh
# Checkpoints survive SIGKILL and a full disk (docs/testing.md). 1: the XOR trainer runs with a
# checkpoint written every epoch (temporary file + fsync + rename) and is killed with SIGKILL at
# a random moment, ROUNDS times in a row; after every kill the checkpoint, if one was written yet,
# must load and resume training (the trainer refuses a damaged or partial checkpoint with exit 2).
# The trainer writes a checkpoint after every step, so most kills land during or between writes.
# 2: with no room to write (RLIMIT_FSIZE 0 makes every file write fail, as a full disk does), the
# trainer must say it cannot save, exit non-zero and leave the previous checkpoint as it was.
#   test_kill.sh KILN SOURCE_DIR [ROUNDS]
set -eu
kiln=$1
src=$2
rounds=${3:-100}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

"$kiln" build --train "$src/samples/xor_mlp.json" -o "$dir/xor-train" >/dev/null
# XOR as CSV (two inputs, then the target): one batch, so a checkpoint follows every step.
printf '0,0,0\n0,1,1\n1,0,1\n1,1,0\n' >"$dir/xor.csv"

ck=$dir/ck.safetensors
"$dir/xor-train" --train "$dir/xor.csv" --epochs 1 --save "$ck" >/dev/null 2>&1
cp "$ck" "$dir/previous.safetensors"
changed=0
round=1
while [ "$round" -le "$rounds" ]; do
  "$dir/xor-train" --train "$dir/xor.csv" --resume "$ck" --epochs 1000000000 --save "$ck" \
    >/dev/null 2>&1 &
  pid=$!
  # A random moment between 1 and 200 ms (od reads 2 random bytes).
  delay=$(od -An -N2 -tu2 /dev/urandom | tr -d ' ')
  sleep "$(printf '0.%03d' $((delay % 200 + 1)))"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  if ! "$dir/xor-train" --train "$dir/xor.csv" --resume "$ck" --max-steps 1 \
    --save "$dir/next.safetensors" >"$dir/resume.out" 2>&1; then
    echo "round $round: the checkpoint left by SIGKILL does not resume:" >&2
    cat "$dir/resume.out" >&2
    exit 1
  fi
  cmp -s "$ck" "$dir/previous.safetensors" || changed=$((changed + 1))
  cp "$ck" "$dir/previous.safetensors"
  round=$((round + 1))
done
echo "$rounds kills; the checkpoint always loaded; it had moved on in $changed rounds"
# The kills must have hit a trainer that was writing checkpoints, not only ones still starting.
[ "$changed" -ge 1 ] || { echo "no round wrote a checkpoint before its kill" >&2; exit 1; }

# 2: a full disk. The output goes through a pipe, which the file-size limit does not affect.
cp "$ck" "$dir/before.safetensors"
rm -f "$dir"/ck.safetensors?*  # temporary files of writes SIGKILL interrupted above
{
  (trap '' XFSZ; ulimit -f 0; exec "$dir/xor-train" --train "$dir/xor.csv" --resume "$ck" \
    --epochs 1000000 --max-steps 100000000 --save "$ck" 2>&1)
  echo "exit=$?"
} | head -c 65536 >"$dir/full.out"
grep -q "cannot save the checkpoint: .*File too large" "$dir/full.out" ||
  { echo "no clear message on a full disk:" >&2; cat "$dir/full.out" >&2; exit 1; }
grep -q "^exit=0$" "$dir/full.out" && { echo "exit status 0 on a full disk" >&2; exit 1; }
cmp -s "$ck" "$dir/before.safetensors" || { echo "the previous checkpoint changed" >&2; exit 1; }
leftover=$(find "$dir" -name 'ck.safetensors?*' | head -1)
[ -z "$leftover" ] || { echo "a temporary file was left behind: $leftover" >&2; exit 1; }
echo "full disk: clear message, non-zero exit, previous checkpoint intact"
