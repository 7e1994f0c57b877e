#!/usr/bin/env bash
# On the GPU machine: put one carried piece of a split packed corpus (recipes/trip.sh split) into the
# stash, where the calls of one trip put it back together (the machine keeps its disk while it is
# warm: the next call must come within its idle time, 30 s).
#
#   bash recipes/stash.sh gpu_data.0          # call 1 (then gpu_data.1, ... in the calls that follow)
#   bash recipes/stash.sh gpu_data.2 && DATA="$STASH/gpu_data" bash recipes/gpu_recipe.sh   # the last call
#
# It prints what the stash holds and whether the corpus is whole (every part manifest.json lists,
# with its checksum).
set -euo pipefail
cd "$(dirname "$0")/.."
piece=${1:?usage: $0 CORPUS.K}
STASH=${STASH:-/tmp/hf_midi_stash}
name=$(basename "${piece%.*}")
mkdir -p "$STASH/$name"
cp "$piece"/* "$STASH/$name/"
ls -la "$STASH/$name"
python3 - "$STASH/$name" <<'PY'
import hashlib, json, sys
from pathlib import Path
folder = Path(sys.argv[1])
if not (folder / "manifest.json").is_file():
    print(f"{folder}: no manifest.json (a model folder, or a corpus whose first piece is still to come)"); sys.exit(0)
m = json.loads((folder / "manifest.json").read_text())
files = [f["name"] for f in m["train"]["files"]] + [e["file"] for e in m["eval"].values()]
missing = [f for f in files if not (folder / f).is_file()]
print(f"{folder}: {len(files) - len(missing)} of {len(files)} files; " + ("whole" if not missing else f"missing {missing}"))
PY
