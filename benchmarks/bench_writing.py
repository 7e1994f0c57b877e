"""Writing with the model, measured (issue 36): fill a gap, accompany a melody, and how long each takes.

    python benchmarks/bench_writing.py fill --model base --spans 40 [--candidates K] [--keep DIR]
    python benchmarks/bench_writing.py accompany --model base --songs 90 [--candidates K]
    python benchmarks/bench_writing.py speed --model base

``fill``: spans of 4 s from test pieces (GiantMIDI and POP909 test, half each; ``--asap N`` adds N ASAP test
pieces, evaluation only), one a piece, at a seeded random place after the first 8 s. Each span is composed twice:
with K candidates weighed by what follows (b; ``--candidates``, default the pipeline's, 8) and with K = 1,
sampled without weighing (c); against the true span (a), the model's NLL of the true following 4 s (nats a
token, the same context for all three: 1024 tokens). Goal: (b) closes at least half of the gap from (c) to
(a). The listener's checks and the degenerate-mode checks on the 10 s around each span (3 s either side), for
(a), (b) and (c). ``--keep DIR``: each filled piece's 10 s, as MIDI and a piano roll with the span marked.

``accompany``: the MELODY track of POP909 test songs, its first 30 s (from its first note), accompanied with K
candidates weighed by the melody's next notes (default the pipeline's, 4; the density steered as shipped), and
with K = 1 (the melody forced, no weighing). Against each song's real accompaniment (PIANO and BRIDGE in the
same 30 s): pitch-class agreement (the share of accompaniment onsets whose pitch class sounds in the real
accompaniment in the same half second), key agreement (Krumhansl-Schmuckler on both), notes a second; a third
baseline: the real accompaniment of another test song in the same key. Every melody note is checked to be
there, exact (onset, end, pitch on the 10-ms grid). Clash: the share of accompaniment onsets, struck while a
melody note sounds, a semitone or a tritone from it in pitch class (the real accompaniment's too).

``--rows FILE`` keeps each span's or song's row as it is measured; the same command run again after a stop
measures only the rows the file lacks (the seeds are by position, so the rows are the same as in one run).

``speed``: one thread, seconds to fill a 4-s span and to accompany 30 s of melody, for K = 1, 4, 8 and the K
the model ships with (its ``fill_candidates``, ``accompany_candidates``).

The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import time
from pathlib import Path

import numpy as np
import symusic
import torch

from hf_midi.evaluation.adherence import find_key
from hf_midi.evaluation.listener import DEGENERATE, degenerate, listen
from hf_midi.loading import load_pipeline
from hf_midi.remote_code.arguments import model_setting
from hf_midi.remote_code.codec import BOS_ID, STEPS_PER_SECOND, ids_to_notes, shift_steps
from hf_midi.remote_code.processors import CLASH_INTERVALS
from hf_midi.remote_code.writing import FillPlan, follow_logprob, notes_to_ids, score_notes

SPAN, AROUND, FOLLOW, CONTEXT = 400, 300, 400, 1024  # steps: the span, either side, what follows; tokens


def split(folder: Path, csv_name: str, which: str = "test") -> list[Path]:
    with open(folder / csv_name, newline="") as f:
        return [folder / r["path"] for r in csv.DictReader(f) if r["split"] == which]


# --------------------------------------------------------------------------- fill
def choose_spans(data: Path, count: int, asap: int, seed: int = 0) -> list[tuple[Path, int]]:
    """(file, span start step): GiantMIDI and POP909 test pieces, half each, then ASAP test; a span holds notes."""
    rng = np.random.default_rng(seed)
    sources = [(split(data / "giantmidi", "split.csv"), count - count // 2), (split(data / "pop909", "split.csv"),
                                                                                count // 2)]
    if asap:
        sources.append((split(data / "asap", "split_by_piece.csv"), asap))
    out = []
    for files, n in sources:
        order = rng.permutation(len(files))
        taken = 0
        for i in order:
            if taken == n:
                break
            try:
                notes, _ = score_notes(symusic.Score(str(files[i])))
            except Exception:  # noqa: BLE001 - a file the corpus holds but symusic refuses: take another
                continue
            if not len(notes["end"]):
                continue
            last = min(int(notes["end"].max()), 180 * STEPS_PER_SECOND) - SPAN - FOLLOW - 100
            if last <= 800:
                continue
            start = int(rng.integers(800, last))
            inside = ((notes["start"] >= start) & (notes["start"] < start + SPAN)).sum()
            if inside < 4:
                continue
            out.append((files[i], start))
            taken += 1
    return out


def window(notes: dict, t0: int, t1: int) -> dict:
    """The notes of ``ids_to_notes`` beginning in [t0, t1), moved to 0 and cut at t1, with the pedal in force."""
    inside = (notes["start"] >= t0) & (notes["start"] < t1)
    before = notes["pedal_time"] < t0
    down = bool(before.any() and notes["pedal_value"][before][-1] >= 64)
    during = (notes["pedal_time"] >= t0) & (notes["pedal_time"] < t1)
    return {"start": notes["start"][inside] - t0, "end": np.minimum(notes["end"][inside], t1) - t0,
            "pitch": notes["pitch"][inside], "velocity": notes["velocity"][inside],
            "pedal_time": np.concatenate(([0] if down else [], notes["pedal_time"][during] - t0)).astype(np.int64),
            "pedal_value": np.concatenate(([127] if down else [], notes["pedal_value"][during])).astype(np.int64),
            "end_step": t1 - t0}


def follow_nll(model, ids, end: int) -> tuple[float, int]:
    """(summed NLL, tokens) of the piece's tokens in [end, end + FOLLOW)."""
    ids = np.asarray(ids)
    steps = shift_steps(ids)
    clock = np.cumsum(steps) - steps
    mask = (clock >= end) & (clock < end + FOLLOW)
    return -float(follow_logprob(model, [ids], [mask], CONTEXT)[0]), int(mask.sum())


