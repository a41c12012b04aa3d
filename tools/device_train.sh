#!/usr/bin/env bash
# Train — or continue training — midisynth's own model on a lent GPU machine, in one command
# that fits a GPU slice (default: 7 minutes of training; ~9 minutes in all).
#
# Prepare on any machine with the training cache (no GPU needed), into the ignored folder .carry/:
#   python -m midisynth.cache .carry/cache --compact-from CACHE --max-mib 56   # uint8 mels, ≤ 56 MiB
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .carry/whl mido==1.3.3            # what the image lacks
# Run on the device (tool `run`, carry [".carry"]):
#   bash tools/device_train.sh
# What comes back under $OUT: train.log (GPU name first), check.json (benchmarks/model_check.py on
# the result: does it follow the score?) and model/ (config.json, ≤ 15 MiB safetensors shards,
# train_log.csv) — 8 files at most for models up to cpu-medium (15.6 M parameters, 4 shards). Ship it with midisynth.weights.release_model (README,
# "Training"). Settings by environment: MINUTES (training wall time), RESUME (model folder
# to continue from, e.g. weights/midisynth; default: a new model), MODEL (preset of a new model),
# BATCH, LR, NAME, DATA_WORKERS, DEVICE (cuda; cpu for a smoke run), DATA (.carry/cache).
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
if compgen -G ".carry/whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/midisynth-site .carry/whl/*.whl
  export PYTHONPATH=/tmp/midisynth-site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi") \
  >"$OUT/train.log" 2>&1
args=(
  --data "${DATA:-.carry/cache}" --out "$OUT/model" --name "${NAME:-midisynth}"
  --device "${DEVICE:-cuda}" --bf16 auto --steps "${STEPS:-1000000}" --max-minutes "${MINUTES:-7}"
  --batch-size "${BATCH:-64}" --lr "${LR:-1e-3}" --warmup-steps "${WARMUP:-300}"
  --val-every "${VAL_EVERY:-1000}" --val-examples 64 --log-every "${LOG_EVERY:-100}"
  --checkpoint-minutes 3 --no-save-optimizer --threads 4 --data-workers "${DATA_WORKERS:-8}"
)
if [ -n "${RESUME:-}" ]; then
  args+=(--resume "$RESUME")
else
  args+=(--model "${MODEL:-cpu-medium}")
fi
python3 -m midisynth.train "${args[@]}" 2>&1 | tee -a "$OUT/train.log"
python3 benchmarks/model_check.py --model "$OUT/model" --cache "${DATA:-.carry/cache}" \
  --device "${DEVICE:-cuda}" --examples 64 --json "$OUT/check.json" >/dev/null
