#!/usr/bin/env bash
# Keep the bundled base model out of what a device call carries (64 MiB in all, the repository's
# tracked files included), and put it back afterwards.
#
#   bash recipes/trip.sh slim      # before a device call: untrack hf_midi/pretrained/base, ignore it locally
#   bash recipes/trip.sh restore   # after: track it again (nothing is committed or deleted either way)
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
  *) echo "usage: $0 slim|restore" >&2; exit 2;;
esac