def done_rows(args, key) -> dict:
    """The rows ``--rows FILE`` already holds (one JSON object a line), by ``key``: a long run stopped goes on."""
    path = Path(args.rows) if args.rows else None
    if path is None or not path.exists():
        return {}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {key(r): r for r in rows}


def keep_row(args, row: dict) -> None:
    print(json.dumps(row), flush=True)
    if args.rows:
        with open(args.rows, "a") as f:
            f.write(json.dumps(row) + "\n")


def run_fill(pipe, args) -> dict:
    spans = choose_spans(Path(args.data), args.spans, args.asap)
    keep = Path(args.keep) if args.keep else None
    done = done_rows(args, lambda r: (r["file"], r["start"]))
    rows = []
    for i, (path, start) in enumerate(spans):
        if (path.name, start / STEPS_PER_SECOND) in done:
            rows.append(done[path.name, start / STEPS_PER_SECOND])
            continue
        plan = FillPlan.from_piece(str(path), start / STEPS_PER_SECOND, (start + SPAN) / STEPS_PER_SECOND)
        true_ids = np.concatenate(([BOS_ID], notes_to_ids(plan.notes, plan.pedal)))
        row = {"file": path.name, "corpus": path.parts[-3] if "pop909" in str(path).lower() else path.parts[-2],
               "start": start / STEPS_PER_SECOND}
        pieces = {"true": true_ids}
        for name, k in (("weighed", args.candidates), ("sampled", 1)):
            t = time.perf_counter()
            [r] = pipe(str(path), infill=(start / STEPS_PER_SECOND, (start + SPAN) / STEPS_PER_SECOND), seed=i,
                       candidates=k, threads=1)
            row[f"{name}_wall"] = round(time.perf_counter() - t, 3)
            pieces[name] = np.asarray(r["token_ids"])
            if keep is not None and name == "weighed":
                keep.mkdir(parents=True, exist_ok=True)
                from hf_midi.render import piano_roll_png

                part = symusic.Score.from_midi(r["score"].dumps_midi()).to("second").clip(
                    (start - AROUND) / 100, (start + SPAN + AROUND) / 100).shift_time(-(start - AROUND) / 100)
                part.dump_midi(keep / f"fill-{i:02d}.mid")
                piano_roll_png(part, path=keep / f"fill-{i:02d}.png", mark=(AROUND / 100, (AROUND + SPAN) / 100))
        for name, ids in pieces.items():
            nll, tokens = follow_nll(pipe.model, ids, start + SPAN)
            row[f"{name}_nll"], row[f"{name}_tokens"] = round(nll, 3), tokens
            notes = window(ids_to_notes(ids), start - AROUND, start + SPAN + AROUND)
            heard = listen(notes, (SPAN + 2 * AROUND) / STEPS_PER_SECOND)
            row[f"{name}_broken"] = heard["broken"]
            row[f"{name}_faults"] = heard["faults"]
            row[f"{name}_modes"] = degenerate(notes, (SPAN + 2 * AROUND) / STEPS_PER_SECOND)["modes"]
        keep_row(args, row)
        rows.append(row)
    out = {"spans": len(rows)}
    for name in ("true", "weighed", "sampled"):
        tokens = sum(r[f"{name}_tokens"] for r in rows)
        out[f"{name}_nll_per_token"] = round(sum(r[f"{name}_nll"] for r in rows) / max(tokens, 1), 4)
        out[f"{name}_broken"] = sum(r[f"{name}_broken"] for r in rows)
        out[f"{name}_degenerate"] = {m: sum(m in r[f"{name}_modes"] for r in rows) for m in DEGENERATE}
    a, b, c = (np.mean([r[f"{n}_nll"] for r in rows]) for n in ("true", "weighed", "sampled"))
    out["gap_closed"] = round(float((c - b) / (c - a)), 3) if c != a else None
    out["mean_nll_true_weighed_sampled"] = [round(float(x), 3) for x in (a, b, c)]
    out["weighed_wins"] = sum(r["weighed_nll"] < r["sampled_nll"] for r in rows)
    out["wall_weighed_mean"] = round(float(np.mean([r["weighed_wall"] for r in rows])), 3)
    out["wall_sampled_mean"] = round(float(np.mean([r["sampled_wall"] for r in rows])), 3)
    return out


