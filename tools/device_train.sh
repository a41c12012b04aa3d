#!/usr/bin/env bash
# Continue training the bundled FrameNet model (weights/frame-s) — or train a new one — on a lent
# GPU machine, in one command that fits a GPU slice (default: 8 minutes of training).
#
# 1. Here (no GPU needed): the cache as compact shards of ≤ 56 MiB each, to carry in parts.
#      python -m midisynth.cache /work/cache/v4c --compact-from /work/cache/v4
# 2. On the device (tool `run`), one quick call per shard while the machine stays warm: copy it
#    into the ignored folder .carry/ and, on the device, append it to /tmp/cache (kept between
#    calls), e.g. `mkdir -p /tmp/cache && cp .carry/train-00003.npz /tmp/cache/` with carry
#    [".carry"]; the val shard and index.json go with the first.
# 3. One training call:  DATA=/tmp/cache bash tools/device_train.sh
# What comes back under $OUT: train.log (GPU name first), check.json (benchmarks/model_check.py on
# the result: does it follow the score?) and model/ (config.json, model.safetensors, train_log.csv;
# no optimizer state). Ship it with midisynth.weights.release_model like a CPU-trained model, and
# say in the model card which hardware trained it (config.json → training.runs[].hardware).
# Settings by environment: MINUTES (training wall time), RESUME (model folder to continue; default
# weights/frame-s; "none" = a new model), FRAME (JSON FrameConfig overrides), BATCH (128), LR,
# DATA_WORKERS (12 forked batch makers: one thread cannot feed a GPU), TAU_FOCUS, DEVICE (cuda;
# cpu for a smoke run), DATA (/tmp/cache), and run 5's losses (weights/frame-s/MODEL_CARD.md):
# REFINE (1: the denoiser trained on the prior's noised mel), TEXTURE (6: its texture term),
# MONOTONE (3: the velocity hinge on the prior and the denoised mel); 0 turns one off.
set -euo pipefail
OUT=${OUT:-out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD:${PYTHONPATH:-}
export PYTHONUNBUFFERED=1
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || echo "no nvidia-smi") \
  >"$OUT/train.log" 2>&1
DATA=${DATA:-/tmp/cache}
args=(
  "$DATA" --out "$OUT/model" --name "${NAME:-frame-s}"
  --device "${DEVICE:-cuda}" --bf16 auto --max-minutes "${MINUTES:-8}"
  --batch-size "${BATCH:-128}" --lr "${LR:-1e-3}" --warmup-steps "${WARMUP:-200}"
  --val-every "${VAL_EVERY:-500}" --val-examples 64 --log-every "${LOG_EVERY:-50}"
  --checkpoint-minutes 3 --threads 4 --data-workers "${DATA_WORKERS:-12}"
  --tau-focus "${TAU_FOCUS:-0.7}" --frame "${FRAME:-{\}}"
  --refine-weight "${REFINE:-1}" --texture-weight "${TEXTURE:-6}"
  --monotone-weight "${MONOTONE:-3}"
)
RESUME=${RESUME:-weights/frame-s}
if [ "$RESUME" != "none" ]; then
  args+=(--resume "$RESUME")
fi
python3 -m midisynth.train_frame "${args[@]}" 2>&1 | tee -a "$OUT/train.log"
rm -f "$OUT"/model/training_state-*  # optimizer moments stay on the device: never shipped
python3 benchmarks/model_check.py --model "$OUT/model" --cache "$DATA" \
  --device "${DEVICE:-cuda}" --examples 64 --json "$OUT/check.json" >/dev/null
