#!/usr/bin/env bash
# On the GPU machine: put one carried piece of a split packed corpus (recipes/trip.sh split), or a model
# folder, into the stash, where the calls of one trip put it back together (the machine keeps its disk
# while it is warm: the next call must come within its idle time, 30 s).
#
#   bash recipes/stash.sh gpu_data.0          # call 1 (then gpu_data.1, ... in the calls that follow)
#   bash recipes/stash.sh whole gpu_data base_w   # the last call, before training: is everything there?
#
# Stashing prints what the stash holds and whether the corpus is whole (every part manifest.json lists,
# with its checksum). `whole NAME ...` exits 3 unless each NAME is in the stash and whole (a packed corpus
# with every file its manifest lists, or a model folder with its config and weights), saying what is
# missing: the machine was given back between calls, and the trip starts again from its first call.
set -euo pipefail
cd "$(dirname "$0")/.."
STASH=${STASH:-/tmp/hf_midi_stash}
check() {  # check FOLDER: one line on it; exit status 0 when whole
  python3 - "$1" <<'PY'
import json, sys
from pathlib import Path
folder = Path(sys.argv[1])
if (folder / "manifest.json").is_file():
    m = json.loads((folder / "manifest.json").read_text())
    files = [f["name"] for f in m["train"]["files"]] + [e["file"] for e in m["eval"].values()]
    missing = [f for f in files if not (folder / f).is_file()]
    print(f"{folder}: {len(files) - len(missing)} of {len(files)} files; " + ("whole" if not missing else f"missing {missing}"))
    sys.exit(1 if missing else 0)
if (folder / "config.json").is_file() and any(folder.glob("*.safetensors")):
    print(f"{folder}: a model folder (config and weights)"); sys.exit(0)
if folder.is_dir():
    print(f"{folder}: no manifest.json and no model (a corpus whose first piece is still to come?)"); sys.exit(1)
print(f"{folder}: not in the stash"); sys.exit(1)
PY
}
if [ "${1:-}" = whole ]; then
  shift
  [ $# -gt 0 ] || { echo "usage: $0 whole NAME ..." >&2; exit 2; }
  bad=0
  for name in "$@"; do check "$STASH/$name" || bad=1; done
  if [ "$bad" = 1 ]; then
    echo "error: the stash is not whole (the machine was given back between calls?): start the trip again from its first call" >&2
    exit 3
  fi
  exit 0
fi
piece=${1:?usage: $0 CORPUS.K | whole NAME ...}
name=$(basename "${piece%.*}")
mkdir -p "$STASH/$name"
cp "$piece"/* "$STASH/$name/"
ls -la "$STASH/$name"
check "$STASH/$name" || true
