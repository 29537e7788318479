#!/bin/sh
# Data-parallel training over MPI (docs/distributed.md), 2 ranks on loopback:
#  1. step parity with PyTorch: 2 ranks x 4 samples train the golden case mlp_ce_adam_l1_l2 (and
#     mlp_bce_logits_adam_clip: clipping after the all-reduce) for 5 steps of the 8-sample golden
#     batch; every step's loss matches tools/make_train_goldens.py's within 1e-5 (relative);
#  2. 2 ranks x 16 samples vs one process x 32 (the non-distributed trainer) on Fashion-MNIST: the
#     losses of 50 steps agree within 1e-5 (relative; only the summation order differs); two
#     2-rank runs give identical logs (determinism);
#  3. a rank killed with SIGKILL (KILN_MPI_FAULT_STEP) stops the job with a non-zero status and
#     the last checkpoint intact; --resume from it ends bit-identical to an uninterrupted run;
#  4. BatchNorm (the golden case cnn_bn_relu_sgd_momentum, batch 4, as 2 ranks x 2, 5 steps):
#     with --sync-bn, the losses and the final params and running statistics match PyTorch's
#     single process with the whole batch (tools/make_train_goldens.py); without it, they match
#     PyTorch DDP with per-rank BatchNorm and rank 0's buffers (tools/goldens_mpi_bn.py), and
#     differ from the single process; tolerance 1e-5 (relative for losses, absolute + relative
#     for params);
#  5. overlap: all-reduce buckets of 10 floats started during the backward pass give a
#     checkpoint bit-identical to one bucket all-reduced after it (KILN_MPI_OVERLAP=0).
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

# "NAME VALUE" for every element of every F32 tensor of a .safetensors file (header: its length
# as a little-endian u64, then JSON with "data_offsets" after it).
st_f32() {
  hlen=$(od -A n -t u4 -N 4 "$1" | tr -d ' ')
  head -c $((8 + hlen)) "$1" | tail -c "$hlen" | grep -o '"[^"]*":{"dtype":"F32"[^}]*}' |
    sed 's/^"\([^"]*\)".*"data_offsets":\[\([0-9]*\),\([0-9]*\)\].*/\1 \2 \3/' |
    while read -r name a b; do
      od -A n -v -t f4 -j $((8 + hlen + a)) -N $((b - a)) "$1" | tr -s ' ' '\n' | sed '/^$/d' |
        sed "s/^/$name /"
    done
}

# Fails unless checkpoint $2 holds every tensor of $1 (a golden) within $TOL (absolute + relative).
same_params() {
  st_f32 "$1" >want.st
  st_f32 "$2" >got.st
  awk -v tol=$TOL -v what="$3" '
    NR == FNR { want[$1 " " (++i[$1])] = $2; n++; next }
    { k = $1 " " (++j[$1]); if (!(k in want)) next; seen++
      d = $2 - want[k]; if (d < 0) d = -d; s = want[k] < 0 ? -want[k] : want[k]
      if (d - tol * s > worst) worst = d - tol * s
      if (d > big) big = d }
    END { printf "%s: %d values, largest difference %.3g (tolerance %s abs + rel)\n", what, seen,
                 big, tol
          exit seen != n || worst > tol }' want.st got.st
}

# Fails unless files $1 and $2 hold the same numbers within relative tolerance $TOL (the awk is
# last: in `same_losses ... || fail`, set -e does not apply inside the function).
same_losses() {
  [ "$(wc -l <"$1")" -eq "$(wc -l <"$2")" ] || fail "$3: $(wc -l <"$1") vs $(wc -l <"$2") steps"
  paste "$1" "$2" | awk -v tol=$TOL -v what="$3" '
    { n++; d = $1 - $2; if (d < 0) d = -d; s = $2 < 0 ? -$2 : $2; r = d / (s > 1e-12 ? s : 1e-12)
      if (r > worst) worst = r }
    END { if (n == 0) { print what ": no losses"; exit 1 }
          printf "%s: %d steps, largest relative difference %.3g (tolerance %s)\n", what, n, worst, tol
          exit worst > tol }'
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

# 4. BatchNorm, per rank and --sync-bn: the golden batch of 4 as 2 ranks x 2.
G=$SRC/tests/goldens/train/cnn_bn_relu_sgd_momentum
DDP=$SRC/tests/goldens/mpi/cnn_bn_per_rank
sed 's/"batch_size": 4/"batch_size": 2/' "$G/model.json" >bn.json
"$KILN" build --train bn.json --distributed mpi -o bn_rank || fail "BatchNorm: kiln build"
"$KILN" build --train bn.json --distributed mpi --sync-bn -o bn_sync ||
  fail "BatchNorm: kiln build --sync-bn"
BN_FLAGS="--train $G/x.npy,$G/y.npy --epochs 5 --batch 4 --seed 7" # seed: tools/goldens_mpi_bn.py
# Buckets of at least 10 floats: 2 buckets (12 and 33 of the 45 gradient floats), each started
# during the backward pass (part 5).
export KILN_MPI_BUCKET_FLOATS=10
for b in bn_rank bn_sync; do
  $MPIRUN -x KILN_MPI_BUCKET_FLOATS "./$b" $BN_FLAGS --log "$b.csv" --save "$b.safetensors" \
    >/dev/null 2>"$b.err" || fail "$b: the 2-rank trainer failed: $(cat "$b.err")"
  losses "$b.csv" >"$b.kiln"
done
unset KILN_MPI_BUCKET_FLOATS
npy_f64 "$G/losses.npy" >bn_single.torch
npy_f64 "$DDP/losses.npy" >bn_ddp.torch
same_losses bn_sync.kiln bn_single.torch "--sync-bn, 2 ranks vs PyTorch, 1 process" ||
  fail "--sync-bn: the losses differ from the single process's"
same_params "$G/final.safetensors" bn_sync.safetensors "--sync-bn: final params and buffers" ||
  fail "--sync-bn: the final params differ from the single process's"
same_losses bn_rank.kiln bn_ddp.torch "per-rank BatchNorm vs PyTorch DDP" ||
  fail "per-rank BatchNorm: the losses differ from PyTorch DDP's"
same_params "$DDP/final.safetensors" bn_rank.safetensors "per-rank BatchNorm: final params" ||
  fail "per-rank BatchNorm: the final params differ from PyTorch DDP's"
if same_losses bn_rank.kiln bn_single.torch "per-rank BatchNorm vs 1 process" >/dev/null; then
  fail "per-rank BatchNorm should differ from the single process"
fi

# 5. Overlap: the 10-float buckets above, each all-reduced as soon as the backward pass finished
# it, vs one bucket all-reduced after the backward pass (KILN_MPI_OVERLAP=0).
KILN_MPI_OVERLAP=0 $MPIRUN -x KILN_MPI_OVERLAP ./bn_sync $BN_FLAGS --save no_overlap.safetensors \
  >/dev/null 2>no_overlap.err || fail "KILN_MPI_OVERLAP=0: trainer failed: $(cat no_overlap.err)"
cmp -s no_overlap.safetensors bn_sync.safetensors ||
  fail "overlapping the all-reduce with the backward pass changed the result"
echo "test_mpi: overlap: 10-float buckets started during the backward pass, bit-identical"
echo "test_mpi: OK"
