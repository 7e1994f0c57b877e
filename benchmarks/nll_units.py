"""NLL per event -> NLL per note and per second of music, for test sets scored before these units existed.

    python benchmarks/nll_units.py --set asap=DATA/asap:test --set giantmidi=DATA/giantmidi:test \\
        --set pop909=DATA/pop909:test --nll base:asap=2.038 --nll default:asap=2.374 ...

``hf-midi evaluate`` now reports all three (``nll_per_note``, ``nll_per_second``). For figures already
measured per event, the total NLL of a set is NLL/event x the targets scored (every token after
``<bos>``: the events and ``<eos>``), so per note = total / NOTE_ONs and per second = total / the seconds
the pieces last (their TIME_SHIFTs). This script counts targets, notes and seconds of each set (from
``hf-midi prepare --pretokenize`` folders) and converts. Per-event figures depend on the vocabulary (a
finer time grid makes more, easier tokens); per-note and per-second figures compare across
tokenisations and with published numbers. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hf_midi.data.packed import read_prepared  # noqa: E402
from hf_midi.remote_code.codec import NOTE_OFF, STEPS_PER_SECOND, shift_steps  # noqa: E402


def counts(spec: str) -> dict:
    folder, _, split = spec.rpartition(":")
    pieces = [ids for _, ids in read_prepared(folder, split)]
    events = sum(len(x) for x in pieces)
    return {"pieces": len(pieces), "events": int(events), "targets": int(events + len(pieces)),  # + <eos> each
            "notes": int(sum(int((x < NOTE_OFF).sum()) for x in pieces)),
            "seconds": float(sum(int(shift_steps(x).sum()) for x in pieces) / STEPS_PER_SECOND)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", action="append", required=True, metavar="NAME=DIR:SPLIT")
    p.add_argument("--nll", action="append", default=[], metavar="MODEL:SET=NLL_PER_EVENT")
    a = p.parse_args()
    sets = {}
    for s in a.set:
        name, _, spec = s.partition("=")
        sets[name] = counts(spec)
        c = sets[name]
        print(f"{name}: {c['pieces']} pieces, {c['events']:,} events, {c['notes']:,} notes, "
              f"{c['seconds'] / 3600:.2f} h; {c['targets'] / c['notes']:.3f} targets a note, "
              f"{c['targets'] / c['seconds']:.2f} a second", file=sys.stderr)
    rows = {}
    for s in a.nll:
        key, _, value = s.partition("=")
        model, _, name = key.partition(":")
        c, per_event = sets[name], float(value)
        total = per_event * c["targets"]
        rows.setdefault(model, {})[name] = {"nll_per_event": per_event, "nll_per_note": round(total / c["notes"], 4),
                                            "nll_per_second": round(total / c["seconds"], 4)}
        print(f"{model:>10} {name:>10}: {per_event:.3f} nats/event = {total / c['notes']:.3f} nats/note = "
              f"{total / c['seconds']:.2f} nats/s", file=sys.stderr)
    print(json.dumps({"benchmark": "nll_units", "sets": sets, "models": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
