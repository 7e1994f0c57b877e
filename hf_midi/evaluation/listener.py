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


@dataclass(frozen=True)
class DegenerateLimits:
    """Where each degenerate-mode check draws its line: the 95th percentile (the 5th for distinct pitch
    classes, where fewer is worse) of random 30-s windows of real music, GiantMIDI test and POP909 test
    together (``benchmarks/calibrate_degenerate.py`` computes them; ``tests/test_listener.py`` checks them
    against the data)."""

    restrike_share: float = 0.3603  # onsets re-striking a pitch struck in the last 0.3 s
    longest_hammering: float = 3.7025  # seconds of the longest stretch of such re-strikes
    blip_share: float = 0.0691  # notes of one 10-ms step (transcribed performances hold many)
    fewest_pitch_classes: float = 5.0  # distinct pitch classes struck in the sparest 10 s (the 5th percentile)
    opening_gap: float = 0.585  # seconds from the first onset to the next one


RESTRIKE_SECONDS = 0.3
DRONE_WINDOW_SECONDS = 10.0
DEGENERATE = ("hammering", "long hammering", "blips", "drone", "lone opening")


def degenerate_figures(notes: dict, seconds: float | None = None) -> dict:
    """The figures behind the degenerate-mode checks of one piece (``notes`` as ``ids_to_notes`` gives them,
    in 10-ms steps): ``restrike_share``, ``longest_hammering`` (s), ``blip_share``, ``fewest_pitch_classes``
    (over the piece's whole 10-s windows, up to ``seconds``), ``opening_gap`` (s)."""
    start = np.asarray(notes["start"], np.int64)
    end = np.asarray(notes["end"], np.int64)
    pitch = np.asarray(notes["pitch"], np.int64)
    if not len(start):
        return {"restrike_share": 0.0, "longest_hammering": 0.0, "blip_share": 0.0, "fewest_pitch_classes": 0.0,
                "opening_gap": float(seconds or 0.0)}
    order = np.lexsort((pitch, start))
    s, p = start[order], pitch[order]
    by_pitch = np.lexsort((s, p))  # each pitch's onsets in time order
    ps, pp = s[by_pitch], p[by_pitch]
    gap = np.diff(ps)
    again = (pp[1:] == pp[:-1]) & (gap <= seconds_to_steps(RESTRIKE_SECONDS))
    # the stretches of hammering: the union of [previous strike, re-strike] of every re-strike
    a, b = ps[:-1][again], ps[1:][again]
    longest = 0
    if len(a):
        k = np.argsort(a, kind="stable")
        a, b = a[k], np.maximum.accumulate(b[k])
        breaks = np.flatnonzero(a[1:] > b[:-1]) + 1
        starts, ends = a[np.r_[0, breaks]], b[np.r_[breaks - 1, len(b) - 1]]
        longest = int((ends - starts).max())
    horizon = seconds_to_steps(seconds) if seconds is not None else int(max(end.max(), s[-1] + 1))
    width = seconds_to_steps(DRONE_WINDOW_SECONDS)
    classes = [len(set((p[(s >= w) & (s < w + width)] % 12).tolist())) for w in range(0, max(horizon - width, 0) + 1,
                                                                                       width)]
    later = s[s > s[0]]
    return {
        "restrike_share": float(again.sum() / len(s)),
        "longest_hammering": longest / STEPS_PER_SECOND,
        "blip_share": float(((end - start) <= 1).mean()),
        "fewest_pitch_classes": float(min(classes)) if classes else float(len(set((p % 12).tolist()))),
        "opening_gap": float((later[0] - s[0]) if len(later) else horizon - s[0]) / STEPS_PER_SECOND,
    }


def degenerate(notes: dict, seconds: float | None = None, limits: DegenerateLimits = DegenerateLimits()) -> dict:
    """The degenerate modes of one piece beyond real music's 95th percentile (``DEGENERATE`` names them),
    with the figures (``degenerate_figures``)."""
    f = degenerate_figures(notes, seconds)
    checks = {
        "hammering": f["restrike_share"] > limits.restrike_share,
        "long hammering": f["longest_hammering"] > limits.longest_hammering,
        "blips": f["blip_share"] > limits.blip_share,
        "drone": f["fewest_pitch_classes"] < limits.fewest_pitch_classes,
        "lone opening": f["opening_gap"] > limits.opening_gap,
    }
    return {"modes": [name for name in DEGENERATE if checks[name]], **{k: round(v, 4) for k, v in f.items()}}


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
                    "pitch": d["pitch"][inside], "velocity": d["velocity"][inside], "pedal_time": ptime,
                    "pedal_value": pval, "end_step": width})
    return out


def listener_report(results: list[dict]) -> dict:
    """Counts over pieces: ``broken``, each fault, ``pedal held``, out of ``pieces``; and which pieces
    (by index) are broken and why."""
    counts = {name: sum(name in r["faults"] for r in results) for name in FAULTS}
    return {"pieces": len(results), "broken": sum(r["broken"] for r in results), "faults": counts,
            PEDAL_HELD: sum(r["pedal_held"] for r in results),
            "broken_pieces": {i: r["faults"] for i, r in enumerate(results) if r["broken"]}}


__all__ = [
    "DEGENERATE", "DRONE_WINDOW_SECONDS", "DegenerateLimits", "FAULTS", "PEDAL_HELD", "RESTRIKE_SECONDS",
    "ListenerLimits", "degenerate", "degenerate_figures", "listen", "listen_ids", "listener_report", "real_windows",
]
