"""Search while composing, measured: the same seeds composed with each search setting, against real 30-s windows.

    python benchmarks/bench_search.py --model base --setting k1 --setting best4 --setting sample4 \\
        [--pieces 40] [--seconds 30] [--data ../shared/data] [--out results/search_base.json] [--keep DIR]

A setting is ``k1`` (no search), ``bestK`` (the critic's best of K, chunk by chunk), ``sampleK`` (one of K drawn
by the critic's weights) or ``bestK-lpW`` (best of K by the critic plus W x the mean log-probability a token),
each with ``-rpN`` (``restrike_penalty`` N nats) or ``-rpoff`` (none) where not the model's own.
Each composes ``--pieces`` pieces (seeds 0..N-1) of ``--seconds`` with the model's other shipped settings, one
thread, one after another. Per setting:

- the degenerate-mode checks (``listener.degenerate``: the share of pieces beyond real windows' 95th
  percentile, each check) and the listener's broken count;
- blips (notes of one 10-ms step), notes a second, the median re-strike share;
- a judge that is not the critic (``evaluation.classifier``: 50 statistics, logistic regression, 5 folds,
  5 draws of real windows of GiantMIDI and POP909 test): its accuracy telling these pieces from real ones;
- speed: events a CPU-second, the real-time factor, the first sound (the first chunk's wall time: what the
  Space's player waits for) and the longest wait between chunks were the piece played as it came.

``--keep DIR``: the pieces as MIDI and piano-roll PNGs (to look at). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import time
from pathlib import Path

import numpy as np
import torch

from hf_midi.evaluation.classifier import summary_features, two_sample_accuracy
from hf_midi.evaluation.critic_training import real_pieces
from hf_midi.evaluation.listener import DEGENERATE, degenerate, listen_ids, listener_report, real_windows
from hf_midi.loading import load_pipeline
from hf_midi.remote_code.codec import PAD_ID, ids_to_notes

SETTING = re.compile(r"^(k1|(best|sample)(\d+)(-lp([\d.]+))?)(-rp([\d.]+|off))?$")


def parse_setting(text: str) -> dict:
    m = SETTING.match(text)
    if not m:
        raise SystemExit(f"--setting {text!r}: k1, bestK, sampleK or bestK-lpW, each with -rpN (restrike_penalty "
                         "N nats) or -rpoff (none) if not the model's own")
    restrike = {} if m.group(6) is None else {"restrike_penalty": None if m.group(7) == "off" else float(m.group(7))}
    if m.group(1) == "k1":
        return {"candidates": 1} | restrike
    return {"candidates": int(m.group(3)), "select": m.group(2), "logprob_share": float(m.group(5) or 0.0)} | restrike


def waits(report: list[dict]) -> tuple[float, float]:
    """(first sound, longest wait): playback starts when the first chunk is kept; chunk i, which starts at
    music time a_i, is late by its wall time minus (start + a_i)."""
    if not report:
        return 0.0, 0.0
    start, music, longest = report[0]["wall"], 0.0, 0.0
    for r in report:
        longest = max(longest, r["wall"] - (start + music))
        music += r["seconds"]
    return report[0]["wall"], max(longest, 0.0)


def compose(pipe, setting: dict, seeds, seconds: float, keep: Path | None, label: str, threads: int = 1) -> list[dict]:
    out = []
    for seed in seeds:
        report: list = []
        wall, cpu = time.perf_counter(), time.process_time()
        [piece] = pipe(seconds=seconds, seed=seed, threads=threads, return_prompt=False, search_report=report,
                       **setting)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        ids = [t for t in piece["token_ids"] if t < PAD_ID]
        first, longest = waits(report) if report else (None, None)
        notes = ids_to_notes(np.asarray(ids))
        out.append({"seed": seed, "ids": ids, "wall": wall, "cpu": cpu, "first_sound": first, "longest_wait": longest,
                    "degenerate": degenerate(notes, seconds)["modes"], "listened": listen_ids(ids, seconds),
                    "blips": int(((notes["end"] - notes["start"]) <= 1).sum()), "notes": int(len(notes["start"])),
                    "restrike_share": degenerate(notes, seconds)["restrike_share"],
                    "features": summary_features(notes, seconds)})
        if keep is not None:
            from hf_midi.render import piano_roll_png

            folder = keep / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"seed{seed:03d}.mid").write_bytes(piece["midi"])
            piano_roll_png(piece["score"], path=folder / f"seed{seed:03d}.png")
    return out


def summary(pieces: list[dict], real: np.ndarray, seconds: float) -> dict:
    n = len(pieces)
    notes = sum(p["notes"] for p in pieces)
    judge = ({"accuracy": None, "accuracy_std": None} if real is None
             else two_sample_accuracy(real, np.array([p["features"] for p in pieces])))
    walls = [p["wall"] for p in pieces]
    firsts = [p["first_sound"] for p in pieces if p["first_sound"] is not None]
    longest = [p["longest_wait"] for p in pieces if p["longest_wait"] is not None]
    return {
        "pieces": n,
        "degenerate_share": {m: round(sum(m in p["degenerate"] for p in pieces) / n, 4) for m in DEGENERATE},
        "degenerate_pieces": sum(bool(p["degenerate"]) for p in pieces),
        "listener_broken": listener_report([p["listened"] for p in pieces])["broken"],
        "listener_faults": listener_report([p["listened"] for p in pieces])["faults"],
        "blip_share": round(sum(p["blips"] for p in pieces) / max(notes, 1), 4),
        "median_piece_blip_share": round(float(np.median([p["blips"] / max(p["notes"], 1) for p in pieces])), 4),
        "notes_per_second_median": round(float(np.median([p["notes"] / seconds for p in pieces])), 2),
        "restrike_share_median": round(float(np.median([p["restrike_share"] for p in pieces])), 4),
        "judge_accuracy": judge["accuracy"], "judge_accuracy_std": judge["accuracy_std"],
        "events_per_cpu_second": round(sum(len(p["ids"]) for p in pieces) / sum(p["cpu"] for p in pieces), 1),
        "real_time_factor_median": round(float(np.median([seconds / w for w in walls])), 2),
        "real_time_factor_slowest": round(seconds / max(walls), 2),
        "first_sound_median": round(float(np.median(firsts)), 3) if firsts else None,
        "first_sound_max": round(max(firsts), 3) if firsts else None,
        "longest_wait_max": round(max(longest), 3) if longest else None,
        "pieces_with_a_wait": sum(w > 0 for w in longest),
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="base")
    p.add_argument("--setting", action="append", default=None)
    p.add_argument("--pieces", type=int, default=40)
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--out", default=None)
    p.add_argument("--keep", default=None, help="write each piece's MIDI and piano roll here")
    p.add_argument("--critic", default=None, help="a critic folder (default: the model's, else the bundled one)")
    p.add_argument("--threads", type=int, default=1, help="torch threads while composing")
    p.add_argument("--speed-only", action="store_true", help="time the pieces; leave out the judge and the checks")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = args.setting or ["k1", "best4"]
    real = None if args.speed_only else np.array([summary_features(w, args.seconds) for w in real_windows(
        real_pieces(Path(args.data), "test"), args.seconds, seed=0)])
    pipe = load_pipeline(args.model)
    pipe(seconds=1.0, seed=0, threads=args.threads, candidates=1)  # warm-up: the fast loop's packed weights
    seeds = range(args.first_seed, args.first_seed + args.pieces)
    report = {}
    for text in settings:
        setting = parse_setting(text)
        if args.critic and setting["candidates"] > 1:
            setting["critic"] = args.critic
        pieces = compose(pipe, setting, seeds, args.seconds, Path(args.keep) if args.keep else None,
                         f"{args.model}-{text}", args.threads)
        report[text] = summary(pieces, real, args.seconds)
        print(text, json.dumps(report[text]), flush=True)
    if "k1" in report:
        for text in settings:
            if text != "k1":
                report[text]["speed_over_k1"] = round(report[text]["events_per_cpu_second"]
                                                      / report["k1"]["events_per_cpu_second"], 3)
    out = {"bench": "search", "model": args.model, "pieces": args.pieces, "seconds": args.seconds,
           "threads": args.threads, "real_windows": None if real is None else len(real),
           "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__, "results": report}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
