#!/usr/bin/env bash
# The prepared GPU check: one script, about 8 minutes, on a machine with an NVIDIA GPU and no
# internet. It installs the project and the carried wheels the machine lacks, then
#   1. `bench learner` at the reference sizes (the reference's full batch: --minibatches 1),
#   2. `bench env` (our pool against EnvPool, when EnvPool's wheel was carried),
#   3. the full-size Pong job for TRAIN_S seconds (SIGTERM then: it saves and exits cleanly),
# and writes everything as JSON into $OUT (default: ./gpu-check-out).
#
# Before, on a machine with internet, in the repository's root: `make gpu-wheels` (cp312
# manylinux wheels into .whl/; EnvPool's is large and optional: GPU_WHEELS_ENVPOOL=1).
# Then on the GPU machine, in the repository's root:  bash scripts/gpu-check.sh
#
# Budget (seconds, each step bounded by `timeout`): install ~20, learner ~120, env ~60,
# training TRAIN_S (default 240) + start-up and compile ~60. Override with the variables below.
set -uo pipefail
OUT=${OUT:-gpu-check-out}
TRAIN_S=${TRAIN_S:-240}
LEARNER_S=${LEARNER_S:-150}
ENV_S=${ENV_S:-90}
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

log "bench learner (reference sizes, --minibatches 1)"
timeout "$LEARNER_S" $PY -m jax_reset.bench learner --minibatches 1 --json \
  2>&1 | tee "$OUT/bench_learner.log"
tail -n 1 "$OUT/bench_learner.log" > "$OUT/bench_learner.json"

if $PY -c 'import envpool' 2>/dev/null; then
  log "bench env (16 workers vs EnvPool 16 threads)"
  timeout "$ENV_S" $PY -m jax_reset.bench env --num-envs 64 --workers 16 --seconds 5 \
    --repeats 2 --json 2>&1 | tee "$OUT/bench_env.log"
  tail -n 1 "$OUT/bench_env.log" > "$OUT/bench_env.json"
else
  log "EnvPool not installed: bench env left out"
fi

log "full-size Pong job for ${TRAIN_S} s"
RUN=/tmp/gpu-check-pong; rm -rf "$RUN"
timeout -s TERM -k 60 "$TRAIN_S" $PY -m jax_reset.train --config configs/pong.toml \
  --run-dir "$RUN" train.progress=false train.workers=16 2>&1 | tee "$OUT/train.log"
cp "$RUN/metrics.jsonl" "$OUT/" 2>/dev/null || log "no metrics written"
$PY - "$OUT" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines() if l.strip()] \
    if (out / "metrics.jsonl").exists() else []
rows = rows[2:] or rows  # the first updates include compiles
summary = {"updates": len(rows)}
for key in sorted({k for r in rows for k in r}):
    vals = [r[key] for r in rows if isinstance(r.get(key), (int, float))]
    if vals and (key.startswith(("timing/", "train/agent_steps_per_s", "curriculum/max_"))):
        summary[key] = statistics.median(vals)
(out / "train_summary.json").write_text(json.dumps(summary, indent=1))
print(json.dumps(summary))
PY
log "done: results in $OUT"
