#!/usr/bin/env bash
# The prepared GPU check: one script, about 8 minutes, on a machine with an NVIDIA GPU and no
# internet. It installs the project and the carried wheels the machine lacks, then
#   1. `bench learner` at the reference sizes (the reference's full batch: --minibatches 1),
#      in float32 and with the bfloat16 torso (network.compute_dtype = "bfloat16"), and in
#      float32 with the CPU's matmul-form conv gradients (JAX_RESET_CONV=matmul) beside the
#      GPU's default (XLA's own), so that both paths are timed on the accelerator,
#   2. `bench env`: our pool with 16 workers against EnvPool with 16 threads (when EnvPool's
#      wheel was carried),
#   3. the full-size Pong job for TRAIN_S seconds per device placement (train.placement; SIGTERM
#      then: it saves and exits cleanly): on one GPU "shared" (the default: acting on the GPU
#      that learns) and "host" (acting on the host CPU); on N >= 2 GPUs "auto" (1 acting,
#      N-1 learning) and "shared",
# and writes everything as JSON into $OUT (default: ./gpu-check-out). Untested on a GPU so far.
#
# Before, on a machine with internet, in the repository's root: `make gpu-wheels` (cp312
# manylinux wheels into .whl/; EnvPool's is large and optional: GPU_WHEELS_ENVPOOL=1).
# Then on the GPU machine, in the repository's root:  bash scripts/gpu-check.sh
#
# Budget (seconds, each step bounded by `timeout`; about 540 in all): install ~20, learner
# float32 LEARNER_S (90) + bfloat16 LEARNER_BF16_S (75) + matmul-form convs LEARNER_S (60 of
# it used), env ENV_S (60), and per placement
# TRAIN_S (120, of which start-up and compiles take ~50). Left out to fit: the bf16 torso in
# the training runs (only the learner bench sees it), env_groups variants of the job, more
# than two placements, and `bench train` (its rounds take minutes at the full size).
#
# TINY=1: the same steps at toy sizes on any machine (a CPU too: placement "1+1" on fake CPU
# devices in place of "host"), a dry run of the script's plumbing in about 3 minutes.
set -uo pipefail
OUT=${OUT:-gpu-check-out}
TINY=${TINY:-0}
TRAIN_S=${TRAIN_S:-120}
LEARNER_S=${LEARNER_S:-90}
LEARNER_BF16_S=${LEARNER_BF16_S:-75}
ENV_S=${ENV_S:-60}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
log() { echo "[gpu-check $(date +%H:%M:%S)] $*"; }

# The machine's JAX (CUDA build) must stay: wheels go in with --no-deps into a side folder.
if compgen -G ".whl/*.whl" >/dev/null; then
  log "installing $(ls .whl/*.whl | wc -l) carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/jax-reset-site .whl/*.whl || { log "wheel install failed"; exit 1; }
  export PYTHONPATH="/tmp/jax-reset-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
$PY - <<'PY' | tee "$OUT/platform.json"
import json, jax
print(json.dumps({"jax": jax.__version__, "backend": jax.default_backend(),
                  "devices": [d.device_kind for d in jax.devices()]}))
PY
NDEV=$($PY -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["devices"]))' \
  "$OUT/platform.json" 2>/dev/null || echo 1)
BACKEND=$($PY -c 'import json,sys; print(json.load(open(sys.argv[1]))["backend"])' \
  "$OUT/platform.json" 2>/dev/null || echo unknown)
if [ "$NDEV" -ge 2 ]; then DEFAULT_PLACEMENTS="auto shared"; else DEFAULT_PLACEMENTS="shared host"; fi

if [ "$TINY" = 1 ]; then
  LEARNER_ARGS="--envs 4 --steps 6 --burn-in 2 --epochs 1 --conv-channels 8,16,16 --dense 16
    --core-size 16 --obs 6,42,40 --iters 1 --warmup-len 3"
  ENV_ARGS="--num-envs 4 --workers 2 --seconds 1 --repeats 1"
  TRAIN_CONFIG=configs/smoke.toml
  TRAIN_OVERRIDES="train.total_updates=1000 train.workers=2"
  [ "$BACKEND" = cpu ] && DEFAULT_PLACEMENTS="shared 1+1"  # "host" is "shared" on a CPU
  TRAIN_S=${TINY_TRAIN_S:-40}
