#!/usr/bin/env bash
# Keep the bundled base model out of what a device call carries (64 MiB in all, the repository's
# tracked files included), and put it back afterwards.
#
#   bash recipes/trip.sh slim      # before a device call: untrack hf_midi/pretrained/base, ignore it locally
#   bash recipes/trip.sh restore   # after: track it again (nothing is committed or deleted either way)
#   bash recipes/trip.sh split CORPUS N   # a packed corpus too big for one call -> CORPUS.0 .. CORPUS.N-1
#       (its training parts dealt out round-robin; manifest and evaluation sets in CORPUS.0), each carried
#       by one call and put back together on the machine by recipes/stash.sh
#
# The files stay on disk; only the index and .git/info/exclude change, so `git status` is clean again
# after `restore`.
set -euo pipefail
cd "$(dirname "$0")/.."
path=hf_midi/pretrained/base
rule="/$path/"
case "${1:-}" in
  slim)
    git rm -r -q --cached "$path"
    grep -qxF "$rule" .git/info/exclude || echo "$rule" >> .git/info/exclude
    echo "$path: untracked and ignored for the trip ($(du -sh "$path" | cut -f1) left behind)";;
  restore)
    sed -i "\#^$rule\$#d" .git/info/exclude
    git reset -q -- "$path"
    echo "$path: tracked again";;
  split)
    corpus=${2:?usage: $0 split CORPUS N}; n=${3:?usage: $0 split CORPUS N}
    [ -f "$corpus/manifest.json" ] || { echo "error: $corpus: no manifest.json (not a packed corpus)" >&2; exit 2; }
    for ((k = 0; k < n; k++)); do rm -rf "$corpus.$k"; mkdir -p "$corpus.$k"; done
    cp "$corpus"/manifest.json "$corpus".0/
    for f in "$corpus"/eval-*.npz; do [ -e "$f" ] && cp "$f" "$corpus".0/; done
    k=0
    for f in "$corpus"/train-*.u16.xz; do cp "$f" "$corpus.$k/"; k=$(((k + 1) % n)); done
    inside=$([ "$(cd "$(dirname "$corpus")" && pwd)" = "$PWD" ] && echo yes || echo no)
    for ((k = 0; k < n; k++)); do
      if [ "$inside" = yes ]; then  # a corpus beside the repository's files: keep the pieces out of git
        grep -qxF "/$(basename "$corpus").$k/" .git/info/exclude || echo "/$(basename "$corpus").$k/" >> .git/info/exclude
      fi
      echo "$corpus.$k: $(du -sh "$corpus.$k" | cut -f1)"
    done;;
  *) echo "usage: $0 slim|restore|split CORPUS N" >&2; exit 2;;
esac
