"""The controls (``MusicControls``): how well each holds, what it costs the music, what it costs in speed.

Adherence and music (``--samples`` pieces of ``--seconds`` per setting and model, composed from scratch
through the pipeline's default path, one batch per setting, seeds ``--seed``..):

- the hard controls hold for every note, velocity and pedal event (counts of pieces that keep to them);
- ``key``: the Krumhansl-Schmuckler key finder (``hf_midi.evaluation.adherence``) recovers the asked key
  (goal: >= 90 % of pieces, for each of four keys); ``density``: the achieved rate within +-25 % of the
  target (goal: >= 80 % of pieces, for 3, 6 and 12 notes a second);
- the listener's checks (``hf_midi.evaluation.listener``) of each setting's pieces;
- MGEval (``hf_midi.evaluation.mgeval``): the controlled pieces against real 30-s windows that meet the same
  condition (``matching_windows``: windows in the asked mode transposed to the asked tonic, in the
  range, the velocities, the density, the polyphony, without pedal), beside the uncontrolled model
  against all windows.

Speed (``--speed``; one CPU thread): plain ``model.generate()`` against the pipeline's path with the
shipped processors and with every control on, side by side (best of ``--repeats`` rounds; <eos> suppressed
so every call makes ``--tokens`` tokens), and each processor's CPU microseconds a step, alone, as the
state advances one token a call. Goals: the shipped path >= 2x plain generate(); every control on at most
15 % slower per token than the shipped path.

    python benchmarks/bench_controls.py --model small --model base --reference DATA/giantmidi:test \\
        --reference DATA/pop909:test --json benchmarks/results/controls.json
    python benchmarks/bench_controls.py --speed --model base

The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from hf_midi.evaluation import mgeval  # noqa: E402
from hf_midi.evaluation.adherence import adherence_report, matching_windows  # noqa: E402
from hf_midi.evaluation.listener import listen_ids, listener_report  # noqa: E402
from hf_midi.loading import load_pipeline  # noqa: E402
from hf_midi.remote_code.codec import BOS_ID, SUSTAIN_OFF  # noqa: E402
from hf_midi.remote_code.controls import MusicControls  # noqa: E402
from hf_midi.remote_code.generation import music_processors
from hf_midi.remote_code.performance_state import PerformanceState  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_generate import machine, measure, plays_on, versions  # noqa: E402
from eval_samples import id_windows, reference_pieces  # noqa: E402

KEYS = ("C major", "D minor", "F# major", "Bb minor")
SETTINGS = {
    "none": {},
    **{f"key {k}": {"key": k} for k in KEYS},
    "pitch_range 48-84": {"pitch_range": (48, 84)},
    "dynamics p": {"dynamics": "p"},
    "dynamics f": {"dynamics": "f"},
    **{f"density {d}": {"density": d} for d in (3, 6, 12)},
    "max_polyphony 3": {"max_polyphony": 3},
    "pedal off": {"pedal": False},
}
# Every control at once: the speed goal's "every control on", and one more adherence setting.
EVERY = {"key": "D minor", "pitch_range": (36, 96), "dynamics": "mf", "density": 6, "max_polyphony": 6, "pedal": False}
SETTINGS["every control"] = EVERY
GOALS = {"key": 0.9, "density": 0.8, "shipped_over_generate": 2.0, "every_control_slowdown": 0.15}


# --------------------------------------------------------------------------- adherence and music
def compose(pipe, settings: dict, samples: int, seconds: float, seed: int) -> tuple[list[np.ndarray], float]:
    """``samples`` pieces in one batch; returns their new event ids and the wall seconds it took."""
    t = time.perf_counter()
    with torch.inference_mode():
        out = pipe(seconds=seconds, seed=seed, num_return_sequences=samples, **settings)
    return [np.asarray(r["token_ids"][1:], dtype=np.int64) for r in out], time.perf_counter() - t


def evaluate_setting(name: str, settings: dict, pieces, windows, seconds: float, baseline_mgeval=None) -> dict:
    controls = MusicControls(**settings)
    report = adherence_report(controls, pieces, seconds) if controls else {}
    listened = listener_report([listen_ids(ids, seconds) for ids in pieces])
    real = matching_windows(controls, windows, seconds) if controls else list(windows)
    out = {"controls": controls.describe(), "adherence": report,
           "listener": {k: listened[k] for k in ("pieces", "broken", "faults", "pedal held")},
           "real_windows_matching": len(real)}
    if len(real) >= 10:
        real_listened = listener_report([listen_ids(ids, seconds) for ids in real[:200]])
        out["real_listener"] = {k: real_listened[k] for k in ("pieces", "broken", "pedal held")}
        m = mgeval.compare_sets(real, pieces)
        out["mgeval"] = {"mean_overlap": m["mean_overlap"], "mean_kl": m["mean_kl"], "pieces": m["pieces"]}
    goal = None
    if name.startswith("key "):
        goal = ("key", GOALS["key"])
    elif name.startswith("density "):
        goal = ("density", GOALS["density"])
    if goal is not None and report:
        share = report["held"][goal[0]] / report["pieces"]
        out["goal"] = {"measure": goal[0], "share": round(share, 3), "goal": goal[1], "met": share >= goal[1]}
    return out


def adherence(args) -> dict:
    windows = []
    for spec in args.reference:
        windows += id_windows(reference_pieces(spec), args.seconds)
    print(f"{len(windows)} real windows of {args.seconds:g} s from {', '.join(args.reference)}", flush=True)
    names = args.setting or list(SETTINGS)
    result = {}
    for model in args.model:
        pipe = load_pipeline(model)
        result[model] = {}
        for name in names:
            pieces, took = compose(pipe, SETTINGS[name], args.samples, args.seconds, args.seed)
            r = evaluate_setting(name, SETTINGS[name], pieces, windows, args.seconds)
            r["compose_s"] = round(took, 1)
            result[model][name] = r
            held = r["adherence"].get("held", {}) if r["adherence"] else {}
            print(f"{model} | {name}: held {held} | broken {r['listener']['broken']}/{r['listener']['pieces']} "
                  f"pedal {r['listener']['pedal held']} | real windows {r['real_windows_matching']} | "
                  f"MGEval {r.get('mgeval', {}).get('mean_overlap')}/{r.get('mgeval', {}).get('mean_kl')} | "
                  f"{r['adherence'].get('notes_per_second') if r['adherence'] else ''} | {took:.0f} s", flush=True)
    return result


# --------------------------------------------------------------------------- speed
def processor_costs_us(batch: int, calls: int = 600, repeats: int = 3) -> dict[str, float]:
    """CPU microseconds a step of each processor, alone (the shared state's advance counted apart as
    ``state``), with every control on; best of ``repeats``. Random valid-ish ids (no specials)."""
    torch.manual_seed(0)
    ids = torch.randint(0, SUSTAIN_OFF + 1, (batch, calls + 2))
    ids[:, 0] = BOS_ID
    scores = torch.randn(batch, 448)
    best: dict[str, float] = {}
    for _ in range(repeats):
        state = PerformanceState(start=1)
        processors, _ = music_processors(state, seconds=3600.0, max_note_seconds=6.0,
                                         controls=MusicControls(**EVERY))
        names = ["state"] + [type(p).__name__ for p in processors]
        spent = dict.fromkeys(names, 0.0)
        for p in processors:
            p(ids[:, :1], scores.clone())
        for n in range(2, calls + 2):
            view = ids[:, :n]
            t = time.process_time()
            state.sync(view)
            spent["state"] += time.process_time() - t
            for name, p in zip(names[1:], processors):
                s = scores.clone()
                t = time.process_time()
                p(view, s)
                spent[name] += time.process_time() - t
        for k, v in spent.items():
            best[k] = min(best.get(k, float("inf")), v / calls * 1e6)
    return {k: round(v, 1) for k, v in best.items()}


def variants(pipe, tokens: int) -> dict:
    """Plain generate(), the pipeline's path (the shipped processors) and the same with every control on."""
    bos = {b: torch.full((b, 1), BOS_ID) for b in (1, 4)}
    return {
        "generate": lambda b: pipe.model.generate(bos[b], attention_mask=torch.ones_like(bos[b]), do_sample=True,
                                                  max_new_tokens=tokens),
        "pipeline": lambda b: pipe(max_new_tokens=tokens, num_return_sequences=b),
        "pipeline/every control": lambda b: pipe(max_new_tokens=tokens, num_return_sequences=b, **EVERY),
    }


