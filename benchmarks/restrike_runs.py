"""Runs of re-strikes, real playing against a model's pieces (the table in RESULTS.md, "hammering and openings").

    python benchmarks/restrike_runs.py [--data ../shared/data] [DIR_OF_MIDI ...]

An onset within 0.3 s of the last onset of its pitch re-strikes it (``RESTRIKE_STEPS``, the listener's window);
its run is how many re-strikes in a row it ends (``PerformanceState.run``). For the 306 real 30-s windows of
GiantMIDI and POP909 test (``listener.real_windows``, seed 0) and for each folder of MIDI files given (e.g. the
pieces ``bench_search.py --keep`` wrote): the share of onsets whose run is >= 1, 2, 3, 4, 6, 8, 12, and the longest
run in a piece (median, 95th percentile). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hf_midi.evaluation.critic_training import real_pieces
from hf_midi.evaluation.listener import real_windows
from hf_midi.remote_code import codec
from hf_midi.remote_code.performance_state import RESTRIKE_STEPS

LEVELS = (1, 2, 3, 4, 6, 8, 12)


def runs(notes: dict) -> np.ndarray:
    """Each onset's run of re-strikes (0: it re-strikes nothing)."""
    start, pitch = np.asarray(notes["start"]), np.asarray(notes["pitch"])
    order = np.lexsort((start, pitch))
    start, pitch = start[order], pitch[order]
    run = np.zeros(len(start), np.int64)
    for i in range(1, len(start)):
        if pitch[i] == pitch[i - 1] and start[i] - start[i - 1] <= RESTRIKE_STEPS:
            run[i] = run[i - 1] + 1
    return run


def table(pieces: list[dict]) -> dict:
    per = [runs(n) for n in pieces]
    every = np.concatenate(per) if per else np.zeros(0, np.int64)
    longest = [int(r.max()) if len(r) else 0 for r in per]
    return {"pieces": len(per), "onsets": int(len(every)),
            **{f"run_ge_{k}": round(float((every >= k).mean()), 4) for k in LEVELS},
            "longest_median": float(np.median(longest)), "longest_p95": float(np.percentile(longest, 95))}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="*")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    args = p.parse_args(argv)
    out = {"real windows": table(real_windows(real_pieces(Path(args.data), "test"), 30.0, seed=0))}
    for folder in args.folders:
        out[folder] = table([codec.ids_to_notes(codec.encode(m)) for m in sorted(Path(folder).glob("*.mid"))])
    for name, row in out.items():
        print(name, json.dumps(row), flush=True)
    print(json.dumps({"bench": "restrike_runs", "results": out}))


if __name__ == "__main__":
    main()