# --------------------------------------------------------------------------- accompany
def song_parts(path: Path, seconds: float = 30.0) -> tuple[dict, dict] | None:
    """(melody, real accompaniment) of a POP909 song: its first ``seconds`` from the melody's first note."""
    score = symusic.Score(str(path))
    names = [t.name.upper() for t in score.tracks]
    if "MELODY" not in names:
        return None
    melody, _ = score_notes(score, names.index("MELODY"))
    accompaniment = [score_notes(score, names.index(n))[0] for n in ("PIANO", "BRIDGE") if n in names]
    if not len(melody["start"]) or not accompaniment:
        return None
    t0, width = int(melody["start"].min()), int(seconds * STEPS_PER_SECOND)

    def cut(n):
        inside = (n["start"] >= t0) & (n["start"] < t0 + width)
        return {"start": n["start"][inside] - t0, "end": np.minimum(n["end"][inside], t0 + width) - t0,
                "pitch": n["pitch"][inside], "velocity": n["velocity"][inside]}

    real = [cut(n) for n in accompaniment]
    real = {k: np.concatenate([r[k] for r in real]) for k in ("start", "end", "pitch", "velocity")}
    return cut(melody), real


def pc_agreement(notes: dict, real: dict, width: int = 50) -> float | None:
    """The share of ``notes``' onsets whose pitch class sounds in ``real`` within the same half second."""
    if not len(notes["start"]):
        return None
    hits = 0
    for s, p in zip(notes["start"], notes["pitch"]):
        b0 = (s // width) * width
        sounding = (real["start"] < b0 + width) & (real["end"] > b0)
        hits += int((p % 12) in set((real["pitch"][sounding] % 12).tolist()))
    return hits / len(notes["start"])


def clash_share(notes: dict, melody: dict) -> float | None:
    """The share of ``notes``' onsets struck while a melody note sounds that lie a semitone or a tritone (in pitch
    class) from one of them: what a listener hears as rubbing against the tune."""
    hits = heard = 0
    for s, p in zip(notes["start"], notes["pitch"]):
        sounding = (melody["start"] <= s) & (melody["end"] > s)
        if sounding.any():
            heard += 1
            hits += bool({(int(p) - int(q)) % 12 for q in melody["pitch"][sounding]} & set(CLASH_INTERVALS))
    return hits / heard if heard else None


def key_of(notes: dict):
    return find_key(notes_to_ids(notes)) if len(notes["start"]) else None


def run_accompany(pipe, args) -> dict:
    songs = split(Path(args.data) / "pop909", "split.csv")[: args.songs]
    parts = {p.name: song_parts(p) for p in songs}
    parts = {k: v for k, v in parts.items() if v is not None and len(v[0]["start"]) and len(v[1]["start"])}
    keys = {k: key_of(v[1]) for k, v in parts.items()}
    done = done_rows(args, lambda r: r["song"])
    rows = []
    for i, (name, (melody, real)) in enumerate(parts.items()):
        if name in done:
            rows.append(done[name])
            continue
        given = [(int(a) / 100, int(b) / 100, int(p), int(v)) for a, b, p, v in
                 zip(melody["start"], melody["end"], melody["pitch"], melody["velocity"])]
        row = {"song": name, "melody_notes": len(given), "real_nps": round(len(real["start"]) / 30, 3),
               "real_key": list(keys[name]) if keys[name] else None, "real_clash": clash_share(real, melody)}
        for label, k in (("weighed", args.candidates), ("forced", 1)):
            t = time.perf_counter()
            [r] = pipe(melody=given, accompany=True, seed=i, candidates=k, threads=1)
            row[f"{label}_wall"] = round(time.perf_counter() - t, 3)
            mel, own = (score_notes(symusic.Score.from_midi(r["midi"]), j)[0] for j in (0, 1))
            exact = set(zip(mel["start"].tolist(), mel["end"].tolist(), mel["pitch"].tolist())) == set(
                zip(melody["start"].tolist(), melody["end"].tolist(), melody["pitch"].tolist()))
            composed = ids_to_notes(np.asarray(r["token_ids"]))
            in_events = set(zip(melody["start"].tolist(), melody["end"].tolist(), melody["pitch"].tolist())) <= set(
                zip(composed["start"].tolist(), composed["end"].tolist(), composed["pitch"].tolist()))
            row[f"{label}_exact"] = bool(exact and in_events)
            row[f"{label}_agreement"] = pc_agreement(own, real)
            row[f"{label}_clash"] = clash_share(own, melody)
            key = key_of(own)
            row[f"{label}_key"] = list(key) if key else None
            row[f"{label}_same_key"] = key is not None and key == keys[name]
            row[f"{label}_nps"] = round(len(own["start"]) / 30, 3)
            row[f"{label}_broken"] = listen(composed, 30.0)["broken"]
            row[f"{label}_modes"] = degenerate(composed, 30.0)["modes"]
        other = [o for o in parts if o != name and keys[o] == keys[name]]
        if other:
            donor = parts[other[i % len(other)]][1]
            row["other_song"] = other[i % len(other)]
            row["other_agreement"] = pc_agreement(donor, real)
            row["other_nps"] = round(len(donor["start"]) / 30, 3)
            row["other_clash"] = clash_share(donor, melody)
        keep_row(args, row)
        rows.append(row)
    out = {"songs": len(rows)}
    for label in ("weighed", "forced", "other"):
        values = [r[f"{label}_agreement"] for r in rows if r.get(f"{label}_agreement") is not None]
        out[f"{label}_agreement"] = round(float(np.mean(values)), 4) if values else None
        out[f"{label}_songs"] = len(values)
        if label != "other":
            out[f"{label}_same_key"] = round(float(np.mean([r[f"{label}_same_key"] for r in rows])), 4)
            out[f"{label}_nps"] = round(float(np.mean([r[f"{label}_nps"] for r in rows])), 3)
            out[f"{label}_broken"] = sum(r[f"{label}_broken"] for r in rows)
            out[f"{label}_all_exact"] = all(r[f"{label}_exact"] for r in rows)
            out[f"{label}_degenerate"] = {m: sum(m in r[f"{label}_modes"] for r in rows) for m in DEGENERATE}
            out[f"{label}_wall_mean"] = round(float(np.mean([r[f"{label}_wall"] for r in rows])), 3)
    for label in ("real", "weighed", "forced", "other"):
        values = [r[f"{label}_clash"] for r in rows if r.get(f"{label}_clash") is not None]
        out[f"{label}_clash"] = round(float(np.mean(values)), 4) if values else None
    out["real_nps"] = round(float(np.mean([r["real_nps"] for r in rows])), 3)
    return out


# --------------------------------------------------------------------------- speed
def run_speed(pipe, args) -> dict:
    data = Path(args.data)
    fills = choose_spans(data, 4, 0, seed=1)[:3]
    songs = [p for p in split(data / "pop909", "split.csv")[:6] if song_parts(p)][:2]
    out = {}
    pipe(str(fills[0][0]), infill=(fills[0][1] / 100, (fills[0][1] + SPAN) / 100), seed=0, threads=1)  # warm
    shipped = {model_setting(pipe.model, "fill_candidates"), model_setting(pipe.model, "accompany_candidates")}
    ks = sorted({1, 4, 8} | shipped)
    out["shipped_fill_candidates"] = model_setting(pipe.model, "fill_candidates")
    out["shipped_accompany_candidates"] = model_setting(pipe.model, "accompany_candidates")
    for k in ks:
        walls = []
        for j, (path, start) in enumerate(fills):
            t = time.perf_counter()
            pipe(str(path), infill=(start / 100, (start + SPAN) / 100), seed=j, candidates=k, threads=1)
            walls.append(time.perf_counter() - t)
        out[f"fill_4s_k{k}_seconds"] = round(float(np.mean(walls)), 3)
        walls = []
        for j, path in enumerate(songs):
            melody, _ = song_parts(path)
            given = [(int(a) / 100, int(b) / 100, int(p), int(v)) for a, b, p, v in
                     zip(melody["start"], melody["end"], melody["pitch"], melody["velocity"])]
            t = time.perf_counter()
            pipe(melody=given, accompany=True, seed=j, candidates=k, threads=1)
            walls.append(time.perf_counter() - t)
        out[f"accompany_30s_k{k}_seconds"] = round(float(np.mean(walls)), 3)
        out[f"accompany_30s_k{k}_real_time"] = round(30.0 / out[f"accompany_30s_k{k}_seconds"], 3)
    out["fill_k4_over_k1"] = round(out["fill_4s_k4_seconds"] / out["fill_4s_k1_seconds"], 3)
    out["accompany_k4_over_k1"] = round(out["accompany_30s_k4_seconds"] / out["accompany_30s_k1_seconds"], 3)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=("fill", "accompany", "speed"))
    p.add_argument("--model", default="base")
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--candidates", type=int, default=None,
                   help="K for the weighed setting (default: the pipeline's, GENERATION_DEFAULTS)")
    p.add_argument("--spans", type=int, default=40)
    p.add_argument("--asap", type=int, default=0)
    p.add_argument("--songs", type=int, default=90)
    p.add_argument("--keep", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--rows", default=None,
                   help="a JSON-lines file: each span's or song's row is added as it is measured, and a run "
                        "started again with the same file measures only what it lacks")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    pipe = load_pipeline(args.model)
    began = time.perf_counter()
    result = {"fill": run_fill, "accompany": run_accompany, "speed": run_speed}[args.part](pipe, args)
    default = model_setting(pipe.model, "accompany_candidates" if args.part == "accompany" else "fill_candidates")
    result.update(part=args.part, model=args.model, candidates=args.candidates or default,
                  wall=round(time.perf_counter() - began),
                  machine=f"{platform.machine()}, {torch.get_num_threads()} thread, torch {torch.__version__}")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
