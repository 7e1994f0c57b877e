"""What the cleaning of ``hf-midi prepare`` does to a corpus: silence trimmed, recordings cut, and what each
screen removes (``hf_midi.data.cleaning``), in pieces and hours.

For each ``NAME=FOLDER:SPLITS_CSV:SPLIT`` source, every file of the split is read and cleaned with the
default ``CleanConfig``. Reported per source: files; files beginning with more than 1 / 3 / 10 s of
silence and the hours of it; silences inside longer than the cut (and so the cuts made); pieces after
the cut; and per screen, what it removes as the first screen a piece fails (what prepare reports) and
alone (had it been the only screen), with the share of the corpus's hours.

    python benchmarks/bench_cleaning.py giantmidi=../shared/data/giantmidi:../shared/data/giantmidi/split.csv:train \\
        pop909=../shared/data/pop909:../shared/data/pop909/split.csv:train

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

from hf_midi.data.cleaning import FIGURE_OF, NO_CLEAN, REASON_OF, CleanConfig, clean_performance, screen
from hf_midi.remote_code.codec import load_score, score_to_performance


def _pieces(path: str) -> tuple[float, list[dict]] | None:
    """(leading silence, the pieces' figures and first failed screen) of one file; None if unusable."""
    try:
        perf = score_to_performance(load_score(path))
    except Exception:  # counted as unreadable; prepare names the reason
        return None
    if perf.num_notes == 0:
        return None
    cut = replace(NO_CLEAN, split_silence=CleanConfig().split_silence)
    out = [{"piece": k, "figures": p.figures.as_dict(), "reason": screen(p.figures, CleanConfig())[0]}
           for k, p in enumerate(clean_performance(perf, cut))]
    return float(perf.onset.min()), out


def measure(folder: str, splits_csv: str, split: str, workers: int) -> dict:
    with open(splits_csv, newline="", encoding="utf-8") as f:
        paths = [os.path.join(folder, r["path"]) for r in csv.DictReader(f) if r["split"] == split]
    with ProcessPoolExecutor(workers) as ex:
        got = [g for g in ex.map(_pieces, paths, chunksize=32) if g is not None]
    leads = [lead for lead, _ in got]
    pieces = [p for _, ps in got for p in ps]
    hours = sum(p["figures"]["seconds"] for p in pieces) / 3600
    config = CleanConfig()
    screens = {}
    for name, limit in config.screens().items():
        figure, reason = FIGURE_OF[name], REASON_OF[name]
        alone = [p for p in pieces if (p["figures"][figure] < limit if name.startswith("min_")
                                       else p["figures"][figure] > limit)]
        first = [p for p in pieces if p["reason"] == reason]
        h_alone = sum(p["figures"]["seconds"] for p in alone) / 3600
        h_first = sum(p["figures"]["seconds"] for p in first) / 3600
        screens[reason] = {"threshold": f"{figure} {'>=' if name.startswith('min_') else '<='} {limit:g}",
                           "pieces": len(first), "hours": round(h_first, 3),
                           "pieces_alone": len(alone), "hours_alone": round(h_alone, 3),
                           "share_of_hours_alone": round(h_alone / hours, 5) if hours else 0.0}
    kept = [p for p in pieces if not p["reason"]]
    return {
        "files": len(got),
        "lead_over_1s": round(sum(x > 1 for x in leads) / len(leads), 4),
        "lead_over_3s": round(sum(x > 3 for x in leads) / len(leads), 4),
        "lead_over_10s": round(sum(x > 10 for x in leads) / len(leads), 4),
        "lead_hours": round(sum(leads) / 3600, 3),
        "cuts": len(pieces) - len(got),
        "cut_silence_hours": round(sum(p["figures"]["lead_silence"] for p in pieces if p["piece"]) / 3600, 3),
        "pieces": len(pieces), "hours": round(hours, 2),
        "pieces_kept": len(kept), "hours_kept": round(sum(p["figures"]["seconds"] for p in kept) / 3600, 2),
        "screens": screens,
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", metavar="NAME=FOLDER:SPLITS_CSV:SPLIT")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    results = {"config": CleanConfig().__dict__, "sources": {}}
    for spec in args.sources:
        name, _, rest = spec.partition("=")
        folder, splits_csv, split = rest.split(":")
        r = measure(folder, splits_csv, split, args.workers)
        results["sources"][name] = r
        print(f"{name} [{split}]: {r['files']} files; leading silence > 1 s in {r['lead_over_1s']:.1%}, > 3 s "
              f"{r['lead_over_3s']:.1%}, > 10 s {r['lead_over_10s']:.1%} ({r['lead_hours']:.2f} h trimmed); "
              f"{r['cuts']} cuts -> {r['pieces']} pieces, {r['hours']:.1f} h; kept {r['pieces_kept']} pieces, "
              f"{r['hours_kept']:.1f} h", file=sys.stderr)
        for reason, s in r["screens"].items():
            print(f"  {reason:18s} ({s['threshold']}): {s['pieces']} pieces, {s['hours']:.2f} h (alone: "
                  f"{s['pieces_alone']} pieces, {s['hours_alone']:.2f} h, {s['share_of_hours_alone']:.3%} of hours)",
                  file=sys.stderr)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
