"""Calibrate the degenerate-mode checks on real music: random 30-s windows of GiantMIDI test and POP909 test.

    python benchmarks/calibrate_degenerate.py --data ../shared/data [--seconds 30] [--seed 0]

For each figure of ``hf_midi.evaluation.listener.degenerate_figures`` it prints the real windows' 5th, 50th
and 95th percentiles (the limit is the 95th; the 5th for distinct pitch classes, where fewer is worse), and
how many real windows each check flags with the shipped ``DegenerateLimits``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from hf_midi.evaluation.listener import DegenerateLimits, degenerate, degenerate_figures, real_windows
from hf_midi.remote_code import codec

SETS = (("giantmidi", "split.csv"), ("pop909", "split.csv"))


def test_windows(data: Path, seconds: float, seed: int) -> list[dict]:
    windows = []
    for name, split in SETS:
        with open(data / name / split, newline="") as f:
            paths = [data / name / r["path"] for r in csv.DictReader(f) if r["split"] == "test"]
        pieces = []
        for p in paths:
            try:
                pieces.append(codec.encode(p))
            except codec.MidiReadError:
                continue
        windows += real_windows(pieces, seconds, seed=seed)
    return windows


def calibrate(windows: list[dict], seconds: float) -> dict:
    figures = [degenerate_figures(w, seconds) for w in windows]
    out = {}
    for key in figures[0]:
        values = np.array([f[key] for f in figures])
        out[key] = {q: round(float(np.percentile(values, q)), 4) for q in (5, 50, 95)}
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    windows = test_windows(Path(args.data), args.seconds, args.seed)
    bands = calibrate(windows, args.seconds)
    flagged = {}
    for w in windows:
        for mode in degenerate(w, args.seconds)["modes"]:
            flagged[mode] = flagged.get(mode, 0) + 1
    for key, band in bands.items():
        print(f"{key:22s} p5 {band[5]:8.4f}  p50 {band[50]:8.4f}  p95 {band[95]:8.4f}")
    print(json.dumps({"bench": "calibrate_degenerate", "windows": len(windows), "seconds": args.seconds,
                      "percentiles": bands, "limits": vars(DegenerateLimits()),
                      "real_windows_flagged": {k: round(v / len(windows), 4) for k, v in flagged.items()}}))


if __name__ == "__main__":
    main()
