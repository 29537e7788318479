#!/bin/sh
# Data-parallel training over MPI (docs/distributed.md), 2 ranks on loopback:
#  1. step parity with PyTorch: 2 ranks x 4 samples train the golden case mlp_ce_adam_l1_l2 (and
#     mlp_bce_logits_adam_clip: clipping after the all-reduce) for 5 steps of the 8-sample golden
#     batch; every step's loss matches tools/make_train_goldens.py's within 1e-5 (relative);
#  2. 2 ranks x 16 samples vs one process x 32 (the non-distributed trainer) on Fashion-MNIST: the
#     losses of 50 steps agree within 1e-5 (relative; only the summation order differs); two
#     2-rank runs give identical logs (determinism);
#  3. a rank killed with SIGKILL (KILN_MPI_FAULT_STEP) stops the job with a non-zero status and
#     the last checkpoint intact; --resume from it ends bit-identical to an uninterrupted run.
# Usage: test_mpi.sh KILN_EXE SOURCE_DIR. Exit 77 (skipped) if mpirun is missing.
set -eu
KILN=$1
SRC=$2
TOL=1e-5
if ! command -v mpirun >/dev/null 2>&1; then
  echo "test_mpi: SKIPPED: mpirun is not installed (apt-get install openmpi-bin libopenmpi-dev)"
  exit 77
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kiln-mpi-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
MPIRUN="mpirun -np 2 --oversubscribe --allow-run-as-root --mca btl self,tcp --bind-to none"
export OMP_NUM_THREADS=1
# Under ASan+UBSan: memory errors and undefined behaviour are caught, leaks are not: Open MPI
# leaves allocations behind at MPI_Finalize from components it has already unloaded, which
# LeakSanitizer can neither name nor suppress (tests/test_train.c checks train.c for leaks).
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0"
fail() {
  echo "test_mpi: FAIL: $*" >&2
  exit 1
}

# The per-step losses of a trainer's --log, one per line.
losses() { awk -F, 'NR > 1 && $3 != "" {print $3}' "$1"; }

# The f64 values of a 1-D .npy file, one per line (header length at bytes 8-9).
npy_f64() {
  hlen=$(od -A n -t u2 -j 8 -N 2 "$1" | tr -d ' ')
  od -A n -v -t f8 -j $((10 + hlen)) "$1" | tr -s ' ' '\n' | sed '/^$/d'
}

# Fails unless files $1 and $2 hold the same numbers within relative tolerance $TOL.
same_losses() {
  paste "$1" "$2" | awk -v tol=$TOL -v what="$3" '
    { n++; d = $1 - $2; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2; r = d / (s > 1e-12 ? s : 1e-12)
      if (r > worst) worst = r }
    END { if (n == 0) { print what ": no losses"; exit 1 }
          printf "%s: %d steps, largest relative difference %.3g (tolerance %s)\n", what, n, worst, tol
          exit worst > tol }'
  [ "$(wc -l <"$1")" -eq "$(wc -l <"$2")" ] || fail "$3: $(wc -l <"$1") vs $(wc -l <"$2") steps"
}

# 1. PyTorch step parity, the golden batch of 8 split over 2 ranks.
for case in mlp_ce_adam_l1_l2 mlp_bce_logits_adam_clip; do
  G=$SRC/tests/goldens/train/$case
  sed 's/"batch_size": 8/"batch_size": 4/' "$G/model.json" >"$case.json"
  "$KILN" build --train "$case.json" --distributed mpi -o "$case" || fail "$case: kiln build"
  $MPIRUN "./$case" --train "$G/x.npy,$G/y.npy" --epochs 5 --batch 8 --log "$case.csv" \
    >/dev/null || fail "$case: the 2-rank trainer failed"
  losses "$case.csv" >"$case.kiln"
  npy_f64 "$G/losses.npy" >"$case.torch"
  same_losses "$case.kiln" "$case.torch" "$case: 2 ranks vs PyTorch" || fail "$case: losses differ"
done

# 2. 2 ranks x 16 vs one process x 32, 50 steps of Fashion-MNIST.
if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  "$KILN" build --train "$SRC/tests/test_mpi.json" -o single || fail "kiln build (single)"
  sed 's/"batch_size": 32/"batch_size": 16/' "$SRC/tests/test_mpi.json" >half.json
  "$KILN" build --train half.json --distributed mpi -o dist || fail "kiln build --distributed"
  ./single --train fashion-mnist:train --max-steps 50 --log single.csv >/dev/null ||
    fail "the single-process trainer failed"
  for run in a b; do
    $MPIRUN ./dist --train fashion-mnist:train --batch 32 --max-steps 50 --log "dist_$run.csv" \
      >"dist_$run.out" || fail "the 2-rank trainer failed"
  done
  losses single.csv >single.loss
  losses dist_a.csv >dist.loss
  same_losses dist.loss single.loss "fashion-mnist: 2 ranks x 16 vs 1 process x 32" ||
    fail "the loss trajectories differ"
  cmp -s dist_a.csv dist_b.csv || fail "two 2-rank runs with the same seed differ"
  [ "$(wc -l <dist_a.out)" -eq 1 ] || fail "the last line should be printed once (rank 0)"
else
  echo "test_mpi: part 2 SKIPPED: dataset-fashion-mnist is not installed"
fi

# 3. A rank killed at step 7 (a checkpoint after every step: 1 step per epoch), then --resume.
G=$SRC/tests/goldens/train/mlp_ce_adam_l1_l2
DATA="$G/x.npy,$G/y.npy"
$MPIRUN ./mlp_ce_adam_l1_l2 --train "$DATA" --epochs 12 --batch 8 --save full.safetensors \
  >/dev/null || fail "the uninterrupted run failed"
if KILN_MPI_FAULT_STEP=7 $MPIRUN ./mlp_ce_adam_l1_l2 --train "$DATA" --epochs 12 --batch 8 \
  --save part.safetensors >killed.out 2>killed.err; then
  fail "the run whose rank was killed exited with status 0"
fi
grep -q "killing myself" killed.err || fail "the fault was not injected: $(cat killed.err)"
grep -qi "signal 9\|killed" killed.err || fail "no message about the dead rank: $(cat killed.err)"
[ -s part.safetensors ] || fail "no checkpoint left by the killed run"
ls part.safetensors.tmp* >/dev/null 2>&1 && fail "a temporary checkpoint file was left behind"
$MPIRUN ./mlp_ce_adam_l1_l2 --train "$DATA" --epochs 12 --batch 8 --resume part.safetensors \
  --save resumed.safetensors >/dev/null || fail "--resume after the killed run failed"
cmp -s full.safetensors resumed.safetensors ||
  fail "the resumed run does not end where the uninterrupted one does"
echo "test_mpi: killed at step 7, resumed: final checkpoint bit-identical to the uninterrupted run"
echo "test_mpi: OK"
