#!/usr/bin/env bash
# The GPU recipe: one command that trains the plan's models on a bare GPU machine and leaves what
# should come back in one flat folder.
#
#   bash recipes/gpu_recipe.sh                  # on the GPU machine, from the repository root
#   PLAN=rehearsal TRAIN_SECONDS=6 DEADLINE=120 RESULTS=out/rehearsal bash recipes/gpu_recipe.sh   # on a CPU
#
# It expects beside the repository: gpu_data/ (a packed corpus: python -m hf_midi.packed) and, where
# symusic is missing (the GPU image has torch, transformers, numpy and pyarrow, not symusic), its
# wheels in .whl/. It writes RESULTS/ (default: $OUT on the device tool, else out/gpu): the weights as
# safetensors files (<run>--model*.safetensors, at most 15 MB each) and results.tar.gz (configs,
# eval.json per model, metrics.jsonl, summary.json, the log, nvidia-smi). Restore them into model
# folders with: python -m hf_midi.packed_training --restore RESULTS DEST
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
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$WORK/run/versions.txt"

timeout --signal=INT --kill-after=10 "$HARD_LIMIT" python3 -m hf_midi.packed_training --data "$DATA" --out "$WORK/run" --plan "$PLAN" \
  --seconds "$TRAIN_SECONDS" --deadline "$DEADLINE" ${EXTRA_ARGS:-} 2>&1 | tee "$WORK/run/train.log"
status=${PIPESTATUS[0]}
python3 -m hf_midi.packed_training --collect "$WORK/run" "$RESULTS" || status=3
ls -la "$RESULTS"
exit "$status"
