"""What the canonical order changes: the same seeds composed with and without CanonicalOrderLogitsProcessor.

    python benchmarks/bench_canonical.py [--model base --model small] [--pieces 20] [--seconds 30]

Each model composes ``--pieces`` pieces (seeds 0..N-1) of ``--seconds`` with its shipped settings, once
with the canonical order off (as shipped) and once on; and ``--poly-pieces`` more under ``max_polyphony=3``
each way, to measure the limit on the decoded notes. Per setting: the share of notes of one 10-ms step
(blips: a NOTE_ON and its NOTE_OFF in one instant; ASAP performances: 95th percentile 1.2 % of notes under
20 ms), pitches off the piano's keys, notes a second, the share of onsets re-striking a pitch struck in the
last 0.3 s, the order's faults in the ids (``order_faults``: what the encoder could not have written), the
listener's broken count, the degenerate-mode checks (``hf_midi.evaluation.listener.degenerate``), the most
keys sounding at once under ``max_polyphony=3`` (pedal aside), and events a second of composing (one thread,
side by side). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from hf_midi.evaluation.listener import DEGENERATE, degenerate, listen_ids, listener_report
from hf_midi.evaluation.music_stats import order_faults
from hf_midi.loading import load_pipeline
from hf_midi.remote_code.codec import PAD_ID, PIANO_KEYS, ids_to_notes


def piece_figures(ids: list[int], seconds: float) -> dict:
    events = [t for t in ids if t < PAD_ID]
    n = ids_to_notes(np.asarray(ids))
    start, end, pitch = n["start"], n["end"], n["pitch"]
    # keys sounding at once (the pedal aside): +1 at each start, -1 at each end
    times = np.concatenate((start, end))
    delta = np.concatenate((np.ones(len(start)), -np.ones(len(end))))
    keys = np.cumsum(delta[np.lexsort((delta, times))]) if len(times) else np.zeros(1)
    listened, modes = listen_ids(ids, seconds), degenerate(n, seconds)
    return {"degenerate": modes["modes"], "restrike_share": modes["restrike_share"], "notes": int(len(start)),
            "blips": int(((end - start) <= 1).sum()),
            "off_piano": int(((pitch < PIANO_KEYS[0]) | (pitch > PIANO_KEYS[1])).sum()),
            "order_faults": len(order_faults(events)), "tokens": len(events),
            "max_keys": int(keys.max()), "notes_per_second": listened["notes_per_second"], "listened": listened}


def compose(pipe, seeds, seconds: float, canonical: bool, **controls) -> tuple[list[dict], float, int]:
    figures, took, tokens = [], 0.0, 0
    for seed in seeds:
        t = time.perf_counter()
        [piece] = pipe(seconds=seconds, seed=seed, threads=1, canonical_order=canonical, return_prompt=False,
                       **controls)
        took += time.perf_counter() - t
        figures.append(piece_figures(piece["token_ids"], seconds))
        tokens += len(piece["token_ids"])
    return figures, took, tokens


def summary(figures: list[dict]) -> dict:
    notes = sum(f["notes"] for f in figures)
    return {
        "pieces": len(figures),
        "blip_share": round(sum(f["blips"] for f in figures) / max(notes, 1), 4),
        "median_piece_blip_share": round(float(np.median([f["blips"] / max(f["notes"], 1) for f in figures])), 4),
        "off_piano_notes": sum(f["off_piano"] for f in figures),
        "pieces_off_piano": sum(f["off_piano"] > 0 for f in figures),
        "notes_per_second_median": round(float(np.median([f["notes_per_second"] for f in figures])), 2),
        "restrike_share_median": round(float(np.median([f["restrike_share"] for f in figures])), 4),
        "order_faults": sum(f["order_faults"] for f in figures), "tokens": sum(f["tokens"] for f in figures),
        "listener": {k: v for k, v in listener_report([f["listened"] for f in figures]).items()
                     if k != "broken_pieces"},
        "max_keys": max(f["max_keys"] for f in figures),
        # pieces beyond real 30-s windows' 95th percentile on each degenerate-mode check
        "degenerate": {m: sum(m in f["degenerate"] for f in figures) for m in DEGENERATE},
        "degenerate_pieces": sum(bool(f["degenerate"]) for f in figures),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", default=None)
    p.add_argument("--pieces", type=int, default=20)
    p.add_argument("--poly-pieces", type=int, default=10)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    models = args.model or ["base", "small"]
    report: dict = {}
    for name in models:
        pipe = load_pipeline(name)
        pipe(seconds=1.0, seed=0, threads=1)  # warm-up: the fast loop's packed weights
        for canonical in (False, True):
            key = f"{name}/{'canonical' if canonical else 'shipped'}"
            figures, took, tokens = compose(pipe, range(args.pieces), args.seconds, canonical)
            poly, _, _ = compose(pipe, range(100, 100 + args.poly_pieces), args.seconds, canonical, max_polyphony=3)
            report[key] = summary(figures) | {
                "events_per_cpu_second": round(tokens / took, 1),
                "max_polyphony_3": {"max_keys": max(f["max_keys"] for f in poly),
                                    "pieces_over_3": sum(f["max_keys"] > 3 for f in poly), "pieces": len(poly)}}
            print(key, json.dumps(report[key]), flush=True)
        base, on = report[f"{name}/shipped"], report[f"{name}/canonical"]
        report[f"{name}/ratios"] = {
            "speed_canonical_over_shipped": round(on["events_per_cpu_second"] / base["events_per_cpu_second"], 3),
            "notes_per_second_canonical_over_shipped": round(
                on["notes_per_second_median"] / max(base["notes_per_second_median"], 1e-9), 3)}
    out = {"bench": "canonical", "models": models, "pieces": args.pieces, "seconds": args.seconds,
           "machine": platform.processor() or platform.machine(), "torch": torch.__version__, "results": report}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
