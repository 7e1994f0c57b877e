#!/usr/bin/env bash
# Keep the bundled models' weights out of what a device call carries (64 MiB in all, the repository's
# tracked and untracked-not-ignored files included), and put them back afterwards.
#
#   bash recipes/trip.sh slim      # before a device call: untrack hf_midi/pretrained/*/*.safetensors, ignore them
#   bash recipes/trip.sh restore   # after: track them again (nothing is committed or deleted either way)
#   bash recipes/trip.sh size [CARRY ...]   # what one call would carry, against the 64 MiB (exit 1: over)
#   bash recipes/trip.sh split CORPUS N   # a packed corpus too big for one call -> CORPUS.0 .. CORPUS.N-1
#       (its training parts dealt out round-robin; manifest and evaluation sets in CORPUS.0), each carried
#       by one call and put back together on the machine by recipes/stash.sh
#
# The files stay on disk; only the index and .git/info/exclude change, so `git status` is clean again
# after `restore`.
set -euo pipefail
cd "$(dirname "$0")/.."
path=hf_midi/pretrained
rule="/$path/*/*.safetensors"
limit=$((64 * 1024 * 1024))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
bytes() { xargs -0 -r stat -c %s -- 2>/dev/null | awk '{ s += $1 } END { print s + 0 }' || true; }  # NUL-separated paths in
case "${1:-}" in
  slim)
    mkdir -p .git/info
    git rm -q --cached --ignore-unmatch -- "$path/*/*.safetensors"
    grep -qxF "$rule" .git/info/exclude 2>/dev/null || echo "$rule" >> .git/info/exclude
    echo "$path/*/*.safetensors: untracked and ignored for the trip ($(mib "$(cat $path/*/*.safetensors | wc -c)") left behind)";;
  restore)
    if [ -f .git/info/exclude ]; then
      grep -vxF "$rule" .git/info/exclude > .git/info/exclude.new || true
      mv .git/info/exclude.new .git/info/exclude
    fi
    git reset -q -- "$path"
    echo "$path: tracked again";;
  size)
    shift
    tree=$({ git ls-files -z; git ls-files -z --others --exclude-standard; } | sort -zu | bytes)
    total=$tree
    echo "the working tree: $(mib "$tree")"
    for c in "$@"; do
      [ -e "$c" ] || { echo "error: $c: nothing there to carry" >&2; exit 2; }
      b=$(find "$c" -type f -print0 | bytes)
      total=$((total + b)); echo "carried $c: $(mib "$b")"
    done
    if [ "$total" -gt "$limit" ]; then
      echo "one call: $(mib "$total"), over the 64 MiB a call carries by $(mib $((total - limit)))"; exit 1
    fi
    echo "one call: $(mib "$total") of 64 MiB ($(mib $((limit - total))) to spare)";;
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
  *) echo "usage: $0 slim|restore|size [CARRY ...]|split CORPUS N" >&2; exit 2;;
esac
