"""How well a piece keeps to ``MusicControls``, and which real windows meet the same condition.

- ``find_key``: the Krumhansl-Schmuckler key-finding algorithm (Krumhansl, *Cognitive Foundations of
  Musical Pitch*, 1990): the piece's pitch-class durations correlated with the 24 rotations of the
  Krumhansl-Kessler major and minor profiles; the best correlation names the key.
- ``measures``: what a piece did (onsets a second, lowest and highest pitch, velocities, most keys
  down at once, pedal presses, its key);
- ``holds``: for each control set, whether the piece keeps to it (hard controls: every note, velocity
  and pedal event; ``key``: the key found is the one asked; ``density``: within +-25 % of the target);
- ``matching_windows``: real windows that meet the same condition, for the MGEval comparison (windows
  in the asked mode are transposed to the asked tonic: the same music, in that key).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from ..remote_code.codec import TIME_SHIFT, ids_to_notes, keys_down
from ..remote_code.controls import MAJOR_PROFILE as KK_MAJOR
from ..remote_code.controls import MINOR_PROFILE as KK_MINOR
from ..remote_code.controls import MusicControls
from ..remote_code.controls import find_key as notes_key

# Krumhansl & Kessler (1982) probe-tone ratings, tonic first (the controls' own, in one home).
MAJOR_PROFILE = np.array(KK_MAJOR)
MINOR_PROFILE = np.array(KK_MINOR)
NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
DENSITY_TOLERANCE = 0.25


def _events(ids) -> np.ndarray:
    ids = np.asarray(ids, dtype=np.int64)
    return ids[ids < 390]


def transpose_ids(ids: np.ndarray, semitones: int) -> np.ndarray:
    """Event ids with every NOTE_ON/NOTE_OFF moved ``semitones``; notes pushed outside 0..127 are dropped."""
    ids = np.asarray(ids, dtype=np.int64)
    note = ids < TIME_SHIFT
    pitch = (ids & 127) + semitones
    keep = ~note | ((pitch >= 0) & (pitch <= 127))
    moved = np.where(note, (ids - (ids & 127)) + pitch, ids)
    return moved[keep]


def find_key(ids) -> tuple[int, str] | None:
    """(tonic pitch class, "major" | "minor") of a piece of event ids, by Krumhansl-Schmuckler over its
    notes' durations per pitch class; None for a piece without notes."""
    n = ids_to_notes(_events(ids))
    return notes_key(n["pitch"], n["end"] - n["start"])


def key_name(key: tuple[int, str] | None) -> str | None:
    return None if key is None else f"{NAMES[key[0]]} {key[1]}"


def measures(ids, seconds: float) -> dict:
    """What one piece (event ids, special tokens allowed) did over ``seconds``."""
    events = _events(ids)
    n = ids_to_notes(events)
    pedal_on = int((n["pedal_value"] >= 64).sum())
    return {
        "notes": int(len(n["pitch"])),
        "notes_per_second": len(n["pitch"]) / seconds,
        "lowest": int(n["pitch"].min()) if len(n["pitch"]) else None,
        "highest": int(n["pitch"].max()) if len(n["pitch"]) else None,
        "velocities": sorted({int(v) for v in n["velocity"]}),
        "most_keys_down": int(keys_down(events).max()) if len(events) else 0,
        "pedal_presses": pedal_on,
        "key": key_name(find_key(events)),
    }


def holds(controls: MusicControls, ids, seconds: float) -> dict[str, bool]:
    """Per control set in ``controls``: whether the piece keeps to it. ``key`` (hard) counts twice:
    ``key_notes`` (every note in the key's pitch classes) and ``key`` (the key found is the one asked)."""
    events = _events(ids)
    n = ids_to_notes(events)
    out = {}
    if controls.key is not None:
        classes = controls.pitch_classes
        if controls.key_strength is None:
            out["key_notes"] = bool(np.isin(n["pitch"] % 12, list(classes)).all())
        if controls.named_key is not None:  # a named key (not a set of pitch classes)
            out["key"] = find_key(events) == controls.named_key
    if controls.pitch_range is not None:
        lo, hi = controls.pitch_range
        out["pitch_range"] = bool(((n["pitch"] >= lo) & (n["pitch"] <= hi)).all())
    if controls.velocities is not None:
        lo, hi = controls.velocities
        out["velocities"] = bool(((n["velocity"] >= lo) & (n["velocity"] <= hi)).all())
    if controls.density is not None:
        rate = len(n["pitch"]) / seconds
        out["density"] = abs(rate - controls.density) <= DENSITY_TOLERANCE * controls.density
    if controls.max_polyphony is not None:
        out["max_polyphony"] = int(keys_down(events).max(initial=0)) <= controls.max_polyphony
    if controls.pedal is False:
        out["pedal"] = not bool((n["pedal_value"] >= 64).any())
    return out


def matching_windows(controls: MusicControls, windows, seconds: float) -> list[np.ndarray]:
    """The real ``windows`` (event ids of ``seconds`` each) that meet the condition of ``controls``:
    in the asked mode (then transposed to the asked tonic), in the pitch range, the median velocity in
    the range, the density within +-25 %, at most the asked keys down, no pedal. A control that is not set
    asks nothing."""
    key = controls.named_key
    out = []
    for ids in windows:
        ids = _events(ids)
        if key is not None:
            found = find_key(ids)
            if found is None or found[1] != key[1]:
                continue
            shift = (key[0] - found[0] + 6) % 12 - 6  # the nearest way, -6..5 semitones
            ids = transpose_ids(ids, shift)
        # every control but the key and the velocities holds strictly; real music rarely keeps every
        # velocity in one marking's range, so a window's dynamic is its median velocity
        strict = replace(controls, key=None, key_strength=None, dynamics=None, velocity_range=None)
        if not all(holds(strict, ids, seconds).values()):
            continue
        if controls.velocities is not None:
            velocities = ids_to_notes(ids)["velocity"]
            lo, hi = controls.velocities
            if not len(velocities) or not lo <= float(np.median(velocities)) <= hi:
                continue
        out.append(ids)
    return out


def adherence_report(controls: MusicControls, pieces, seconds: float) -> dict:
    """Over ``pieces``: per control, how many keep to it; the keys found; the onsets a second."""
    results = [holds(controls, ids, seconds) for ids in pieces]
    names = sorted({k for r in results for k in r})
    rates = [measures(ids, seconds)["notes_per_second"] for ids in pieces]
    keys = [key_name(find_key(_events(ids))) for ids in pieces]
    return {
        "pieces": len(results),
        "held": {name: sum(r[name] for r in results) for name in names},
        "keys_found": {k: keys.count(k) for k in sorted(set(keys), key=str)},
        "notes_per_second": {"mean": round(float(np.mean(rates)), 2), "min": round(float(np.min(rates)), 2),
                             "max": round(float(np.max(rates)), 2)},
    }


__all__ = ["DENSITY_TOLERANCE", "MAJOR_PROFILE", "MINOR_PROFILE", "adherence_report",
           "find_key", "holds", "key_name", "matching_windows", "measures", "transpose_ids"]