def speed(args) -> dict:
    out = {}
    for model in args.model:
        pipe = load_pipeline(model)
        plays_on(pipe.model)
        fns = variants(pipe, args.tokens)
        wall, cpu, _ = measure(fns, args.tokens, args.repeats)
        r = {"events_per_s_wall": wall, "events_per_s_cpu": cpu}
        for b in (1, 4):
            shipped = cpu[f"pipeline/b{b}"] / cpu[f"generate/b{b}"]
            slower = 1 - cpu[f"pipeline/every control/b{b}"] / cpu[f"pipeline/b{b}"]
            r[f"shipped_over_generate/b{b}"] = {"cpu": round(shipped, 2), "goal": GOALS["shipped_over_generate"],
                                                "met": shipped >= GOALS["shipped_over_generate"]}
            r[f"every_control_slowdown/b{b}"] = {"cpu": round(slower, 3), "goal": GOALS["every_control_slowdown"],
                                                 "met": slower <= GOALS["every_control_slowdown"]}
        out[model] = r
        print(model, json.dumps(r), flush=True)
    out["processor_us"] = {f"b{b}": processor_costs_us(b) for b in (1, 4)}
    print("processor µs a step:", json.dumps(out["processor_us"]), flush=True)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", default=None,
                   help="bundled name or folder (repeat; default small, base)")
    p.add_argument("--reference", action="append", default=None,
                   help="real music: DIR:SPLIT of a prepared folder or packed corpus (repeat)")
    p.add_argument("--setting", action="append", default=None, choices=list(SETTINGS), help="only these (repeat)")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--speed", action="store_true", help="measure speed instead of adherence")
    p.add_argument("--tokens", type=int, default=384)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    args.model = args.model or ["small", "base"]
    torch.set_num_threads(1)
    if not args.speed and not args.reference:
        p.error("--reference is needed for the adherence measures (or --speed)")
    started = time.perf_counter()
    result = speed(args) if args.speed else adherence(args)
    result = {"what": "speed" if args.speed else "adherence", "samples": args.samples, "seconds": args.seconds,
              "seed": args.seed, "results": result, "machine": machine(), "versions": versions(),
              "took_s": round(time.perf_counter() - started, 1), "platform": platform.platform()}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
