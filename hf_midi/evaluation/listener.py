"""The listener's checks: the faults a listener hears in a piece asked to last ``seconds``.

A piece is *broken* when it has any of the five faults of ``FAULTS``:

- ``late start``: no note begins in the first second;
- ``long silence``: no key is held for more than 4 s (before the first note and after the last one
  included, up to the asked length);
- ``sparse``: fewer than 2 notes a second over the piece (up to the asked length);
- ``early end``: the music ends before 90 % of the asked length;
- ``stuck note``: a note sounds for more than 8 s.

Reported apart, since real music does it too (7-11 % of real 30-s windows): ``pedal held``, the
sustain pedal down over 90 % of the piece. The same checks run on random windows of real music
(``real_windows``), so that every count has a reference beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..remote_code.codec import STEPS_PER_SECOND, ids_to_notes, seconds_to_steps

FAULTS = ("late start", "long silence", "sparse", "early end", "stuck note")
PEDAL_HELD = "pedal held"


@dataclass(frozen=True)
class ListenerLimits:
    """Where each check draws its line."""

    first_note_seconds: float = 1.0
    max_silence_seconds: float = 4.0
    min_notes_per_second: float = 2.0
    min_length_share: float = 0.9
    max_note_seconds: float = 8.0
    max_pedal_share: float = 0.9


def listen(notes: dict, seconds: float, limits: ListenerLimits = ListenerLimits()) -> dict:
    """The faults of one piece: ``notes`` as ``ids_to_notes`` gives them (``start``, ``end`` in 10 ms
    steps, ``pedal_time``/``pedal_value``, ``end_step``), asked to last ``seconds``.

    Returns ``faults`` (the names of ``FAULTS`` it has, in that order), ``broken``, ``pedal_held`` and the
    figures behind them: ``first_note``, ``longest_silence``, ``notes_per_second``, ``length``,
    ``longest_note``, ``pedal_share`` (seconds or shares)."""
    asked = seconds_to_steps(seconds)
    start = np.asarray(notes["start"], np.int64)
    end = np.asarray(notes["end"], np.int64)
    length = max(int(notes.get("end_step", 0)), int(end.max()) if len(end) else 0)
    horizon = min(length, asked) if length else asked
    if len(start):
        order = np.argsort(start, kind="stable")
        s, e = start[order], end[order]
        reach = np.maximum.accumulate(e)
        gaps = np.concatenate(([s[0]], s[1:] - reach[:-1], [horizon - reach[-1]]))
        longest_silence = max(int(gaps.max()), 0)
        first = int(s[0])
        longest_note = int((end - start).max())
    else:
        longest_silence, first, longest_note = asked, asked, 0
    pedal = _pedal_steps(np.asarray(notes["pedal_time"], np.int64), np.asarray(notes["pedal_value"]), horizon)
    fig = {
        "first_note": first / STEPS_PER_SECOND,
        "longest_silence": longest_silence / STEPS_PER_SECOND,
        "notes_per_second": len(start) * STEPS_PER_SECOND / max(horizon, 1),
        "length": length / STEPS_PER_SECOND,
        "longest_note": longest_note / STEPS_PER_SECOND,
        "pedal_share": pedal / max(horizon, 1),
    }
    checks = {
        "late start": fig["first_note"] >= limits.first_note_seconds,
        "long silence": fig["longest_silence"] > limits.max_silence_seconds,
        "sparse": fig["notes_per_second"] < limits.min_notes_per_second,
        "early end": length < limits.min_length_share * asked,
        "stuck note": fig["longest_note"] > limits.max_note_seconds,
    }
    faults = [name for name in FAULTS if checks[name]]
    return {"faults": faults, "broken": bool(faults), "pedal_held": fig["pedal_share"] > limits.max_pedal_share,
            **{k: round(float(v), 3) for k, v in fig.items()}}


def _pedal_steps(times: np.ndarray, values: np.ndarray, horizon: int) -> int:
    """Steps in [0, horizon) with the pedal down, from CC64 changes (value >= 64: down)."""
    down_at, total = None, 0
    for t, v in zip(times.tolist(), values.tolist()):
        if v >= 64 and down_at is None:
            down_at = t
        elif v < 64 and down_at is not None:
            total += max(0, min(t, horizon) - min(down_at, horizon))
            down_at = None
    if down_at is not None:
        total += max(0, horizon - min(down_at, horizon))
    return total


def listen_ids(ids, seconds: float, limits: ListenerLimits = ListenerLimits()) -> dict:
    """``listen`` on event ids (special tokens allowed; a prompt's part should be cut off first)."""
    return listen(ids_to_notes(np.asarray(ids)), seconds, limits)


def real_windows(pieces, seconds: float, seed: int = 0) -> list[dict]:
    """One random ``seconds``-long window of each piece (event ids) as ``listen`` takes it: the notes
    that begin inside, cut at the window's end, and the pedal in force. Pieces shorter than
    ``seconds`` are left out."""
    rng = np.random.default_rng(seed)
    width = seconds_to_steps(seconds)
    out = []
    for ids in pieces:
        d = ids_to_notes(np.asarray(ids))
        total = max(int(d["end_step"]), int(d["end"].max()) if len(d["end"]) else 0)
        if total < width:
            continue
        t0 = int(rng.integers(0, total - width + 1))
        inside = (d["start"] >= t0) & (d["start"] < t0 + width)
        before = d["pedal_time"] < t0
        down = bool(before.any() and d["pedal_value"][before][-1] >= 64)
        during = (d["pedal_time"] >= t0) & (d["pedal_time"] < t0 + width)
        ptime = np.concatenate(([0] if down else [], d["pedal_time"][during] - t0)).astype(np.int64)
        pval = np.concatenate(([127] if down else [], d["pedal_value"][during])).astype(np.int64)
        out.append({"start": d["start"][inside] - t0, "end": np.minimum(d["end"][inside], t0 + width) - t0,
                    "pitch": d["pitch"][inside], "pedal_time": ptime, "pedal_value": pval, "end_step": width})
    return out


def listener_report(results: list[dict]) -> dict:
    """Counts over pieces: ``broken``, each fault, ``pedal held``, out of ``pieces``; and which pieces
    (by index) are broken and why."""
    counts = {name: sum(name in r["faults"] for r in results) for name in FAULTS}
    return {"pieces": len(results), "broken": sum(r["broken"] for r in results), "faults": counts,
            PEDAL_HELD: sum(r["pedal_held"] for r in results),
            "broken_pieces": {i: r["faults"] for i, r in enumerate(results) if r["broken"]}}


__all__ = ["FAULTS", "PEDAL_HELD", "ListenerLimits", "listen", "listen_ids", "listener_report", "real_windows"]
