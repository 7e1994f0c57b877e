#!/usr/bin/env bash
# The GPU recipe: one command that trains a plan's models on a bare GPU machine, each with
# `accelerate launch train.py` (recipes/plan.py), scores them, and leaves what should come back in
# one flat folder.
#
#   bash recipes/gpu_recipe.sh                  # on the GPU machine, from the repository root
#   PLAN=rehearsal TRAIN_SECONDS=6 DEADLINE=300 RESULTS=out/rehearsal bash recipes/gpu_recipe.sh   # on a CPU
#
# It expects beside the repository: gpu_data/ (a packed corpus: python -m hf_midi.data.packed) and, where
# symusic is missing (the GPU image has torch, transformers, accelerate, numpy and pyarrow, not
# symusic), its wheels in .whl/. It writes RESULTS/ (default: $OUT on the device tool, else out/gpu):
# the weights in bf16 safetensors shards (<run>--model*.safetensors, at most 15 MB each) and
# results.tar.gz (configs, tokenizers, eval.json per model, metrics, summary.json, the log,
# nvidia-smi). Restore them into model folders with: python recipes/plan.py restore RESULTS DEST
# Continue a shipped model instead of starting from random weights: EXTRA_ARGS="--init_from base=MODEL".
set -uo pipefail
cd "$(dirname "$0")/.."
PLAN=${PLAN:-gpu}
TRAIN_SECONDS=${TRAIN_SECONDS:-340}   # training seconds of the whole plan, shared by the runs' shares
DEADLINE=${DEADLINE:-520}             # wall seconds by which every model is evaluated and written
HARD_LIMIT=${HARD_LIMIT:-$((DEADLINE + 35))}  # the trainer is stopped here, so that what exists is collected
DATA=${DATA:-gpu_data}
RESULTS=${RESULTS:-${OUT:-out/gpu}}
WORK=${WORK:-$(mktemp -d /tmp/hf_midi_gpu.XXXXXX)}
mkdir -p "$WORK/run" "$RESULTS"

if ! python3 -c "import symusic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$WORK/site" .whl/*.whl \
    || { echo "error: symusic is missing and .whl/ holds no wheel of it" >&2; exit 2; }
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
command -v nvidia-smi >/dev/null && nvidia-smi > "$WORK/run/nvidia-smi.txt" 2>&1
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)" \
  | tee "$WORK/run/versions.txt"

timeout --signal=INT --kill-after=10 "$HARD_LIMIT" python3 recipes/plan.py train --plan "$PLAN" --data "$DATA" \
  --out "$WORK/run" --seconds "$TRAIN_SECONDS" --deadline "$DEADLINE" ${EXTRA_ARGS:-} 2>&1 | tee "$WORK/run/train.log"
status=${PIPESTATUS[0]}
python3 recipes/plan.py collect "$WORK/run" "$RESULTS" ${COLLECT_ARGS:-} || status=3
ls -la "$RESULTS"
exit "$status"
