#!/usr/bin/env bash
# The dialog experiment on one GPU, in one call of at most ~9 minutes: the bench's step times (every method, and
# meta_net with the estimators of the converged comparison) and one converged run of meta_net (lookahead) and,
# in the time left, of union, on female_elderly with bAbI task 5 related, 100 target dialogs, seed 0: the config
# of results/dialog_sweep/profiles/female_elderly, whose runs took 1189 s and 525 s on 2 CPU cores.
#
#   bash tools/gpu_run.sh OUT [SECONDS]
#
# Writes OUT/gpu_run.log (the whole output), OUT/dialog_bench_female_elderly.json and OUT/runs.tgz (each run's
# config.json, metrics.jsonl, results.json and summary.md), refreshed after every stage so that a run cut off by
# the deadline (SECONDS, default 520, from the start) still leaves what finished. Results:
# results/dialog_gpu (tools/gpu_report.py makes its table). BENCH_FLAGS and RUN_FLAGS add flags (a smoke test:
# RUN_FLAGS="--config.max_epochs=2"). On the H200 the bench needs about 230 s, more than its share (SECONDS - 380):
# there it was cut after the look-ahead and rerun alone, in a second call, as
#   python3 -m experiments.dialog.bench --workdir=OUT --config.target_set=female_elderly \
#       --config.target_dialogs=100 --estimators=lookahead,implicit-gn,trajectory --trajectory_steps=50
set -u
OUT=${1:?usage: bash tools/gpu_run.sh OUT [SECONDS]}
DEADLINE=$(($(date +%s) + ${2:-520}))
WORK=$(mktemp -d)
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_run.log") 2>&1

left() { echo $((DEADLINE - $(date +%s))); }
pack() {
  cp "$WORK"/bench/*.json "$OUT"/ 2>/dev/null
  tar czf "$OUT/runs.tgz" -C "$WORK" --exclude=checkpoints --exclude=tensorboard --exclude=related_weights.json \
    $(cd "$WORK" && ls -d meta_net union 2>/dev/null) 2>/dev/null
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
nproc
python3 -c "import jax, flax, optax, orbax.checkpoint as o; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, 'orbax', o.__version__, jax.devices())"

PROFILE="--config.target_set=female_elderly --config.target_dialogs=100"
echo "== bench ($(left) s left)"
timeout "$(($(left) - 380))" python3 -m experiments.dialog.bench --workdir="$WORK/bench" $PROFILE \
  --estimators=lookahead,implicit-gn,trajectory --trajectory_steps=50 ${BENCH_FLAGS:-}
pack
for method in meta_net union; do
  echo "== converged $method ($(left) s left)"
  timeout "$(left)" python3 -m experiments.dialog --workdir="$WORK/$method" $PROFILE --config.num_seeds=1 \
    --config.methods="$method" ${RUN_FLAGS:-}
  echo "== $method exit $?"
  pack
done
ls -la "$OUT"