else
  LEARNER_ARGS=""
  ENV_ARGS="--num-envs 64 --workers 16 --seconds 5 --repeats 2"
  TRAIN_CONFIG=configs/pong.toml
  TRAIN_OVERRIDES="train.workers=16"
fi
PLACEMENTS=${PLACEMENTS:-$DEFAULT_PLACEMENTS}

log "bench learner (reference sizes, --minibatches 1): float32"
# shellcheck disable=SC2086  # word splitting of the argument lists is intended
timeout "$LEARNER_S" $PY -m jax_reset.bench learner --minibatches 1 $LEARNER_ARGS --json \
  2>&1 | tee "$OUT/bench_learner.log"
tail -n 1 "$OUT/bench_learner.log" > "$OUT/bench_learner.json"
log "bench learner: the bfloat16 torso (network.compute_dtype = bfloat16)"
# shellcheck disable=SC2086
timeout "$LEARNER_BF16_S" $PY -m jax_reset.bench learner --minibatches 1 --dtype bfloat16 \
  $LEARNER_ARGS --json 2>&1 | tee "$OUT/bench_learner_bf16.log"
tail -n 1 "$OUT/bench_learner_bf16.log" > "$OUT/bench_learner_bf16.json"
log "bench learner: the CPU's matmul-form conv gradients on this device (JAX_RESET_CONV=matmul)"
# shellcheck disable=SC2086
JAX_RESET_CONV=matmul timeout "$LEARNER_S" $PY -m jax_reset.bench learner --minibatches 1 --no-parts \
  $LEARNER_ARGS --json 2>&1 | tee "$OUT/bench_learner_matmul_conv.log"
tail -n 1 "$OUT/bench_learner_matmul_conv.log" > "$OUT/bench_learner_matmul_conv.json"

if $PY -c 'import envpool' 2>/dev/null; then
  log "bench env (our pool's workers vs as many EnvPool threads: $ENV_ARGS)"
  # shellcheck disable=SC2086
  timeout "$ENV_S" $PY -m jax_reset.bench env $ENV_ARGS --json 2>&1 | tee "$OUT/bench_env.log"
  tail -n 1 "$OUT/bench_env.log" > "$OUT/bench_env.json"
else
  log "EnvPool not installed: bench env left out"
fi

for PLACEMENT in $PLACEMENTS; do
  NAME=${PLACEMENT//+/-}
  log "training job, placement $PLACEMENT, for ${TRAIN_S} s"
  RUN=/tmp/gpu-check-train-$NAME; rm -rf "$RUN"
  # --foreground: SIGTERM to the trainer alone, which stops its workers and saves (without it
  # timeout signals the whole process group: the workers die first and the run fails).
  # shellcheck disable=SC2086
  timeout --foreground -s TERM -k 60 "$TRAIN_S" $PY -m jax_reset.train --config "$TRAIN_CONFIG" \
    --run-dir "$RUN" $TRAIN_OVERRIDES train.progress=false "train.placement=$PLACEMENT" 2>&1 | tee "$OUT/train_$NAME.log"
  cp "$RUN/metrics.jsonl" "$OUT/metrics_$NAME.jsonl" 2>/dev/null || log "no metrics written"
  $PY - "$OUT" "$NAME" <<'PY'
import json, statistics, sys
from pathlib import Path
out, name = Path(sys.argv[1]), sys.argv[2]
path = out / f"metrics_{name}.jsonl"
rows = [json.loads(l) for l in path.read_text().splitlines() if l.strip()] \
    if path.exists() else []
rows = rows[2:] or rows  # the first updates include compiles
summary = {"placement": name, "updates": len(rows)}
for key in sorted({k for r in rows for k in r}):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    if vals and key.startswith(("timing/", "actor/", "train/agent_steps_per_s",
                                "curriculum/max_")):
        summary[key] = statistics.median(vals)
(out / f"train_summary_{name}.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PY
done
log "done: results in $OUT"
