"""Samples against real music: the sample measures of the expressive-piano model issue.

For each model: ``--samples`` pieces of ``--seconds`` sampled from ``<bos>`` with the model's default
generation settings (seeds 0, 1, ...; one at a time, as a user would), then

- the six statistics of ``hf_midi.evaluation.music_stats`` of each sample against the 5-95 % band of the
  reference pieces (the GiantMIDI test split) cut into windows of the same length: the fraction of
  samples inside, per statistic and on all six at once;
- stuck notes: the share of notes longer than 8 s across the samples and the longest note;
- composing speed (events/s, one torch thread, this machine);
- the MGEval distances (``hf_midi.evaluation.mgeval``): kernel-density overlap and KL divergence of five features
  between the samples and reference windows of the same length, and the same between a held-out fifth
  of the reference pieces and the rest (the floor: what real music scores against real music);
- the listener's checks (``hf_midi.evaluation.listener``): each sample's faults (late start, long
  silence, sparse, early end, stuck note; the pedal held over 90 % apart), beside the same counts for
  one random window of each piece of the reference and of each ``--listen`` set;
- composing speed: events/s and the slowest piece's real-time factor (music seconds per wall second);
- with ``--train``: memorisation, the share of each sample's 8-note pitch n-grams found in the training
  set, beside the same share for the reference windows (real pieces the model never saw: the floor).

Usage (the reference: a folder written by ``hf-midi prepare --pretokenize``, or a packed corpus and one
of its evaluation sets)::

    python benchmarks/eval_samples.py --model default --model base --reference DATA/giantmidi:test \\
        --out docs/samples --json benchmarks/results/samples.json

The last line printed is one JSON object with every figure.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from hf_midi.evaluation import mgeval, music_stats
from hf_midi.evaluation.listener import PEDAL_HELD, listen, listen_ids, listener_report, real_windows
from hf_midi.loading import load_pipeline
from hf_midi.utils import atomic_write_bytes


def reference_pieces(spec: str) -> list[np.ndarray]:
    folder, _, split = spec.rpartition(":")
    if Path(folder, "manifest.json").is_file():  # a packed corpus: SPLIT names an evaluation set
        from hf_midi.data.packed import load_eval

        return [ids for _, ids in load_eval(folder, split)]
    from hf_midi.data.packed import read_prepared

    return [ids for _, ids in read_prepared(folder, split)]


def id_windows(pieces, seconds: float, min_notes: int = 10) -> list[np.ndarray]:
    """Every piece cut into consecutive ``seconds``-long windows of its event ids (a token belongs to the
    window of the time it happens at); windows with fewer than ``min_notes`` onsets are left out."""
    from hf_midi.remote_code.codec import NOTE_OFF, STEPS_PER_SECOND, shift_steps

    width = int(round(seconds * STEPS_PER_SECOND))
    out = []
    for ids in pieces:
        ids = np.asarray(ids, dtype=np.int64)
        ids = ids[ids < 390]  # events only
        steps = shift_steps(ids)
        which = (np.cumsum(steps) - steps) // width
        for w in np.unique(which):
            part = ids[which == w]
            if (part < NOTE_OFF).sum() >= min_notes:
                out.append(part)
    return out


def model_arm(spec: str) -> tuple[str, dict]:
    """``NAME[@S|off][,t=T][,p=P][,rules=off]`` -> (model name, pipeline settings); ValueError naming what is
    wrong. ``rules=off`` turns off the two rules of a piece composed to a length (the first note at once, no
    end before the asked seconds)."""
    name, _, rest = spec.partition("@")
    guard, *settings = rest.split(",") if rest else [""]
    extra = {}
    try:
        if guard:
            extra["max_note_seconds"] = None if guard == "off" else float(guard)
        for item in settings:
            key, _, value = item.partition("=")
            if key == "rules" and value in ("on", "off"):
                extra["sound_at_once"], extra["allow_early_end"] = value == "on", value == "off"
                continue
            if key not in ("t", "p"):
                raise ValueError(f"{spec!r}: unknown setting {item!r} (t=TEMPERATURE, p=TOP_P or rules=on|off)")
            extra["temperature" if key == "t" else "top_p"] = float(value)
    except ValueError as e:
        raise ValueError(str(e) if spec in str(e) else f"{spec!r}: not a number in {rest!r}") from None
    return name, extra


def _listener_line(report: dict) -> str:
    faults = ", ".join(f"{n} {name}" for name, n in report["faults"].items() if n)
    return (f"{report['broken']}/{report['pieces']} broken ({faults or 'no fault'}); pedal held over 90 %: "
            f"{report[PEDAL_HELD]}/{report['pieces']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True,
                   help="a bundled model's name or a folder (repeat); NAME@S also ends notes held S seconds "
                        "(the stuck-note guard), NAME@off turns it off; NAME@S,t=T,p=P also sets temperature "
                        "and top-p (e.g. default@6,t=1.1)")
    p.add_argument("--reference", required=True, help="DIR:SPLIT of a prepared dataset, or PACKED:EVAL_SET")
    p.add_argument("--samples", type=int, default=20)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the first model's first 4 samples (MIDI, PNG) and one WAV here")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--train", action="append", default=[], metavar="DIR:SPLIT",
                   help="a training set for the memorisation check (repeat for several)")
    p.add_argument("--listen", action="append", default=[], metavar="DIR:SPLIT",
                   help="real music for the listener's checks: one random window of each piece (repeat); the "
                        "--reference set is always listened to")
    args = p.parse_args(argv)
    try:  # every arm read before any model runs, so a typo costs nothing
        arms = [model_arm(m) for m in args.model]
    except ValueError as e:
        p.error(f"--model: {e}")
    torch.set_num_threads(1)

    reference = []
    for ids in reference_pieces(args.reference):
        reference += music_stats.window_stats(np.asarray(ids), args.seconds)
    ref_notes = music_stats.long_notes(reference_pieces(args.reference))
    ref_pieces = reference_pieces(args.reference)
    ref_windows = id_windows(ref_pieces, args.seconds)
    held_out = id_windows(ref_pieces[::5], args.seconds)
    rest = id_windows([x for i, x in enumerate(ref_pieces) if i % 5], args.seconds)
    known = None
    if args.train:
        t = time.perf_counter()
        known = mgeval.training_ngrams(ids for spec in args.train for ids in reference_pieces(spec))
        print(f"training set: {len(known):,} distinct 8-note pitch n-grams ({time.perf_counter() - t:.0f} s)",
              file=sys.stderr)
    listened = {}
    for spec in dict.fromkeys([args.reference, *args.listen]):
        report = listener_report([listen(w, args.seconds) for w in real_windows(reference_pieces(spec), args.seconds)])
        listened[spec] = report
        print(f"real windows of {spec}: {_listener_line(report)}", file=sys.stderr)
    results = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__,
               "listener_real_windows": listened, "seed": args.seed,
               "reference": args.reference, "reference_windows": len(reference), "reference_long_notes": ref_notes,
               "samples": args.samples, "seconds": args.seconds,
               "mgeval_floor": mgeval.compare_sets(rest, held_out),
               "memorisation_floor": mgeval.memorisation(ref_windows, known) if known is not None else None,
               "train": args.train, "models": {}}
    for k, (model, (name, extra)) in enumerate(zip(args.model, arms)):
        pipe = load_pipeline(name)
        t0, outs, walls = time.perf_counter(), [], []
        for i in range(args.samples):
            t = time.perf_counter()
            outs += pipe(seconds=args.seconds, seed=args.seed + i, **extra)
            walls.append(time.perf_counter() - t)
        wall = time.perf_counter() - t0
        events = sum(len(o["token_ids"]) for o in outs)
        stats = [music_stats.ids_stats(o["token_ids"]) for o in outs]
        band = music_stats.band_report(stats, reference)
        res = {
            "events_per_second": events / wall, "wall_s": round(wall, 1), "events": events,
            # seconds of music per second of composing, for the slowest piece (> 1: faster than it plays)
            "slowest_piece_real_time": round(min(o["seconds"] / w for o, w in zip(outs, walls)), 2),
            "slowest_piece_wall_s": round(max(walls), 2),
            "sample_seconds": [round(o["seconds"], 2) for o in outs],
            "band": band, "min_fraction_inside": min(b["fraction_inside"] for b in band.values()),
            "inside_all": music_stats.inside_all(stats, band),
            "long_notes": music_stats.long_notes(o["token_ids"] for o in outs),
            "mgeval": mgeval.compare_sets(ref_windows, [np.asarray(o["token_ids"]) for o in outs]),
        }
        if known is not None:
            res["memorisation"] = mgeval.memorisation([np.asarray(o["token_ids"]) for o in outs], known)
        res["listener"] = listener_report([listen_ids(o["token_ids"], args.seconds) for o in outs])
        res["listener"]["broken_seeds"] = {args.seed + i: f for i, f in res["listener"].pop("broken_pieces").items()}
        results["models"][model] = res
        print(f"{model}: listener {_listener_line(res['listener'])}", file=sys.stderr)
        print(f"{model}: {res['events_per_second']:.0f} events/s, slowest piece {res['slowest_piece_real_time']:.1f}x "
              f"real time, inside all {res['inside_all']:.2f}, "
              f"min per statistic {res['min_fraction_inside']:.2f}, "
              f"notes > 8 s {res['long_notes']['share_longer']:.4%}, "
              f"longest {res['long_notes']['longest_seconds']:.1f} s", file=sys.stderr)
        floor = results["mgeval_floor"]
        print(f"  MGEval overlap {res['mgeval']['mean_overlap']:.3f} (floor {floor['mean_overlap']:.3f}), "
              f"KL {res['mgeval']['mean_kl']:.3f} (floor {floor['mean_kl']:.3f})", file=sys.stderr)
        if known is not None:
            m, f = res["memorisation"], results["memorisation_floor"]
            print(f"  copied 8-grams {m['mean']:.3f} (floor {f['mean']:.3f}), of distinct ones "
                  f"{m['distinct_mean']:.3f} (floor {f['distinct_mean']:.3f}), most in one piece {m['max']:.3f}",
                  file=sys.stderr)
        for name, b in band.items():
            print(f"  {name:20s} band [{b['band_low']:.2f}, {b['band_high']:.2f}]  median {b['sample_median']:.2f}"
                  f"  inside {b['inside']}/{b['total']}", file=sys.stderr)
        if args.out and k == 0:
            from hf_midi.render import write_samples

            write_samples(outs, args.out)
    if args.json:
        atomic_write_bytes(args.json, (json.dumps(results, indent=1) + "\n").encode())
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
